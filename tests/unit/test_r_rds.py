"""pm.r.rds against R itself: what readRDS() makes of each kind of object, byte for byte."""

from __future__ import annotations

import gzip
import math
import os
import subprocess
from pathlib import Path

import pytest

from pm.r import rds

_OCTMODE = {"class": rds.Character(["octmode"])}
_POSIXCT = {"class": rds.Character(["POSIXct", "POSIXt"])}
_FRAME = rds.data_frame(
    {"mode": rds.Integer([420], _OCTMODE), "t": rds.Double([1.5], _POSIXCT)}, ["r1"]
)
_FRAME_R = (
    'structure(list(mode = structure(420L, class = "octmode"), '
    't = structure(1.5, class = c("POSIXct", "POSIXt"))), class = "data.frame", '
    'row.names = "r1")'
)

# Each object beside the R expression that should build the very same object.
CASES: dict[str, tuple[rds.RObject, str]] = {
    "character": (
        rds.Character(["a", None, "é", "", "日本"]),
        'c("a", NA, "\\u00e9", "", "\\u65e5\\u672c")',
    ),
    "integer": (
        rds.Integer([1, None, -5, 2**31 - 1, -(2**31) + 1]),
        "c(1L, NA, -5L, 2147483647L, -2147483647L)",
    ),
    "double": (
        rds.Double([1.5, None, math.nan, math.inf, -math.inf, -0.0, 1e300]),
        "c(1.5, NA, NaN, Inf, -Inf, -0, 1e300)",
    ),
    "logical": (rds.Logical([True, False, None]), "c(TRUE, FALSE, NA)"),
    "empty": (rds.Character([]), "character(0)"),
    "null": (None, "NULL"),
    "list": (
        rds.named_list({"a": rds.Integer([1]), "b": None, "c": rds.List([rds.Character(["x"])])}),
        'list(a = 1L, b = NULL, c = list("x"))',
    ),
    "matrix": (
        rds.character_matrix([["a", None], ["b", "c"]], ["X", "Y"]),
        'structure(c("a", "b", NA, "c"), dim = c(2L, 2L), dimnames = list(NULL, c("X", "Y")))',
    ),
    "matrix_rownames": (
        rds.character_matrix([["a", None], ["b", "c"]], ["X", "Y"], ["r1", "r2"]),
        'matrix(c("a", "b", NA, "c"), 2L, dimnames = list(c("r1", "r2"), c("X", "Y")))',
    ),
    "data_frame": (
        rds.data_frame({"n": rds.Integer([1, 2]), "s": rds.Character(["a", None])}),
        'data.frame(n = c(1L, 2L), s = c("a", NA), stringsAsFactors = FALSE)',
    ),
    "data_frame_rownames": (_FRAME, _FRAME_R),
    "list_of_frames": (
        rds.named_list({"a": _FRAME, "b": _FRAME}),
        f"list(a = {_FRAME_R}, b = {_FRAME_R})",
    ),
}


def _read_in_r(files: dict[str, Path], expressions: dict[str, str]) -> dict[str, list[str]]:
    """For each case: identical(readRDS(file), expression), the expression's own serialization
    (hex, version 2) and the deparse of both, one tab-separated line per case."""
    lines = []
    for name, path in files.items():
        lines.append(
            f'x <- readRDS("{path}"); e <- {expressions[name]}; '
            f'cat("{name}", identical(x, e), '
            'paste(as.character(serialize(e, NULL, version = 2L)), collapse = ""), '
            'paste(deparse(x), collapse = " "), paste(deparse(e), collapse = " "), '
            'sep = "\\t"); cat("\\n")'
        )
    script = files[next(iter(files))].parent / "read.R"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "LANG": "C.UTF-8", "LC_COLLATE": "C"}
    env.pop("LC_ALL", None)
    result = subprocess.run(
        ["Rscript", str(script)], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines() if line]
    return {row[0]: row[1:] for row in rows}


@pytest.fixture(scope="module")
def r_view(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Every case written with rds.rds() and read back by one Rscript run."""
    where = tmp_path_factory.mktemp("rds")
    files = {}
    for name, (obj, _) in CASES.items():
        files[name] = where / f"{name}.rds"
        files[name].write_bytes(rds.rds(obj))
    return _read_in_r(files, {name: expression for name, (_, expression) in CASES.items()})


@pytest.mark.parametrize("name", list(CASES))
def test_readrds_gives_the_same_object(r_view: dict[str, list[str]], name: str) -> None:
    """readRDS() of the written file is identical() to the object R builds from the expression,
    and deparses (dput) the same way."""
    identical, _, ours, theirs = r_view[name]
    assert ours == theirs
    assert identical == "TRUE", ours


@pytest.mark.parametrize("name", list(CASES))
def test_stream_is_byte_identical_to_r_serialize(r_view: dict[str, list[str]], name: str) -> None:
    """Past the header (which names the writing R version), the stream is exactly what
    R's serialize(version = 2) writes: same flags, encodings, NA bits and symbol references."""
    r_hex = r_view[name][1]
    header = 2 + 3 * 4
    assert rds.serialize(CASES[name][0])[header:].hex() == r_hex[2 * header :]


def test_header_is_xdr_version_2() -> None:
    """The stream starts as R's XDR format version 2 does, readable back to R 2.3.0."""
    stream = rds.serialize(None)
    assert stream[:6] == b"X\n\x00\x00\x00\x02"
    assert stream[10:14] == bytes([0, 2, 3, 0])


def test_rds_is_gzip_without_timestamp() -> None:
    """rds() gzips the stream with mtime 0, so the same object always gives the same bytes."""
    obj = rds.named_list({"a": rds.Character(["x"])})
    data = rds.rds(obj)
    assert data == rds.rds(obj)
    assert data[4:8] == b"\x00\x00\x00\x00"
    assert gzip.decompress(data) == rds.serialize(obj)


@pytest.mark.parametrize("number", [2**31, -(2**31)])
def test_integers_outside_r_range_are_refused(number: int) -> None:
    """R integers are 32-bit with INT_MIN reserved for NA; anything else is an error."""
    with pytest.raises(ValueError, match="integer range"):
        rds.serialize(rds.Integer([number]))


def test_matrix_rows_must_match_columns() -> None:
    """A row with the wrong number of values is an error, not a shifted matrix."""
    with pytest.raises(ValueError, match="one value per column"):
        rds.character_matrix([["a"]], ["X", "Y"])
