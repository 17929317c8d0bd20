"""The web UI: server-rendered pages of the repos, their packages and distributions.

Pages are Jinja2 templates with autoescaping on (``pm.ui.templating``); READMEs
are rendered by readme_renderer and sanitised by nh3 (``pm.ui.readme``). What
each ecosystem shows comes from a shelf (``pm.ui.python``, ``pm.ui.r``); the
Klein app that routes to them is ``pm.ui.pages``. No page runs script, and the
Content-Security-Policy that every page sends forbids it.
"""

from pm.ui.pages import WebUI

__all__ = ["WebUI"]
