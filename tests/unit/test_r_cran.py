"""pm.r.cran against R: PACKAGES as write_PACKAGES writes it, and what R and remotes read."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pm.r.cran import (
    ArchivedFile,
    IndexEntry,
    render_archive_rds,
    render_packages,
    render_packages_gz,
    render_packages_rds,
)
from tests.support.rpackages import build_r_package

# Fields spread over lines and spaces as people write them, to be normalised as R does.
_PKGA_EXTRA = """\
Depends: R (>= 3.5.0),
    methods,   stats
Suggests: testthat (>= 3.0.0), knitr, rmarkdown, covr, withr, mockery,
    spelling, lintr, roxygen2 (>= 7.2.0), a.very.long.package.name.for.wrapping
LinkingTo: utils
Enhances: parallel
OS_type: unix
Archs: x64
License_is_FOSS: yes
License_restricts_use: no
URL: http://localhost/not-in-packages
"""


def _run_r(script: str, where: Path) -> list[list[str]]:
    """Runs an R script (C collation, as the index's order assumes) and splits its output
    into tab-separated lines."""
    path = where / "script.R"
    path.write_text(script, encoding="utf-8")
    env = {**os.environ, "LANG": "C.UTF-8", "LC_COLLATE": "C"}
    env.pop("LC_ALL", None)
    result = subprocess.run(
        ["Rscript", str(path)], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def _description(tarball: Path) -> dict[str, str]:
    """DESCRIPTION of a built tarball, each value raw: continuation lines kept as written."""
    package = tarball.name.split("_")[0]
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(f"{package}/DESCRIPTION")
        assert member is not None
        text = member.read().decode("utf-8")
    fields: dict[str, str] = {}
    tag = ""
    for line in text.splitlines():
        if line[:1].isspace():
            fields[tag] += "\n" + line
        else:
            tag, _, value = line.partition(":")
            fields[tag] = value
    return fields


def _entry(tarball: Path) -> IndexEntry:
    data = tarball.read_bytes()
    fields = _description(tarball)
    return IndexEntry(
        package=fields["Package"].strip(),
        version=fields["Version"].strip(),
        fields=fields,
        md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def _without_extras(packages: bytes) -> bytes:
    return re.sub(rb"(?m)^(SHA256|Filesize): .*\n", b"", packages)


def _contrib(root: Path) -> Path:
    contrib = root / "src" / "contrib"
    contrib.mkdir(parents=True)
    return contrib


class Built:
    """Three real tarballs and the repository R's write_PACKAGES made of them."""

    def __init__(self, where: Path) -> None:
        self.where = where
        packages = where / "packages"
        packages.mkdir()
        self.tarballs = [
            build_r_package(packages, "pkgA", "0.1.0", description_extra=_PKGA_EXTRA),
            build_r_package(packages, "pkgB", "1.0-2", imports=["pkgA", "pkgA.utils"]),
            # Sorts before pkgA_ by file name ("." < "_"), after it by package name.
            build_r_package(packages, "pkgA.utils", "2.0"),
        ]
        self.entries = [_entry(tarball) for tarball in self.tarballs]
        self.r_repo = where / "r-repo"
        contrib = _contrib(self.r_repo)
        for tarball in self.tarballs:
            shutil.copy(tarball, contrib)
        _run_r(f'tools::write_PACKAGES("{contrib}", type = "source")\n', where)
        self.r_contrib = contrib


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Builds the packages and R's own index once for the module."""
    return Built(tmp_path_factory.mktemp("cran"))


def test_packages_is_what_write_packages_writes(built: Built) -> None:
    """render_packages() of the tarballs' DESCRIPTION fields is byte for byte R's PACKAGES,
    once our SHA256 and Filesize lines are taken out."""
    ours = render_packages(built.entries)
    assert _without_extras(ours) == (built.r_contrib / "PACKAGES").read_bytes()


def test_packages_records_end_with_sha256_and_filesize(built: Built) -> None:
    """Each record carries the tarball's SHA256 and size right after NeedsCompilation."""
    records = render_packages(built.entries).decode().split("\n\n")
    by_package = {entry.package: entry for entry in built.entries}
    assert [record.split("\n")[0] for record in records] == [
        "Package: pkgA.utils", "Package: pkgA", "Package: pkgB",
    ]
    for record in records:
        lines = record.rstrip("\n").split("\n")
        entry = by_package[lines[0].removeprefix("Package: ")]
        assert lines[-3] == "NeedsCompilation: no"
        assert lines[-2:] == [f"SHA256: {entry.sha256}", f"Filesize: {entry.size}"]


def test_available_packages_reads_ours_as_rs(built: Built, tmp_path: Path) -> None:
    """available.packages() on our PACKAGES gives every field exactly as on R's own PACKAGES,
    PACKAGES.gz holds the same records, and SHA256/Filesize are readable fields."""
    ours = _contrib(tmp_path / "ours")
    packages = render_packages(built.entries)
    (ours / "PACKAGES").write_bytes(packages)
    (ours / "PACKAGES.gz").write_bytes(render_packages_gz(packages))
    theirs = _contrib(tmp_path / "theirs")
    shutil.copy(built.r_contrib / "PACKAGES", theirs)  # text only: no PACKAGES.rds
    rows = _run_r(
        f"""
        ap <- function(root, ...) available.packages(repos = paste0("file://", root),
                                                     type = "source", ...)
        ours <- ap("{tmp_path / 'ours'}", fields = c("SHA256", "Filesize"))
        theirs <- ap("{tmp_path / 'theirs'}")
        cols <- setdiff(colnames(theirs), "Repository")
        cat("same", identical(ours[, cols], theirs[, cols]), sep = "\\t"); cat("\\n")
        gz <- read.dcf(gzfile("{ours / 'PACKAGES.gz'}"))
        cat("gz", identical(gz, read.dcf("{ours / 'PACKAGES'}")), sep = "\\t"); cat("\\n")
        for (p in rownames(ours)) for (f in c("Version", "Depends", "Imports", "MD5sum",
                                              "SHA256", "Filesize"))
          {{ cat(p, f, encodeString(ours[p, f]), sep = "\\t"); cat("\\n") }}
        """,
        tmp_path,
    )
    assert rows[0] == ["same", "TRUE"]
    assert rows[1] == ["gz", "TRUE"]
    seen = {(row[0], row[1]): row[2] for row in rows[2:]}
    assert seen["pkgA", "Version"] == "0.1.0"
    assert seen["pkgA", "Depends"] == "R (>= 3.5.0), methods, stats"
    assert seen["pkgB", "Imports"] == "pkgA, pkgA.utils"
    assert seen["pkgB", "Version"] == "1.0-2"
    assert seen["pkgA.utils", "Depends"] == "<NA>"
    for entry in built.entries:
        assert seen[entry.package, "MD5sum"] == entry.md5
        assert seen[entry.package, "SHA256"] == entry.sha256
        assert seen[entry.package, "Filesize"] == str(entry.size)


def test_packages_rds_is_identical_to_rs(built: Built, tmp_path: Path) -> None:
    """readRDS() of our PACKAGES.rds is identical() to R's own, and available.packages(),
    which reads PACKAGES.rds before PACKAGES, sees what it sees in R's repository."""
    ours = _contrib(tmp_path / "ours")
    (ours / "PACKAGES.rds").write_bytes(render_packages_rds(built.entries))
    rows = _run_r(
        f"""
        x <- readRDS("{ours / 'PACKAGES.rds'}")
        y <- readRDS("{built.r_contrib / 'PACKAGES.rds'}")
        cat("rds", identical(x, y), sep = "\\t"); cat("\\n")
        ap <- function(root) available.packages(repos = paste0("file://", root),
                                                type = "source")
        a <- ap("{tmp_path / 'ours'}"); b <- ap("{built.r_repo}")
        cols <- setdiff(colnames(a), "Repository")
        cat("available", identical(a[, cols], b[, cols]), sep = "\\t"); cat("\\n")
        cat("dput", paste(deparse(x), collapse = " "), sep = "\\t"); cat("\\n")
        """,
        tmp_path,
    )
    assert rows[0] == ["rds", "TRUE"], rows[2]
    assert rows[1] == ["available", "TRUE"]


def test_install_packages_installs_from_our_index(built: Built, tmp_path: Path) -> None:
    """install.packages() from a repository indexed only by our PACKAGES.rds and PACKAGES
    resolves pkgB's imports, installs all three, and pkgB_hello() calls into both."""
    contrib = _contrib(tmp_path / "repo")
    for tarball in built.tarballs:
        shutil.copy(tarball, contrib)
    packages = render_packages(built.entries)
    (contrib / "PACKAGES").write_bytes(packages)
    (contrib / "PACKAGES.gz").write_bytes(render_packages_gz(packages))
    (contrib / "PACKAGES.rds").write_bytes(render_packages_rds(built.entries))
    library = tmp_path / "library"
    library.mkdir()
    rows = _run_r(
        f"""
        install.packages("pkgB", lib = "{library}", repos = "file://{tmp_path / 'repo'}",
                         type = "source", quiet = TRUE)
        library(pkgB, lib.loc = "{library}")
        cat("hello", pkgB_hello(), sep = "\\t"); cat("\\n")
        """,
        tmp_path,
    )
    assert rows == [["hello", "hello from pkgB; hello from pkgA; hello from pkgA.utils"]]


def test_empty_index_is_read_as_no_packages(tmp_path: Path) -> None:
    """With no packages PACKAGES is empty and PACKAGES.rds a 0-row matrix of the standard
    columns; available.packages() reads either as no packages rather than failing."""
    assert render_packages([]) == b""
    (_contrib(tmp_path / "text") / "PACKAGES").write_bytes(b"")
    (_contrib(tmp_path / "rds") / "PACKAGES.rds").write_bytes(render_packages_rds([]))
    rows = _run_r(
        f"""
        for (root in c("{tmp_path / 'text'}", "{tmp_path / 'rds'}"))
          cat(nrow(available.packages(repos = paste0("file://", root), type = "source")),
              "\\n")
        x <- readRDS("{tmp_path / 'rds' / 'src' / 'contrib' / 'PACKAGES.rds'}")
        cat(dim(x), colnames(x)[c(1, 15)], sep = "\\t"); cat("\\n")
        """,
        tmp_path,
    )
    assert rows == [["0 "], ["0 "], ["0", "15", "Package", "NeedsCompilation"]]


# DCF values (raw, as in a DESCRIPTION) around write.dcf's corners: folding at the width,
# overlong words, runs of blanks, sentence ends, escaped blank lines, tabs, wide characters.
_TRICKY = [
    "R (>= 3.5.0), aaaa, bbbb, cccc, dddd, eeee, ffff, gggg, hhhh, iiii, jjjj, kkkk, llll, mm",
    "x" * 100 + ", y",
    "a,  b,   c",
    "First sentence.  Second one!  Third?  yes.   Four",
    'He said "Stop."  Then (done.)  ok',
    "para one\n  .\n  para two",
    "a\n .\n .hidden start",
    "a\n  .\n  .\n  b",
    "a,\tb,\t\tc",
    "foo   \n    bar   ",
    "\n    starts on the next line",
    "café, naïve, 日本語日本語日本語日本語日本語日本語日本語日本語日本語日本語日本語, z",
    "日本 " * 25,
    "e\u0301tude, " * 12,
    "é, " * 40,
    *(" ".join(["abcdefg"] * n) for n in range(7, 20)),
    *("w " + "a" * n + " " + "b" * n for n in range(60, 66)),
    *("q" * n + " r" for n in range(58, 66)),
]


def test_folding_matches_write_dcf(tmp_path: Path) -> None:
    """Awkward values come out of render_packages() as write.dcf writes what read.dcf read,
    and render_packages_rds() holds the values read.dcf returns."""
    dcf = tmp_path / "input.dcf"
    dcf.write_text(
        "".join(f"Package: p{i:02d}\nVersion: 1.0\nDepends: {raw}\nSuggests: {raw}\n\n"
                for i, raw in enumerate(_TRICKY)),
        encoding="utf-8",
    )
    md5 = "0" * 32
    entries = [
        IndexEntry(f"p{i:02d}", "1.0", {"Depends": raw, "Suggests": raw}, md5, "1" * 64, 1)
        for i, raw in enumerate(_TRICKY)
    ]
    (tmp_path / "ours.rds").write_bytes(render_packages_rds(entries))
    rows = _run_r(
        f"""
        db <- read.dcf("{dcf}", fields = tools:::.get_standard_repository_db_fields())
        db[, "MD5sum"] <- "{md5}"
        db[!is.na(db) & db == ""] <- NA
        write.dcf(db, "{tmp_path / 'theirs'}")
        ours <- readRDS("{tmp_path / 'ours.rds'}")
        cat("values", identical(unname(ours), unname(db)), sep = "\\t"); cat("\\n")
        """,
        tmp_path,
    )
    assert _without_extras(render_packages(entries)).decode() == (
        (tmp_path / "theirs").read_text(encoding="utf-8")
    )
    assert rows == [["values", "TRUE"]]


def test_every_version_is_listed_in_file_name_order() -> None:
    """Several versions of one package are all written, ordered by file name as
    write_PACKAGES(latestOnly = FALSE) lists them in the C locale."""
    entries = [
        IndexEntry(name, version, {}, "0" * 32, "1" * 64, 1)
        for name, version in [("b", "1.0"), ("a", "1.9"), ("a", "1.10"), ("B", "1.0")]
    ]
    records = render_packages(entries).decode().split("\n\n")
    assert [tuple(line.split(": ")[1] for line in record.split("\n")[:2]) for record in records] \
        == [("B", "1.0"), ("a", "1.10"), ("a", "1.9"), ("b", "1.0")]


def test_packages_gz_is_stable_gzip() -> None:
    """PACKAGES.gz is the text gzipped with no timestamp, so equal indexes give equal bytes."""
    packages = render_packages([IndexEntry("a", "1.0", {}, "0" * 32, "1" * 64, 1)])
    compressed = render_packages_gz(packages)
    assert gzip.decompress(compressed) == packages
    assert compressed[4:8] == b"\x00\x00\x00\x00"
    assert render_packages_gz(packages) == compressed


_ARCHIVED = {
    "pkgB": [ArchivedFile("pkgB", "1.0-1", 300, 1_600_000_000.25)],
    "pkgA": [
        ArchivedFile("pkgA", "0.10.0", 250, 1_650_000_000.0),
        ArchivedFile("pkgA", "0.1.0", 100, 1_500_000_000.0),
        ArchivedFile("pkgA", "0.2.0", 200, 1_550_000_000.5),
    ],
    "pkgC": [],
}


def test_archive_rds_is_a_named_list_of_file_info_frames(tmp_path: Path) -> None:
    """archive.rds reads as a list named by package (empty ones left out), each a data.frame
    with file.info()'s columns and column classes, rows "pkg/pkg_ver.tar.gz" in version order,
    and the upload times as mtime."""
    path = tmp_path / "archive.rds"
    path.write_bytes(render_archive_rds(_ARCHIVED))
    frame_a = """structure(list(
          size = c(100, 200, 250), isdir = c(FALSE, FALSE, FALSE),
          mode = structure(c(420L, 420L, 420L), class = "octmode"),
          mtime = .POSIXct(t), ctime = .POSIXct(t), atime = .POSIXct(t),
          uid = rep(NA_integer_, 3), gid = rep(NA_integer_, 3),
          uname = rep(NA_character_, 3), grname = rep(NA_character_, 3)),
          class = "data.frame",
          row.names = c("pkgA/pkgA_0.1.0.tar.gz", "pkgA/pkgA_0.2.0.tar.gz",
                        "pkgA/pkgA_0.10.0.tar.gz"))"""
    rows = _run_r(
        f"""
        a <- readRDS("{path}")
        cat("names", names(a), sep = "\\t"); cat("\\n")
        cat("rows", rownames(a$pkgB), sep = "\\t"); cat("\\n")
        t <- c(1500000000, 1550000000.5, 1650000000)
        cat("pkgA", identical(a$pkgA, {frame_a}), sep = "\\t"); cat("\\n")
        f <- tempfile(); writeLines("x", f); fi <- file.info(f)
        shape <- function(d) list(names(d), lapply(d, class), lapply(d, typeof))
        cat("file.info", identical(shape(a$pkgB), shape(fi)), sep = "\\t"); cat("\\n")
        """,
        tmp_path,
    )
    assert rows == [
        ["names", "pkgA", "pkgB"],
        ["rows", "pkgB/pkgB_1.0-1.tar.gz"],
        ["pkgA", "TRUE"],
        ["file.info", "TRUE"],
    ]


def test_remotes_finds_archived_versions(tmp_path: Path) -> None:
    """remotes::install_version()'s URL lookup finds the current version through PACKAGES
    and older ones through Meta/archive.rds, the newest that fits first."""
    contrib = _contrib(tmp_path / "repo")
    current = IndexEntry("pkgA", "0.11.0", {"NeedsCompilation": "no"}, "0" * 32, "1" * 64, 1)
    (contrib / "PACKAGES").write_bytes(render_packages([current]))
    (contrib / "Meta").mkdir()
    (contrib / "Meta" / "archive.rds").write_bytes(render_archive_rds(_ARCHIVED))
    repo = f"file://{tmp_path / 'repo'}"
    rows = _run_r(
        f"""
        url <- function(p, v) remotes:::download_version_url(p, v, repos = "{repo}",
                                                             type = "source")
        for (v in c("0.1.0", "< 0.11.0", "< 0.10.0", "0.11.0")) {{
          cat(v, url("pkgA", v), sep = "\\t"); cat("\\n")
        }}
        cat("pkgB", url("pkgB", "1.0-1"), sep = "\\t"); cat("\\n")
        """,
        tmp_path,
    )
    archive = f"{repo}/src/contrib/Archive"
    assert rows == [
        ["0.1.0", f"{archive}/pkgA/pkgA_0.1.0.tar.gz"],
        ["< 0.11.0", f"{archive}/pkgA/pkgA_0.10.0.tar.gz"],
        ["< 0.10.0", f"{archive}/pkgA/pkgA_0.2.0.tar.gz"],
        ["0.11.0", f"{repo}/src/contrib/pkgA_0.11.0.tar.gz"],
        ["pkgB", f"{archive}/pkgB/pkgB_1.0-1.tar.gz"],
    ]


def test_archived_file_under_another_package_is_refused() -> None:
    """A file listed under a package name that is not its own is an error."""
    with pytest.raises(ValueError, match="must be of that package"):
        render_archive_rds({"pkgA": [ArchivedFile("pkgB", "1.0", 1, 0.0)]})
