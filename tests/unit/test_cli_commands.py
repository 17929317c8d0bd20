"""Unit tests for the package commands of rspm: list packages, remove package, archive.

Each runs in-process against the fake server of tests/support/fakeserver.py;
the tests check the request sent and the output in both formats.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.fakeserver import FakeServer, Reply, error, rspm

LISTING = {
    "packages": [
        {"name": "labpy", "version": "0.2.0", "versions": ["0.1.0", "0.2.0"], "archived": [],
         "files": 3, "source": "src"},
        {"name": "old", "version": None, "versions": [], "archived": ["1.0"], "files": 1,
         "source": "other"},
    ],
    "total": 2, "page": 1, "count": 100,
}


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


def test_list_packages_of_a_source(server: FakeServer) -> None:
    """A table of name, current version and all versions; no page line when all is shown."""
    server.on("GET", "/__api__/sources/src/packages", Reply(200, LISTING))
    result = rspm("list", "packages", "--source=src", server=server)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME   VERSION  VERSIONS",
        "labpy  0.2.0    0.1.0, 0.2.0",
        "old    -        - (archived: 1.0)",
    ]
    assert server.requests[0].query == {}


def test_list_packages_of_a_repo_paginated(server: FakeServer) -> None:
    """A repo's listing names each package's source; --count/--page/--search are passed on
    and the page line says where in the listing this is."""
    server.on("GET", "/__api__/repos/python/packages",
              Reply(200, {**LISTING, "total": 5, "page": 2, "count": 2}))
    result = rspm("list", "packages", "--repo=python", "--search=lab", "--count=2", "--page=2",
                  server=server)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME   VERSION  VERSIONS           SOURCE",
        "labpy  0.2.0    0.1.0, 0.2.0       src",
        "old    -        - (archived: 1.0)  other",
        "page 2 of 3 (5 packages)",
    ]
    assert server.requests[0].query == {"search": "lab", "count": "2", "page": "2"}


def test_list_packages_json_is_the_servers(server: FakeServer) -> None:
    """-o json prints the server's document as it came."""
    server.on("GET", "/__api__/sources/src/packages", Reply(200, LISTING))
    result = rspm("list", "packages", "--source=src", "-o", "json", server=server)
    assert json.loads(result.stdout) == LISTING


@pytest.mark.parametrize("args", [(), ("--source=a", "--repo=b")])
def test_list_packages_needs_one_of_source_or_repo(server: FakeServer,
                                                   args: tuple[str, ...]) -> None:
    """Neither or both of --source and --repo: an error, and no request."""
    result = rspm("list", "packages", *args, server=server)
    assert result.exit_code == 1
    assert result.stderr == "Error: give exactly one of --source or --repo\n"
    assert server.requests == []


def test_list_without_a_subcommand_lists_repos(server: FakeServer) -> None:
    """`rspm list` alone is still `rspm list repos`."""
    server.on("GET", "/__api__/repos", Reply(200, []))
    result = rspm("list", server=server)
    assert result.exit_code == 0 and result.stdout == "(none)\n"
    assert server.requests[0].path == "/__api__/repos"


@pytest.mark.parametrize(("spec", "name", "version"), [
    ("labpy@all", "labpy", "all"), ("labpy@current", "labpy", "current"),
    ("labpy@1.2.3", "labpy", "1.2.3"),
])
def test_remove_package(server: FakeServer, spec: str, name: str, version: str) -> None:
    """--name=PKG@WHICH is split for the server; each removed file is named."""
    server.on("POST", "/__api__/sources/src/packages/remove", Reply(200, {
        "source": "src", "name": name,
        "removed": [{"filename": "labpy-1.2.3.tar.gz", "version": "1.2.3"},
                    {"filename": "labpy-1.2.3-py3-none-any.whl", "version": "1.2.3"}]}))
    result = rspm("remove", "package", "--source=src", f"--name={spec}", "--comment=broken",
                  server=server)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["Removed package 'labpy-1.2.3.tar.gz'",
                                          "Removed package 'labpy-1.2.3-py3-none-any.whl'"]
    (request,) = server.made("POST", "/__api__/sources/src/packages/remove")
    assert request.json() == {"name": name, "version": version, "comment": "broken"}


@pytest.mark.parametrize("spec", ["labpy", "labpy@", "@all"])
def test_remove_package_needs_the_versions(server: FakeServer, spec: str) -> None:
    """--name without @all, @current or @VERSION: an error saying so, and no request."""
    result = rspm("remove", "package", "--source=src", f"--name={spec}", server=server)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: --name={spec} must say which versions to remove: "
                             "PKG@all, PKG@current or PKG@VERSION\n")
    assert server.requests == []


def test_remove_package_refused(server: FakeServer) -> None:
    """The server's refusal is the error line."""
    server.on("POST", "/__api__/sources/src/packages/remove",
              error(404, "no package 'labpy' in source 'src'"))
    result = rspm("remove", "package", "--source=src", "--name=labpy@all", server=server)
    assert result.exit_code == 1
    assert result.stderr == "Error: no package 'labpy' in source 'src'\n"


def test_archive(server: FakeServer) -> None:
    """archive posts the name and names each archived file; -o json prints the answer."""
    answer = {"source": "src", "name": "labpy",
              "archived": [{"filename": "labpy-0.1.0.tar.gz", "version": "0.1.0"}]}
    server.on("POST", "/__api__/sources/src/packages/archive", Reply(200, answer))
    result = rspm("archive", "--source=src", "--name=labpy", server=server)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Archived package 'labpy-0.1.0.tar.gz'\n"
    assert server.made("POST", "/__api__/sources/src/packages/archive")[0].json() == {
        "name": "labpy"}
    as_json = rspm("archive", "--source=src", "--name=labpy", "-o", "json", server=server)
    assert json.loads(as_json.stdout) == answer
