"""Registers ``twistd packagemanager``; the service lives in :mod:`pm.service`."""

from twisted.application.service import ServiceMaker

packagemanager = ServiceMaker(
    "Package Manager",
    "pm.service",
    "Self-hosted Python and R package repository with remote publishing",
    "packagemanager",
)
