"""Unit tests for pm.gcfg, the git-config syntax parser."""

import dataclasses

import pytest

from pm.errors import ConfigError
from pm.gcfg import Entry, parse, quote


def values(text: str) -> list[str | None]:
    """The values of all entries in ``text``, in order."""
    return [entry.value for entry in parse(text, "t.gcfg")]


def value(text: str) -> str | None:
    """The value of the one entry ``Key = <text>`` in section [S]."""
    (entry,) = parse(f"[S]\nKey = {text}\n", "t.gcfg")
    return entry.value


def error(text: str, filename: str = "etc/t.gcfg") -> str:
    """The message of the ConfigError that parsing ``text`` raises."""
    with pytest.raises(ConfigError) as info:
        parse(text, filename)
    return str(info.value)


# --- sections, keys and entries -------------------------------------------------------


def test_entries_carry_section_key_value_and_line() -> None:
    """Each key line becomes an Entry with its section, key, value and 1-based line."""
    text = "[Server]\nAddress = http://x\n\n[HTTP]\nListen = :1\n"
    assert parse(text, "t.gcfg") == [
        Entry("Server", None, "Address", "http://x", 2),
        Entry("HTTP", None, "Listen", ":1", 5),
    ]


def test_empty_and_comment_only_text_has_no_entries() -> None:
    """Blank lines, comments and a section without keys produce no entries."""
    assert parse("", "t.gcfg") == []
    assert parse("\n  \n\t\n; one\n# two\n  ; indented\n[Server]\n", "t.gcfg") == []


def test_section_and_key_keep_their_spelling() -> None:
    """Names are returned as written; comparing them case-insensitively is the caller's job."""
    (entry,) = parse("[sErVeR]\ndAtAdIr = x\n", "t.gcfg")
    assert (entry.section, entry.key) == ("sErVeR", "dAtAdIr")


def test_entry_is_frozen() -> None:
    """Entries are immutable values."""
    entry = Entry("S", None, "K", "v", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.value = "w"  # type: ignore[misc]


def test_repeated_key_gives_repeated_entries() -> None:
    """A key written twice is reported twice, in order, for the caller to append or refuse."""
    entries = parse("[S]\nK = a\nK = b\n[S]\nK = c\n", "t.gcfg")
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("K", "a", 2),
        ("K", "b", 3),
        ("K", "c", 5),
    ]


def test_keys_may_hold_digits_and_dashes() -> None:
    """Key names are letters, digits and '-', starting with a letter."""
    (entry,) = parse("[S]\nk-1-B2 = v\n", "t.gcfg")
    assert entry.key == "k-1-B2"


def test_leading_and_trailing_whitespace_on_lines_is_ignored() -> None:
    """Indentation and trailing blanks around headers and keys do not matter."""
    entries = parse("  \t[S]  \n\t  Key   =   v  \t\n", "t.gcfg")
    assert entries == [Entry("S", None, "Key", "v", 2)]


def test_no_space_around_equals_is_fine() -> None:
    """``Key=value`` needs no blanks around the '='."""
    assert values("[S]\nKey=value\n") == ["value"]


def test_crlf_line_endings_and_bom() -> None:
    """Windows line endings and a UTF-8 byte-order mark are accepted."""
    assert parse('\ufeff[S]\r\nK = v\r\nL = "w "\r\n', "t.gcfg") == [
        Entry("S", None, "K", "v", 2),
        Entry("S", None, "L", "w ", 3),
    ]


def test_last_line_needs_no_newline() -> None:
    """A file that does not end in a newline still yields its last entry."""
    assert values("[S]\nK = v") == ["v"]


# --- section headers ------------------------------------------------------------------


def test_subsection() -> None:
    """``[Section "sub"]`` gives the subsection, case and inner blanks kept."""
    (entry,) = parse('[Remote "My Origin"]\nK = v\n', "t.gcfg")
    assert (entry.section, entry.subsection) == ("Remote", "My Origin")


def test_subsection_escapes() -> None:
    """Subsections know the escapes \\" and \\\\ ."""
    (entry,) = parse('[S "a \\"b\\" \\\\ c"]\nK = v\n', "t.gcfg")
    assert entry.subsection == 'a "b" \\ c'


def test_subsection_may_be_empty_and_differs_from_none() -> None:
    """``[S ""]`` has an empty subsection, not none."""
    (entry,) = parse('[S ""]\nK = v\n', "t.gcfg")
    assert entry.subsection == ""


def test_subsection_blanks_before_quote() -> None:
    """Any blanks may separate the section name from the quoted subsection."""
    (entry,) = parse('[S \t  "x"]\nK = v\n', "t.gcfg")
    assert entry.subsection == "x"


def test_new_header_resets_subsection() -> None:
    """A plain header after a subsection header starts a section without subsection."""
    entries = parse('[S "x"]\nK = 1\n[S]\nK = 2\n', "t.gcfg")
    assert [e.subsection for e in entries] == ["x", None]


def test_comment_after_header() -> None:
    """A comment may follow a section header."""
    assert parse("[S] ; note\nK = v\n[T]# note\nL = w\n", "t.gcfg") == [
        Entry("S", None, "K", "v", 2),
        Entry("T", None, "L", "w", 4),
    ]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("[]", "section names are letters"),
        ("[S", "expected"),
        ("[S x]", "expected"),
        ("[ S]", "section names are letters"),
        ("[S ]", "expected"),
        ("[1S]", "section names are letters"),
        ("[S_x]", "expected"),
        ("[S.x]", "expected"),
        ('[S"x"]', "expected"),
        ('[S "x]', "unterminated subsection name"),
        ('[S "x" ]', 'expected "]"'),
        ('[S "x"', 'expected "]"'),
        ('[S "a\\tb"]', 'unknown escape "\\t" in subsection name'),
        ('[S "a\\', "unknown escape"),
        ("[S] K = v", "unexpected text after the closing ']'"),
        ("[S]]", "unexpected text"),
    ],
)
def test_bad_section_header(header: str, reason: str) -> None:
    """A malformed header is refused with the file, the line, the header and a reason."""
    message = error(f"; top\n{header}\nK = v\n")
    assert message.startswith(f"etc/t.gcfg:2: bad section header {quote(header)}: ")
    assert reason in message


# --- values ---------------------------------------------------------------------------


def test_bare_key_has_no_value() -> None:
    """A key alone on a line (git's boolean true) has value None."""
    assert values("[S]\nFlag\nOther ; comment\nThird#comment\n") == [None, None, None]


def test_empty_value_is_empty_string() -> None:
    """``Key =`` is the empty string, not a bare key."""
    assert values('[S]\nK =\nL = ; comment\nM = ""\n') == ["", "", ""]


def test_internal_whitespace_is_kept() -> None:
    """Blanks between words are kept exactly as written; only the ends are trimmed."""
    assert value("a  b\tc   ") == "a  b\tc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("value ; comment", "value"),
        ("value # comment", "value"),
        ("value;comment", "value"),
        ("a#b", "a"),
        ("; all comment", ""),
        ('"a ; b"', "a ; b"),
        ('"a # b" # c', "a # b"),
        ('x "; y" z ; c', "x ; y z"),
    ],
)
def test_comments_after_values(text: str, expected: str) -> None:
    """';' and '#' end the value unless inside double quotes."""
    assert value(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"  padded  "', "  padded  "),
        ('a" b "c', "a b c"),
        ('"a"  "b"', "a  b"),
        ('""', ""),
        ('"" x', "x"),
        ('"x" ', "x"),
        ("say \"hi\" 'there'", "say hi 'there'"),
    ],
)
def test_quoted_parts(text: str, expected: str) -> None:
    """Double-quoted parts keep their blanks; the quotes themselves are dropped."""
    assert value(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a\\"b', 'a"b'),
        ("a\\\\b", "a\\b"),
        ("a\\nb", "a\nb"),
        ("a\\tb", "a\tb"),
        ("a\\bb", "a\bb"),
        ('"in \\"quotes\\" \\t"', 'in "quotes" \t'),
        ("x\\\\;y", "x\\"),
        ('"\\\\"', "\\"),
    ],
)
def test_escapes(text: str, expected: str) -> None:
    """Values know the escapes \\" \\\\ \\n \\t \\b, inside and outside quotes."""
    assert value(text) == expected


@pytest.mark.parametrize("escape", ["\\x", "\\;", "\\ ", "\\r", "\\0", "\\'"])
def test_unknown_escape(escape: str) -> None:
    """Any other escape is an error naming the file, line and escape."""
    message = error(f"[S]\n\nK = a{escape}b\n")
    assert message.startswith(f'etc/t.gcfg:3: unknown escape "{escape}"')


def test_unknown_escape_inside_quotes() -> None:
    """Escapes inside quotes are checked too."""
    assert error('[S]\nK = "a\\qb"\n').startswith('etc/t.gcfg:2: unknown escape "\\q"')


def test_line_continuation() -> None:
    """A trailing backslash joins the next line; the next line's indentation is kept."""
    entries = parse("[S]\nK = one \\\n  two\\\nthree\nL = x\n", "t.gcfg")
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("K", "one   twothree", 2),
        ("L", "x", 5),
    ]


def test_line_continuation_inside_quotes() -> None:
    """A quoted string may be continued onto the next line with a backslash."""
    assert values('[S]\nK = "a \\\n b"\n') == ["a  b"]


def test_line_continuation_then_comment() -> None:
    """A comment on a continuation line ends the value; its backslash continues nothing."""
    assert values("[S]\nK = a \\\n b ; c \\\nL = d\n") == ["a  b", "d"]


def test_continued_lines_are_not_parsed_as_keys_or_headers() -> None:
    """Text on a continuation line is part of the value even if it looks like syntax."""
    assert values("[S]\nK = \\\n[T]\n") == ["[T]"]


def test_line_continuation_at_end_of_file() -> None:
    """A backslash on the very last line just ends the value."""
    assert values("[S]\nK = a\\") == ["a"]
    assert values("[S]\nK = a\\\n") == ["a"]


def test_line_continuation_onto_blank_line() -> None:
    """Continuing onto a blank line ends the value there; later lines are parsed as usual.

    As in git, blanks before the backslash are part of the value.
    """
    assert values("[S]\nK = a \\\n\nL = b\n") == ["a ", "b"]


def test_line_numbers_after_continuations() -> None:
    """Continuation lines count, so later entries and errors report the right line."""
    assert parse("[S]\nK = a\\\nb\\\nc\nL = d\n", "t.gcfg")[1].line == 5
    assert error("[S]\nK = a\\\nb\\\nc\\x\n").startswith('etc/t.gcfg:4: unknown escape "\\x"')


def test_unterminated_quote() -> None:
    """An opening quote without its closing one is an error on that line."""
    assert error('[S]\nK = "abc\nL = x"\n') == "etc/t.gcfg:2: unterminated quoted string"


def test_unterminated_quote_after_continuation_reports_last_line() -> None:
    """The error points at the line where the value ended with the quote still open."""
    assert error('[S]\nK = "abc\\\ndef\n').startswith("etc/t.gcfg:3: unterminated quoted string")


def test_unicode_is_kept() -> None:
    """Non-ASCII text, including a non-breaking space, is kept as content."""
    assert value("héllo wörld\u00a0") == "héllo wörld\u00a0"


# --- key errors -----------------------------------------------------------------------


def test_key_before_section() -> None:
    """A key before any header is an error naming the file, line and key."""
    assert error("; header comes later\nKey = v\n[S]\n") == (
        'etc/t.gcfg:2: key "Key" before any [section] header'
    )


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("1key = v", "1key"),
        ("-key = v", "-key"),
        ("key_name = v", "key_name"),
        ("key.name = v", "key.name"),
        ("two words = v", "two words"),
        ('"quoted" = v', '"quoted"'),
        ("= v", ""),
        ("key value", "key value"),
        ("kéy = v", "kéy"),
    ],
)
def test_invalid_key_name(line: str, name: str) -> None:
    """A key that is not letters, digits and '-' starting with a letter is refused."""
    message = error(f"[S]\n{line}\n")
    assert message.startswith(f"etc/t.gcfg:2: invalid key name {quote(name)}: ")


def test_first_error_stops_parsing() -> None:
    """Only the first error is reported."""
    assert error("[S]\n1 = a\n2 = b\n").startswith("etc/t.gcfg:2:")


# --- quote ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "plain", 'a "b"', "back\\slash", "tab\there", "new\nline", "bs\b", " ; # "]
)
def test_quote_round_trips(text: str) -> None:
    """quote() renders a value that parses back to itself."""
    assert value(quote(text)) == text


def test_quote_escapes() -> None:
    """quote() uses the gcfg escapes for quotes, backslashes and control characters."""
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
