"""Unit tests for pm.r.description: R package filenames, DESCRIPTION parsing, tarball checks.

Tarballs are built here with tarfile so each test states what the upload
holds; two tests ask the installed R itself, to check that the rules here are
R's: one parses a DESCRIPTION with R, one builds a package with ``R CMD build``.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from pm.errors import BadUpload
from pm.r.description import (
    INDEX_FIELDS,
    Description,
    RFilename,
    inspect,
    parse_description,
    parse_filename,
    r_version_key,
)

DESCRIPTION = b"Package: foo\nVersion: 1.0-1\nTitle: Foo\nLicense: GPL-3\n"


def make_tarball(
    tmp_path: Path, members: dict[str, bytes], filename: str = "foo_1.0-1.tar.gz"
) -> Path:
    path = tmp_path / filename
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def package_members(description: bytes = DESCRIPTION) -> dict[str, bytes]:
    return {
        "foo/DESCRIPTION": description,
        "foo/NAMESPACE": b"export(hi)\n",
        "foo/R/hi.R": b"hi <- function() 'hi'\n",
    }


def refusal(excinfo: pytest.ExceptionInfo[BadUpload]) -> str:
    return excinfo.value.message


# parse_filename


@pytest.mark.parametrize(
    ("filename", "package", "version"),
    [
        ("abc_1.0.tar.gz", "abc", "1.0"),
        ("data.table_1.14.8.tar.gz", "data.table", "1.14.8"),
        ("A3_1.0-1.tar.gz", "A3", "1.0-1"),
        ("ab_0.0.0.9000.tar.gz", "ab", "0.0.0.9000"),
    ],
)
def test_parse_filename_accepts_r_names(filename: str, package: str, version: str) -> None:
    """Names and versions matching R's valid_package_name/version split at the '_'."""
    assert parse_filename(filename) == RFilename(filename, package, version)


@pytest.mark.parametrize(
    ("filename", "fragment"),
    [
        ("1abc_1.0.tar.gz", "'1abc' is not a valid R package name"),
        ("ab._1.0.tar.gz", "'ab.' is not a valid R package name"),
        ("a_1.0.tar.gz", "'a' is not a valid R package name"),
        ("ab-c_1.0.tar.gz", "'ab-c' is not a valid R package name"),
        ("ábc_1.0.tar.gz", "is not a valid R package name"),
        ("abc_1.tar.gz", "'1' is not a valid R package version"),
        ("abc_1..0.tar.gz", "'1..0' is not a valid R package version"),
        ("abc_1.0_2.tar.gz", "'1.0_2' is not a valid R package version"),
        ("abc_1.0a.tar.gz", "'1.0a' is not a valid R package version"),
        ("abc-1.0.tar.gz", "expected <package>_<version>.tar.gz"),
        ("abc_1.0.zip", "R source packages are .tar.gz files"),
        ("abc_1.0.tgz", "R source packages are .tar.gz files"),
        ("abc_1.0.tar.gz\n", "R source packages are .tar.gz files"),
        ("abc/def_1.0.tar.gz", "'/' or '\\'"),
        ("..\\abc_1.0.tar.gz", "'/' or '\\'"),
        ("", "empty name"),
    ],
)
def test_parse_filename_refuses(filename: str, fragment: str) -> None:
    """Filenames that are not {package}_{version}.tar.gz by R's rules are refused."""
    with pytest.raises(BadUpload) as excinfo:
        parse_filename(filename)
    assert fragment in refusal(excinfo)


def test_parse_filename_refuses_overlong_with_short_message() -> None:
    """A name over 255 characters is refused, echoing only its start."""
    filename = "a" * 1000 + "_1.0.tar.gz"
    with pytest.raises(BadUpload) as excinfo:
        parse_filename(filename)
    assert refusal(excinfo).startswith("Filename is too long: ")
    assert len(refusal(excinfo)) < 200


# r_version_key


def test_r_version_key_orders_as_package_version() -> None:
    """Components compare as numbers, '-' is a separator like '.', longer is later."""
    assert r_version_key("1.10.0") > r_version_key("1.9.0")
    assert r_version_key("1.0-1") > r_version_key("1.0")
    assert r_version_key("1.0-1") == r_version_key("1.0.1")
    assert r_version_key("2.0") > r_version_key("1.99-99")
    versions = ["1.0-10", "1.0", "0.9.1", "1.0-2", "1.0.0"]
    assert sorted(versions, key=r_version_key) == ["0.9.1", "1.0", "1.0.0", "1.0-2", "1.0-10"]


@pytest.mark.parametrize("version", ["1", "1.0a", "", "1..0", "-1.0"])
def test_r_version_key_refuses_invalid_versions(version: str) -> None:
    """Only valid R package versions have a sort key."""
    with pytest.raises(ValueError, match="not a valid R package version"):
        r_version_key(version)


def test_index_fields_are_write_packages_fields() -> None:
    """INDEX_FIELDS is R's list of standard PACKAGES fields for source packages, in order."""
    result = subprocess.run(
        [
            "Rscript",
            "-e",
            'writeLines(tools:::.get_standard_repository_db_fields("source"))',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert tuple(result.stdout.split()) == INDEX_FIELDS


# parse_description


def test_parse_description_fields_in_order() -> None:
    """Every field is returned decoded in file order, with Package, Version and raw bytes."""
    description = parse_description(DESCRIPTION)
    assert description == Description(
        package="foo",
        version="1.0-1",
        fields={"Package": "foo", "Version": "1.0-1", "Title": "Foo", "License": "GPL-3"},
        raw=DESCRIPTION,
    )
    assert list(description.fields) == ["Package", "Version", "Title", "License"]


def test_parse_description_continuation_lines() -> None:
    """Continuation lines are joined with newlines: folded for most fields, kept as written
    for Description and the like; ' .' is an empty line; a value may start on the next line."""
    raw = (
        b"Package: foo\n"
        b"Version: 1.0\n"
        b"Title: A title  \n"
        b"   on two lines  \n"
        b"Depends:\n"
        b"    R (>= 4.0),\n"
        b"\tmethods\n"
        b"Description: First line.\n"
        b"    Second, indented.\n"
        b" .\n"
        b"  After an empty line.  \n"
        b"Authors@R: person('A', 'B',\n"
        b"    role = 'cre')\n"
    )
    fields = parse_description(raw).fields
    assert fields["Title"] == "A title\non two lines"
    assert fields["Depends"] == "R (>= 4.0),\nmethods"
    assert fields["Description"] == (
        "First line.\n    Second, indented.\n\n  After an empty line.  "
    )
    assert fields["Authors@R"] == "person('A', 'B',\n    role = 'cre')"


def test_parse_description_agrees_with_r(tmp_path: Path) -> None:
    """Fields read here equal what R's tools:::.read_description returns for the same file."""
    raw = (
        b"Package: foo\r\n"
        b"Version: 1.0\r\n"
        b"Title:   Spaced   \r\n"
        b"  out  \r\n"
        b"Description:  Text   \n"
        b"   kept  as\n"
        b"  . \n"
        b"  .x\n"
        b"\tend\t\n"
        b"Imports:\n"
        b"    a,\n"
        b"     .\n"
        b"    b\n"
        b"Encoding: UTF-8\n"
        b"Note: caf\xc3\xa9\n"
        b"\n"
    )
    (tmp_path / "DESCRIPTION").write_bytes(raw)
    script = (
        'x <- tools:::.read_description("DESCRIPTION"); '
        'for (n in names(x)) cat(n, "=", paste(utf8ToInt(enc2utf8(x[[n]])), collapse = ","), '
        '"\\n", sep = "")'
    )
    result = subprocess.run(
        ["Rscript", "-e", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    from_r = {}
    for line in result.stdout.splitlines():
        name, _, codes = line.partition("=")
        from_r[name] = "".join(chr(int(code)) for code in codes.split(",") if code)
    assert parse_description(raw).fields == from_r


def test_parse_description_crlf_line_endings() -> None:
    """Windows line endings are read like Unix ones."""
    raw = DESCRIPTION.replace(b"\n", b"\r\n")
    assert parse_description(raw).fields == parse_description(DESCRIPTION).fields


def test_parse_description_latin1() -> None:
    """With Encoding: latin1 the bytes are read as Latin-1, in names and values."""
    for declared in (b"latin1", b"latin-1", b"ISO-8859-1"):
        raw = DESCRIPTION + b"Author: Ren\xe9 Fran\xe7ois\nEncoding: " + declared + b"\n"
        assert parse_description(raw).fields["Author"] == "René François"


def test_parse_description_latin2() -> None:
    """Encoding: latin2 (the third encoding R extensions may use) is honoured."""
    raw = DESCRIPTION + b"Author: Pawe\xb3\nEncoding: latin2\n"
    assert parse_description(raw).fields["Author"] == "Paweł"


def test_parse_description_utf8() -> None:
    """UTF-8 is read as such, declared or not."""
    text = "Author: Zoë Ĳssel 李\n".encode()
    assert parse_description(DESCRIPTION + text + b"Encoding: UTF-8\n").fields["Author"] == (
        "Zoë Ĳssel 李"
    )
    assert parse_description(DESCRIPTION + text).fields["Author"] == "Zoë Ĳssel 李"


def test_parse_description_invalid_utf8_without_encoding() -> None:
    """Bytes that are not UTF-8, with no Encoding field, are refused with the fix to make."""
    with pytest.raises(BadUpload) as excinfo:
        parse_description(DESCRIPTION + b"Author: Ren\xe9\n")
    assert refusal(excinfo) == (
        "DESCRIPTION is not valid UTF-8 and has no Encoding field "
        "(add 'Encoding: latin1' if it is written in Latin-1)."
    )


def test_parse_description_invalid_for_declared_encoding() -> None:
    """Bytes that are not valid in the declared encoding are refused."""
    with pytest.raises(BadUpload, match="is not valid utf-8, as its Encoding field says"):
        parse_description(DESCRIPTION + b"Author: Ren\xe9\nEncoding: UTF-8\n")


def test_parse_description_unsupported_encoding() -> None:
    """Encodings other than UTF-8, latin1 and latin2 are refused."""
    with pytest.raises(BadUpload, match="has Encoding 'EBCDIC'; use UTF-8, latin1 or latin2"):
        parse_description(DESCRIPTION + b"Encoding: EBCDIC\n")


@pytest.mark.parametrize("field", ["Package", "Version"])
def test_parse_description_missing_required_field(field: str) -> None:
    """Package and Version are required (an empty value counts as missing)."""
    lines = [line for line in DESCRIPTION.split(b"\n") if not line.startswith(field.encode())]
    with pytest.raises(BadUpload) as excinfo:
        parse_description(b"\n".join(lines))
    assert refusal(excinfo) == f"DESCRIPTION has no {field} field."
    emptied = [
        f"{field}:".encode() if line.startswith(field.encode()) else line
        for line in DESCRIPTION.split(b"\n")
    ]
    with pytest.raises(BadUpload, match=f"has no {field} field"):
        parse_description(b"\n".join(emptied))


def test_parse_description_invalid_package_or_version() -> None:
    """Package and Version values must follow R's rules."""
    with pytest.raises(BadUpload, match="invalid Package field: 'foo bar'"):
        parse_description(DESCRIPTION.replace(b"Package: foo", b"Package: foo bar"))
    with pytest.raises(BadUpload, match="invalid Version field: '1'"):
        parse_description(DESCRIPTION.replace(b"Version: 1.0-1", b"Version: 1"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            b"Package: foo\nnot a field\n",
            "DESCRIPTION is not in DCF format: line 2 is not 'Field: value' ('not a field').",
        ),
        (
            b"Package: foo\nKey : value\n",
            "DESCRIPTION is not in DCF format: line 2 is not 'Field: value' ('Key : value').",
        ),
        (
            b"Package: foo\n: value\n",
            "DESCRIPTION is not in DCF format: line 2 is not 'Field: value' (': value').",
        ),
        (
            b"  Package: foo\n",
            "DESCRIPTION line 1 is a continuation line with no field before it.",
        ),
        (
            b"Package: foo\nVersion: 1.0\n\nTitle: x\n",
            "DESCRIPTION line 3 is blank: a DESCRIPTION is one record "
            "(write ' .' for an empty line inside a field).",
        ),
        (
            b"Package: foo\nDescription: a\n   \n  b\n",
            "DESCRIPTION line 3 is blank: a DESCRIPTION is one record "
            "(write ' .' for an empty line inside a field).",
        ),
        (
            b"Package: foo\nVersion: 1.0\nPackage: bar\n",
            "DESCRIPTION line 3 repeats the field 'Package'.",
        ),
        (b"Package: foo\nVersion: 1.0\nX: a\x00b\n", "DESCRIPTION contains a NUL byte."),
    ],
)
def test_parse_description_refuses_non_dcf(raw: bytes, message: str) -> None:
    """Malformed DCF is refused with the line at fault."""
    with pytest.raises(BadUpload) as excinfo:
        parse_description(raw)
    assert refusal(excinfo) == message


def test_parse_description_long_bad_line_is_quoted_short() -> None:
    """A huge malformed line is echoed only in part."""
    with pytest.raises(BadUpload) as excinfo:
        parse_description(b"Package: foo\n" + b"x" * 100_000 + b"\n")
    assert len(refusal(excinfo)) < 200


def test_parse_description_blank_lines_around_the_record() -> None:
    """Blank lines before and after the one record are fine."""
    assert parse_description(b"\n \n" + DESCRIPTION + b"\n\n\t\n").package == "foo"


def test_parse_description_names_its_source() -> None:
    """Refusals name the member they are about."""
    with pytest.raises(BadUpload, match=r"^foo/DESCRIPTION has no Package field"):
        parse_description(b"Version: 1.0\n", "foo/DESCRIPTION")


# inspect


def test_inspect_reads_description(tmp_path: Path) -> None:
    """A well-formed tarball yields its DESCRIPTION, raw bytes included."""
    path = make_tarball(tmp_path, package_members())
    description = inspect(path, parse_filename("foo_1.0-1.tar.gz"))
    assert (description.package, description.version) == ("foo", "1.0-1")
    assert description.raw == DESCRIPTION
    assert description.fields["License"] == "GPL-3"


def test_inspect_accepts_dot_slash_names_and_directories(tmp_path: Path) -> None:
    """Members named ./foo/... and directory entries are fine."""
    path = tmp_path / "foo_1.0-1.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name in ("./foo", "./foo/R"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for name, data in package_members().items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert inspect(path, parse_filename("foo_1.0-1.tar.gz")).package == "foo"


def test_inspect_without_description(tmp_path: Path) -> None:
    """A tarball without {package}/DESCRIPTION is refused, even with one elsewhere."""
    members = package_members()
    members["foo/inst/DESCRIPTION"] = members.pop("foo/DESCRIPTION")
    path = make_tarball(tmp_path, members)
    with pytest.raises(BadUpload) as excinfo:
        inspect(path, parse_filename("foo_1.0-1.tar.gz"))
    assert refusal(excinfo) == "Invalid package file: foo/DESCRIPTION not found"


def test_inspect_directory_named_otherwise(tmp_path: Path) -> None:
    """A package whose directory is not named after the filename's package is refused."""
    members = {name.replace("foo/", "bar/"): data for name, data in package_members().items()}
    path = make_tarball(tmp_path, members)
    with pytest.raises(BadUpload, match="foo/DESCRIPTION not found"):
        inspect(path, parse_filename("foo_1.0-1.tar.gz"))


def test_inspect_two_top_level_directories(tmp_path: Path) -> None:
    """Members outside the package directory are refused."""
    members = package_members()
    members["bar/DESCRIPTION"] = DESCRIPTION.replace(b"foo", b"bar")
    path = make_tarball(tmp_path, members)
    with pytest.raises(BadUpload) as excinfo:
        inspect(path, parse_filename("foo_1.0-1.tar.gz"))
    assert refusal(excinfo) == (
        "Invalid package file: archive member 'bar/DESCRIPTION' is outside the package "
        "directory 'foo/'"
    )


def test_inspect_file_at_top_level(tmp_path: Path) -> None:
    """A file beside the package directory is refused."""
    members = package_members()
    members["README"] = b"hi"
    with pytest.raises(BadUpload, match="'README' is outside the package directory"):
        inspect(make_tarball(tmp_path, members), parse_filename("foo_1.0-1.tar.gz"))


def test_inspect_two_descriptions(tmp_path: Path) -> None:
    """Two members that both name foo/DESCRIPTION are refused: readers keep different ones."""
    path = tmp_path / "foo_1.0-1.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in [
            *package_members().items(),
            ("./foo/DESCRIPTION", DESCRIPTION.replace(b"1.0-1", b"6.6.6")),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(BadUpload, match="more than one foo/DESCRIPTION"):
        inspect(path, parse_filename("foo_1.0-1.tar.gz"))


def test_inspect_package_disagrees_with_filename(tmp_path: Path) -> None:
    """A DESCRIPTION naming another package than the filename is refused."""
    path = make_tarball(tmp_path, package_members(DESCRIPTION.replace(b"foo", b"fooo")))
    with pytest.raises(BadUpload) as excinfo:
        inspect(path, parse_filename("foo_1.0-1.tar.gz"))
    assert refusal(excinfo) == (
        "Package 'fooo' in foo/DESCRIPTION does not match the filename 'foo_1.0-1.tar.gz'."
    )


def test_inspect_version_disagrees_with_filename(tmp_path: Path) -> None:
    """A DESCRIPTION with another version, even an equal one as R compares, is refused."""
    for version in (b"1.0-2", b"1.0.1"):
        path = make_tarball(tmp_path, package_members(DESCRIPTION.replace(b"1.0-1", version)))
        with pytest.raises(BadUpload) as excinfo:
            inspect(path, parse_filename("foo_1.0-1.tar.gz"))
        assert refusal(excinfo) == (
            f"Version '{version.decode()}' in foo/DESCRIPTION does not match the filename "
            "'foo_1.0-1.tar.gz'."
        )


def test_inspect_bad_description_names_the_member(tmp_path: Path) -> None:
    """A DESCRIPTION that is not DCF is refused naming foo/DESCRIPTION and the line."""
    path = make_tarball(tmp_path, package_members(DESCRIPTION + b"oops\n"))
    with pytest.raises(BadUpload, match=r"^foo/DESCRIPTION is not in DCF format: line 5"):
        inspect(path, parse_filename("foo_1.0-1.tar.gz"))


def test_inspect_description_too_large(tmp_path: Path) -> None:
    """A DESCRIPTION over the size cap is refused before it is read."""
    path = make_tarball(tmp_path, package_members(DESCRIPTION + b"X: " + b"x" * 2_000_000))
    with pytest.raises(BadUpload, match="'foo/DESCRIPTION' is larger than 1048576 bytes"):
        inspect(path, parse_filename("foo_1.0-1.tar.gz"))


def test_inspect_not_gzip(tmp_path: Path) -> None:
    """A file that is not gzip-compressed tar is refused."""
    path = tmp_path / "foo_1.0-1.tar.gz"
    path.write_bytes(b"PK\x03\x04 not a tarball" * 50)
    with pytest.raises(BadUpload) as excinfo:
        inspect(path, parse_filename("foo_1.0-1.tar.gz"))
    assert refusal(excinfo) == "Invalid package file: not a gzip-compressed tar archive"


def test_inspect_hostile_archive_is_refused(tmp_path: Path) -> None:
    """The archive checks of pm.archives apply: a '..' member is refused."""
    members = package_members()
    members["foo/../../evil"] = b"boom"
    with pytest.raises(BadUpload, match="refers to a parent directory"):
        inspect(make_tarball(tmp_path, members), parse_filename("foo_1.0-1.tar.gz"))


def test_inspect_accepts_what_r_cmd_build_makes(tmp_path: Path) -> None:
    """A package built by R CMD build (long paths use R's GNU tar extension) is accepted."""
    source = tmp_path / "hello"
    deep = source / "inst" / ("d" * 120)
    (source / "R").mkdir(parents=True)
    deep.mkdir(parents=True)
    (source / "DESCRIPTION").write_text(
        "Package: hello\n"
        "Version: 0.1-2\n"
        "Title: Say Hello\n"
        "Description: Says hello,\n"
        "    to Zoë.\n"
        'Authors@R: person("A", "B", email = "a@b.example",\n'
        '    role = c("aut", "cre"))\n'
        "License: GPL-3\n"
        "Encoding: UTF-8\n",
        encoding="utf-8",
    )
    (source / "NAMESPACE").write_text("export(hi)\n")
    (source / "R" / "hi.R").write_text('hi <- function() "hi"\n')
    (deep / "data.txt").write_text("x\n")
    subprocess.run(
        ["R", "CMD", "build", "--no-build-vignettes", "--no-manual", "hello"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    description = inspect(tmp_path / "hello_0.1-2.tar.gz", parse_filename("hello_0.1-2.tar.gz"))
    assert (description.package, description.version) == ("hello", "0.1-2")
    assert description.fields["Description"] == "Says hello,\n    to Zoë."
    # R CMD build adds these, in this order, after the fields it was given.
    assert list(description.fields)[-4:] == ["NeedsCompilation", "Packaged", "Author", "Maintainer"]
