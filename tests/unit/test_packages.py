"""pm.packages: what a listing shows, how it is paged, and what @all/@current/@1.2.3 select.

Pure functions over :class:`PackageRow` lists, with R's and Python's version orders as
the ecosystems pass them in; no database.
"""

from __future__ import annotations

import re

import pytest

from pm.errors import BadRequest, NotFound
from pm.packages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PackagePage,
    PackageRow,
    PackageSummary,
    current_version,
    like_escape,
    paginate,
    select_versions,
    summarize,
)
from pm.python.ecosystem import version_key as python_key
from pm.r.description import r_version_key as r_key

A, B, C = "guid-a", "guid-b", "guid-c"
NAMES = {A: "first", B: "second"}


def row(name: str, version: str, *, source: str = A, display: str | None = None,
        files: int = 1, archived: bool = False) -> PackageRow:
    return PackageRow(source, name, display or name, version, files, archived)


def summary(name: str, version: str | None, versions: tuple[str, ...], *,
            archived: tuple[str, ...] = (), files: int | None = None,
            source: str = "first") -> PackageSummary:
    return PackageSummary(name, version, versions, archived,
                          len(versions) if files is None else files, source)


# like_escape -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "escaped"), [
    ("plain", "plain"),
    ("", ""),
    ("50%", "50\\%"),
    ("my_pkg", "my\\_pkg"),
    ("back\\slash", "back\\\\slash"),
    ("\\%_", "\\\\\\%\\_"),
    ("%%__", "\\%\\%\\_\\_"),
])
def test_like_escape_makes_wildcards_and_the_escape_literal(text: str, escaped: str) -> None:
    """%, _ and the escape character itself are escaped with a backslash; nothing else."""
    assert like_escape(text) == escaped


@pytest.mark.parametrize("text", ["a%b", "a_b", "a\\b", "\\", "%", "_", "x\\%y\\_z", "ab"])
def test_like_escape_matches_only_itself_under_like_semantics(text: str) -> None:
    """The escaped text, read as a LIKE pattern with ESCAPE '\\', matches exactly the
    original text and not strings its wildcards would otherwise match."""
    pattern = like_escape(text)
    regex = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 1
            regex += re.escape(pattern[i])
        elif char == "%":
            regex += ".*"
        elif char == "_":
            regex += "."
        else:
            regex += re.escape(char)
        i += 1
    assert re.fullmatch(regex, text, re.DOTALL)
    for other in (text.replace("%", "xyz"), text.replace("_", "Q"), text + "!"):
        if other != text:
            assert not re.fullmatch(regex, other, re.DOTALL), other


# current_version -----------------------------------------------------------------------


def test_current_version_is_the_highest_by_the_ecosystem_order() -> None:
    """The current version follows the version order passed in, not string order."""
    rows = [row("alpha", v) for v in ("1.9.0", "1.10.0", "1.2-3")]
    assert current_version(rows, r_key) == "1.10.0"
    assert current_version([row("demo", v) for v in ("1.0rc1", "1.0", "0.9")],
                           python_key) == "1.0"


def test_current_version_skips_archived_versions() -> None:
    """An archived version is never current, even when it is the highest."""
    rows = [row("alpha", "2.0", archived=True), row("alpha", "1.5"), row("alpha", "1.0")]
    assert current_version(rows, r_key) == "1.5"


def test_current_version_is_none_when_all_are_archived_or_there_are_none() -> None:
    """Every version archived, or no rows at all: no current version."""
    assert current_version([row("alpha", "1.0", archived=True)], r_key) is None
    assert current_version([], r_key) is None


# summarize -------------------------------------------------------------------------


def test_summarize_one_summary_per_package_sorted_by_name_ignoring_case() -> None:
    """Packages come out once each, ordered by name case-insensitively, with their
    versions in version order and their file counts added up."""
    rows = [
        row("zeta", "1.0"),
        row("Beta", "1.10.0", files=2),
        row("Beta", "1.9.0", files=3),
        row("alpha", "0.1"),
    ]
    assert summarize(rows, [A], NAMES, r_key) == [
        summary("alpha", "0.1", ("0.1",)),
        summary("Beta", "1.10.0", ("1.9.0", "1.10.0"), files=5),
        summary("zeta", "1.0", ("1.0",)),
    ]


def test_summarize_order_does_not_depend_on_the_order_of_rows() -> None:
    """R names are case-sensitive ("abc" and "ABC" are two packages): their order in a
    listing, and so which page each lands on, must not depend on the order the
    database returned the rows in."""
    rows = [row("abc", "1.0"), row("ABC", "1.0"), row("Abc", "1.0")]
    first = summarize(rows, [A], NAMES, r_key)
    assert [s.name for s in summarize(rows[::-1], [A], NAMES, r_key)] == [
        s.name for s in first]


def test_summarize_first_source_in_the_order_wins_a_package() -> None:
    """A package in several sources is summarised from the first of ``source_order``
    that has it: its versions and files only; a package only in a later source comes
    from that source."""
    rows = [
        row("shared", "2.0", source=B),
        row("shared", "1.0", source=A),
        row("shared", "1.1", source=A),
        row("only-b", "3.0", source=B),
    ]
    assert summarize(rows, [A, B], NAMES, r_key) == [
        summary("only-b", "3.0", ("3.0",), source="second"),
        summary("shared", "1.1", ("1.0", "1.1")),
    ]
    assert summarize(rows, [B, A], NAMES, r_key) == [
        summary("only-b", "3.0", ("3.0",), source="second"),
        summary("shared", "2.0", ("2.0",), source="second"),
    ]


def test_summarize_lists_archived_versions_and_no_current_when_all_are() -> None:
    """Archived versions stay in ``versions`` and are named in ``archived``; with every
    version archived the package is listed with no current version."""
    rows = [
        row("alpha", "1.0", archived=True),
        row("alpha", "2.0", archived=True),
        row("alpha", "1.5"),
        row("gone", "1.0", archived=True),
    ]
    assert summarize(rows, [A], NAMES, r_key) == [
        summary("alpha", "1.5", ("1.0", "1.5", "2.0"), archived=("1.0", "2.0")),
        summary("gone", None, ("1.0",), archived=("1.0",)),
    ]


def test_summarize_takes_a_display_name_and_falls_back_to_the_guid() -> None:
    """The display name is the least of the winning source's spellings, and a source
    missing from ``source_names`` is shown by its GUID."""
    rows = [row("my-tool", "1.0", source=C, display="My_Tool"),
            row("my-tool", "2.0", source=C, display="My-Tool")]
    (only,) = summarize(rows, [C], NAMES, python_key)
    assert (only.name, only.source, only.versions) == ("My-Tool", C, ("1.0", "2.0"))


def test_summarize_nothing() -> None:
    """No rows, no summaries."""
    assert summarize([], [A], NAMES, r_key) == []


def test_summary_and_page_json() -> None:
    """The JSON of a page carries each summary's fields as lists, and the paging."""
    page = PackagePage([summary("alpha", "1.5", ("1.0", "1.5"), archived=("1.0",))],
                       total=7, page=2, count=1)
    assert page.to_json() == {
        "packages": [{"name": "alpha", "version": "1.5", "versions": ["1.0", "1.5"],
                      "archived": ["1.0"], "files": 2, "source": "first"}],
        "total": 7, "page": 2, "count": 1,
    }


# paginate ----------------------------------------------------------------------------


def _many(n: int) -> list[PackageSummary]:
    return [summary(f"p{i:04d}", "1.0", ("1.0",)) for i in range(n)]


def test_paginate_defaults_to_the_first_page_of_the_default_size() -> None:
    """Without count and page: page 1, DEFAULT_PAGE_SIZE summaries, and the total."""
    items = _many(DEFAULT_PAGE_SIZE + 5)
    page = paginate(items, None, None)
    assert (page.page, page.count, page.total) == (1, DEFAULT_PAGE_SIZE, len(items))
    assert page.packages == items[:DEFAULT_PAGE_SIZE]


def test_paginate_pages_through_in_order() -> None:
    """Pages of ``count`` follow each other; the last is partial, past it is empty."""
    items = _many(7)
    assert paginate(items, 3, 1).packages == items[0:3]
    assert paginate(items, 3, 2).packages == items[3:6]
    assert paginate(items, 3, 3).packages == items[6:7]
    beyond = paginate(items, 3, 4)
    assert (beyond.packages, beyond.total, beyond.page, beyond.count) == ([], 7, 4, 3)
    assert paginate(items, MAX_PAGE_SIZE, None).packages == items


@pytest.mark.parametrize("count", [0, -1, MAX_PAGE_SIZE + 1])
def test_paginate_refuses_a_count_out_of_range(count: int) -> None:
    """A count outside 1..MAX_PAGE_SIZE is a BadRequest naming the range."""
    with pytest.raises(BadRequest, match=f"--count must be between 1 and {MAX_PAGE_SIZE}"):
        paginate(_many(3), count, None)


@pytest.mark.parametrize("number", [0, -3])
def test_paginate_refuses_a_page_below_one(number: int) -> None:
    """Pages are numbered from 1."""
    with pytest.raises(BadRequest, match="--page starts at 1"):
        paginate(_many(3), None, number)


# select_versions -----------------------------------------------------------------------


ALPHA = [row("alpha", "1.10.0"), row("alpha", "1.9.0"), row("alpha", "2.0", archived=True)]


def test_select_all_gives_every_version_in_order() -> None:
    """@all is every version, archived ones too, in version order."""
    assert select_versions("alpha", "all", ALPHA, r_key) == ["1.9.0", "1.10.0", "2.0"]


def test_select_current_gives_the_highest_live_version() -> None:
    """@current is the highest version that is not archived."""
    assert select_versions("alpha", "current", ALPHA, r_key) == ["1.10.0"]


def test_select_one_version() -> None:
    """@1.2.3 is that version, archived or not."""
    assert select_versions("alpha", "1.9.0", ALPHA, r_key) == ["1.9.0"]
    assert select_versions("alpha", "2.0", ALPHA, r_key) == ["2.0"]


def test_select_a_version_counted_once_with_several_files() -> None:
    """A version with several files (wheel and sdist rows) is selected once."""
    rows = [row("demo", "1.0", files=2), row("demo", "1.0", source=B)]
    assert select_versions("demo", "all", rows, python_key) == ["1.0"]


def test_select_an_unknown_version_is_not_found_listing_the_versions() -> None:
    """A version the package does not have is NotFound naming it and listing them all."""
    with pytest.raises(NotFound) as caught:
        select_versions("alpha", "3.0", ALPHA, r_key)
    assert caught.value.message == (
        "package 'alpha' has no version '3.0' (versions: 1.9.0, 1.10.0, 2.0)")


def test_select_truncates_a_long_unknown_version_in_the_message() -> None:
    """An absurdly long version is cut short in the message."""
    with pytest.raises(NotFound) as caught:
        select_versions("alpha", "9" * 500, ALPHA, r_key)
    assert "9" * 80 in caught.value.message
    assert "9" * 81 not in caught.value.message


def test_select_in_a_package_that_is_not_there_is_not_found() -> None:
    """No rows: NotFound naming the package, whatever the selector."""
    for selector in ("all", "current", "1.0"):
        with pytest.raises(NotFound, match="no package 'alpha' in this source"):
            select_versions("alpha", selector, [], r_key)


def test_select_current_when_every_version_is_archived_is_not_found() -> None:
    """@current of a package whose versions are all archived is NotFound saying so."""
    rows = [row("alpha", "1.0", archived=True)]
    with pytest.raises(NotFound, match=r"package 'alpha' has no current version \(all are "
                                       r"archived\)"):
        select_versions("alpha", "current", rows, r_key)
