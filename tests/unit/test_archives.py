"""Unit tests for pm.archives: the bounded reader of untrusted .tar.gz archives.

Hostile archives are built here with tarfile where it can write them, and from
raw 512-byte headers where it cannot (or would refuse to), so each test states
exactly which bytes the server is given.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pm import archives
from pm.archives import TarScan, check_member_name, quote, scan_tar_gz
from pm.errors import BadUpload

BLOCK = 512


def tar_bytes(
    members: dict[str, bytes],
    *,
    links: dict[str, tuple[bytes, str]] | None = None,
    tar_format: int = tarfile.PAX_FORMAT,
) -> bytes:
    """An uncompressed tar of regular files, then links given as name: (type, target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def header(
    name: bytes,
    *,
    kind: bytes = b"0",
    size: int = 0,
    linkname: bytes = b"",
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
) -> bytes:
    """One raw tar header block with a valid checksum."""
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size
    block[156:157] = kind
    block[157 : 157 + len(linkname)] = linkname
    block[257:265] = magic
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def member(name: bytes, data: bytes = b"", **fields: bytes) -> bytes:
    """A raw regular-file member: header, data, padding."""
    return header(name, size=len(data), **fields) + data + bytes(-len(data) % BLOCK)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


END = bytes(2 * BLOCK)


def write_gz(tmp_path: Path, data: bytes, name: str = "pkg_1.0.tar.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data))
    return path


def scan(
    path: Path,
    want: Callable[[str], bool] = lambda name: name == "pkg/DESCRIPTION",
    *,
    max_member_size: int = 1024,
    max_members: int = archives.MAX_MEMBERS,
    ratio_min_size: int = archives.COMPRESSION_RATIO_MIN_SIZE,
) -> TarScan:
    return scan_tar_gz(
        path,
        want=want,
        max_member_size=max_member_size,
        max_members=max_members,
        ratio_min_size=ratio_min_size,
    )


def refused(
    path: Path,
    *,
    max_members: int = archives.MAX_MEMBERS,
    ratio_min_size: int = (archives.COMPRESSION_RATIO_MIN_SIZE),
) -> str:
    with pytest.raises(BadUpload) as excinfo:
        scan(path, max_members=max_members, ratio_min_size=ratio_min_size)
    message = excinfo.value.message
    assert message.startswith("Invalid package file: ")
    assert "\n" not in message
    return message


# A well-formed archive


def test_normal_archive_returns_names_and_wanted_content(tmp_path: Path) -> None:
    """Every non-directory member is listed in order and the wanted one is read."""
    data = tar_bytes(
        {"pkg/DESCRIPTION": b"Package: pkg\n", "pkg/R/a.R": b"x <- 1\n"},
        links={"pkg/R/b.R": (tarfile.SYMTYPE, "a.R"), "pkg/R": (tarfile.DIRTYPE, "")},
    )
    result = scan(write_gz(tmp_path, data))
    assert result == TarScan(
        names=("pkg/DESCRIPTION", "pkg/R/a.R", "pkg/R/b.R"),
        wanted={"pkg/DESCRIPTION": b"Package: pkg\n"},
    )


@pytest.mark.parametrize(
    "tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]
)
def test_long_names_in_each_format(tmp_path: Path, tar_format: int) -> None:
    """Names longer than 100 bytes (ustar prefix, GNU long name, pax path) are read whole."""
    name = "pkg/" + "d" * 90 + "/" + "f" * 60
    data = tar_bytes({name: b"1", "pkg/DESCRIPTION": b"D"}, tar_format=tar_format)
    result = scan(write_gz(tmp_path, data))
    assert result.names == (name, "pkg/DESCRIPTION")
    assert result.wanted == {"pkg/DESCRIPTION": b"D"}


def test_gnu_long_link_target_is_read(tmp_path: Path) -> None:
    """A symlink target longer than 100 bytes, written as a GNU long link, is checked whole."""
    target = "sub/" + "t" * 200
    data = tar_bytes(
        {"pkg/DESCRIPTION": b"D"},
        links={"pkg/link": (tarfile.SYMTYPE, target)},
        tar_format=tarfile.GNU_FORMAT,
    )
    assert scan(write_gz(tmp_path, data)).names == ("pkg/DESCRIPTION", "pkg/link")
    data = tar_bytes(
        {"pkg/DESCRIPTION": b"D"},
        links={"pkg/link": (tarfile.SYMTYPE, "../../" + target)},
        tar_format=tarfile.GNU_FORMAT,
    )
    assert "links outside the archive" in refused(write_gz(tmp_path, data))


def test_trailing_zero_padding_is_accepted(tmp_path: Path) -> None:
    """Zero bytes after the end-of-archive marker (record padding) are normal."""
    data = tar_bytes({"pkg/DESCRIPTION": b"D"}) + bytes(100_000)
    assert scan(write_gz(tmp_path, data)).wanted == {"pkg/DESCRIPTION": b"D"}


def test_missing_end_marker_is_accepted(tmp_path: Path) -> None:
    """A complete gzip stream whose tar stops between members has nothing hidden."""
    data = member(b"pkg/DESCRIPTION", b"D")
    assert scan(write_gz(tmp_path, data)).names == ("pkg/DESCRIPTION",)


def test_empty_archive_is_accepted(tmp_path: Path) -> None:
    """An archive of only the end marker has no names; layout checks are the caller's."""
    assert scan(write_gz(tmp_path, END)) == TarScan(names=(), wanted={})


def test_multi_member_gzip_is_read(tmp_path: Path) -> None:
    """A gzip file made of several gzip members is one stream, as for gzip -d."""
    data = tar_bytes({"pkg/DESCRIPTION": b"D", "pkg/x": b"x" * 3000})
    path = tmp_path / "pkg_1.0.tar.gz"
    path.write_bytes(gzip.compress(data[:1024]) + gzip.compress(data[1024:]))
    assert scan(path).names == ("pkg/DESCRIPTION", "pkg/x")


def test_git_archive_global_comment_is_accepted(tmp_path: Path) -> None:
    """A pax global header carrying only a comment (as `git archive` writes) is ignored."""
    comment = pax_record(b"comment", b"0123456789abcdef")
    data = (
        header(b"pax_global_header", kind=b"g", size=len(comment))
        + comment
        + bytes(-len(comment) % BLOCK)
        + member(b"pkg/DESCRIPTION", b"D")
        + END
    )
    assert scan(write_gz(tmp_path, data)).names == ("pkg/DESCRIPTION",)


def test_hard_link_inside_the_archive_is_accepted(tmp_path: Path) -> None:
    """A hard link to another member is listed like a file."""
    data = tar_bytes({"pkg/a": b"a"}, links={"pkg/b": (tarfile.LNKTYPE, "pkg/a")})
    assert scan(write_gz(tmp_path, data)).names == ("pkg/a", "pkg/b")


# Oversized headers and names


def test_huge_gnu_long_name_is_refused_with_a_short_message(tmp_path: Path) -> None:
    """A 2 MiB ././@LongLink name is refused on its declared size, in a short message."""
    data = tar_bytes({"pkg/" + "a" * (2 * 1024 * 1024): b""}, tar_format=tarfile.GNU_FORMAT)
    assert b"././@LongLink" in data[:BLOCK]
    message = refused(write_gz(tmp_path, data))
    assert message == "Invalid package file: archive member name longer than 4096 bytes"
    assert len(message) < 300


def test_huge_gnu_long_link_is_refused(tmp_path: Path) -> None:
    """A long link target (GNU 'K' header) over the cap is refused the same way."""
    data = header(b"././@LongLink", kind=b"K", size=10_000_000) + bytes(BLOCK)
    message = refused(write_gz(tmp_path, data))
    assert message == "Invalid package file: archive member link target longer than 4096 bytes"


def test_huge_parent_directory_name_is_refused_with_a_short_message(tmp_path: Path) -> None:
    """A 1 MiB '../../..' name is refused without being echoed."""
    name = "../" * (1024 * 1024 // 3)
    for tar_format in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        message = refused(write_gz(tmp_path, tar_bytes({name: b"x"}, tar_format=tar_format)))
        assert len(message) < 300


def test_long_parent_directory_name_is_quoted_short(tmp_path: Path) -> None:
    """A '..' name under the length cap is refused naming only its first 80 characters."""
    name = "../" * 1300 + "evil"
    message = refused(write_gz(tmp_path, tar_bytes({name: b"x"}, tar_format=tarfile.GNU_FORMAT)))
    assert "refers to a parent directory" in message
    assert quote(name) in message
    assert len(message) < 300


def test_name_over_the_cap_from_pax_is_refused(tmp_path: Path) -> None:
    """A pax path under the header cap but over the name cap is refused without echo."""
    data = tar_bytes({"pkg/" + "b" * 5000: b""}, tar_format=tarfile.PAX_FORMAT)
    message = refused(write_gz(tmp_path, data))
    assert message == "Invalid package file: archive member name longer than 4096 bytes"


def test_huge_pax_header_is_refused(tmp_path: Path) -> None:
    """A pax extended header above 64 KiB is refused on its declared size."""
    data = header(b"PaxHeader/x", kind=b"x", size=50 * 1024 * 1024)
    message = refused(write_gz(tmp_path, data + bytes(BLOCK)))
    assert message == (
        "Invalid package file: archive has an extended header larger than 65536 bytes"
    )


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    """More members than the limit are refused, counting directories too."""
    members = {f"pkg/f{index}": b"" for index in range(10)}
    path = write_gz(tmp_path, tar_bytes(members))
    assert len(scan(path, max_members=10).names) == 10
    assert refused(path, max_members=9) == "Invalid package file: archive has more than 9 members"


def test_too_many_wanted_members_are_refused(tmp_path: Path) -> None:
    """Only a few members may be wanted, so their contents stay small in memory."""
    members = {f"pkg{index}/DESCRIPTION": b"D" for index in range(archives.MAX_WANTED_MEMBERS + 1)}
    path = write_gz(tmp_path, tar_bytes(members))
    with pytest.raises(BadUpload, match="more than 4 members like 'pkg4/DESCRIPTION'"):
        scan(path, want=lambda name: name.endswith("/DESCRIPTION"))


def test_names_total_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The names kept for the caller are bounded in total, not just one by one."""
    monkeypatch.setattr(archives, "MAX_NAMES_SIZE", 100)
    members = {f"pkg/{index:030}": b"" for index in range(4)}
    message = refused(write_gz(tmp_path, tar_bytes(members)))
    assert message == "Invalid package file: archive member names total more than 100 bytes"


# Wanted members


def test_wanted_member_over_the_cap_is_refused(tmp_path: Path) -> None:
    """A wanted member larger than max_member_size is refused before it is read."""
    path = write_gz(tmp_path, tar_bytes({"pkg/DESCRIPTION": b"x" * 2000}))
    assert refused(path) == "Invalid package file: 'pkg/DESCRIPTION' is larger than 1024 bytes"
    assert scan(path, max_member_size=2000).wanted == {"pkg/DESCRIPTION": b"x" * 2000}


def test_wanted_member_that_is_a_link_is_refused(tmp_path: Path) -> None:
    """A wanted name that is a symlink rather than a regular file is refused."""
    data = tar_bytes({"pkg/real": b"D"}, links={"pkg/DESCRIPTION": (tarfile.SYMTYPE, "real")})
    message = refused(write_gz(tmp_path, data))
    assert message == "Invalid package file: 'pkg/DESCRIPTION' is not a regular file"


def test_refusal_prefix_is_the_callers(tmp_path: Path) -> None:
    """Refusals start with the prefix the caller names."""
    path = write_gz(tmp_path, tar_bytes({"/etc/passwd": b""}))
    with pytest.raises(BadUpload, match=r"^Invalid distribution file: archive member"):
        scan_tar_gz(
            path, want=lambda name: False, max_member_size=1, prefix="Invalid distribution file"
        )


# Hiding members from the scan


def test_members_after_a_garbage_block_are_refused(tmp_path: Path) -> None:
    """A non-tar block in the middle (tarfile stops there, GNU tar lists on) is refused."""
    data = (
        member(b"pkg/DESCRIPTION", b"D")
        + b"\xa5" * BLOCK
        + member(b"pkg/../../evil", b"boom")
        + END
    )
    message = refused(write_gz(tmp_path, data))
    assert message == (
        "Invalid package file: corrupt or truncated tar archive (bad header checksum at byte 1024)"
    )


def test_members_after_the_end_marker_are_refused(tmp_path: Path) -> None:
    """A second archive behind the end marker (read by `tar --ignore-zeros`) is refused."""
    data = tar_bytes({"pkg/DESCRIPTION": b"D"}) + tar_bytes({"pkg/evil": b"boom"})
    message = refused(write_gz(tmp_path, data))
    assert message == "Invalid package file: data after the end of the tar archive"


def test_members_after_a_lone_zero_block_are_refused(tmp_path: Path) -> None:
    """One zero block ends the archive for every reader, so what follows is refused."""
    data = member(b"pkg/DESCRIPTION", b"D") + bytes(BLOCK) + member(b"pkg/evil") + END
    assert "data after the end of the tar archive" in refused(write_gz(tmp_path, data))


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    """A gzip stream cut short is refused as corrupt, even past the tar end marker."""
    whole = gzip.compress(tar_bytes({"pkg/DESCRIPTION": b"D", "pkg/x": bytes(range(256)) * 400}))
    for cut in (len(whole) // 2, len(whole) - 4):
        path = tmp_path / "pkg_1.0.tar.gz"
        path.write_bytes(whole[:cut])
        assert refused(path) == "Invalid package file: corrupt or truncated tar archive"


def test_truncated_member_data_is_refused(tmp_path: Path) -> None:
    """A last member whose data stops short of its declared size is refused."""
    data = member(b"pkg/DESCRIPTION", b"D") + header(b"pkg/big", size=5000) + b"x" * 600
    assert refused(write_gz(tmp_path, data)) == (
        "Invalid package file: corrupt or truncated tar archive"
    )


def test_trailing_garbage_after_gzip_is_refused(tmp_path: Path) -> None:
    """Bytes after the gzip stream that are not another gzip member are refused."""
    path = tmp_path / "pkg_1.0.tar.gz"
    path.write_bytes(gzip.compress(tar_bytes({"pkg/DESCRIPTION": b"D"})) + b"trailing junk")
    assert "corrupt or truncated" in refused(path)


@pytest.mark.parametrize("content", [b"", b"junk" * 300, b"\x1f\x8b\x08 broken"])
def test_not_gzip_is_refused(tmp_path: Path, content: bytes) -> None:
    """An empty file, junk, or a broken gzip header is not a gzip-compressed tar."""
    path = tmp_path / "pkg_1.0.tar.gz"
    path.write_bytes(content)
    assert refused(path) == "Invalid package file: not a gzip-compressed tar archive"


def test_uncompressed_tar_and_gzipped_junk_are_refused(tmp_path: Path) -> None:
    """A plain tar named .tar.gz, and gzip holding something that is not tar, are refused."""
    plain = tmp_path / "plain.tar.gz"
    plain.write_bytes(tar_bytes({"pkg/DESCRIPTION": b"D"}))
    assert refused(plain) == "Invalid package file: not a gzip-compressed tar archive"
    assert refused(write_gz(tmp_path, b"not a tar " * 100)) == (
        "Invalid package file: not a gzip-compressed tar archive"
    )


def test_compression_bomb_is_refused(tmp_path: Path) -> None:
    """Decompressed bytes beyond the ratio limit are refused while scanning, trailing zeros too."""
    path = write_gz(tmp_path, tar_bytes({"pkg/zeros": bytes(2 * 1024 * 1024)}))
    message = refused(path, ratio_min_size=1024 * 1024)
    assert message == "Invalid package file: File exceeds compression ratio of 50"
    path = write_gz(tmp_path, tar_bytes({"pkg/DESCRIPTION": b"D"}) + bytes(2 * 1024 * 1024))
    assert "compression ratio" in refused(path, ratio_min_size=1024 * 1024)


# Header combinations that readers resolve differently


def test_two_long_names_for_one_member_are_refused(tmp_path: Path) -> None:
    """Two GNU long names before one member (tarfile and GNU tar pick differently)."""
    long_name = b"pkg/" + b"a" * 200 + b"\0"
    block = header(b"././@LongLink", kind=b"L", size=len(long_name))
    padded = long_name + bytes(-len(long_name) % BLOCK)
    data = block + padded + block + padded + member(b"pkg/short") + END
    assert "repeated extended header" in refused(write_gz(tmp_path, data))


def test_long_name_and_pax_path_together_are_refused(tmp_path: Path) -> None:
    """A GNU long name and a pax path for the same member conflict."""
    record = pax_record(b"path", b"pkg/from-pax")
    long_name = b"pkg/from-gnu\0"
    data = (
        header(b"PaxHeader", kind=b"x", size=len(record))
        + record
        + bytes(-len(record) % BLOCK)
        + header(b"././@LongLink", kind=b"L", size=len(long_name))
        + long_name
        + bytes(-len(long_name) % BLOCK)
        + member(b"pkg/short")
        + END
    )
    assert "conflicting extended headers" in refused(write_gz(tmp_path, data))


def test_extended_header_without_member_is_refused(tmp_path: Path) -> None:
    """A long name followed by the end of the archive is refused."""
    long_name = b"pkg/name\0"
    data = header(b"././@LongLink", kind=b"L", size=len(long_name)) + long_name
    data += bytes(-len(data) % BLOCK) + END
    assert "extended header without a member" in refused(write_gz(tmp_path, data))


def test_global_header_setting_a_path_is_refused(tmp_path: Path) -> None:
    """A pax global header with a path applies to different members for different readers."""
    record = pax_record(b"path", b"pkg/DESCRIPTION")
    data = header(b"pax_global_header", kind=b"g", size=len(record)) + record
    data += bytes(-len(data) % BLOCK) + member(b"pkg/other") + END
    assert "global extended header" in refused(write_gz(tmp_path, data))


@pytest.mark.parametrize(
    "record",
    [
        b"99 path=x\n",
        b"12 pathx\n\n\n",
        b"x path=y\n",
        b"10 path=ab",
        b"11 size=1a\n",
    ],
)
def test_malformed_pax_header_is_refused(tmp_path: Path, record: bytes) -> None:
    """Pax records with a wrong length, no '=', a bad size or no newline are refused."""
    data = header(b"PaxHeader", kind=b"x", size=len(record)) + record
    data += bytes(-len(data) % BLOCK) + member(b"pkg/a") + END
    assert "malformed extended header" in refused(write_gz(tmp_path, data))


def test_pax_size_overrides_the_header_size(tmp_path: Path) -> None:
    """The pax size decides where the next header is, as for tarfile, GNU tar and R."""
    record = pax_record(b"size", b"600")
    data = (
        header(b"PaxHeader", kind=b"x", size=len(record))
        + record
        + bytes(-len(record) % BLOCK)
        + header(b"pkg/DESCRIPTION", size=0)
        + b"d" * 600
        + bytes(-600 % BLOCK)
        + END
    )
    assert scan(write_gz(tmp_path, data), max_member_size=600).wanted == {
        "pkg/DESCRIPTION": b"d" * 600
    }


def test_sparse_members_are_refused(tmp_path: Path) -> None:
    """GNU sparse files (old type 'S' or pax GNU.sparse records) are not supported."""
    old = header(b"pkg/sparse", kind=b"S") + END
    assert "unsupported type 'S'" in refused(write_gz(tmp_path, old))
    record = pax_record(b"GNU.sparse.major", b"1")
    data = header(b"PaxHeader", kind=b"x", size=len(record)) + record
    data += bytes(-len(data) % BLOCK) + member(b"pkg/sparse") + END
    assert "sparse member" in refused(write_gz(tmp_path, data))


def test_prefix_field_outside_ustar_is_refused(tmp_path: Path) -> None:
    """Bytes in the prefix field of a GNU-magic header (a timestamp to GNU tar) are refused."""
    data = member(b"pkg/a") + member(b"DESCRIPTION", b"D", magic=b"ustar  \0", prefix=b"pkg")
    message = refused(write_gz(tmp_path, data + END))
    assert message == (
        "Invalid package file: corrupt or truncated tar archive "
        "(name prefix outside a ustar header at byte 512)"
    )


def test_ustar_prefix_field_is_joined(tmp_path: Path) -> None:
    """In a POSIX ustar header the prefix field is the leading part of the name."""
    data = member(b"DESCRIPTION", b"D", prefix=b"pkg") + END
    assert scan(write_gz(tmp_path, data)).wanted == {"pkg/DESCRIPTION": b"D"}


def test_nul_inside_a_name_field_is_refused(tmp_path: Path) -> None:
    """A name field with bytes after a NUL (tarfile cuts, R fails) is refused."""
    data = member(b"pkg/DESCRIPTION\0/../../evil", b"D") + END
    assert "NUL or control character" in refused(write_gz(tmp_path, data))


def test_data_on_a_link_is_refused(tmp_path: Path) -> None:
    """A symlink header with a size (tarfile reads no data, GNU tar skips it) is refused."""
    data = header(b"pkg/link", kind=b"2", size=512, linkname=b"a") + bytes(BLOCK) + END
    assert "is not a file but has data" in refused(write_gz(tmp_path, data))


def test_file_with_a_directory_name_is_refused(tmp_path: Path) -> None:
    """An old-style regular member whose name ends in '/' is refused."""
    data = member(b"pkg/dir/", kind=b"\0") + END
    assert "file with a directory name" in refused(write_gz(tmp_path, data))


def test_unknown_member_type_is_refused(tmp_path: Path) -> None:
    """Member types other than files, links and directories are refused."""
    data = header(b"pkg/vol", kind=b"V") + END
    assert "unsupported type 'V'" in refused(write_gz(tmp_path, data))


# Member names and link targets


@pytest.mark.parametrize(
    "name",
    ["/etc/passwd", "../evil", "pkg/../../evil", "C:/evil", "..\\evil", "\\evil", "pkg/a\nb"],
)
def test_hostile_member_names_are_refused(tmp_path: Path, name: str) -> None:
    """Absolute paths, drive letters, '..' components and control characters are refused."""
    message = refused(write_gz(tmp_path, tar_bytes({name: b"boom"})))
    assert message.startswith("Invalid package file: archive member")


def test_absolute_path_message(tmp_path: Path) -> None:
    """An absolute member path is refused, naming the member."""
    message = refused(write_gz(tmp_path, tar_bytes({"/etc/passwd": b""})))
    assert message == "Invalid package file: archive member '/etc/passwd' has an absolute path"


@pytest.mark.parametrize(
    ("kind", "target", "fragment"),
    [
        (tarfile.SYMTYPE, "/etc", "links to an absolute path"),
        (tarfile.SYMTYPE, "/etc/passwd", "links to an absolute path"),
        (tarfile.SYMTYPE, "C:\\Windows", "links to an absolute path"),
        (tarfile.SYMTYPE, "../../outside", "links outside the archive"),
        (tarfile.SYMTYPE, "sub/../../../outside", "links outside the archive"),
        (tarfile.LNKTYPE, "../outside", "refers to a parent directory"),
        (tarfile.LNKTYPE, "/etc/passwd", "has an absolute path"),
    ],
)
def test_escaping_links_are_refused(
    tmp_path: Path, kind: bytes, target: str, fragment: str
) -> None:
    """Symbolic and hard links pointing outside the archive are refused."""
    data = tar_bytes({"pkg/DESCRIPTION": b"D"}, links={"pkg/link": (kind, target)})
    assert fragment in refused(write_gz(tmp_path, data))


def test_symlink_up_to_the_archive_root_is_allowed(tmp_path: Path) -> None:
    """A relative link that climbs no higher than the archive root stays inside."""
    data = tar_bytes({"pkg/a": b""}, links={"pkg/sub/link": (tarfile.SYMTYPE, "../../pkg/a")})
    assert scan(write_gz(tmp_path, data)).names == ("pkg/a", "pkg/sub/link")


def test_symlink_resolved_through_another_link_is_refused(tmp_path: Path) -> None:
    """'a -> ..' then 'b -> a/..' each look inside, but b resolves outside the archive."""
    data = tar_bytes(
        {}, links={"pkg/a": (tarfile.SYMTYPE, ".."), "pkg/b": (tarfile.SYMTYPE, "a/..")}
    )
    message = refused(write_gz(tmp_path, data))
    assert message == (
        "Invalid package file: archive member 'pkg/b' links through the symbolic link 'pkg/a'"
    )


def test_link_defined_after_its_user_is_still_found(tmp_path: Path) -> None:
    """The through-a-link check sees links that come later in the archive."""
    data = tar_bytes(
        {}, links={"pkg/b": (tarfile.SYMTYPE, "a/../.."), "pkg/a": (tarfile.SYMTYPE, "x")}
    )
    assert "links through the symbolic link 'pkg/a'" in refused(write_gz(tmp_path, data))


def test_member_under_a_symlink_is_refused(tmp_path: Path) -> None:
    """A member whose path goes through a symlink would be written where the link points."""
    data = header(b"pkg/l", kind=b"2", linkname=b"sub") + member(b"pkg/l/file", b"x") + END
    message = refused(write_gz(tmp_path, data))
    assert message == (
        "Invalid package file: archive member 'pkg/l/file' is under the symbolic link 'pkg/l'"
    )


def test_special_files_are_refused(tmp_path: Path) -> None:
    """Device files and FIFOs are refused."""
    for kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        data = tar_bytes({"pkg/DESCRIPTION": b"D"}, links={"pkg/dev": (kind, "")})
        assert refused(write_gz(tmp_path, data)) == (
            "Invalid package file: archive member 'pkg/dev' is a special file"
        )


def test_check_member_name_alone() -> None:
    """The name check used for zip archives too refuses what it refuses in tar."""
    check_member_name("pkg/a/b.txt")
    with pytest.raises(BadUpload, match=r"^Invalid package file: archive member with an empty"):
        check_member_name("")
    with pytest.raises(BadUpload, match=r"^X: archive member 'a\\x00b' has a NUL"):
        check_member_name("a\x00b", prefix="X")


def test_quote_truncates_long_names() -> None:
    """Names in messages are cut to 80 characters."""
    assert quote("abc") == "'abc'"
    assert quote("x" * 1000) == repr("x" * 80 + "...")


def test_missing_file_is_not_a_bad_upload(tmp_path: Path) -> None:
    """A missing path is the server's fault: it raises OSError, not BadUpload."""
    with pytest.raises(OSError):
        scan(tmp_path / "missing.tar.gz")
