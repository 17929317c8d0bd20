"""The ``rspm`` client that ``GET /__api__/download`` hands out.

A CI machine fetches the CLI with one ``curl`` and runs it on whatever Python 3
it has, with nothing installed by pip. So the client is a zip application of
the very modules the installed ``rspm`` runs: the ``cli`` package, the few pure
``pm`` modules it imports, and the pure-Python distributions it needs (click),
all read from this server's own installation. Linux and macOS get it behind
``#!/usr/bin/env python3``; Windows gets the same archive behind distlib's
console launcher, the way pip's ``.exe`` console scripts are made, so
``rspm.exe`` runs wherever ``python`` is on the PATH.

The archive is reproducible (sorted names, fixed timestamps and modes): every
node of a cluster running the same release serves the same bytes under the
same ETag. It is built once, in a thread, at the first request.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import io
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from twisted.internet.defer import DeferredLock

from pm.blobs import RunInThread
from pm.errors import BadRequest

__all__ = [
    "CLIENT_PYTHON",
    "OPERATING_SYSTEMS",
    "POSIX_SHEBANG",
    "WINDOWS_LAUNCHER",
    "WINDOWS_SHEBANG",
    "ClientDownloads",
    "ClientFile",
    "build_clients",
    "client_archive",
    "minimum_python",
]

OPERATING_SYSTEMS = ("linux", "darwin", "windows")
POSIX_SHEBANG = b"#!/usr/bin/env python3\n"
# The launcher searches the PATH for what follows /usr/bin/env: a python.org
# install names it python.exe (there is no python3.exe but in Store installs).
WINDOWS_SHEBANG = b"#!/usr/bin/env python\n"
# distlib's 64-bit console launcher; ARM64 Windows runs it under emulation.
WINDOWS_LAUNCHER = "t64.exe"
# The oldest Python the cli package is written for (see cli/ruff.toml).
CLIENT_PYTHON = (3, 9)

# What the client imports from the server's package: the CLI needs pm's version
# and errors, and pm.config (with pm.gcfg and pm.limits) only to find the admin socket.
_PM_MODULES = ("pm", "pm.errors", "pm.config", "pm.gcfg", "pm.limits")
# Pure-Python distributions the CLI imports, bundled from their installed copies.
_BUNDLED = ("click",)
# Of a distribution's .dist-info, what is about this installation rather than
# the distribution (RECORD also lists files the archive leaves out).
_INSTALL_RECORDS = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_COMPILED = frozenset({".so", ".pyd", ".dll", ".dylib"})
# Zip's epoch: a timestamp that says nothing, so equal sources give equal bytes.
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ClientFile:
    """One download: what ``curl -OJ`` saves it as, its bytes and their sha256."""

    filename: str
    body: bytes
    etag: str


def minimum_python(requirements: Mapping[str, str | None],
                   floor: tuple[int, int] = CLIENT_PYTHON) -> tuple[int, int]:
    """The oldest Python 3 minor version, from ``floor`` up, that every ``Requires-Python``
    in ``requirements`` (by distribution name) admits; ValueError if none does."""
    specifiers = {name: SpecifierSet(text or "") for name, text in requirements.items()}
    for minor in range(floor[1], 100):
        version = Version(f"3.{minor}")
        if all(s.contains(version, prereleases=True) for s in specifiers.values()):
            return (3, minor)
    shown = ", ".join(f"{name} {s}" for name, s in specifiers.items())
    raise ValueError(f"no Python 3 version satisfies every bundled distribution: {shown}")


def _main_module(minimum: tuple[int, int]) -> bytes:
    # Checked before importing anything else: a bundled distribution that needs a
    # newer Python fails on import with a traceback, not with this line.
    shown = ".".join(map(str, minimum))
    return (
        "import sys\n"
        "\n"
        f"if sys.version_info < {minimum!r}:\n"
        f'    sys.stderr.write("rspm needs Python {shown} or newer; %s is Python %s\\n"\n'
        "                     % (sys.executable, sys.version.split()[0]))\n"
        "    sys.exit(1)\n"
        "\n"
        "from cli.main import main\n"
        "\n"
        'main(prog_name="rspm")\n'
    ).encode()


def _package_files(package: str) -> Iterator[tuple[str, Path]]:
    """The ``.py`` files of an importable package, by their name in the archive."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the package {package!r} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for path in sorted(root.rglob("*.py")):
        yield str(PurePosixPath(package, *path.relative_to(root).parts)), path


def _module_file(module: str) -> tuple[str, Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"the module {module!r} is not installed")
    path = Path(spec.origin)
    parts = module.split(".")
    if path.name == "__init__.py":
        parts.append("__init__")
    else:
        parts[-1] = path.stem
    return "/".join(parts) + ".py", path


def _distribution_files(
        distribution: importlib.metadata.Distribution) -> Iterator[tuple[str, Path]]:
    """A distribution's modules, its METADATA and its licence files."""
    name = distribution.metadata["Name"]
    for file in sorted(distribution.files or (), key=str):
        parts = file.parts
        if file.suffix in _COMPILED:
            raise ValueError(f"{name} is not pure Python ({file}): it cannot ride in a zipapp")
        if "__pycache__" in parts or file.suffix == ".pyc" or parts[0].startswith(".."):
            continue
        if parts[0].endswith(".dist-info") and file.name in _INSTALL_RECORDS:
            continue
        yield "/".join(parts), Path(str(distribution.locate_file(file)))


def client_archive(minimum: tuple[int, int] | None = None) -> bytes:
    """The zip archive of the client, with ``__main__.py`` at its root.

    ``minimum`` is the oldest Python it accepts; by default the oldest that the
    client and every bundled distribution support.
    """
    distributions = [importlib.metadata.distribution(name) for name in _BUNDLED]
    if minimum is None:
        minimum = minimum_python(
            {d.metadata["Name"]: d.metadata["Requires-Python"] for d in distributions})
    members: dict[str, bytes] = {"__main__.py": _main_module(minimum)}
    sources = [*_package_files("cli"), *map(_module_file, _PM_MODULES)]
    for distribution in distributions:
        sources.extend(_distribution_files(distribution))
    for name, path in sources:
        members[name] = path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, _TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name], compresslevel=9)
    return buffer.getvalue()


def _client_file(filename: str, body: bytes) -> ClientFile:
    return ClientFile(filename, body, hashlib.sha256(body).hexdigest())


def build_clients() -> dict[str, ClientFile]:
    """Every download, by operating system: ``launcher + shebang + zip`` on Windows
    (what distlib's ScriptMaker writes for a console script there), ``shebang + zip``
    elsewhere."""
    archive = client_archive()
    posix = _client_file("rspm", POSIX_SHEBANG + archive)
    launcher = importlib.resources.files("distlib").joinpath(WINDOWS_LAUNCHER).read_bytes()
    windows = _client_file("rspm.exe", launcher + WINDOWS_SHEBANG + archive)
    return {"linux": posix, "darwin": posix, "windows": windows}


class ClientDownloads:
    """The downloads, built by ``build`` in a thread at the first request, then kept.

    A build that fails is not kept: the next request tries again.
    """

    def __init__(self, in_thread: RunInThread,
                 build: Callable[[], Mapping[str, ClientFile]] = build_clients) -> None:
        self._in_thread = in_thread
        self._build = build
        self._built: Mapping[str, ClientFile] | None = None
        # Requests that arrive while the first build runs wait for it.
        self._building = DeferredLock()

    async def client(self, os_name: str | None) -> ClientFile:
        """The download for ``os_name`` (``linux`` when None); BadRequest if unknown."""
        wanted = "linux" if os_name is None else os_name
        if wanted not in OPERATING_SYSTEMS:
            raise BadRequest(f"unknown os {wanted[:40]!r}: the client is built for "
                             f"{', '.join(OPERATING_SYSTEMS)}")
        if self._built is None:
            async with self._building:
                if self._built is None:
                    self._built = await self._in_thread(self._build)
        return self._built[wanted]
