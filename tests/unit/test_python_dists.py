"""Unit tests for pm.python.dists: filename parsing, form agreement and archive inspection.

Every archive is built here with zipfile/tarfile so each test states exactly
what the uploaded file contains.
"""

from __future__ import annotations

import io
import re
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from pm.errors import BadRequest, BadUpload
from pm.python import dists
from pm.python.dists import (
    CoreMetadata,
    DistFilename,
    check_form_agrees,
    inspect,
    inspect_sdist,
    inspect_wheel,
    is_valid_project_name,
    normalize_name,
    parse_filename,
)

WHEEL = "foo-1.0-py3-none-any.whl"
SDIST = "foo-1.0.tar.gz"
WHEEL_FILE = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def metadata(
    name: str = "foo",
    version: str = "1.0",
    *,
    headers: str = "",
    body: str = "",
    metadata_version: str = "2.1",
) -> bytes:
    text = f"Metadata-Version: {metadata_version}\nName: {name}\nVersion: {version}\n{headers}"
    if body:
        text += "\n" + body
    return text.encode("utf-8")


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def make_wheel(
    tmp_path: Path,
    filename: str = WHEEL,
    *,
    meta: bytes | None = None,
    dist_info: str = "foo-1.0.dist-info",
    extra: dict[str, bytes] | None = None,
) -> Path:
    members = {
        "foo/__init__.py": b"",
        f"{dist_info}/METADATA": metadata() if meta is None else meta,
        f"{dist_info}/WHEEL": WHEEL_FILE,
        f"{dist_info}/RECORD": b"",
    }
    members.update(extra or {})
    return write_zip(tmp_path / filename, members)


def add_tar_member(archive: tarfile.TarFile, name: str, data: bytes = b"") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def make_tar_sdist(
    tmp_path: Path,
    members: dict[str, bytes],
    filename: str = SDIST,
    *,
    links: dict[str, tuple[bytes, str]] | None = None,
) -> Path:
    path = tmp_path / filename
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            add_tar_member(archive, name, data)
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            archive.addfile(info)
    return path


def default_sdist_members(meta: bytes | None = None) -> dict[str, bytes]:
    return {
        "foo-1.0/PKG-INFO": metadata() if meta is None else meta,
        "foo-1.0/pyproject.toml": b"[project]\nname = 'foo'\n",
        "foo-1.0/foo/__init__.py": b"",
    }


def refusal(excinfo: pytest.ExceptionInfo[BadUpload]) -> str:
    return excinfo.value.message


# normalize_name / is_valid_project_name


@pytest.mark.parametrize(
    "name",
    [
        "friendly-bar",
        "Friendly-Bar",
        "friendly.bar",
        "friendly_bar",
        "FRIENDLY-BAR",
        "friendly--bar",
        "FrIeNdLy-._.-bAr",
    ],
)
def test_normalize_name_pep503_examples(name: str) -> None:
    """All of PEP 503's spellings of one project normalize to the same name."""
    assert normalize_name(name) == "friendly-bar"


def test_normalize_name_keeps_digits_and_single_separators() -> None:
    """Normalization lowercases and collapses runs of separators, nothing else."""
    assert normalize_name("Zope.Interface") == "zope-interface"
    assert normalize_name("py3_utils-2") == "py3-utils-2"


@pytest.mark.parametrize("name", ["a", "A1", "foo.bar", "foo_bar-baz", "Django", "x9"])
def test_is_valid_project_name_accepts(name: str) -> None:
    """Names of ASCII letters, digits and . _ - that start and end alphanumeric are valid."""
    assert is_valid_project_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "-foo", "foo-", ".foo", "foo_", "foo bar", "föo", "foo\n", "foo/bar", "\u212a"],
)
def test_is_valid_project_name_refuses(name: str) -> None:
    """Leading/trailing separators, spaces, non-ASCII (even case-folding to ASCII) and
    a trailing newline are all invalid."""
    assert not is_valid_project_name(name)


# parse_filename


def test_parse_sdist_filename() -> None:
    """A .tar.gz sdist gives the normalized project, the version and python 'source'."""
    assert parse_filename("Foo_Bar-1.0.tar.gz") == DistFilename(
        filename="Foo_Bar-1.0.tar.gz",
        project="foo-bar",
        version="1.0",
        filetype="sdist",
        python_version="source",
    )


def test_parse_zip_sdist_filename() -> None:
    """The legacy .zip sdist extension is accepted as an sdist."""
    dist = parse_filename("foo-2.0.zip")
    assert (dist.project, dist.version, dist.filetype) == ("foo", "2.0", "sdist")


def test_parse_sdist_filename_with_dashed_name() -> None:
    """A pre-PEP 625 sdist with '-' in the name splits on the last dash."""
    dist = parse_filename("foo-bar-1.0.tar.gz")
    assert (dist.project, dist.version) == ("foo-bar", "1.0")


def test_parse_wheel_filename() -> None:
    """A wheel gives the normalized project, the version and its python tag."""
    assert parse_filename("Foo_Bar-1.0-py3-none-any.whl") == DistFilename(
        filename="Foo_Bar-1.0-py3-none-any.whl",
        project="foo-bar",
        version="1.0",
        filetype="bdist_wheel",
        python_version="py3",
    )


def test_parse_wheel_filename_with_build_tag() -> None:
    """A build tag is accepted and does not shift the python tag."""
    dist = parse_filename("foo-1.0-1a-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert (dist.version, dist.python_version) == ("1.0", "cp311")


def test_parse_wheel_filename_with_local_version() -> None:
    """A local version label such as +cpu is kept in the version."""
    dist = parse_filename("torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl")
    assert (dist.project, dist.version, dist.python_version) == ("torch", "2.13.0+cpu", "cp311")


def test_parse_wheel_filename_with_compressed_tag_set() -> None:
    """A compressed python tag set is reported as written."""
    assert parse_filename("foo-1.0-py2.py3-none-any.whl").python_version == "py2.py3"


def test_parse_filename_canonicalizes_version_spelling() -> None:
    """The version is packaging's canonical string of the filename's version."""
    assert parse_filename("foo-1.0RC1.tar.gz").version == "1.0rc1"
    assert parse_filename("foo-1.0.0-py3-none-any.whl").version == "1.0.0"


@pytest.mark.parametrize(
    ("filename", "fragment"),
    [
        ("foo/bar-1.0.tar.gz", "'/' or '\\'"),
        ("foo\\bar-1.0.tar.gz", "'/' or '\\'"),
        ("../foo-1.0.tar.gz", "'/' or '\\'"),
        ("foo..bar-1.0.tar.gz", "'..'"),
        ("foo-1.0..tar.gz", "'..'"),
        ("foo\x00-1.0.tar.gz", "non-printable"),
        ("foo\x1f-1.0.tar.gz", "non-printable"),
        ("foo\x7f-1.0.tar.gz", "DEL character"),
        ("foo-1.0.tar.gz\n", "non-printable"),
        ("foo\t-1.0-py3-none-any.whl", "non-printable"),
        (".foo-1.0.tar.gz", "starts with '.'"),
        ("föo-1.0.tar.gz", "non-ASCII"),
        ("foo-1.0.tar.bz2", "Invalid file extension"),
        ("foo-1.0.tgz", "Invalid file extension"),
        ("foo-1.0.egg", "Invalid file extension"),
        ("foo-1.0.exe", "Invalid file extension"),
        ("foo-1.0.WHL", "Invalid file extension"),
        ("foo-1.0.TAR.GZ", "Invalid file extension"),
        ("foo-1.0", "Invalid file extension"),
    ],
)
def test_parse_filename_refuses_unsafe_or_unknown(filename: str, fragment: str) -> None:
    """Path separators, '..', control characters, a leading dot, non-ASCII and unknown
    extensions are refused with a message that quotes the filename."""
    with pytest.raises(BadUpload) as excinfo:
        parse_filename(filename)
    assert fragment in refusal(excinfo)
    assert repr(filename) in refusal(excinfo)


def test_parse_filename_refuses_empty() -> None:
    """An empty filename is refused."""
    with pytest.raises(BadUpload, match="empty name"):
        parse_filename("")


def test_parse_filename_refuses_too_long_with_short_message() -> None:
    """A name over 255 characters is refused, and the message does not echo all of it."""
    filename = "a" * 250 + "-1.0.tar.gz"
    with pytest.raises(BadUpload) as excinfo:
        parse_filename(filename)
    assert "too long" in refusal(excinfo)
    assert len(refusal(excinfo)) < 200


def test_parse_filename_accepts_exactly_255_characters() -> None:
    """The length limit is inclusive: 255 characters are fine."""
    filename = "a" * (255 - len("-1.0.tar.gz")) + "-1.0.tar.gz"
    assert parse_filename(filename).version == "1.0"


@pytest.mark.parametrize(
    "filename",
    [
        "foo-1.0-py3-none.whl",
        "foo-1.0-1-2-py3-none-any.whl",
        "foo-py3-none-any.whl",
        "foo-notaversion-py3-none-any.whl",
        "foo-1.0-x1-py3-none-any.whl",
        "foo-1.0-py3-none-.whl",
        "foo-1.0-py3.-none-any.whl",
        "foo-1.0-py3-none-any+x.whl",
        "foo-1.0-py3-none-any!.whl",
        "_foo-1.0-py3-none-any.whl",
        "foo_-1.0-py3-none-any.whl",
        "foo__bar-1.0-py3-none-any.whl",
        "-1.0-py3-none-any.whl",
    ],
)
def test_parse_filename_refuses_malformed_wheels(filename: str) -> None:
    """Wheels with the wrong number of parts, a bad version, build tag, tag or project
    name are refused."""
    with pytest.raises(BadUpload):
        parse_filename(filename)


@pytest.mark.parametrize(
    "filename",
    ["foo.tar.gz", "foo-bar.tar.gz", "foo-1.0.0.0a.b.zip", "-1.0.tar.gz", "foo_-1.0.tar.gz"],
)
def test_parse_filename_refuses_malformed_sdists(filename: str) -> None:
    """Sdists without a name-version dash, with an invalid version or project name are
    refused as invalid source distribution filenames."""
    with pytest.raises(BadUpload, match="Invalid source distribution filename"):
        parse_filename(filename)


def test_bad_upload_is_a_bad_request() -> None:
    """Refusals are BadRequest, so the web layer answers 400."""
    with pytest.raises(BadRequest):
        parse_filename("foo-1.0.egg")


# check_form_agrees


def test_form_agrees_with_wheel() -> None:
    """Matching name (any spelling), version, filetype and python tag pass."""
    dist = parse_filename("Foo_Bar-1.0-py3-none-any.whl")
    check_form_agrees(
        dist, name="foo.bar", version="1.0.0", filetype="bdist_wheel", pyversion="py3"
    )


def test_form_agrees_with_sdist_and_missing_pyversion() -> None:
    """An sdist passes with pyversion 'source', None or empty."""
    dist = parse_filename(SDIST)
    for pyversion in ("source", None, ""):
        check_form_agrees(dist, name="foo", version="1.0", filetype="sdist", pyversion=pyversion)


def test_form_name_disagrees() -> None:
    """A form name for another project is refused with Warehouse's 'Start filename' message."""
    dist = parse_filename(SDIST)
    with pytest.raises(BadUpload) as excinfo:
        check_form_agrees(dist, name="Bar-Baz", version="1.0", filetype="sdist", pyversion=None)
    assert refusal(excinfo).startswith("Start filename for 'Bar-Baz' with 'bar_baz'")
    assert repr(SDIST) in refusal(excinfo)


def test_form_name_invalid() -> None:
    """A form name that is not a valid project name is refused as such."""
    dist = parse_filename(SDIST)
    with pytest.raises(BadUpload, match="invalid value for Name"):
        check_form_agrees(dist, name="foo!", version="1.0", filetype="sdist", pyversion=None)


def test_form_version_disagrees() -> None:
    """A different version is refused with Warehouse's message, form version first."""
    dist = parse_filename(SDIST)
    with pytest.raises(BadUpload) as excinfo:
        check_form_agrees(dist, name="foo", version="2.0", filetype="sdist", pyversion=None)
    assert refusal(excinfo) == "Version in filename should be '2.0' not '1.0'."


def test_form_version_compares_as_pep440() -> None:
    """Versions equal under PEP 440 (1.0 vs 1.0.0, local labels kept) agree."""
    dist = parse_filename("torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl")
    check_form_agrees(
        dist, name="torch", version="2.13+cpu", filetype="bdist_wheel", pyversion="cp311"
    )
    with pytest.raises(BadUpload, match=re.escape("should be '2.13.0' not '2.13.0+cpu'")):
        check_form_agrees(
            dist, name="torch", version="2.13.0", filetype="bdist_wheel", pyversion="cp311"
        )


def test_form_version_invalid() -> None:
    """A form version that is not PEP 440 is refused as an invalid value."""
    dist = parse_filename(SDIST)
    with pytest.raises(BadUpload, match="'one point oh' is an invalid value for Version"):
        check_form_agrees(
            dist, name="foo", version="one point oh", filetype="sdist", pyversion=None
        )


def test_form_filetype_disagrees() -> None:
    """A wheel filetype for a .tar.gz (and the reverse) is refused as a bad extension."""
    with pytest.raises(
        BadUpload, match=re.escape("Extension .tar.gz is invalid for filetype bdist_wheel")
    ):
        check_form_agrees(
            parse_filename(SDIST),
            name="foo",
            version="1.0",
            filetype="bdist_wheel",
            pyversion="py3",
        )
    with pytest.raises(BadUpload, match=re.escape("Extension .whl is invalid for filetype sdist")):
        check_form_agrees(
            parse_filename(WHEEL), name="foo", version="1.0", filetype="sdist", pyversion=None
        )


def test_form_filetype_unknown() -> None:
    """A filetype Warehouse does not know is refused as unknown."""
    with pytest.raises(BadUpload, match="Unknown type of file"):
        check_form_agrees(
            parse_filename(SDIST), name="foo", version="1.0", filetype="bdist_foo", pyversion=None
        )


def test_form_pyversion_disagrees_for_wheel() -> None:
    """A wheel's pyversion must be the filename's python tag."""
    dist = parse_filename("foo-1.0-cp311-cp311-linux_x86_64.whl")
    with pytest.raises(BadUpload, match="'cp312' does not match the python tag 'cp311'"):
        check_form_agrees(
            dist, name="foo", version="1.0", filetype="bdist_wheel", pyversion="cp312"
        )


def test_form_pyversion_compressed_set_order_ignored() -> None:
    """A compressed tag set agrees whatever order the client lists it in."""
    dist = parse_filename("foo-1.0-py2.py3-none-any.whl")
    check_form_agrees(dist, name="foo", version="1.0", filetype="bdist_wheel", pyversion="py3.py2")


def test_form_pyversion_missing_for_wheel_is_accepted() -> None:
    """A wheel upload without pyversion is accepted (not every client sends one)."""
    check_form_agrees(
        parse_filename(WHEEL), name="foo", version="1.0", filetype="bdist_wheel", pyversion=None
    )


def test_form_pyversion_must_be_source_for_sdist() -> None:
    """An sdist with a pyversion other than 'source' is refused like Warehouse does."""
    with pytest.raises(BadUpload, match=re.escape("Use 'source' as Python version for an sdist.")):
        check_form_agrees(
            parse_filename(SDIST), name="foo", version="1.0", filetype="sdist", pyversion="py3"
        )


def test_form_ambiguous_sdist_version_with_dash() -> None:
    """An old sdist whose version holds a dash is refused with the name to rename it to."""
    dist = parse_filename("foo-1.0-1.tar.gz")
    with pytest.raises(BadUpload) as excinfo:
        check_form_agrees(dist, name="foo", version="1.0-1", filetype="sdist", pyversion=None)
    assert "ambiguous" in refusal(excinfo)
    assert "'foo-1.0.post1.tar.gz'" in refusal(excinfo)


# inspect_wheel


def test_inspect_wheel_returns_metadata(tmp_path: Path) -> None:
    """A well-formed wheel yields its METADATA fields and exact bytes."""
    meta = metadata(
        "Foo",
        "1.0",
        headers="Summary: A foo\nRequires-Python: >=3.9\nRequires-Dist: bar>=1\n",
    )
    path = make_wheel(tmp_path, meta=meta)
    assert inspect_wheel(path, parse_filename(WHEEL)) == CoreMetadata(
        raw=meta, name="Foo", version="1.0", requires_python=">=3.9", summary="A foo",
        details={"Requires-Dist": ["bar>=1"]},
    )


def test_inspect_wheel_optional_fields_absent(tmp_path: Path) -> None:
    """Requires-Python and Summary are None when the metadata lacks them."""
    result = inspect_wheel(make_wheel(tmp_path), parse_filename(WHEEL))
    assert (result.requires_python, result.summary) == (None, None)


def test_inspect_wheel_preserves_raw_bytes_exactly(tmp_path: Path) -> None:
    """The METADATA bytes are returned untouched: CRLF, trailing spaces, UTF-8 and all."""
    meta = (
        "Metadata-Version: 2.1\r\nName: foo\r\nVersion: 1.0  \r\n"
        "Summary: caf\u00e9 \u2615\r\n\r\nBody \u00e9\r\n\r\n\r\n"
    ).encode()
    result = inspect_wheel(make_wheel(tmp_path, meta=meta), parse_filename(WHEEL))
    assert result.raw == meta
    assert result.version == "1.0"
    assert result.summary == "caf\u00e9 \u2615"


def test_inspect_wheel_latin1_metadata(tmp_path: Path) -> None:
    """Metadata that is not UTF-8 still parses; its header text is read as latin-1."""
    meta = b"Metadata-Version: 1.0\nName: foo\nVersion: 1.0\nSummary: caf\xe9\n"
    result = inspect_wheel(make_wheel(tmp_path, meta=meta), parse_filename(WHEEL))
    assert result.summary == "caf\u00e9"


def test_inspect_wheel_multiline_description_body(tmp_path: Path) -> None:
    """Metadata 2.x with a multi-line Description body parses; header-like body lines
    do not count as headers."""
    body = "# Foo\n\nSome text.\nName: not-foo\nVersion: 9.9\n\n    indented: code\n"
    meta = metadata(
        headers="Summary: Foo\nDescription-Content-Type: text/markdown\n",
        body=body,
        metadata_version="2.3",
    )
    result = inspect_wheel(make_wheel(tmp_path, meta=meta), parse_filename(WHEEL))
    assert (result.name, result.version, result.summary) == ("foo", "1.0", "Foo")


def test_inspect_wheel_folded_description_header(tmp_path: Path) -> None:
    """An old-style folded Description header and folded Summary parse."""
    meta = metadata(
        headers="Summary: A long\n  summary\nDescription: line one\n        |line two\n"
        "        |Name: inside\nRequires-Python: >=3.8\n"
    )
    result = inspect_wheel(make_wheel(tmp_path, meta=meta), parse_filename(WHEEL))
    assert (result.summary, result.requires_python) == ("A long summary", ">=3.8")


def test_inspect_wheel_not_a_zip(tmp_path: Path) -> None:
    """A .whl that is not a zip archive is refused."""
    path = tmp_path / WHEEL
    path.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(BadUpload, match="Invalid distribution file: not a zip archive"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_with_corrupt_header_offsets(tmp_path: Path) -> None:
    """A central directory whose offsets point before the file start (zipfile then seeks
    to a negative offset, an OSError) is refused as corrupt, not a server error."""
    data = bytearray(make_wheel(tmp_path).read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    # Offset 16 of the end-of-central-directory record: where the directory starts.
    start = int.from_bytes(data[eocd + 16:eocd + 20], "little")
    data[eocd + 16:eocd + 20] = (start + 1_000_000).to_bytes(4, "little")
    path = tmp_path / "corrupt" / WHEEL
    path.parent.mkdir()
    path.write_bytes(bytes(data))
    with pytest.raises(BadUpload, match="Invalid distribution file"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_truncated_zip(tmp_path: Path) -> None:
    """A zip cut short (no central directory) is refused as not a zip archive."""
    whole = make_wheel(tmp_path).read_bytes()
    path = tmp_path / "cut" / WHEEL
    path.parent.mkdir()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadUpload, match="not a zip archive"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_without_metadata(tmp_path: Path) -> None:
    """A wheel whose .dist-info lacks METADATA is refused with Warehouse's message."""
    path = write_zip(
        tmp_path / WHEEL, {"foo/__init__.py": b"", "foo-1.0.dist-info/WHEEL": WHEEL_FILE}
    )
    with pytest.raises(BadUpload) as excinfo:
        inspect_wheel(path, parse_filename(WHEEL))
    assert refusal(excinfo) == (
        f"Wheel '{WHEEL}' does not contain the required METADATA file: foo-1.0.dist-info/METADATA"
    )


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("WHEEL", "Invalid distribution file: WHEEL not found at foo-1.0.dist-info/WHEEL"),
        (
            "RECORD",
            f"Wheel '{WHEEL}' does not contain the required RECORD file: foo-1.0.dist-info/RECORD",
        ),
    ],
)
def test_inspect_wheel_without_wheel_or_record(tmp_path: Path, missing: str, message: str) -> None:
    """A wheel lacking .dist-info/WHEEL or RECORD is refused, as installers would."""
    members = {
        "foo-1.0.dist-info/METADATA": metadata(),
        "foo-1.0.dist-info/WHEEL": WHEEL_FILE,
        "foo-1.0.dist-info/RECORD": b"",
    }
    del members[f"foo-1.0.dist-info/{missing}"]
    path = write_zip(tmp_path / WHEEL, members)
    with pytest.raises(BadUpload) as excinfo:
        inspect_wheel(path, parse_filename(WHEEL))
    assert refusal(excinfo) == message


def test_inspect_wheel_without_dist_info(tmp_path: Path) -> None:
    """A wheel with no .dist-info directory at all is refused as missing METADATA."""
    path = write_zip(tmp_path / WHEEL, {"foo/__init__.py": b""})
    with pytest.raises(BadUpload, match="does not contain the required METADATA file"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_metadata_not_top_level(tmp_path: Path) -> None:
    """A METADATA nested below the top level does not count."""
    path = write_zip(tmp_path / WHEEL, {"foo/foo-1.0.dist-info/METADATA": metadata()})
    with pytest.raises(BadUpload, match="does not contain the required METADATA file"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_dist_info_of_other_project(tmp_path: Path) -> None:
    """A .dist-info named for another project or version is refused, naming what was found."""
    for dist_info in ("bar-1.0.dist-info", "foo-2.0.dist-info", "foo.dist-info"):
        path = make_wheel(tmp_path, dist_info=dist_info)
        with pytest.raises(BadUpload) as excinfo:
            inspect_wheel(path, parse_filename(WHEEL))
        assert f"(found {dist_info}/METADATA)" in refusal(excinfo)


@pytest.mark.parametrize(
    ("filename", "dist_info", "name", "version"),
    [
        ("foo_bar-1.0-py3-none-any.whl", "Foo_Bar-1.0.dist-info", "Foo-Bar", "1.0"),
        ("foo_bar-1.0-py3-none-any.whl", "foo.bar-1.0.dist-info", "foo.bar", "1.0"),
        (
            "typed_d3dshot-1.0.0-py3-none-any.whl",
            "typed_D3DShot-1.0.0.dist-info",
            "typed-D3DShot",
            "1.0.0",
        ),
        ("foo-1.0rc1-py3-none-any.whl", "foo-1.0.0rc1.dist-info", "foo", "1.0.0rc1"),
        (
            "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl",
            "torch-2.13.0+cpu.dist-info",
            "torch",
            "2.13.0+cpu",
        ),
    ],
)
def test_inspect_wheel_accepts_backend_dist_info_spellings(
    tmp_path: Path, filename: str, dist_info: str, name: str, version: str
) -> None:
    """.dist-info names that real backends write (other escaping or case, unnormalized
    version, local labels) are found."""
    meta = metadata(name, version)
    path = make_wheel(tmp_path, filename, meta=meta, dist_info=dist_info)
    result = inspect_wheel(path, parse_filename(filename))
    assert (result.raw, result.name, result.version) == (meta, name, version)


def test_inspect_wheel_two_dist_info_directories(tmp_path: Path) -> None:
    """A wheel with two .dist-info directories is refused, as pip would."""
    path = make_wheel(tmp_path, extra={"bar-2.0.dist-info/METADATA": metadata("bar", "2.0")})
    with pytest.raises(BadUpload, match=re.escape("more than one .dist-info directory")):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_metadata_wrong_name(tmp_path: Path) -> None:
    """METADATA naming another project is refused."""
    path = make_wheel(tmp_path, meta=metadata("bar"))
    with pytest.raises(
        BadUpload, match=re.escape("Name 'bar' in foo-1.0.dist-info/METADATA does not match")
    ):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_metadata_wrong_version(tmp_path: Path) -> None:
    """METADATA with another version is refused with Warehouse's version message."""
    path = make_wheel(tmp_path, meta=metadata(version="1.1"))
    with pytest.raises(BadUpload) as excinfo:
        inspect_wheel(path, parse_filename(WHEEL))
    assert refusal(excinfo) == "Version in filename should be '1.1' not '1.0'."


def test_inspect_wheel_metadata_invalid_version(tmp_path: Path) -> None:
    """METADATA whose Version is not PEP 440 is refused."""
    path = make_wheel(tmp_path, meta=metadata(version="1.0 beta"))
    with pytest.raises(BadUpload, match="invalid value for Version"):
        inspect_wheel(path, parse_filename(WHEEL))


@pytest.mark.parametrize(
    ("meta", "fragment"),
    [
        (b"Metadata-Version: 2.1\nVersion: 1.0\n", "has no Name field"),
        (b"Metadata-Version: 2.1\nName: foo\n", "has no Version field"),
        (b"Metadata-Version: 2.1\nName: \nVersion: 1.0\n", "has no Name field"),
        (b"Metadata-Version: 2.1\nName: foo\nName: foo\nVersion: 1.0\n", "more than one Name"),
        (
            b"Metadata-Version: 2.1\nName: foo\nVersion: 1.0\nVersion: 1.0\n",
            "more than one Version",
        ),
        (b"", "has no Name field"),
        (b"\x00\xff\xfe garbage", "has no Name field"),
    ],
)
def test_inspect_wheel_metadata_missing_or_repeated_fields(
    tmp_path: Path, meta: bytes, fragment: str
) -> None:
    """Name and Version are required, and exactly once."""
    path = make_wheel(tmp_path, meta=meta)
    with pytest.raises(BadUpload, match=fragment):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_invalid_requires_python(tmp_path: Path) -> None:
    """A Requires-Python that is not a valid specifier set is refused."""
    path = make_wheel(tmp_path, meta=metadata(headers="Requires-Python: >=3.6.*\n"))
    with pytest.raises(
        BadUpload, match=re.escape("'>=3.6.*' is an invalid value for Requires-Python")
    ):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_metadata_size_cap(tmp_path: Path) -> None:
    """A METADATA larger than the cap is refused (it compresses to almost nothing)."""
    meta = metadata(headers="Summary: x\n", body="a" * dists.MAX_METADATA_SIZE)
    path = make_wheel(tmp_path, meta=meta)
    assert path.stat().st_size < 100_000
    with pytest.raises(BadUpload, match="larger than"):
        inspect_wheel(path, parse_filename(WHEEL))


@pytest.mark.parametrize(
    "member",
    [
        "/etc/passwd",
        "../evil.py",
        "foo/../../evil.py",
        "foo/..",
        "C:/evil.py",
        "..\\evil.py",
        "\\evil",
    ],
)
def test_inspect_wheel_refuses_hostile_member_paths(tmp_path: Path, member: str) -> None:
    """Members with absolute paths or '..' components make the wheel invalid."""
    path = make_wheel(tmp_path, extra={member: b"boom"})
    with pytest.raises(BadUpload, match="Invalid distribution file: archive member"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_refuses_duplicate_members(tmp_path: Path) -> None:
    """Two members with one name (a parser-differential trick) are refused."""
    path = tmp_path / WHEEL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("foo-1.0.dist-info/METADATA", metadata())
            archive.writestr("foo-1.0.dist-info/METADATA", metadata(version="6.6.6"))
    with pytest.raises(BadUpload, match="appears more than once"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_refuses_unsupported_compression(tmp_path: Path) -> None:
    """Only stored and deflated members are allowed, as on PyPI."""
    path = tmp_path / WHEEL
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("foo-1.0.dist-info/METADATA", metadata())
    with pytest.raises(BadUpload, match="supported compression type"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_refuses_encrypted_members(tmp_path: Path) -> None:
    """A member flagged as encrypted is refused."""
    path = tmp_path / WHEEL
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("foo-1.0.dist-info/METADATA", metadata())
    # zipfile cannot write encrypted members, so set the "encrypted" flag bit
    # by hand in the local header (offset 6) and central directory (offset 8).
    data = bytearray(path.read_bytes())
    data[data.index(b"PK\x03\x04") + 6] |= 0x1
    data[data.index(b"PK\x01\x02") + 8] |= 0x1
    path.write_bytes(bytes(data))
    with pytest.raises(BadUpload, match="is encrypted"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_refuses_zip_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive that unpacks far beyond its size is refused by the ratio rule."""
    monkeypatch.setattr(dists, "COMPRESSION_RATIO_MIN_SIZE", 1024 * 1024)
    path = make_wheel(tmp_path, extra={"foo/zeros.bin": bytes(2 * 1024 * 1024)})
    with pytest.raises(BadUpload, match="exceeds compression ratio of 50"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_corrupt_metadata_member(tmp_path: Path) -> None:
    """A METADATA whose stored bytes fail their CRC is refused, not crashed on."""
    meta = metadata(headers="Summary: checksum me\n")
    path = tmp_path / WHEEL
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("foo-1.0.dist-info/METADATA", meta)
        archive.writestr("foo-1.0.dist-info/WHEEL", WHEEL_FILE)
        archive.writestr("foo-1.0.dist-info/RECORD", b"")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"checksum me", b"checksum ME"))
    with pytest.raises(BadUpload, match="is corrupt"):
        inspect_wheel(path, parse_filename(WHEEL))


def test_inspect_wheel_rejects_sdist_dist() -> None:
    """Calling inspect_wheel with an sdist's DistFilename is a programming error."""
    with pytest.raises(ValueError, match="not a wheel"):
        inspect_wheel("unused", parse_filename(SDIST))


def test_inspect_missing_file_is_not_a_bad_upload(tmp_path: Path) -> None:
    """A missing path is the server's fault: it raises OSError, not BadUpload."""
    with pytest.raises(OSError):
        inspect(tmp_path / WHEEL, parse_filename(WHEEL))
    with pytest.raises(OSError):
        inspect(tmp_path / SDIST, parse_filename(SDIST))


# inspect_sdist


def test_inspect_tar_sdist_returns_pkg_info(tmp_path: Path) -> None:
    """A .tar.gz sdist yields its top-level PKG-INFO, ignoring the egg-info copy."""
    meta = metadata("Foo", "1.0", headers="Summary: The real one\nRequires-Python: >=3.10\n")
    members = default_sdist_members(meta)
    members["foo-1.0/foo.egg-info/PKG-INFO"] = metadata("foo", "1.0", headers="Summary: egg\n")
    path = make_tar_sdist(tmp_path, members)
    assert inspect_sdist(path, parse_filename(SDIST)) == CoreMetadata(
        raw=meta, name="Foo", version="1.0", requires_python=">=3.10", summary="The real one"
    )


def test_inspect_tar_sdist_with_directory_entries_and_dot_prefix(tmp_path: Path) -> None:
    """Directory entries and a './' prefix on member names are handled."""
    path = tmp_path / SDIST
    with tarfile.open(path, "w:gz") as archive:
        directory = tarfile.TarInfo("./foo-1.0")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        add_tar_member(archive, "./foo-1.0/PKG-INFO", metadata())
        add_tar_member(archive, "./foo-1.0/setup.py", b"")
    assert inspect_sdist(path, parse_filename(SDIST)).name == "foo"


def test_inspect_zip_sdist_returns_pkg_info(tmp_path: Path) -> None:
    """A legacy .zip sdist yields its top-level PKG-INFO."""
    meta = metadata(version="2.0", headers="Summary: zipped\n")
    path = write_zip(
        tmp_path / "foo-2.0.zip",
        {"foo-2.0/": b"", "foo-2.0/PKG-INFO": meta, "foo-2.0/setup.py": b""},
    )
    result = inspect_sdist(path, parse_filename("foo-2.0.zip"))
    assert (result.raw, result.version, result.summary) == (meta, "2.0", "zipped")


def test_inspect_tar_sdist_preserves_raw_bytes(tmp_path: Path) -> None:
    """PKG-INFO bytes are returned exactly as stored."""
    meta = b"Metadata-Version: 1.1\r\nName: foo\r\nVersion: 1.0\r\nSummary: \xc3\xa9t\xc3\xa9 \r\n"
    path = make_tar_sdist(tmp_path, default_sdist_members(meta))
    result = inspect_sdist(path, parse_filename(SDIST))
    assert result.raw == meta
    assert result.summary == "\u00e9t\u00e9"


def test_inspect_sdist_not_gzip(tmp_path: Path) -> None:
    """An uncompressed tar, or junk, named .tar.gz is refused."""
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as archive:
        add_tar_member(archive, "foo-1.0/PKG-INFO", metadata())
    for content in (plain.read_bytes(), b"junk" * 100, b""):
        path = tmp_path / SDIST
        path.write_bytes(content)
        with pytest.raises(
            BadUpload, match="Invalid distribution file: not a gzip-compressed tar archive"
        ):
            inspect_sdist(path, parse_filename(SDIST))


def test_inspect_sdist_truncated_gzip(tmp_path: Path) -> None:
    """A .tar.gz cut short mid-stream is refused as invalid, not crashed on."""
    members = default_sdist_members()
    members["foo-1.0/data.bin"] = bytes(range(256)) * 2000
    whole = make_tar_sdist(tmp_path, members).read_bytes()
    path = tmp_path / "cut" / SDIST
    path.parent.mkdir()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadUpload, match="Invalid distribution file"):
        inspect_sdist(path, parse_filename(SDIST))


def test_inspect_zip_sdist_not_a_zip(tmp_path: Path) -> None:
    """A .zip sdist that is not a zip archive is refused."""
    path = tmp_path / "foo-1.0.zip"
    path.write_bytes(b"\x1f\x8b not really")
    with pytest.raises(BadUpload, match="not a zip archive"):
        inspect_sdist(path, parse_filename("foo-1.0.zip"))


def test_inspect_sdist_without_pkg_info(tmp_path: Path) -> None:
    """An sdist without a top-level PKG-INFO is refused, for both archive kinds."""
    members = {"foo-1.0/setup.py": b"", "foo-1.0/foo.egg-info/PKG-INFO": metadata()}
    path = make_tar_sdist(tmp_path, members)
    with pytest.raises(BadUpload) as excinfo:
        inspect_sdist(path, parse_filename(SDIST))
    assert refusal(excinfo) == "Invalid distribution file: PKG-INFO not found at foo-1.0/PKG-INFO"
    zipped = write_zip(tmp_path / "foo-1.0.zip", members)
    with pytest.raises(BadUpload, match=re.escape("PKG-INFO not found at foo-1.0/PKG-INFO")):
        inspect_sdist(zipped, parse_filename("foo-1.0.zip"))


def test_inspect_sdist_pkg_info_at_archive_root(tmp_path: Path) -> None:
    """Files at the archive root (no top-level directory) are refused."""
    path = make_tar_sdist(tmp_path, {"PKG-INFO": metadata(), "setup.py": b""})
    with pytest.raises(BadUpload, match="Incorrect number of top-level directories"):
        inspect_sdist(path, parse_filename(SDIST))


def test_inspect_sdist_two_top_level_directories(tmp_path: Path) -> None:
    """An sdist spread over two top-level directories is refused."""
    members = default_sdist_members()
    members["bar-1.0/PKG-INFO"] = metadata("bar")
    path = make_tar_sdist(tmp_path, members)
    with pytest.raises(BadUpload, match="Incorrect number of top-level directories"):
        inspect_sdist(path, parse_filename(SDIST))


def test_inspect_sdist_pkg_info_wrong_name_or_version(tmp_path: Path) -> None:
    """PKG-INFO that disagrees with the filename's name or version is refused."""
    path = make_tar_sdist(tmp_path, default_sdist_members(metadata("bar")))
    with pytest.raises(BadUpload, match="Name 'bar' in PKG-INFO does not match"):
        inspect_sdist(path, parse_filename(SDIST))
    path = make_tar_sdist(tmp_path, default_sdist_members(metadata(version="1.0.post1")))
    with pytest.raises(BadUpload, match=re.escape("should be '1.0.post1' not '1.0'")):
        inspect_sdist(path, parse_filename(SDIST))


@pytest.mark.parametrize("member", ["/etc/evil", "../evil", "foo-1.0/../../evil"])
def test_inspect_tar_sdist_refuses_hostile_paths(tmp_path: Path, member: str) -> None:
    """Tar members with absolute paths or '..' are refused."""
    members = default_sdist_members()
    members[member] = b"boom"
    path = make_tar_sdist(tmp_path, members)
    with pytest.raises(BadUpload, match="archive member"):
        inspect_sdist(path, parse_filename(SDIST))


@pytest.mark.parametrize(
    ("kind", "target", "fragment"),
    [
        (tarfile.SYMTYPE, "/etc/passwd", "links to an absolute path"),
        (tarfile.SYMTYPE, "../../outside", "links outside the archive"),
        (tarfile.LNKTYPE, "../outside", "refers to a parent directory"),
    ],
)
def test_inspect_tar_sdist_refuses_escaping_links(
    tmp_path: Path, kind: bytes, target: str, fragment: str
) -> None:
    """Symbolic and hard links pointing outside the archive are refused."""
    path = make_tar_sdist(tmp_path, default_sdist_members(), links={"foo-1.0/link": (kind, target)})
    with pytest.raises(BadUpload, match=fragment):
        inspect_sdist(path, parse_filename(SDIST))


def test_inspect_tar_sdist_allows_internal_symlink(tmp_path: Path) -> None:
    """A relative symlink that stays inside the sdist is fine."""
    path = make_tar_sdist(
        tmp_path,
        default_sdist_members(),
        links={"foo-1.0/docs/link.py": (tarfile.SYMTYPE, "../foo/__init__.py")},
    )
    assert inspect_sdist(path, parse_filename(SDIST)).name == "foo"


def test_inspect_tar_sdist_refuses_special_files(tmp_path: Path) -> None:
    """Device files and FIFOs have no place in an sdist."""
    for kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        path = make_tar_sdist(tmp_path, default_sdist_members(), links={"foo-1.0/dev": (kind, "")})
        with pytest.raises(BadUpload, match="special file"):
            inspect_sdist(path, parse_filename(SDIST))


def test_inspect_tar_sdist_pkg_info_symlink(tmp_path: Path) -> None:
    """A PKG-INFO that is a symlink rather than a regular file is refused."""
    path = make_tar_sdist(
        tmp_path,
        {"foo-1.0/real": metadata()},
        links={"foo-1.0/PKG-INFO": (tarfile.SYMTYPE, "real")},
    )
    with pytest.raises(BadUpload, match="not a regular file"):
        inspect_sdist(path, parse_filename(SDIST))


def test_inspect_tar_sdist_refuses_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tar.gz that decompresses far beyond its size is refused while scanning."""
    monkeypatch.setattr(dists, "COMPRESSION_RATIO_MIN_SIZE", 1024 * 1024)
    members = default_sdist_members()
    members["foo-1.0/zeros.bin"] = bytes(2 * 1024 * 1024)
    path = make_tar_sdist(tmp_path, members)
    with pytest.raises(BadUpload, match="exceeds compression ratio of 50"):
        inspect_sdist(path, parse_filename(SDIST))


def test_inspect_tar_sdist_pkg_info_size_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PKG-INFO above the metadata cap is refused."""
    monkeypatch.setattr(dists, "MAX_METADATA_SIZE", 1024)
    path = make_tar_sdist(tmp_path, default_sdist_members(metadata(body="x" * 2000)))
    with pytest.raises(BadUpload, match="larger than 1024 bytes"):
        inspect_sdist(path, parse_filename(SDIST))


def test_inspect_sdist_rejects_wheel_dist() -> None:
    """Calling inspect_sdist with a wheel's DistFilename is a programming error."""
    with pytest.raises(ValueError, match="not an sdist"):
        inspect_sdist("unused", parse_filename(WHEEL))


# inspect


def test_inspect_dispatches_on_filetype(tmp_path: Path) -> None:
    """inspect reads a wheel's METADATA and an sdist's PKG-INFO."""
    wheel_meta = metadata(headers="Summary: wheel\n")
    sdist_meta = metadata(headers="Summary: sdist\n")
    wheel = make_wheel(tmp_path, meta=wheel_meta)
    sdist = make_tar_sdist(tmp_path, default_sdist_members(sdist_meta))
    assert inspect(wheel, parse_filename(WHEEL)).raw == wheel_meta
    assert inspect(str(sdist), parse_filename(SDIST)).raw == sdist_meta


def test_inspect_unknown_filetype() -> None:
    """A DistFilename with a filetype this module does not handle is refused."""
    dist = DistFilename("foo-1.0.egg", "foo", "1.0", "bdist_egg", "py3")
    with pytest.raises(BadUpload, match="Unknown type of file"):
        inspect("unused", dist)
