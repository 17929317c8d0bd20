"""The Jinja2 environment of the UI's templates, their filters, and the stylesheet.

Jinja2 rather than ``twisted.web.template``: templates that inherit one base
page (one look everywhere), loops and conditionals that read like the page,
and compiled rendering that stays fast for a thousand rows. Autoescaping is on
for every template, and undefined names are errors, so a typo cannot silently
drop a field. Only ``Markup`` made by ``pm.ui.readme`` (sanitised by nh3) is
inserted unescaped.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]

from pm import __version__

# Pygments styles for code in READMEs (readme_renderer marks tokens with
# Pygments' short class names inside <pre>).
_LIGHT_CODE_STYLE = "default"
_DARK_CODE_STYLE = "github-dark"


@dataclass(frozen=True)
class Asset:
    """A static file, held in memory, with its strong ETag."""

    body: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.body).hexdigest()[:20]


def _stylesheet() -> bytes:
    own = importlib.resources.files("pm.ui").joinpath("static/ui.css").read_bytes()
    light = HtmlFormatter(style=_LIGHT_CODE_STYLE).get_token_style_defs(".readme pre")
    dark = HtmlFormatter(style=_DARK_CODE_STYLE).get_token_style_defs(".readme pre")
    code = f"\n/* Code in READMEs (Pygments) */\n{light}\n" \
           f"@media (prefers-color-scheme: dark) {{\n{dark}\n}}\n"
    return own + code.encode()


def utc_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_size(size: int) -> str:
    """Bytes for people: 1000-based units, as pip and PyPI print them."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


class Templates:
    """Renders the named template to UTF-8 bytes; holds the stylesheet."""

    def __init__(self) -> None:
        self.stylesheet = Asset(_stylesheet(), "text/css; charset=utf-8")
        self._env = Environment(
            loader=PackageLoader("pm.ui", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._env.filters.update(utc=utc_time, iso=iso_time, filesize=file_size)
        self._env.globals.update(
            server_version=__version__,
            stylesheet_url=f"/static/ui.css?v={self.stylesheet.etag}",
        )

    def render(self, name: str, /, **context: Any) -> bytes:
        return self._env.get_template(name).render(**context).encode()
