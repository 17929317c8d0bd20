"""A small, strict parser of git-config ("gcfg") syntax.

It only turns text into a flat list of entries; what sections and keys mean,
and which may repeat, is up to the caller (see pm.config).  It follows
git-config where git is clear, and refuses what git would refuse or where a
lenient reading could silently change a value:

* ``[Section]`` and ``[Section "sub"]``; the subsection is case-sensitive and
  knows the escapes ``\\"`` and ``\\\\``.  Section names, like keys, are ASCII
  letters, digits and ``-``, starting with a letter; ``[a.b]`` (git's
  deprecated subsection spelling) and whitespace inside the brackets are
  refused.
* ``Key = value``, or a bare ``Key``, which git reads as boolean true and which
  is reported here with ``value=None``; ``Key =`` is the empty string.
* Whitespace around a value is dropped, whitespace inside it is kept as
  written, and double-quoted parts are kept verbatim.
* ``;`` and ``#`` start a comment, on their own line or after a value, unless
  inside double quotes.
* Escapes ``\\"``, ``\\\\``, ``\\n``, ``\\t`` and ``\\b`` in values, inside or
  outside quotes; any other escape is an error, as in git.
* A backslash at the end of a line continues the value on the next line.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from pm.errors import ConfigError

__all__ = ["Entry", "parse", "quote"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
# ASCII only: a non-breaking space in a value is far more likely content than layout.
_WHITESPACE = " \t\r\f\v"
_COMMENT = "#;"
_VALUE_ESCAPES = MappingProxyType({'"': '"', "\\": "\\", "n": "\n", "t": "\t", "b": "\b"})
_SUBSECTION_ESCAPES = '"\\'
_QUOTE_ESCAPES = MappingProxyType(
    str.maketrans({'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\b": "\\b"})
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``key = value`` line; ``line`` is where the key is written."""

    section: str
    subsection: str | None
    key: str
    value: str | None
    line: int


def quote(value: str) -> str:
    """Render ``value`` as a double-quoted gcfg string, for messages and output."""
    return '"' + value.translate(_QUOTE_ESCAPES) + '"'


def parse(
    text: str,
    filename: str,
    on_section: Callable[[str, str | None, int], None] | None = None,
) -> list[Entry]:
    """Parse gcfg ``text``; ``filename`` is only used in error messages.

    ``on_section(name, subsection, line)`` sees every section header, so a
    caller can refuse an unknown section even when no key follows it.
    Raises ConfigError("{filename}:{line}: {reason}") on the first syntax error.
    """
    # Split on "\n" only: str.splitlines would also break on form feeds and
    # Unicode separators, which git keeps inside a line.
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    entries: list[Entry] = []
    section: str | None = None
    subsection: str | None = None
    index = 0
    while index < len(lines):
        lineno = index + 1
        line = lines[index].strip(_WHITESPACE)
        index += 1
        if not line or line[0] in _COMMENT:
            continue
        if line[0] == "[":
            section, subsection = _parse_header(line, filename, lineno)
            if on_section is not None:
                on_section(section, subsection, lineno)
            continue
        match = _NAME.match(line)
        rest = line[match.end() :].lstrip(_WHITESPACE) if match else line
        if match is None or (rest and rest[0] != "=" and rest[0] not in _COMMENT):
            name = line.split("=", 1)[0].strip(_WHITESPACE)
            raise _error(
                filename,
                lineno,
                f"invalid key name {quote(name)}: "
                "keys are letters, digits and '-', starting with a letter",
            )
        key = match.group()
        if section is None:
            raise _error(filename, lineno, f"key {quote(key)} before any [section] header")
        value: str | None = None
        if rest.startswith("="):
            value, index = _parse_value(rest[1:], lines, index, filename, lineno)
        entries.append(Entry(section, subsection, key, value, lineno))
    return entries


def _parse_header(line: str, filename: str, lineno: int) -> tuple[str, str | None]:
    """Read ``[name]`` or ``[name "sub"]``, optionally followed by a comment."""

    def bad(reason: str) -> ConfigError:
        return _error(filename, lineno, f"bad section header {quote(line)}: {reason}")

    match = _NAME.match(line, 1)
    if match is None:
        raise bad("section names are letters, digits and '-', starting with a letter")
    name = match.group()
    pos = match.end()
    subsection: str | None = None
    spaces = len(line) - pos - len(line[pos:].lstrip(_WHITESPACE))
    if spaces and line.startswith('"', pos + spaces):
        pos += spaces + 1
        chars: list[str] = []
        while True:
            if pos >= len(line):
                raise bad("unterminated subsection name")
            char = line[pos]
            pos += 1
            if char == '"':
                break
            if char == "\\":
                if pos >= len(line) or line[pos] not in _SUBSECTION_ESCAPES:
                    escape = line[pos - 1 : pos + 1]
                    raise bad(f'unknown escape "{escape}" in subsection name (known: \\" and \\\\)')
                char = line[pos]
                pos += 1
            chars.append(char)
        subsection = "".join(chars)
    if not line.startswith("]", pos):
        expected = '"]"' if subsection is not None else '"]" or \' "subsection"]\''
        raise bad(f"expected {expected} after {quote(line[1:pos])}")
    rest = line[pos + 1 :].lstrip(_WHITESPACE)
    if rest and rest[0] not in _COMMENT:
        raise bad("unexpected text after the closing ']'")
    return name, subsection


def _parse_value(
    text: str, lines: list[str], index: int, filename: str, lineno: int
) -> tuple[str, int]:
    """Read a value starting at ``text`` (what follows ``=``) on line ``lineno``.

    ``index`` is the index of the next unread line; continuation lines are
    consumed from there. Returns the value and the index of the next unread line.
    """
    out: list[str] = []
    # Whitespace outside quotes is held back until something follows it, which
    # is how git drops trailing blanks yet keeps those between words.
    pending: list[str] = []
    quoted = False
    pos = 0
    while True:
        if pos >= len(text):
            if quoted:
                raise _error(filename, lineno, "unterminated quoted string")
            return "".join(out), index
        char = text[pos]
        pos += 1
        if not quoted:
            if char in _WHITESPACE:
                # Like git, blanks before any content (even an empty "") are layout.
                if out:
                    pending.append(char)
                continue
            if char in _COMMENT:
                return "".join(out), index
        out.extend(pending)
        pending.clear()
        if char == '"':
            quoted = not quoted
        elif char != "\\":
            out.append(char)
        elif pos >= len(text):
            # Line continuation; a backslash on the last line of the file is
            # treated as continuing onto an empty line, so the value just ends.
            text = lines[index] if index < len(lines) else ""
            index = min(index + 1, len(lines))
            lineno += 1
            pos = 0
        elif text[pos] in _VALUE_ESCAPES:
            out.append(_VALUE_ESCAPES[text[pos]])
            pos += 1
        else:
            raise _error(
                filename,
                lineno,
                f'unknown escape "{text[pos - 1 : pos + 1]}" '
                '(known: \\", \\\\, \\n, \\t, \\b, and \\ at the end of a line)',
            )


def _error(filename: str, lineno: int, reason: str) -> ConfigError:
    return ConfigError(f"{filename}:{lineno}: {reason}")
