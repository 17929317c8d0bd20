"""The web UI through ``treq.testing.StubTreq``: pages, links, escaping and error pages.

Content is recorded straight into the tables (``tests.support.records.python_file``
and ``RPackageFile`` rows), so a test controls every field a page shows,
including metadata no upload check would let through. Pages are parsed with
the standard library's HTML parser, so the checks are about elements and
attributes, not about how the markup happens to be laid out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pm.auth import RepoReaders
from pm.catalog import Repo, Source
from pm.errors import NotFound
from pm.python.files import PythonFile
from pm.r.files import RPackageFile
from pm.responses import CONTENT_SECURITY_POLICY
from pm.ui import WebUI
from pm.ui.listings import Listings
from pm.ui.readme import render
from pm.ui.shelf import PackageEntry, Page, Uploaders
from pm.ui.templating import file_size
from tests.support.records import python_file
from tests.unit.appfixture import AppEnv, app_env
from tests.unit.test_app import Client, Reply

# Elements whose boundaries separate words in the text a reader sees.
BLOCKS = frozenset({"p", "div", "li", "dt", "dd", "td", "th", "tr", "br", "h1", "h2", "h3",
                    "summary", "section", "ul", "ol", "dl", "pre"})
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
HOSTILE = "<script>window.pwned=1</script>"


# Reading pages -----------------------------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    raw_text: str = ""

    @property
    def text(self) -> str:
        """The element's text as a reader sees it: words separated by single spaces."""
        return " ".join(self.raw_text.split())


@dataclass
class Parsed(HTMLParser):
    """Every element with its attributes and own text; the whole page's text."""

    elements: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    _open: list[Element] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def _separate(self, tag: str) -> None:
        if tag in BLOCKS:
            self.texts.append(" ")
            for element in self._open:
                element.raw_text += " "

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._separate(tag)
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if tag not in ("br", "img", "input", "meta", "link", "hr"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        self._separate(tag)
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        for element in self._open:
            element.raw_text += data

    @property
    def text(self) -> str:
        return " ".join("".join(self.texts).split())

    def find(self, tag: str, **attrs: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag
                and all(e.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def links(self) -> dict[str, str]:
        """Link text -> href, for every link on the page."""
        return {" ".join(e.text.split()): e.attrs["href"] for e in self.find("a")
                if "href" in e.attrs}

    def with_class(self, name: str) -> list[Element]:
        return [e for e in self.elements if name in e.attrs.get("class", "").split()]


def parse(reply: Reply) -> Parsed:
    page = Parsed()
    page.feed(reply.text)
    page.close()
    return page


def assert_nothing_runs(page: Parsed) -> None:
    """No script element, no event-handler attribute, no javascript: URL anywhere."""
    assert not page.find("script")
    for element in page.elements:
        if element.tag == "link" and element.attrs.get("rel") == "icon":
            # href="data:," stops the browser asking for /favicon.ico.
            continue
        for name, value in element.attrs.items():
            assert not name.startswith("on"), (element.tag, name, value)
            if name in ("href", "src", "action", "formaction"):
                assert not re.match(r"\s*(javascript|data|vbscript):", value, re.I), value


# Content ---------------------------------------------------------------------------


@dataclass
class Site:
    """A Python repo fed by two sources, an R repo fed by one."""

    env: AppEnv
    first: Source
    second: Source
    r_source: Source

    async def python(self, filename: str, **changes: Any) -> PythonFile:
        record = python_file(changes.pop("source", self.first), filename, **changes)
        await self.env.python_files.add(record)
        return record

    async def r(self, package: str, version: str, *, archived: bool = False,
                uploaded_at: float = 1_700_000_000.0, **fields: str) -> RPackageFile:
        record = RPackageFile(
            source_guid=self.r_source.guid, package=package, version=version,
            filename=f"{package}_{version}.tar.gz", size=2048, sha256="5" * 64, md5="6" * 32,
            fields={"Package": package, "Version": version, **fields}, archived=archived,
            uploaded_at=uploaded_at, uploaded_by="local-admin")
        await self.env.parts.r.files.put(record, self.r_source.name, replace=False)
        return record


@pytest.fixture
def env(tmp_path: Path) -> Iterator[AppEnv]:
    """A fresh in-memory server."""
    with app_env(tmp_path) as built:
        yield built


@pytest.fixture
def client(env: AppEnv) -> Client:
    """A TCP client of that server."""
    return Client(env.app.resource())


@pytest_twisted.async_fixture
async def site(env: AppEnv) -> Site:
    """Repos 'python' (sources 'first' then 'second') and 'cran' (source 'rsrc')."""
    catalog = env.catalog
    first = await env.python_source("first")
    second = await env.python_source("second")
    r_source = await env.r_source("rsrc")
    await catalog.create_repo("python", "python", "Internal Python", "local-admin")
    await catalog.subscribe("python", "first", "local-admin")
    await catalog.subscribe("python", "second", "local-admin")
    await catalog.create_repo("cran", "r", "", "local-admin")
    await catalog.subscribe("cran", "rsrc", "local-admin")
    return Site(env, first, second, r_source)


async def ci_token(env: AppEnv, description: str = "Release CI") -> str:
    """A token row with ``description``; returns the actor string its uploads carry."""
    await env.token_store.create_token("0f9e8d7c-0000-4000-8000-000000000001", description,
                                       "sources:write", (), None, "local-admin")
    return "token:0f9e8d7c-0000-4000-8000-000000000001"


# Home -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_home_lists_repos_and_sources_with_counts_search_and_activity(
        site: Site, client: Client) -> None:
    """/ shows each repo (linking its page, with its sources in order and how many
    packages it serves), each source with its count, a search box, and the event log
    with the token's description as the actor."""
    actor = await ci_token(site.env)
    await site.python("alpha-1.0.tar.gz", project="alpha", uploaded_by=actor)
    await site.python("alpha-1.0.tar.gz", project="alpha", source=site.second,
                      content=b"other")
    await site.python("beta-1.0.tar.gz", project="beta", source=site.second)
    await site.r("labR", "0.1.0")

    reply = await client.get("/", headers=BROWSER)

    assert reply.code == 200
    page = parse(reply)
    cards = {c.text.split()[0]: " ".join(c.text.split()) for c in page.with_class("card")}
    assert "2 packages" in cards["python"]
    assert "Sources, in order: first, second" in cards["python"]
    assert "1 package" in cards["cran"]
    assert page.links()["python"] == "/repos/python/"
    assert page.links()["cran"] == "/repos/cran/"
    rows = [" ".join(r.text.split()) for r in page.find("tr")][1:]
    assert rows == ["first local-python 1 python", "rsrc local 1 cran",
                    "second local-python 2 python"]
    assert page.find("form", action="/search")
    assert page.find("input", name="q", type="search")
    events = [" ".join(e.text.split()) for e in page.with_class("events")[0:1]]
    assert "python.file.added alpha-1.0.tar.gz by token “Release CI”" in events[0]
    assert "token.created token “Release CI” by local administrator" in events[0]


@pytest_twisted.ensureDeferred
async def test_home_with_nothing_says_how_to_start(env: AppEnv, client: Client) -> None:
    """An empty server's home page says there are no repos and how to make one."""
    reply = await client.get("/", headers=BROWSER)

    assert reply.code == 200
    assert "No repositories yet" in parse(reply).text


# Repo pages ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_repo_page_lists_latest_version_summary_and_last_upload(
        site: Site, client: Client) -> None:
    """A Python repo's page lists each project once, from the first source that has
    it, with its highest PEP 440 version (1.10 above 1.9), that version's summary and
    the time of its last upload."""
    await site.python("demo-1.9.tar.gz", version="1.9", summary="old", uploaded_at=2e9)
    await site.python("demo-1.10.tar.gz", version="1.10", summary="new",
                      uploaded_at=1.8e9)
    await site.python("demo-5.0.tar.gz", version="5.0", source=site.second,
                      summary="shadowed")

    page = parse(await client.get("/repos/python/", headers=BROWSER))

    [item] = [e for e in page.find("li") if e.text.split()[:1] == ["Demo"]]
    text = " ".join(item.text.split())
    assert text.startswith("Demo 1.10 new")
    assert "last upload 2033-05-18 03:33 UTC" in text
    assert "shadowed" not in page.text
    install = page.with_class("copy")[0].text
    assert install == "pip install --index-url http://test/python/latest/simple/ PACKAGE"


@pytest_twisted.ensureDeferred
async def test_repo_page_is_searchable_and_paginated(site: Site, client: Client) -> None:
    """120 projects show 50 a page with next and previous links; q keeps names or
    summaries that contain it, an exact name first; a page past the end shows the
    last one; a page that is not a number answers 400."""
    for i in range(120):
        await site.python(f"pkg{i:03d}-1.0.tar.gz", project=f"pkg{i:03d}",
                          summary="special" if i == 77 else "plain")

    first = parse(await client.get("/repos/python/", headers=BROWSER))
    third = parse(await client.get("/repos/python/?page=3", headers=BROWSER))
    beyond = parse(await client.get("/repos/python/?page=99", headers=BROWSER))
    search = parse(await client.get("/repos/python/?q=pkg07", headers=BROWSER))
    summary = parse(await client.get("/repos/python/?q=SPECIAL", headers=BROWSER))
    bad = await client.get("/repos/python/?page=zero", headers=BROWSER)

    def names(page: Parsed) -> list[str]:
        return [e.text for e in page.with_class("name")]

    assert names(first) == [f"Pkg{i:03d}" for i in range(50)]
    assert first.links()["Next →"] == "?page=2"
    assert "← Previous" not in first.links()
    assert names(third) == [f"Pkg{i:03d}" for i in range(100, 120)]
    assert third.links()["← Previous"] == "?page=2"
    assert "Page 3 of 3" in third.text
    assert names(beyond) == names(third)
    assert names(search) == [f"Pkg{i:03d}" for i in range(70, 80)]
    assert "10 of 120 packages match “pkg07”" in search.text
    assert names(summary) == ["Pkg077"]
    assert bad.code == 400
    assert "page must be a number" in parse(bad).text


@pytest_twisted.ensureDeferred
async def test_repo_list_follows_every_change(site: Site, client: Client) -> None:
    """The repo's list is kept between views, but a file added, a version removed or a
    source deleted shows on the next view."""
    await site.python("alpha-1.0.tar.gz", project="alpha")

    def names(reply: Reply) -> list[str]:
        return [e.text for e in parse(reply).with_class("name")]

    assert names(await client.get("/repos/python/", headers=BROWSER)) == ["Alpha"]
    await site.python("beta-1.0.tar.gz", project="beta", source=site.second)
    assert names(await client.get("/repos/python/", headers=BROWSER)) == ["Alpha", "Beta"]
    await site.env.python_files.delete_versions(site.first.guid, "alpha", ["1.0"],
                                                "local-admin", "")
    assert names(await client.get("/repos/python/", headers=BROWSER)) == ["Beta"]
    await site.env.catalog.delete_source("second", "local-admin")
    assert names(await client.get("/repos/python/", headers=BROWSER)) == []


@pytest_twisted.ensureDeferred
async def test_search_finds_packages_in_every_repo_exact_name_first(
        site: Site, client: Client) -> None:
    """/search?q= lists the matching packages of each repo, an exact name before
    names that merely contain it, and says so when nothing matches."""
    await site.python("labr-tools-1.0.tar.gz", project="labr-tools")
    await site.python("labr-1.0.tar.gz", project="labr")
    await site.r("labR", "0.1.0", Title="A lab")

    found = parse(await client.get("/search?q=labr", headers=BROWSER))
    nothing = parse(await client.get("/search?q=zzz", headers=BROWSER))

    assert [e.text for e in found.with_class("name")] == ["labR", "Labr", "Labr-Tools"]
    assert found.links()["labR"] == "/repos/cran/packages/labR/"
    assert found.links()["Labr"] == "/repos/python/packages/labr/"
    assert "No package in any repository matches “zzz”" in nothing.text


# Python package pages -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_python_package_page_shows_readme_versions_and_files(
        site: Site, client: Client) -> None:
    """A project page renders the latest version's Markdown README, lists versions
    newest first, and for each file its name (a link to the file), size, sha256,
    upload time and the description of the token that uploaded it."""
    actor = await ci_token(site.env)
    readme = "# Demo project\n\nSome *emphasis* and a [link](https://example.org/).\n"
    details = {"Description": readme, "Description-Content-Type": "text/markdown",
               "Author": "Ada", "Author-email": "ada@example.org", "License": "MIT",
               "Home-page": "https://example.org/home",
               "Project-URL": ["Source, https://example.org/src"],
               "Requires-Dist": ["requests>=2"], "Classifier": ["Framework :: Twisted"]}
    await site.python("demo-1.0.tar.gz", version="1.0", uploaded_by=actor)
    wheel = await site.python("demo-2.0-py3-none-any.whl", version="2.0", size=123_456,
                              details=details, uploaded_by=actor, uploaded_at=1.8e9)

    reply = await client.get("/repos/python/packages/demo/", headers=BROWSER)

    assert reply.code == 200
    page = parse(reply)
    assert page.find("h1")[0].text.split() == ["Demo", "2.0"]
    readme_box = page.with_class("readme")[0]
    assert [e.text for e in page.find("h1", id="user-content-demo-project")] == \
        ["Demo project"]
    assert "Some emphasis and a link." in " ".join(readme_box.text.split())
    assert page.find("em")[0].text == "emphasis"
    summaries = [" ".join(e.text.split()).split()[0] for e in page.find("summary")]
    assert summaries == ["2.0", "1.0"]
    links = page.links()
    assert links["demo-2.0-py3-none-any.whl"] == "/python/latest/files/demo-2.0-py3-none-any.whl"
    assert links["Source"] == "https://example.org/src"
    assert links["https://example.org/home"] == "https://example.org/home"
    facts = " ".join(page.find("details", id="v-1")[0].text.split())
    assert "Size 123.5 kB" in facts
    assert f"SHA256 {wheel.sha256}" in facts
    assert "Uploaded 2027-01-15 08:00 UTC by token “Release CI”" in facts
    assert "SIGNED" not in page.text
    details_text = " ".join(page.with_class("details")[0].text.split())
    for shown in ("Author Ada ada@example.org", "License MIT", "Requires requests>=2",
                  "Classifiers Framework :: Twisted"):
        assert shown in details_text
    assert page.with_class("copy")[0].text == \
        "pip install --index-url http://test/python/latest/simple/ Demo"


@pytest_twisted.ensureDeferred
async def test_signed_distribution_shows_signed_key_and_trust(site: Site,
                                                              client: Client) -> None:
    """A file uploaded with a signature carries a SIGNED label, the signer's key id, a
    link to its .asc, and whether it verified against a trusted key; an unsigned file
    of the same release has no label."""
    await site.python("demo-1.0-py3-none-any.whl", signature_sha256="a" * 64,
                      signature_keyid="0123456789ABCDEF", signature_trusted=True)
    await site.python("demo-1.0.tar.gz", signature_sha256="b" * 64,
                      signature_keyid="FEDCBA9876543210", signature_trusted=False)
    await site.python("demo-1.0-py2-none-any.whl")

    page = parse(await client.get("/repos/python/packages/demo/", headers=BROWSER))

    dists = {e.text.split()[0]: " ".join(e.text.split()) for e in page.with_class("dist")}
    trusted = dists["demo-1.0-py3-none-any.whl"]
    assert "SIGNED" in trusted
    assert "Key 0123456789ABCDEF, verified against a trusted key" in trusted
    assert "Key FEDCBA9876543210, not verified: the key is not in the server's trusted keys" \
        in dists["demo-1.0.tar.gz"]
    assert "SIGNED" not in dists["demo-1.0-py2-none-any.whl"]
    assert [e.text for e in page.with_class("signed")] == ["SIGNED", "SIGNED"]
    assert page.links()["demo-1.0-py3-none-any.whl.asc"] == \
        "/python/latest/files/demo-1.0-py3-none-any.whl.asc"


@pytest.mark.parametrize(("content_type", "description", "element", "text"), [
    ("text/x-rst", "Title\n=====\n\nSome ``code`` here.\n", "span", "code"),
    (None, "Heading\n-------\n\n* one\n* two\n", "li", "two"),
    ("text/markdown; variant=CommonMark", "Some `code`.\n", "code", "code"),
])
@pytest_twisted.ensureDeferred
async def test_readme_formats_are_rendered(site: Site, client: Client,
                                           content_type: str | None, description: str,
                                           element: str, text: str) -> None:
    """reStructuredText (also when no content type is given, as PyPI assumes) and
    Markdown variants are rendered to HTML."""
    details: dict[str, str | list[str]] = {"Description": description}
    if content_type:
        details["Description-Content-Type"] = content_type
    await site.python("demo-1.0.tar.gz", details=details)

    page = parse(await client.get("/repos/python/packages/demo/", headers=BROWSER))

    assert page.with_class("readme")[0].text.strip()
    assert text in [e.text for e in page.find(element)]


def test_plain_text_readme_is_escaped_text() -> None:
    """A text/plain description, or one that cannot be rendered, is shown as text."""
    html, kind = render("<b>not bold</b>\nline two", "text/plain")

    assert kind == "text/plain"
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html
    assert "<b>" not in html


@pytest_twisted.ensureDeferred
async def test_project_url_is_normalised_by_redirect(site: Site, client: Client) -> None:
    """/repos/python/packages/Demo_Pkg/ redirects (301) to the PEP 503 name."""
    await site.python("demo_pkg-1.0.tar.gz", project="demo-pkg")

    reply = await client.get("/repos/python/packages/Demo_Pkg/", headers=BROWSER)

    assert reply.code == 301
    assert reply.header("location") == "../demo-pkg/"


# R package pages -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_r_package_page_shows_description_fields_and_dependency_links(
        site: Site, client: Client) -> None:
    """An R package page shows its DESCRIPTION fields; a dependency is a link when the
    repo serves it and plain text otherwise; URL fields link when http(s); the current
    file is under src/contrib/, older ones under Archive/; install.packages() names
    the repo."""
    await site.r("labUse", "0.9.0", Title="Old", uploaded_at=1_600_000_000.0)
    await site.r("labUse", "1.0.0", Title="Uses labR",
                 Description="Calls labR.\n  Second line.", Imports="labR (>= 0.1), stats",
                 Suggests="testthat", URL="https://example.org/labUse, ftp://example.org",
                 License="GPL-3", NeedsCompilation="no")
    await site.r("labR", "0.1.0", Title="Lab")

    page = parse(await client.get("/repos/cran/packages/labUse/", headers=BROWSER))

    assert page.find("h1")[0].text.split() == ["labUse", "1.0.0"]
    fields = dict(zip([e.text for e in page.find("dt")],
                      [" ".join(e.text.split()) for e in page.find("dd")], strict=False))
    assert fields["License"] == "GPL-3"
    assert fields["NeedsCompilation"] == "no"
    assert fields["Imports"] == "labR (>= 0.1) stats"
    links = page.links()
    assert links["labR (>= 0.1)"] == "/repos/cran/packages/labR/"
    assert "stats" not in links and "testthat" not in links
    assert links["https://example.org/labUse"] == "https://example.org/labUse"
    assert "ftp://example.org" not in links
    assert "Calls labR." in page.with_class("r-description")[0].text
    assert links["labUse_1.0.0.tar.gz"] == "/cran/latest/src/contrib/labUse_1.0.0.tar.gz"
    assert links["labUse_0.9.0.tar.gz"] == \
        "/cran/latest/src/contrib/Archive/labUse/labUse_0.9.0.tar.gz"
    assert page.with_class("copy")[0].text == \
        'install.packages("labUse", repos = "http://test/cran/latest")'


@pytest_twisted.ensureDeferred
async def test_r_package_archived_everywhere_says_so(site: Site, client: Client) -> None:
    """A package whose every version is archived is still listed (as archived) and its
    page says install_version() is the way to install it."""
    await site.r("gone", "1.0", archived=True, Title="Gone")

    listing = parse(await client.get("/repos/cran/", headers=BROWSER))
    page = parse(await client.get("/repos/cran/packages/gone/", headers=BROWSER))

    assert "gone 1.0 archived Gone" in " ".join(listing.text.split())
    assert "remotes::install_version()" in page.text
    assert not page.with_class("copy")


# Hostile metadata -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_hostile_metadata_is_escaped_or_sanitised_everywhere(
        site: Site, client: Client) -> None:
    """Markup and javascript: links in a summary, version label, display name, author,
    URLs, classifiers and the README (Markdown and reStructuredText), and in R
    DESCRIPTION fields, come out as text or are removed: no page has a script, an
    event handler or a javascript: URL, and the hostile text is still readable."""
    markdown = (f"{HOSTILE}\n\n[click](javascript:window.pwned=2)\n\n"
                "<img src=x onerror=\"window.pwned=3\">\n\n"
                "<a href=\"javascript:window.pwned=4\">raw link</a>\n")
    rst = ".. raw:: html\n\n   <script>window.pwned=5</script>\n\n`x <javascript:y>`_\n"
    await site.python(
        "evil-1.0.tar.gz", project="evil", display_name=f"Evil{HOSTILE}",
        version=f"1.0+{HOSTILE}", summary=HOSTILE,
        details={"Description": markdown, "Description-Content-Type": "text/markdown",
                 "Author": HOSTILE, "Author-email": "<img src=x onerror=alert(1)>",
                 "Home-page": "javascript:window.pwned=6",
                 "Project-URL": ["Docs, javascript:window.pwned=7",
                                 "Evil <b>label</b>, https://example.org/"],
                 "Classifier": [HOSTILE], "Requires-Dist": [HOSTILE]})
    await site.python("evilrst-1.0.tar.gz", project="evilrst", summary=HOSTILE,
                      details={"Description": rst})
    await site.r("evilR", "1.0", Title=HOSTILE, Author=HOSTILE, Description=HOSTILE,
                 URL="javascript:window.pwned=8", BugReports=HOSTILE,
                 Imports=f"{HOSTILE}, labR")
    await site.env.catalog.create_repo("evilrepo", "python", HOSTILE, "local-admin")

    paths = ["/", "/repos/python/", "/repos/python/packages/evil/",
             "/repos/python/packages/evilrst/", "/repos/cran/", "/repos/cran/packages/evilR/",
             f"/search?q={HOSTILE}", "/search?q=evil", "/repos/evilrepo/",
             "/repos/python/packages/%3Cscript%3E/"]
    for path in paths:
        reply = await client.get(path, headers=BROWSER)
        assert reply.code in (200, 404), (path, reply.code)
        page = parse(reply)
        assert_nothing_runs(page)
        assert "<script>" not in reply.text, path

    evil = parse(await client.get("/repos/python/packages/evil/", headers=BROWSER))
    assert HOSTILE in evil.text
    assert f"1.0+{HOSTILE}" in evil.text
    assert "javascript:window.pwned=6" in evil.text
    assert "Evil <b>label</b>" in evil.links()


# Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "message"), [
    ("/repos/nope/", "no repo named 'nope'"),
    ("/repos/python/packages/missing/", "no Python project 'missing' in repo 'python'"),
    ("/repos/cran/packages/missing/", "no R package 'missing' in repo 'cran'"),
    ("/no/such/page", "There is no page at /no/such/page."),
    ("/python/latest/files/missing-1.0.tar.gz", "no project 'missing' in repo 'python'"),
])
@pytest_twisted.ensureDeferred
async def test_browser_gets_a_404_page_that_helps(site: Site, client: Client, path: str,
                                                  message: str) -> None:
    """What does not exist answers 404 with an HTML page (for a browser) that says what
    is missing and links home, with a search box."""
    reply = await client.get(path, headers=BROWSER)

    assert reply.code == 404
    assert reply.header("content-type") == "text/html; charset=utf-8"
    assert reply.header("content-security-policy") == CONTENT_SECURITY_POLICY
    page = parse(reply)
    assert message in page.text
    assert "/" in page.links().values()
    assert page.find("input", name="q")


@pytest_twisted.ensureDeferred
async def test_missing_package_page_offers_its_repo_and_a_search(site: Site,
                                                                 client: Client) -> None:
    """The 404 for a package links to the repo's list and fills the search box in."""
    page = parse(await client.get("/repos/python/packages/missing/", headers=BROWSER))

    assert page.links()["Browse the packages of python"] == "/repos/python/"
    assert page.find("input", id="error-q")[0].attrs["value"] == "missing"


@pytest.mark.parametrize(("path", "accept", "content_type"), [
    ("/python/latest/simple/missing/", "*/*", "text/plain; charset=utf-8"),
    ("/python/latest/simple/missing/",
     "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
     "text/html;q=0.01", "text/plain; charset=utf-8"),
    ("/__api__/sources/none", BROWSER["Accept"], "application/json"),
])
@pytest_twisted.ensureDeferred
async def test_other_clients_keep_their_error_answers(site: Site, client: Client, path: str,
                                                      accept: str, content_type: str) -> None:
    """curl and pip (text/html not first) get the plain-text 404, and the admin API its
    JSON, whatever the Accept header."""
    reply = await client.get(path, headers={"Accept": accept}, token=await site.env.token())

    assert reply.code == 404
    assert reply.header("content-type") == content_type


class BrokenShelf:
    """A shelf whose every read fails as a bug would."""

    repo_type = "python"
    source_type = "local-python"

    def normalize(self, name: str) -> str:
        return name

    def index_url(self, base: str, repo: Repo) -> str:
        return base

    def install_command(self, base: str, repo: Repo, name: str) -> str:
        return name

    async def source_packages(self, source_guids: Sequence[str]) -> list[tuple[str, str]]:
        raise RuntimeError("secret detail of the failure")

    async def entries(self, repo: Repo) -> list[PackageEntry]:
        raise RuntimeError("secret detail of the failure")

    async def package_page(self, repo: Repo, name: str, uploaders: Uploaders,
                           base: str) -> Page:
        raise NotFound("never")


@pytest_twisted.ensureDeferred
async def test_a_failure_shows_a_500_page_without_a_stack_trace(site: Site) -> None:
    """An unexpected exception answers 500 with the UI's page: no traceback, no
    exception text."""
    ui = WebUI(catalog=site.env.catalog, token_store=site.env.token_store,
               shelves={"python": BrokenShelf(), "r": BrokenShelf()},
               listings=Listings(site.env.parts.pages.changes),
               readers=RepoReaders(site.env.checker))
    client = Client(ui.resource())

    replies = [await client.get(path, headers=BROWSER) for path in ("/", "/repos/python/")]

    for reply in replies:
        assert reply.code == 500
        assert reply.header("content-type") == "text/html; charset=utf-8"
        assert "Traceback" not in reply.text and "secret detail" not in reply.text
        assert "Something went wrong on the server" in parse(reply).text


@pytest.mark.parametrize(("accept", "html"), [
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
    ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
     "text/html;q=0.01", False),
    ("*/*", False),
    (None, False),
    ("text/plain, text/html;q=0.5", False),
])
@pytest_twisted.ensureDeferred
async def test_only_browsers_get_html_error_pages(site: Site, client: Client,
                                                  accept: str | None, html: bool) -> None:
    """An error is an HTML page only for a client whose first choice is text/html."""
    headers = {} if accept is None else {"Accept": accept}

    reply = await client.get("/repos/nope/", headers=headers)

    assert reply.code == 404
    assert (reply.header("content-type") == "text/html; charset=utf-8") is html
    assert reply.text.startswith("404 no repo named 'nope'") is not html


# Headers and the stylesheet -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_page_sends_a_csp_that_forbids_script(site: Site, client: Client) -> None:
    """Every UI page sends the Content-Security-Policy: no source may run script (there
    is no script-src, so default-src 'none' applies), and nothing allows inline code."""
    await site.python("demo-1.0.tar.gz")
    await site.r("labR", "0.1.0")

    for path in ("/", "/search?q=demo", "/repos/python/", "/repos/python/packages/demo/",
                 "/repos/cran/packages/labR/"):
        reply = await client.get(path, headers=BROWSER)
        assert reply.code == 200, path
        policy = reply.header("content-security-policy")
        assert policy == CONTENT_SECURITY_POLICY
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert "script-src" not in directives
        assert "unsafe-inline" not in policy
        assert reply.header("x-content-type-options") == "nosniff"


@pytest_twisted.ensureDeferred
async def test_stylesheet_is_linked_cached_and_revalidated(env: AppEnv,
                                                           client: Client) -> None:
    """Pages link /static/ui.css with its digest; that URL is cacheable forever, and a
    request with its ETag answers 304."""
    page = parse(await client.get("/", headers=BROWSER))
    [link] = page.find("link", rel="stylesheet")

    css = await client.get(link.attrs["href"])
    again = await client.get("/static/ui.css", headers={"If-None-Match": css.header("etag")
                                                        or ""})

    assert css.code == 200
    assert css.header("content-type") == "text/css; charset=utf-8"
    assert "prefers-color-scheme: dark" in css.text
    assert css.header("cache-control") == "public, max-age=31536000, immutable"
    assert again.code == 304


@pytest.mark.parametrize(("size", "shown"), [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (123_456, "123.5 kB"),
    (5_000_000_000, "5.0 GB"),
])
def test_file_sizes_read_as_pip_prints_them(size: int, shown: str) -> None:
    """Sizes use 1000-based units with one decimal."""
    assert file_size(size) == shown


@pytest_twisted.ensureDeferred
async def test_repo_named_repos_still_serves_its_index(env: AppEnv, client: Client) -> None:
    """The UI's /repos/... URLs leave a repo named "repos" its /repos/latest/simple/."""
    source = await env.python_source("s")
    await env.catalog.create_repo("repos", "python", "", "local-admin")
    await env.catalog.subscribe("repos", "s", "local-admin")
    await env.python_files.add(replace(python_file(source, "demo-1.0.tar.gz")))

    index = await client.get("/repos/latest/simple/")
    page = await client.get("/repos/repos/", headers=BROWSER)

    assert index.code == 200 and "demo" in index.text
    assert page.code == 200
