"""Real R source packages, built with ``R CMD build`` from a few generated files.

Each package exports ``{name}_hello()``, which returns a string; a package importing others
calls their ``_hello()`` too, so installing it and calling the function shows the whole
dependency chain was installed and loaded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


def build_r_package(
    where: Path,
    name: str,
    version: str,
    *,
    imports: Sequence[str] = (),
    description_extra: str = "",
    code: str | None = None,
    title: str | None = None,
) -> Path:
    """Builds ``{name}_{version}.tar.gz`` in ``where`` and returns its path.

    ``description_extra`` is appended to DESCRIPTION as it is (DCF lines, e.g. a Suggests
    field). ``code`` replaces the generated ``R/{name}.R``; it must still define
    ``{name}_hello``, which NAMESPACE exports. ``title`` replaces the generated Title.
    """
    source = where / name
    (source / "R").mkdir(parents=True, exist_ok=True)
    description = [
        f"Package: {name}",
        f"Version: {version}",
        f"Title: {title}" if title is not None else f"Title: Test Package {name}",
        f"Description: A package built by the tests, exporting {name}_hello().",
        "Authors@R: person(\"Test\", \"Author\", email = \"author@localhost\",",
        "    role = c(\"aut\", \"cre\"))",
        "License: GPL-3",
        "Encoding: UTF-8",
    ]
    if imports:
        description.append(f"Imports: {', '.join(imports)}")
    text = "\n".join(description) + "\n"
    if description_extra:
        text += description_extra.rstrip("\n") + "\n"
    (source / "DESCRIPTION").write_text(text, encoding="utf-8")
    namespace = [f"export({name}_hello)"]
    namespace += [f"importFrom({dependency}, {dependency}_hello)" for dependency in imports]
    (source / "NAMESPACE").write_text("\n".join(namespace) + "\n", encoding="utf-8")
    if code is None:
        greetings = ", ".join([f'"hello from {name}"'] + [f"{d}_hello()" for d in imports])
        code = f'{name}_hello <- function() paste(c({greetings}), collapse = "; ")\n'
    (source / "R" / f"{name}.R").write_text(code, encoding="utf-8")
    result = subprocess.run(
        ["R", "CMD", "build", "--no-build-vignettes", "--no-manual", name],
        cwd=where, capture_output=True, text=True, check=False,
    )
    tarball = where / f"{name}_{version}.tar.gz"
    if result.returncode != 0 or not tarball.is_file():
        raise RuntimeError(f"R CMD build {name} failed:\n{result.stdout}\n{result.stderr}")
    return tarball
