"""Canary PII for end-to-end leak tests: distinct values per field, and a scanner for every kind of sink.

Each field that can carry text gets its own seeded canaries (e-mails, phone numbers, payment cards, SSNs,
IPv4 and IPv6 addresses, API keys and tokens, in several formats), so a canary found in a sink names the
field it leaked from. :func:`scan` looks for each canary, its digits run together, and its most telling
fragment, in UTF-8, UTF-16 and UTF-32 (numpy keeps strings as UTF-32), inside gzip members and zip members
(model artifacts) as well as plain bytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import io
import random
import re
import string
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Canary", "as_id", "canaries_for", "files_under", "readable_bytes", "scan", "sentence"]

_LOWER = string.ascii_lowercase
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Canary:
    """One PII value planted in one field.

    Attributes:
        field: where it was planted (``query``, ``tool_args``, ...).
        kind: the PII type and format (``card_dashes``, ``phone_intl``, ...).
        value: the text as planted.
        needles: what a sink must not hold: the value and the forms it could be stored in.
    """

    field: str
    kind: str
    value: str
    needles: tuple[str, ...]


def _luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _card(rng: random.Random, prefix: str) -> str:
    return _luhn(prefix + "".join(rng.choice(string.digits) for _ in range(15 - len(prefix))))


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_LOWER) for _ in range(n))


def canaries_for(field: str) -> list[Canary]:
    """The canaries of one field: the same for a field in every run, different between fields."""
    rng = random.Random(int.from_bytes(hashlib.sha256(field.encode()).digest()[:8], "big"))
    d = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    local, tag, host = _word(rng, 9), _word(rng, 5), _word(rng, 8)
    email = f"{local}.{_word(rng, 6)}@example.org"
    email_plus = f"{tag}+{local[:4]}{_word(rng, 3)}@mail.{host}.co.uk"
    area = f"{rng.randint(2, 9)}{d(2)}"
    line, line2 = d(4), d(4)
    visa, master = _card(rng, "4"), _card(rng, f"5{rng.randint(1, 5)}")
    amex = _luhn("37" + d(12))
    ssn = f"{rng.randint(100, 665):03d}-{rng.randint(10, 99):02d}-{rng.randint(1000, 9999):04d}"
    ip4 = f"172.{rng.randint(16, 31)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
    ip6 = f"2001:db8:{rng.randrange(4096, 65536):x}:{rng.randrange(4096, 65536):x}::{rng.randrange(4096, 65536):x}"
    sk = "sk-proj-" + "".join(rng.choice(_ALNUM) for _ in range(32))
    ghp = "ghp_" + "".join(rng.choice(_ALNUM) for _ in range(36))
    akia = "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    jwt = (
        "eyJhbGciOiJIUzI1NiJ9."
        + "".join(rng.choice(_ALNUM) for _ in range(24))
        + "."
        + "".join(rng.choice(_ALNUM) for _ in range(22))
    )
    bearer = "".join(rng.choice(_ALNUM) for _ in range(28))
    values = [
        ("email", email, (email.split("@")[0],)),
        ("email_plus", email_plus, (email_plus.split("@")[0], host)),
        ("phone_us_paren", f"({area}) 555-{line}", (f"{area}555{line}",)),
        ("phone_us_dots", f"{area}.867.{line2}", (f"{area}867{line2}",)),
        ("phone_intl", f"+44 20 {d(4)} {d(4)}", ()),
        ("card_spaces", " ".join(visa[i : i + 4] for i in range(0, 16, 4)), (visa,)),
        ("card_dashes", "-".join(master[i : i + 4] for i in range(0, 16, 4)), (master,)),
        ("card_amex", f"{amex[:4]} {amex[4:10]} {amex[10:]}", (amex,)),
        ("card_plain", _card(rng, "4"), ()),
        ("ssn", ssn, (ssn.replace("-", ""),)),
        ("ipv4", ip4, ()),
        ("ipv6", ip6, ()),
        ("openai_key", sk, (sk[8:],)),
        ("github_token", ghp, (ghp[4:],)),
        ("aws_key", akia, (akia[4:],)),
        ("jwt", jwt, (jwt.split(".")[1],)),
        ("bearer", bearer, ()),
    ]
    out = []
    for kind, value, extra in values:
        needles = {value, *extra}
        if kind.startswith("phone_intl"):
            needles.add(re.sub(r"\D", "", value))
        out.append(Canary(field, kind, value, tuple(sorted(needles))))
    return out


def sentence(field: str, lead: str = "") -> str:
    """A text holding every canary of ``field``, each where people write such values."""
    c = {x.kind: x.value for x in canaries_for(field)}
    return (
        f"{lead}mail {c['email']} or {c['email_plus']}, call {c['phone_us_paren']}, "
        f"{c['phone_us_dots']} or {c['phone_intl']}; card {c['card_spaces']}, {c['card_dashes']}, "
        f"{c['card_amex']} and {c['card_plain']}; SSN {c['ssn']}; from {c['ipv4']} and {c['ipv6']}; "
        f"keys {c['openai_key']} {c['github_token']} {c['aws_key']} {c['jwt']}; "
        f"Authorization: Bearer {c['bearer']}"
    )


def as_id(canary: Canary) -> str:
    """The canary as someone would use it for a user id, a session id or a tag: the value itself, but a bare
    bearer token (random letters, like any opaque id) with its ``Bearer`` scheme, which is what marks it."""
    return f"Bearer {canary.value}" if canary.kind == "bearer" else canary.value


#: Bytes kept as base64 in JSON (attachment contents and embedding vectors in journals and backups).
_BASE64_FIELD = re.compile(rb'"(?:content|content_base64|vector)":"([A-Za-z0-9+/]{8,}={0,2})"')


def readable_bytes(data: bytes) -> bytes:
    """``data`` with every gzip stream and zip archive in it opened (recursively), and every base64 value of
    a JSON ``content`` or ``vector`` field decoded, appended to it."""
    parts = [data]
    for match in _BASE64_FIELD.finditer(data):
        with contextlib.suppress(binascii.Error, ValueError):
            parts.append(base64.b64decode(match[1]))
    if data[:2] == b"\x1f\x8b":
        try:
            parts.append(readable_bytes(gzip.decompress(data)))
        except (OSError, EOFError):
            parts.append(readable_bytes(_gzip_prefix(data)))
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                parts.extend(readable_bytes(zf.read(name)) + name.encode() for name in zf.namelist())
        except zipfile.BadZipFile:
            pass
    return b"\n".join(parts)


def _gzip_prefix(data: bytes) -> bytes:
    """Whatever a cut-off gzip file still decompresses to."""
    import zlib

    d = zlib.decompressobj(31)
    try:
        return d.decompress(data)
    except zlib.error:
        return b""


def _encodings(text: str) -> tuple[bytes, ...]:
    return text.encode(), text.encode("utf-16-le"), text.encode("utf-32-le")


def scan(sinks: dict[str, bytes], canaries: list[Canary]) -> list[tuple[str, str, str, str]]:
    """Every (sink, field, kind, needle) where a canary was found."""
    found = []
    lowered = {name: data.lower() for name, data in sinks.items()}
    for canary in canaries:
        for needle in canary.needles:
            forms = _encodings(needle.lower())
            for name, data in lowered.items():
                if any(form in data for form in forms):
                    found.append((name, canary.field, canary.kind, needle))
    return found


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below ``root``, opened, by its path relative to ``root``."""
    return {
        str(p.relative_to(root)): readable_bytes(p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
