"""RFC 9110 challenge lists and auth-params: a hand-written linear scanner and a formatter.

The scanner walks the value once, left to right. Regular expressions are used only to take one
lexeme at a fixed position (a token, a run of whitespace, an escape-free quoted-string); each is a
single possessive character-class run, so nothing backtracks (CORE-03/04/05, pathological input).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mpp.core.errors import FormatError

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]++")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]++=*+")
_OWS = re.compile(r"[ \t]*+")
_SEP = re.compile(r"[ \t,]*+")
_QUOTED_PLAIN = re.compile(r'"([^"\\]*+)"')
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 9110 §5.6.4: qdtext and quoted-pair exclude CTLs other than HTAB; decoded `\uXXXX` escapes
# are held to the same rule so that whatever parses can be formatted again (CORE-03).
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class ScanError(ValueError):
    """Syntax error at an offset; converted into a typed ParseError by the caller."""


class _Unterminated(ScanError):
    """A quoted-string that never closes: everything after its opening quote is inside it."""


@dataclass(frozen=True, slots=True)
class RawChallenge:
    """One challenge as scanned: scheme as written, params with lowercased names, in order.

    `error` is set when the challenge is syntactically broken; the scanner then resynchronised
    at the next top-level comma so later challenges are still found.
    """

    scheme: str
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None
    error: str | None = None


def _read_quoted(s: str, i: int) -> tuple[str, int]:
    """Read a quoted-string starting at s[i] == '"'; return (unescaped value, next index)."""
    m = _QUOTED_PLAIN.match(s, i)
    if m is not None:
        value, end = m.group(1), m.end()
    else:
        value, end = _read_escaped(s, i)
    if _CTL.search(value) is not None:
        raise ScanError("control character in quoted-string")
    return value, end


def _read_escaped(s: str, i: int) -> tuple[str, int]:
    n = len(s)
    p = i + 1
    parts: list[str] = []
    q = s.find('"', p)
    while True:
        if q < 0:
            raise _Unterminated("unterminated quoted-string")
        b = s.find("\\", p, q)
        if b < 0:
            parts.append(s[p:q])
            return "".join(parts), q + 1
        parts.append(s[p:b])
        if b + 1 >= n:
            raise _Unterminated("unterminated quoted-string")
        ch = s[b + 1]
        p = b + 2
        if ch == "u" and _HEX.issuperset(s[p : p + 4]) and len(s[p : p + 4]) == 4:
            # Peer SDKs escape non-Latin-1 text as UTF-16 `\uXXXX` inside quoted-strings.
            ch, p = _read_utf16(s, p)
        parts.append(ch)
        if p > q:
            q = s.find('"', p)


def _read_utf16(s: str, p: int) -> tuple[str, int]:
    unit = int(s[p : p + 4], 16)
    p += 4
    if 0xD800 <= unit <= 0xDBFF and s[p : p + 2] == "\\u":
        low_hex = s[p + 2 : p + 6]
        if len(low_hex) == 4 and _HEX.issuperset(low_hex):
            low = int(low_hex, 16)
            if 0xDC00 <= low <= 0xDFFF:
                return chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)), p + 6
    if 0xD800 <= unit <= 0xDFFF:
        return "\ufffd", p
    return chr(unit), p


def _skip_to_comma(s: str, i: int) -> int:
    """Resynchronise: index of the next comma outside quotes (or len(s))."""
    n = len(s)
    while i < n:
        c = s[i]
        if c == ",":
            return i
        if c == '"':
            try:
                _, i = _read_quoted(s, i)
            except ScanError:
                return n
            continue
        i += 1
    return n


def _end_of_element(s: str, i: int) -> int:
    """Skip OWS; must be at the end or at a comma. Returns that index, raises otherwise."""
    i = _OWS.match(s, i).end()  # type: ignore[union-attr]
    if i < len(s) and s[i] != ",":
        raise ScanError(f"unexpected character at offset {i}")
    return i


class _Builder:
    __slots__ = ("error", "params", "scheme", "token68")

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.params: list[tuple[str, str]] = []
        self.token68: str | None = None
        self.error: str | None = None

    def build(self) -> RawChallenge:
        return RawChallenge(self.scheme, tuple(self.params), self.token68, self.error)


def scan_challenges(s: str) -> list[RawChallenge]:
    """Split one WWW-Authenticate value into challenges (any scheme, token68 included).

    A new challenge starts at a token that is not followed by `=` (CORE-04); commas and scheme
    names inside quoted-strings are never boundaries because quoted-strings are consumed whole.
    """
    out: list[RawChallenge] = []
    cur: _Builder | None = None
    n = len(s)
    i = 0
    while True:
        i = _SEP.match(s, i).end()  # type: ignore[union-attr]
        if i >= n:
            break
        try:
            m = _TOKEN.match(s, i)
            if m is None:
                raise ScanError(f"unexpected character at offset {i}")
            name = m.group()
            j = _OWS.match(s, m.end()).end()  # type: ignore[union-attr]
            if j < n and s[j] == "=":
                if cur is None:
                    raise ScanError("auth-param before any scheme")
                if cur.token68 is not None:
                    raise ScanError("auth-param after token68")
                j = _OWS.match(s, j + 1).end()  # type: ignore[union-attr]
                if j < n and s[j] == '"':
                    try:
                        value, j = _read_quoted(s, j)
                    except _Unterminated:
                        # Lenient: a param whose quote never closes is ignored, with the rest
                        # of the value (it is inside that quote); what came before stands.
                        break
                    cur.params.append((name.lower(), value))
                    # Lenient: text after a closing quote (an unescaped quote inside the
                    # value) is ignored up to the next comma; the value ends at that quote.
                    i = _OWS.match(s, j).end()  # type: ignore[union-attr]
                    if i < n and s[i] != ",":
                        i = _skip_to_comma(s, i)
                    continue
                vm = _TOKEN.match(s, j)
                if vm is None:
                    raise ScanError(f"auth-param {name.lower()} has no value")
                cur.params.append((name.lower(), vm.group()))
                i = _end_of_element(s, vm.end())
                continue
            # A new challenge: scheme [ 1*SP ( token68 / #auth-param ) ].
            if cur is not None:
                out.append(cur.build())
            cur = _Builder(name)
            i = m.end()
            if i < n and s[i] in " \t":
                k = _OWS.match(s, i).end()  # type: ignore[union-attr]
                t = _TOKEN68.match(s, k)
                if t is not None:
                    end = _OWS.match(s, t.end()).end()  # type: ignore[union-attr]
                    if end >= n or s[end] == ",":
                        cur.token68 = t.group()
                        i = end
                        continue
                i = k
            elif i < n and s[i] != ",":
                raise ScanError(f"unexpected character after scheme at offset {i}")
        except ScanError as exc:
            if cur is None:
                cur = _Builder("")
            if cur.error is None:
                cur.error = str(exc)
            i = _skip_to_comma(s, i)
    if cur is not None:
        out.append(cur.build())
    return out


def is_token(value: str) -> bool:
    m = _TOKEN.fullmatch(value)
    return m is not None


def quote(value: str) -> str:
    """Format a quoted-string: escape `"` and `\\`, refuse CR/LF and other controls (CORE-03).

    Non-ASCII text is written as UTF-16 `\\uXXXX` escapes, as the peer SDKs read it, so the
    header stays ASCII (ASGI servers encode header values as Latin-1).
    """
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    out: list[str] = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F or ch == "\t":
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            raise FormatError("header value contains a control character (CR/LF injection)")
        elif code <= 0xFFFF:
            if 0xD800 <= code <= 0xDFFF:
                raise FormatError("header value contains an unpaired surrogate")
            out.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    out.append('"')
    return "".join(out)


def format_challenge(scheme: str, params: Iterable[tuple[str, str]]) -> str:
    """`scheme name="value", ...`; names must be tokens, values are always quoted."""
    parts: list[str] = []
    for name, value in params:
        if not is_token(name):
            raise FormatError(f"auth-param name {name!r} is not a token")
        parts.append(f"{name}={quote(value)}")
    return f"{scheme} {', '.join(parts)}" if parts else scheme
