"""A package's description (its README) as safe HTML.

readme_renderer does what PyPI does: Markdown through comrak (GFM or
CommonMark, by the ``variant`` of ``Description-Content-Type``),
reStructuredText through docutils with raw HTML and file inclusion off, and
every result through the nh3 sanitiser (no script, no event handlers, links
only to http, https and mailto). Text it cannot render, and ``text/plain``, is
shown as escaped plain text.

Rendering a long reStructuredText README takes docutils tens of milliseconds,
so it runs in a thread, and results are kept by the description's digest: a
description never changes once uploaded.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from email.message import Message

from markupsafe import Markup
from readme_renderer import markdown, rst, txt

from pm.blobs import RunInThread

MARKDOWN = "text/markdown"
RST = "text/x-rst"
PLAIN = "text/plain"
# Rendered READMEs larger than this are rendered again rather than kept.
_CACHE_ENTRY_LIMIT = 512 * 1024


def content_type_parts(content_type: str | None) -> tuple[str, str | None]:
    """The media type (default reStructuredText, as PyPI assumes) and its ``variant``."""
    if not content_type or not content_type.strip():
        return RST, None
    message = Message()
    message["content-type"] = content_type
    variant = message.get_param("variant")
    return message.get_content_type(), variant if isinstance(variant, str) else None


def render(text: str, content_type: str | None) -> tuple[Markup, str]:
    """Sanitised HTML of ``text``, and the kind it was rendered as (the media type)."""
    media, variant = content_type_parts(content_type)
    rendered: str | None = None
    kind = PLAIN
    if media == MARKDOWN:
        rendered = markdown.render(text, variant=variant or "GFM")
        kind = MARKDOWN
    elif media == RST:
        rendered = rst.render(text)
        kind = RST
    if rendered is None:
        rendered = txt.render(text) or ""
        kind = PLAIN
    # Safe: every readme_renderer result has been through nh3.
    return Markup(rendered), kind


class ReadmeRenderer:
    """Renders descriptions in a thread and keeps the last ``cache_size`` results."""

    def __init__(self, in_thread: RunInThread, cache_size: int = 256) -> None:
        self._in_thread = in_thread
        self._cache: OrderedDict[str, tuple[Markup, str]] = OrderedDict()
        self._cache_size = cache_size

    async def render(self, text: str, content_type: str | None) -> tuple[Markup, str]:
        key = hashlib.sha256(f"{content_type or ''}\0{text}".encode()).hexdigest()
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        result: tuple[Markup, str] = await self._in_thread(render, text, content_type)
        if len(result[0]) <= _CACHE_ENTRY_LIMIT:
            self._cache[key] = result
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result
