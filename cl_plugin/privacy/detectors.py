"""PII detection and typed redaction.

The writer redacts every text field of every record, so :meth:`PIIRedactor.find` is built for texts that hold
no PII at all: cheap C-level prefilters (``'@' in text``, one ``bytes.translate`` of the text into character
classes, literal-prefix regexes) decide which detectors run, and candidates are validated in Python (Luhn,
SSN ranges, ``ipaddress``) only when one exists. Each span becomes ``[TYPE]``:

=========== =================================================================================
EMAIL       addresses, including non-ASCII local parts and domains, plus-addressing, subdomains
PHONE       NANP (``(555) 123-4567``, ``x123`` extensions), international (``+44 20 7946 0958``,
            ``0044 ...``), national formats with a trunk 0 (``020 7946 0958``, ``(03) 2545 5013``), and
            bare 10-11 digit numbers right after a word such as "call" or "phone"
SSN         ``123-45-6789`` / ``123 45 6789`` within the issued ranges; bare 9 digits after "SSN"
CREDIT_CARD 13-19 digits (spaces, dashes or none) passing Luhn with a known card-network prefix
IP_ADDRESS  IPv4 and IPv6 (full, ``::``-compressed, IPv4-mapped)
API_KEY     OpenAI/Anthropic ``sk-``, Stripe ``sk_live_``, AWS ``AKIA``/``ASIA``, Google ``AIza``,
            Hugging Face ``hf_``, GitHub, Slack, JWTs, ``Bearer``/``Basic`` credentials, PEM private keys,
            passwords in URLs, and the value of ``api_key=`` / ``token:`` / ``password=`` assignments
=========== =================================================================================

Ids that hold PII: a user or session id (or an interaction id) that is an e-mail address, a phone number
or any other span the redactor finds is never stored as given, and not as a placeholder either (that would
merge every such user into one): the writer stores its keyed hash, :func:`safe_identifier`, the same value
for the same id. The key is the one configured for id hashing when there is one, else ``$CL_PLUGIN_HASH_KEY``,
else a random key generated once and kept in a file (:func:`id_hash_key`). Ids without PII stay as given.

Known gaps: digits are ASCII digits and phone separators are space, ``.``, ``-``, ``/`` (not no-break
spaces); unseparated digit strings count only after a keyword; unquoted assigned values that read as a word
or code (``password: sunshine``, ``token = next_token``) are kept.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cl_plugin.errors import ConfigError

__all__ = ["PII_TYPES", "REDACTED", "PIIMatch", "PIIRedactor", "default_redactor"]

log = logging.getLogger("cl_plugin.privacy")

PII_TYPES: tuple[str, ...] = ("EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IP_ADDRESS", "API_KEY")
REDACTED = "[REDACTED]"
"""What :meth:`PIIRedactor.safe_redact` returns when redaction itself fails."""

# Among overlapping candidates of equal length, the lower rank names the merged span.
_RANK = {
    name: rank for rank, name in enumerate(("API_KEY", "EMAIL", "CREDIT_CARD", "SSN", "IP_ADDRESS", "PHONE"))
}


@dataclasses.dataclass(frozen=True, slots=True)
class PIIMatch:
    """One detected span; it never holds the matched text itself.

    Attributes:
        type: the PII type (``"EMAIL"``, ..., or a custom rule's name).
        start: index of the first character.
        end: index one past the last character.
    """

    type: str
    start: int
    end: int


# ---------------------------------------------------------------------------------------------------------
# Character-class maps: one C-level bytes.translate turns the text into a few classes, so the prefilter
# regexes get a literal first character (a fast search) instead of a character set (a slow per-char loop).
def _class_table(classify: Any) -> bytes:
    return bytes(classify(chr(code)) for code in range(256))


_DIGIT_CLASSES = _class_table(
    lambda c: ord("0") if "0" <= c <= "9" else ord(c) if c in " .()/-" else ord("x")
)
_WORD_CLASSES = _class_table(lambda c: ord("w") if c.isascii() and (c.isalnum() or c in "_-.~+/") else 32)
_HEX_CLASSES = _class_table(
    lambda c: ord("h") if c in "0123456789abcdefABCDEF" else ord(c) if c in ".:" else 32
)

# Over the digit classes, where every digit is "0": nine or more digits with short separators, starting with
# two digits (phones, SSNs, cards), or four dot-separated groups (IPv4). The pattern starts with a literal, so
# the search jumps from digit to digit; the lookarounds reject a run's later digits and short numbers early.
_DIGIT_CLUSTER = re.compile(
    rb"0(?:0(?<!000)(?=[0 .()/-]{7})(?:[ .()/-]{0,2}+0){7,}|(?<![0.]0)0{0,2}+\.0{1,3}+\.0{1,3}+\.0{1,3}+)"
)
_LONG_WORD = b"w" * 16  # every token detector needs a run of >= 16 [A-Za-z0-9_.~+/-]

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_NUMERIC = re.compile(
    rf"""
    (?<![\w.+-])
    (?:
        (?P<card>[0-9]{{4}}(?P<cs>[ -])[0-9]{{4}}(?P=cs)[0-9]{{4}}(?P=cs)[0-9]{{4}}(?:(?P=cs)[0-9]{{3}})?
               | [0-9]{{4}}(?P<as>[ -])[0-9]{{6}}(?P=as)[0-9]{{4,5}}
               | [0-9]{{13,19}})
      | (?P<ssn>[0-9]{{3}}(?P<ss>[ -])[0-9]{{2}}(?P=ss)[0-9]{{4}})
      | (?P<us>(?:1[ .-]?)?(?:\([2-9][0-9]{{2}}\)[ .-]?|[2-9][0-9]{{2}}[ .-])[0-9]{{3}}[ .-][0-9]{{4}})
      | (?P<national>0[1-9][0-9]{{0,4}}(?:[ /.-][0-9]{{2,8}}){{1,4}})
      | (?P<paren>(?:\(0[1-9][0-9]{{0,3}}\)|\([1-9][0-9]\))[ .-]?[0-9]{{2,8}}(?:[ .-][0-9]{{2,8}}){{0,3}})
      | (?P<intl>00[1-9][0-9]{{0,3}}(?:[ .-][0-9]{{1,8}}){{1,6}})
      | (?P<ipv4>{_OCTET}(?:\.{_OCTET}){{3}})
      | (?P<bare>[0-9]{{9,11}})
    )
    (?!(?!x[0-9]|ext)\w|[.-][0-9])   # "x12" / "ext. 12" may follow a phone number
    """,
    re.VERBOSE,
)
_PHONE_INTL = re.compile(
    r"""
    \+(?<![\w+]\+) [1-9][0-9]{0,3}        # country code
    (?:[ .-]?\((?:0|[0-9]{1,4})\))?      # (0) trunk prefix or (area code)
    [ .-]?[0-9]{1,12} (?:[ .-][0-9]{2,8})*
    (?![0-9]|[.,][0-9])                  # not a signed decimal like +35236450.6
    """,
    re.VERBOSE,
)
_DIGIT_RUN = re.compile(r"[0-9]+")
_EXTENSION = re.compile(r" ?(?:x|ext\.?|extension) ?[0-9]{1,6}(?![0-9])", re.IGNORECASE)
_PHONE_WORDS = ("phone", "call", "tel", "mobile", "cell", "fax", "sms", "whatsapp", "ring")
_SSN_WORDS = ("ssn", "social security", "ss#")

_EMAIL_LOCAL_REVERSED = re.compile(r"[\w.%+'-]{1,64}")
_IMAGE_SCALE = re.compile(r"[0-9]x\.")  # "icon@2x.png" is an asset name, not an address
_EMAIL_DOMAIN = re.compile(
    # The top-level domain may run into digits or "_" ("bob@example.com2"): the address still leaks.
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,8}(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{2,59})(?![^\W\d_]|-|\.[^\W_])"
)

_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.[0-9])"
)

# (regex, needs a digit): each starts with a literal so the search is fast; the lookbehind right after the
# literal keeps "task-force" or "desk-" from starting a match.
_TOKEN_RULES: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"sk(?<![\w-]sk)(?:-|_live_|_test_)[A-Za-z0-9_-]{20,}"), False),
    (
        re.compile(r"A(?<![A-Za-z0-9]A)(?:[KS]IA[A-Z0-9]{16}|Iza[A-Za-z0-9_-]{35})(?![A-Za-z0-9])"),
        False,
    ),  # AWS, Google
    (re.compile(r"hf_(?<![A-Za-z0-9]hf_)[A-Za-z0-9]{30,}"), False),  # Hugging Face
    (re.compile(r"gh(?<!\wgh)[pousr]_[A-Za-z0-9]{36,255}(?!\w)"), False),
    (re.compile(r"github_pat_(?<!\wgithub_pat_)[A-Za-z0-9_]{22,255}"), False),
    (re.compile(r"xox(?<![A-Za-z0-9]xox)[abposre]-[A-Za-z0-9-]{10,}"), True),
    (re.compile(r"eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), False),
    (re.compile(r"earer(?<=\b[Bb]earer)[ \t]+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)"), True),
    (re.compile(r"uthorization:[ \t]*[Bb]asic[ \t]+(?P<v>[A-Za-z0-9+/]{8,}={0,2})"), False),
    (
        re.compile(
            r"-----BEGIN[A-Z ]{0,20}PRIVATE KEY-----[\s\S]{0,10000}?-----END[A-Z ]{0,20}PRIVATE KEY-----"
        ),
        False,
    ),
)
_SECRET_KEYS = (
    "api_key", "api-key", "apikey", "api key", "access_key", "access key", "secret_key", "private_key",
    "token", "secret", "password", "passwd", "pwd", "passphrase", "credentials",
)  # fmt: skip
_KEY_LAST_CHARS = frozenset("yYnNtTdDeEsS\"' \t")  # a key name (or its closing quote) ends in one of these
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_PLAIN_WORD = re.compile(r"[A-Za-z_]+")
_ASSIGNED_VALUE = re.compile(
    r"""[ \t]*(?:"(?P<dq>[^"\n]{1,256})"|'(?P<sq>[^'\n]{1,256})'|(?P<bare>(?!\[)(?:[^\s"',;&<>()\[\]{}]|&(?!\w+=)){3,256}))"""
)


def _looks_like_code(text: str, m: re.Match[str]) -> bool:
    """An assigned value that reads as a name or code rather than a secret: a snake_case name (quoted or
    not), or, unquoted, a short word (``false``, ``str``), a dotted name or a call (``auth.token``, ``f(x)``).
    Secrets have digits or symbols, or are long."""
    value = m.group(m.lastgroup)
    word = _PLAIN_WORD.fullmatch(value) is not None
    if word and "_" in value:
        return True
    return m.lastgroup == "bare" and (
        (word and len(value) < 16)
        or _DOTTED_NAME.fullmatch(value) is not None
        or text[m.end() : m.end() + 1] in ("(", "[")
    )


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_network_ok(d: str) -> bool:
    """Visa, Mastercard, Amex, Discover, JCB, Diners and UnionPay prefixes with their lengths (not Maestro's
    12-digit numbers, which look like any other 12-digit id)."""
    n, p2, p3, p4 = len(d), int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37) or p4 in (1800, 2131):  # Amex; JCB's 15-digit ranges
        return n == 15
    if p4 == 6011 or 644 <= p3 <= 649 or p2 in (62, 65) or 3528 <= p4 <= 3589:
        return n >= 16
    return (300 <= p3 <= 305 or p2 in (36, 38, 39)) and n >= 14


def _ssn_ok(d: str) -> bool:
    area = d[:3]
    return area not in ("000", "666") and area[0] != "9" and d[3:5] != "00" and d[5:] != "0000"


def _preceded_by(text: str, start: int, words: tuple[str, ...]) -> bool:
    before = text[max(0, start - 32) : start].lower()
    return any(w in before for w in words)


def _numeric_type(m: re.Match[str], text: str) -> str | None:
    """Validate one ``_NUMERIC`` candidate and return its type, or None for a look-alike."""
    kind = m.lastgroup
    digits = "".join(_DIGIT_RUN.findall(m.group()))
    if kind == "card":
        return "CREDIT_CARD" if _card_network_ok(digits) and _luhn_ok(digits) else None
    if kind == "ssn":
        return "SSN" if _ssn_ok(digits) else None
    if kind == "us":
        return "PHONE"
    if kind == "national":
        return "PHONE" if 10 <= len(digits) <= 12 else None
    if kind == "paren":  # (0113) 496 0812, (03) 2545 5013, (48) 5084-2970
        return "PHONE" if 9 <= len(digits) <= 12 else None
    if kind == "intl":  # 00 + country code + number: the "+" of Europe
        return "PHONE" if 10 <= len(digits) <= 17 else None
    if kind == "ipv4":
        return "IP_ADDRESS"
    if len(digits) == 9:
        return "SSN" if _ssn_ok(digits) and _preceded_by(text, m.start(), _SSN_WORDS) else None
    return "PHONE" if _preceded_by(text, m.start(), _PHONE_WORDS) else None


def _extension_end(text: str, end: int) -> int:
    """Where a phone number ending at ``end`` really ends, counting an extension (``x326``, ``ext. 12``)."""
    ext = _EXTENSION.match(text, end)
    return ext.end() if ext else end


def _intl_phone_end(text: str, start: int, end: int) -> int | None:
    """End of the longest plausible E.164 number in ``text[start:end]`` (which starts with ``+``)."""
    span = text[start:end]
    nanp = span[1] == "1"  # every country code starting with 1 is NANP: exactly 11 digits
    limit = 11 if nanp else 15
    total = -1 if "(0)" in span else 0  # the (0) trunk prefix is not part of the number
    best = None
    for run in _DIGIT_RUN.finditer(span):
        total += run.end() - run.start()
        if total > limit:
            break
        if total >= (11 if nanp else 8):
            best = start + run.end()
    return best


class PIIRedactor:
    """Finds PII in text and replaces each span with a typed placeholder such as ``[EMAIL]``.

    Args:
        types: the built-in types to detect (case-insensitive); None means all of :data:`PII_TYPES`.
        extra_patterns: custom rules, ``{name: regex}``; matches become ``[NAME]`` (the name upper-cased).
            A built-in name adds a rule to that type.

    Raises:
        ConfigError: an unknown type, an ill-formed rule name or an invalid regex.

    Example:
        >>> PIIRedactor().redact("Mail jane.doe+cl@example.org or call (555) 123-4567.")
        'Mail [EMAIL] or call [PHONE].'
    """

    def __init__(
        self, types: Iterable[str] | None = None, extra_patterns: Mapping[str, str] | None = None
    ) -> None:
        if isinstance(types, str):  # PIIRedactor(types="EMAIL") means one type, not five letters
            types = [types]
        chosen = PII_TYPES if types is None else tuple(t.upper() for t in types)
        for name in chosen:
            if name not in PII_TYPES:
                raise ConfigError(
                    f"unknown PII type {name!r}; the allowed types are: {', '.join(PII_TYPES)}", key="types"
                )
        self.types = frozenset(chosen)
        extra = []
        for name, pattern in (extra_patterns or {}).items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ConfigError(
                    f"custom PII rule name {name!r} must be letters, digits and underscores, starting with a "
                    "letter (it becomes the placeholder [NAME])",
                    key="extra_patterns",
                )
            try:
                extra.append((name.upper(), re.compile(pattern)))
            except (re.error, TypeError) as exc:
                raise ConfigError(
                    f"custom PII rule {name!r}: {pattern!r} is not a valid regular expression ({exc})",
                    key=f"extra_patterns.{name}",
                ) from None
        self._extra = tuple(extra)
        self._numeric = bool(self.types & {"PHONE", "SSN", "CREDIT_CARD", "IP_ADDRESS"})

    def __repr__(self) -> str:
        names = sorted(self.types) + [name for name, _ in self._extra]
        return f"PIIRedactor(types={names})"

    def find(self, text: str) -> list[PIIMatch]:
        """Return the non-overlapping PII spans of ``text``, in order.

        Overlapping candidates become one span, typed by the longest (ties go to the more specific type).
        """
        if not isinstance(text, str):
            raise TypeError(f"find() needs a str, got {type(text).__name__}")
        if not text:
            return []
        found: list[tuple[int, int, str]] = []
        types = self.types
        if "@" in text and not types.isdisjoint(("EMAIL", "API_KEY")):
            self._find_at_signs(text, found)
        classes = text.encode("ascii", "replace")  # one byte per code point, so indices stay the same
        if self._numeric:
            self._find_numbers(text, classes.translate(_DIGIT_CLASSES), found)
        if "IP_ADDRESS" in types and ":" in text and ("::" in text or text.count(":") >= 6):
            self._find_ipv6(text, classes.translate(_HEX_CLASSES), found)
        if "API_KEY" in types:
            if _LONG_WORD in classes.translate(_WORD_CLASSES):
                self._find_tokens(text, found)
            if "=" in text or ":" in text:
                self._find_assignments(text, found)
        for name, rx in self._extra:
            found.extend((m.start(), m.end(), name) for m in rx.finditer(text) if m.end() > m.start())
        return _resolve(found) if found else []

    def _find_at_signs(self, text: str, found: list[tuple[int, int, str]]) -> None:
        """E-mail addresses, and passwords in URLs (``postgres://user:password@host``)."""
        at = text.find("@")
        while at != -1:
            scheme = text.rfind("://", max(0, at - 200), at)
            userinfo = text[scheme + 3 : at] if scheme != -1 else ""
            if userinfo and ":" in userinfo and not any(c.isspace() or c == "/" for c in userinfo):
                if "API_KEY" in self.types:
                    found.append((scheme + 4 + userinfo.index(":"), at, "API_KEY"))
            elif "EMAIL" in self.types:
                domain = _EMAIL_DOMAIN.match(text, at + 1)
                local = (
                    domain
                    and not _IMAGE_SCALE.match(text, at + 1)
                    and _EMAIL_LOCAL_REVERSED.match(text[max(0, at - 64) : at][::-1])
                )
                start = at - local.end() if local else at
                while start < at and text[start] in ".'":
                    start += 1
                if start < at:
                    found.append((start, domain.end(), "EMAIL"))
            at = text.find("@", at + 1)

    def _find_numbers(self, text: str, digit_classes: bytes, found: list[tuple[int, int, str]]) -> None:
        types, n, done = self.types, len(text), 0
        for cluster in _DIGIT_CLUSTER.finditer(digit_classes):
            # A window wide enough for a leading "1 (" and for the lookahead (up to "ext").
            for m in _NUMERIC.finditer(text, max(cluster.start() - 3, done), min(cluster.end() + 4, n)):
                kind = _numeric_type(m, text)
                if kind in types:
                    found.append(
                        (m.start(), _extension_end(text, m.end()) if kind == "PHONE" else m.end(), kind)
                    )
                done = m.end()
        if "PHONE" in types and "+" in text:
            for m in _PHONE_INTL.finditer(text):
                end = _intl_phone_end(text, m.start(), m.end())
                if end is not None:
                    found.append((m.start(), _extension_end(text, end), "PHONE"))

    def _find_ipv6(self, text: str, hex_classes: bytes, found: list[tuple[int, int, str]]) -> None:
        colon = text.find(":")
        while colon != -1:
            start = hex_classes.rfind(b" ", 0, colon) + 1
            end = hex_classes.find(b" ", colon)
            end = len(text) if end == -1 else end
            if hex_classes.count(b":", start, end) >= 2:
                for m in _IPV6.finditer(text, start, end):
                    candidate = m.group()
                    # Two groups at least, so slices (x[::2], a[5::]) and "be::" are not addresses; "::1" is.
                    groups = candidate.replace("::", ":").strip(":").split(":")
                    if (candidate == "::1" or len(groups) >= 2) and _is_ipv6(candidate):
                        found.append((m.start(), m.end(), "IP_ADDRESS"))
            colon = text.find(":", end)

    def _find_tokens(self, text: str, found: list[tuple[int, int, str]]) -> None:
        for rx, needs_digit in _TOKEN_RULES:
            for m in rx.finditer(text):
                start, end = m.span(m.lastgroup or 0)
                if not needs_digit or any(c.isdigit() for c in text[start:end]):
                    found.append((start, end, "API_KEY"))

    def _find_assignments(self, text: str, found: list[tuple[int, int, str]]) -> None:
        for sep in "=:":
            i = text.find(sep)
            while i > 0:
                # The one-character test first: most ":" in prose follow a digit ("10:30") or another word.
                if text[i - 1] in _KEY_LAST_CHARS:
                    key = text[max(0, i - 40) : i].rstrip(" \t\"'").lower()
                    m = key.endswith(_SECRET_KEYS) and _ASSIGNED_VALUE.match(text, i + 1)
                    if m and not _looks_like_code(text, m):
                        found.append((*m.span(m.lastgroup), "API_KEY"))
                i = text.find(sep, i + 1)

    def redact(self, text: str) -> str:
        """Return ``text`` with every PII span replaced by its placeholder (``[EMAIL]``, ``[PHONE]``, ...)."""
        matches = self.find(text)
        if not matches:
            return text
        parts, pos = [], 0
        for m in matches:
            parts += (text[pos : m.start], f"[{m.type}]")
            pos = m.end
        parts.append(text[pos:])
        return "".join(parts)

    def contains_pii(self, text: str) -> bool:
        """True when ``text`` holds at least one PII span."""
        return bool(self.find(text))

    def safe_redact(self, text: str) -> str:
        """Like :meth:`redact`, but fail closed: if redaction raises, return :data:`REDACTED`, never ``text``."""
        try:
            return self.redact(text)
        except Exception:
            return REDACTED

    def redact_value(self, obj: Any) -> Any:
        """Return a redacted copy of ``obj``: strings redacted, dicts (keys and values), lists, tuples and sets
        walked; other scalars returned as they are.

        Each string goes through :meth:`safe_redact`, and anything nested deeper than 64 levels becomes
        :data:`REDACTED`, so this never raises and never returns raw text it could not scan. Two keys that
        redact to the same placeholder collapse into one (the later value wins).
        """
        return self._redact_value(obj, 0)

    def _redact_value(self, obj: Any, depth: int) -> Any:
        if isinstance(obj, str):
            return self.safe_redact(obj)
        if depth > 64:
            return REDACTED
        depth += 1
        if isinstance(obj, Mapping):
            return {self._redact_value(k, depth): self._redact_value(v, depth) for k, v in obj.items()}
        if isinstance(obj, list | tuple | set | frozenset):
            return type(obj)(self._redact_value(v, depth) for v in obj)
        return obj


def _is_ipv6(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _resolve(found: list[tuple[int, int, str]]) -> list[PIIMatch]:
    """Merge overlapping spans into one, typed by its longest member (ties: the more specific type).

    Merging rather than dropping the shorter span means a partly overlapping candidate never leaves any of
    its characters unredacted.
    """
    found.sort()
    out: list[PIIMatch] = []
    start, end, best = found[0][0], found[0][1], found[0]
    for f in found[1:]:
        if f[0] < end:
            end = max(end, f[1])
            if (f[0] - f[1], _RANK.get(f[2], 99)) < (best[0] - best[1], _RANK.get(best[2], 99)):
                best = f
            continue
        out.append(PIIMatch(best[2], start, end))
        start, end, best = f[0], f[1], f
    out.append(PIIMatch(best[2], start, end))
    return out


@functools.cache
def default_redactor() -> PIIRedactor:
    """The shared redactor with every built-in type (built once, safe to use from any thread)."""
    return PIIRedactor()
