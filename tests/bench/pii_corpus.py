"""A seeded, labeled corpus for the PII redactor: real-world formats of each PII type, and benign look-alikes.

The generators are written from the formats people actually type (national phone conventions, card
groupings, how keys appear in configs and headers), not from the detector's regexes, and every value is
embedded in a sentence. Each :class:`Instance` records the exact span of its value.

    from tests.bench.pii_corpus import pii_instances, lookalikes, prose
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Instance", "lookalikes", "pii_instances", "prose"]

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"


@dataclass(frozen=True, slots=True)
class Instance:
    """One labeled value inside a sentence.

    Attributes:
        text: the sentence.
        type: the PII type, or None for a benign look-alike.
        category: the format or look-alike family (``"us_paren"``, ``"isbn"``, ...).
        start: index of the value's first character.
        end: index one past its last character.
    """

    text: str
    type: str | None
    category: str
    start: int
    end: int


def _embed(rng: random.Random, templates: list[str], value: str) -> tuple[str, int, int]:
    before, after = rng.choice(templates).split("{}")
    return before + value + after, len(before), len(before) + len(value)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


# ---------------------------------------------------------------------------------------------------------- email
FIRST = [
    "anna",
    "john",
    "maria",
    "wei",
    "olivia",
    "liam",
    "noah",
    "emma",
    "priya",
    "carlos",
    "fatima",
    "yuki",
    "jürgen",
    "josé",
    "zoë",
    "françois",
    "søren",
    "łukasz",
    "ñuño",
    "björn",
    "chloé",
    "dmitri",
    "ingrid",
]
LAST = [
    "smith",
    "garcia",
    "müller",
    "nguyen",
    "kowalski",
    "okafor",
    "rossi",
    "dubois",
    "tanaka",
    "johansson",
    "o'neil",
    "van-der-berg",
    "patel",
    "schröder",
    "núñez",
    "lee",
    "brown",
    "øverby",
]
DOMAINS = [
    "example.com",
    "example.org",
    "mail.example.co.uk",
    "corp.example.com",
    "dept.uni-bonn.de",
    "gmail.com",
    "outlook.com",
    "yahoo.co.jp",
    "web.de",
    "müller-bau.de",
    "startup.io",
    "sub1.sub2.example.net",
    "example.ai",
    "hospital.example.health",
    "students.univ-lyon1.fr",
    "bücher.example",
    "example.museum",
]
EMAIL_CONTEXTS = [
    "Contact me at {}.",
    "My email is {} if you need it",
    "email: {}",
    "Send the report to <{}>",
    "cc {}, thanks!",
    "Please write to ({}) before Friday",
    "mailto:{}",
    "From: Jane Doe <{}>",
    "{} wrote: the build is green",
    'He said "{}" was his address.',
    "Reply-To: {}\nSubject: hi",
]


def _email(rng: random.Random) -> tuple[str, str]:
    f, last = rng.choice(FIRST), rng.choice(LAST)
    shape = rng.randrange(11)
    if shape == 10:  # an internationalized address (EAI), all non-Latin
        return rng.choice(["用户", "李雷", "ユーザー", "пользователь", "χρήστης"]) + "@" + rng.choice(
            ["例子.广告", "例え.jp", "пример.рф", "παράδειγμα.ελ"]
        ), "email_eai"
    local = [
        f"{f}.{last}",
        f"{f}{last}",
        f"{f}_{last}",
        f"{f[0]}{last}",
        f"{f}.{last}{rng.randint(1, 99)}",
        f"{f}+{rng.choice(['news', 'shop', 'cl', 'work'])}",
        f"{f}.{last}+tag{rng.randint(1, 9)}",
        f"{last}-{f}",
        f"{f}{rng.randint(1950, 2010)}",
        _digits(rng, rng.randint(5, 9)),
    ][shape]
    address = f"{local}@{rng.choice([*DOMAINS, 'studio.photography', 'shop.example.store'])}"
    if rng.random() < 0.1:
        address = address.upper()
    return address, f"email_{shape}"


# ---------------------------------------------------------------------------------------------------------- phone
PHONE_CONTEXTS = [
    "Call me at {}.",
    "My number is {}",
    "Phone: {}",
    "tel. {}",
    "You can reach the office on {} between 9 and 5.",
    "Text {} when you arrive",
    "mobile {}, landline unknown",
    "Fax: {}",
    "(phone {})",
    "Emergency contact - {} - ask for Sam",
]


def _us(rng: random.Random) -> tuple[str, str]:
    a, e, line = f"{rng.randint(2, 9)}{_digits(rng, 2)}", _digits(rng, 3), _digits(rng, 4)
    forms = {
        "us_paren": f"({a}) {e}-{line}",
        "us_dash": f"{a}-{e}-{line}",
        "us_dot": f"{a}.{e}.{line}",
        "us_space": f"{a} {e} {line}",
        "us_plus1": f"+1 {a} {e} {line}",
        "us_plus1_dash": f"+1-{a}-{e}-{line}",
        "us_plus1_paren": f"+1 ({a}) {e}-{line}",
        "us_trunk": f"1-{a}-{e}-{line}",
        "us_e164": f"+1{a}{e}{line}",
        "us_plus1_dot": f"+1.{a}.{e}.{line}",
        "us_extension": f"({a}) {e}-{line} {rng.choice(['x', 'ext. ', 'ext'])}{rng.randint(1, 9999)}",
        "us_extension_tight": f"{a}-{e}-{line}x{rng.randint(1, 99999)}",
    }
    name = rng.choice(list(forms))
    return forms[name], name


def _intl(rng: random.Random) -> tuple[str, str]:
    d = lambda n: _digits(rng, n)  # noqa: E731
    forms: dict[str, Callable[[], str]] = {
        "uk": lambda: f"+44 20 {d(4)} {d(4)}",
        "uk_mobile": lambda: f"+44 7{d(3)} {d(6)}",
        "uk_trunk": lambda: f"+44 (0)20 {d(4)} {d(4)}",
        "uk_national": lambda: f"020 {d(4)} {d(4)}",
        "uk_national_mobile": lambda: f"07{d(3)} {d(6)}",
        "de": lambda: f"+49 30 {d(8)}",
        "de_mobile": lambda: f"+49 1{rng.randint(50, 79)} {d(7)}",
        "de_trunk": lambda: f"+49 (0)89 {d(7)}",
        "de_national": lambda: f"030 {d(8)}",
        "de_national_slash": lambda: f"0{rng.randint(30, 89)}/{d(7)}",
        "fr": lambda: f"+33 {rng.randint(1, 9)} " + " ".join(d(2) for _ in range(4)),
        "fr_national": lambda: f"0{rng.randint(1, 9)} " + " ".join(d(2) for _ in range(4)),
        "fr_national_dot": lambda: f"0{rng.randint(1, 9)}." + ".".join(d(2) for _ in range(4)),
        "in": lambda: f"+91 9{d(4)} {d(5)}",
        "au": lambda: f"+61 2 {d(4)} {d(4)}",
        "au_mobile": lambda: f"+61 4{d(2)} {d(3)} {d(3)}",
        "jp": lambda: f"+81 3-{d(4)}-{d(4)}",
        "jp_mobile": lambda: f"+81 90-{d(4)}-{d(4)}",
        "br": lambda: f"+55 11 9{d(4)}-{d(4)}",
        "cn": lambda: f"+86 1{d(2)} {d(4)} {d(4)}",
        "es": lambda: f"+34 6{d(2)} {d(2)} {d(2)} {d(2)}",
        "it": lambda: f"+39 06 {d(4)} {d(4)}",
        "nl": lambda: f"+31 20 {d(3)} {d(4)}",
        "mx": lambda: f"+52 55 {d(4)} {d(4)}",
        "za": lambda: f"+27 21 {d(3)} {d(4)}",
        "sg": lambda: f"+65 6{d(3)} {d(4)}",
        "e164": lambda: (
            f"+{rng.choice(['44', '49', '33', '61', '81', '34', '39', '31'])}{rng.randint(1, 9)}{d(8)}"
        ),
        "uk_00": lambda: f"0044 20 {d(4)} {d(4)}",
        "uk_paren": lambda: f"(0{rng.randint(113, 191)}) {d(3)} {d(4)}",
        "au_paren": lambda: f"(0{rng.choice([2, 3, 7, 8])}) {d(4)} {d(4)}",
        "br_paren": lambda: f"({rng.randint(11, 99)}) 9{d(4)}-{d(4)}",
        "jp_national": lambda: f"0{rng.randint(3, 9)}-{d(4)}-{d(4)}",
        "de_00": lambda: f"0049 30 {d(8)}",
        "fr_00": lambda: f"0033 {rng.randint(1, 9)} " + " ".join(d(2) for _ in range(4)),
    }
    name = rng.choice(list(forms))
    return forms[name](), name


def _phone(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.03:
        return f"{rng.randint(2, 9)}{_digits(rng, 9)}", "bare_after_keyword"
    return _us(rng) if rng.random() < 0.45 else _intl(rng)


# ---------------------------------------------------------------------------------------------------------- ssn
SSN_CONTEXTS = [
    "SSN: {}",
    "My social security number is {}.",
    "ssn {} on file",
    "Employee SSN {}, hired 2019",
    "Social Security No. {} (verified)",
    "SSN# {}",
]


def _ssn(rng: random.Random) -> tuple[str, str]:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    a, g, s = f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    r = rng.random()
    if r < 0.8:
        return f"{a}-{g}-{s}", "ssn_dash"
    if r < 0.95:
        return f"{a} {g} {s}", "ssn_space"
    return f"{a}{g}{s}", "ssn_bare_after_keyword"


# ---------------------------------------------------------------------------------------------------------- cards
CARD_CONTEXTS = [
    "Card number: {}",
    "charge it to {} please",
    "My Visa is {}, exp 09/27",
    "cc: {}",
    "pay with {} (CVV on the back)",
    "The card {} was declined.",
    "card={}",
]
BRANDS = {  # name: (prefixes, lengths)
    "visa": (["4"], [16, 16, 16, 13, 19]),
    "mastercard": ([str(p) for p in range(51, 56)] + ["2221", "2300", "2500", "2720"], [16]),
    "amex": (["34", "37"], [15]),
    "discover": (["6011", "644", "645", "649", "65"], [16]),
    "jcb": (["3528", "3550", "3589"], [16]),
    "diners": (["36", "38", "300", "305"], [14]),
    "unionpay": (["62"], [16, 19]),
}


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _card(rng: random.Random) -> tuple[str, str]:
    brand = rng.choice(list(BRANDS))
    prefixes, lengths = BRANDS[brand]
    prefix, length = rng.choice(prefixes), rng.choice(lengths)
    body = prefix + _digits(rng, length - len(prefix) - 1)
    number = body + _luhn_digit(body)
    sep = rng.choice([" ", "-", ""])
    if length in (14, 15):
        groups = [number[:4], number[4:10], number[10:]]
    elif length == 13:
        sep, groups = "", [number]
    else:
        groups = [number[i : i + 4] for i in range(0, length, 4)]
    return sep.join(groups), f"{brand}_{length}_{'none' if not sep else 'space' if sep == ' ' else 'dash'}"


# ---------------------------------------------------------------------------------------------------------- ip
IPV4_CONTEXTS = [
    "request from {}",
    "server at {}:8080",
    "whitelist {}/32 please",
    "IP {} was blocked.",
    "ping {} and report",
    "Client address = {}",
    "X-Forwarded-For: {}, 10.0.0.1",
]
IPV6_CONTEXTS = [
    "request from {}",
    "the host {} answered",
    "IP {} was blocked.",
    "listen on [{}]:443",
    "Client address = {}",
    "AAAA record points to {}.",
]


def _ipv4(rng: random.Random) -> tuple[str, str]:
    r = rng.random()
    if r < 0.2:
        octets = [10, rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)]
    elif r < 0.4:
        octets = [192, 168, rng.randint(0, 255), rng.randint(1, 254)]
    elif r < 0.5:
        octets = [172, rng.randint(16, 31), rng.randint(0, 255), rng.randint(1, 254)]
    else:
        octets = [rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)]
    return ".".join(map(str, octets)), "ipv4"


def _ipv6(rng: random.Random) -> tuple[str, str]:
    import ipaddress

    groups = [rng.randrange(65536) for _ in range(8)]
    groups[0] = rng.choice([0x2001, 0x2A00, 0x2607, 0xFE80, 0xFD12, groups[0]])
    if rng.random() < 0.6:  # a run of zeros, which compression folds into ::
        i = rng.randrange(1, 7)
        for j in range(i, min(8, i + rng.randint(2, 5))):
            groups[j] = 0
    addr = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
    r = rng.random()
    if r < 0.45:
        return addr.compressed, "ipv6_compressed"
    if r < 0.65:
        return addr.exploded, "ipv6_full"
    if r < 0.75:
        return addr.compressed.upper(), "ipv6_upper"
    if r < 0.85:
        v4 = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        return f"::ffff:{v4}", "ipv6_mapped"
    if r < 0.9:
        return "::1", "ipv6_loopback"
    return (
        f"fe80::{rng.randrange(65536):x}:{rng.randrange(65536):x}:{rng.randrange(1, 65536):x}",
        "ipv6_link_local",
    )


def _ip(rng: random.Random) -> tuple[str, str, list[str]]:
    if rng.random() < 0.5:
        return (*_ipv4(rng), IPV4_CONTEXTS)
    return (*_ipv6(rng), IPV6_CONTEXTS)


# ---------------------------------------------------------------------------------------------------------- keys
KEY_CONTEXTS = [
    "my key is {} don't share it",
    "export OPENAI_API_KEY={}",
    "use {} for the staging env",
    "Here: {}",
    "token {} leaked in the logs",
    "curl -u {}: https://api.example.com",
]
B64URL = ALNUM + "-_"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(rng: random.Random) -> str:
    header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    if rng.random() < 0.3:
        header["kid"] = _rand(rng, HEX, 16)
    payload = {"sub": str(rng.randint(1, 10**9)), "iat": rng.randint(1.6e9, 1.8e9), "name": rng.choice(FIRST)}
    if rng.random() < 0.5:
        payload["exp"] = payload["iat"] + 3600
    sig_len = {"HS256": 43, "RS256": 342, "ES256": 86}[header["alg"]]
    return ".".join(
        [
            _b64url(json.dumps(header).encode()),
            _b64url(json.dumps(payload).encode()),
            _rand(rng, B64URL, sig_len),
        ]
    )


def _password(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:
        return rng.choice(["hunter", "dragon", "sunshine", "Summer", "Welcome", "monkey"]) + str(
            rng.randint(1, 2025)
        )
    if r < 0.6:
        return _rand(rng, ALNUM + "!@#$%^&*-_+=.?", rng.randint(10, 24))
    if r < 0.8:
        return "-".join(
            rng.choice(["correct", "horse", "battery", "staple", "blue", "river"]) for _ in range(4)
        )
    return _rand(rng, ALNUM, rng.randint(16, 40))


def _api_key(rng: random.Random) -> tuple[str, str, list[str]]:
    shape = rng.randrange(19)
    if shape == 0:
        return "sk-" + _rand(rng, ALNUM, 48), "openai_legacy", KEY_CONTEXTS
    if shape == 1:
        return "sk-proj-" + _rand(rng, B64URL, rng.randint(48, 156)), "openai_project", KEY_CONTEXTS
    if shape == 2:
        return "sk-ant-api03-" + _rand(rng, B64URL, 95), "anthropic", KEY_CONTEXTS
    if shape == 3:
        return (
            rng.choice(["AKIA", "ASIA"]) + _rand(rng, string.ascii_uppercase + "234567", 16),
            "aws",
            KEY_CONTEXTS,
        )
    if shape == 4:
        return "gh" + rng.choice("pousr") + "_" + _rand(rng, ALNUM, 36), "github", KEY_CONTEXTS
    if shape == 5:
        return "github_pat_" + _rand(rng, ALNUM, 22) + "_" + _rand(rng, ALNUM, 59), "github_pat", KEY_CONTEXTS
    if shape == 6:
        kind = rng.choice("bpa")
        token = f"xox{kind}-{_digits(rng, 12)}-{_digits(rng, 13)}-{_rand(rng, ALNUM, 24)}"
        return token, "slack", KEY_CONTEXTS
    if shape == 7:
        return _jwt(rng), "jwt", KEY_CONTEXTS
    if shape == 8:
        contexts = [
            "Authorization: Bearer {}",
            "curl -H 'Authorization: Bearer {}' https://api.example.com",
            "authorization: bearer {}\naccept: */*",
        ]
        return _rand(rng, ALNUM + "-._~", rng.randint(24, 64)), "bearer", contexts
    if shape == 9:
        return "sk_live_" + _rand(rng, ALNUM, 24), "stripe", KEY_CONTEXTS
    if shape == 10:
        return "AIza" + _rand(rng, B64URL, 35), "google", KEY_CONTEXTS
    if shape == 11:
        return "hf_" + _rand(rng, string.ascii_letters, 34), "huggingface", KEY_CONTEXTS
    if shape == 12:
        kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
        body = "\n".join(_rand(rng, ALNUM + "+/", 64) for _ in range(rng.randint(3, 12)))
        return (
            f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----",
            "pem",
            ["{}", "key:\n{}\n"],
        )
    if shape == 13:
        creds = base64.b64encode(f"{rng.choice(FIRST)}:{_password(rng)}".encode()).decode()
        return (
            creds,
            "basic_auth",
            ["Authorization: Basic {}", "curl -H 'authorization: Basic {}' https://x.example"],
        )
    if shape == 14:
        contexts = [
            "DATABASE_URL=postgres://app:{}@db.example.com:5432/prod",
            "connect to mysql://root:{}@10.0.0.5/db",
            "https://deploy:{}@git.example.com/repo.git",
        ]
        return _rand(rng, ALNUM + "!$*-_.~", rng.randint(8, 24)), "url_credentials", contexts
    value = _password(rng) if shape >= 17 else _rand(rng, ALNUM, rng.randint(16, 40))
    keyword = rng.choice(
        [
            "api_key",
            "API_KEY",
            "apikey",
            "token",
            "access_token",
            "secret",
            "client_secret",
            "password",
            "DB_PASSWORD",
            "passwd",
        ]
    )
    contexts = [
        f"{keyword}={{}}",
        f"{keyword}: {{}}",
        f'"{keyword}": "{{}}"',
        f"{keyword} = '{{}}'",
        f"GET /v1/items?{keyword}={{}}&page=2",
        f"set {keyword}={{}} in the .env file",
    ]
    return value, f"assignment_{'password' if shape >= 17 else 'random'}", contexts


GENERATORS: dict[str, tuple[Callable[[random.Random], tuple[str, str]], list[str]] | None] = {
    "EMAIL": (_email, EMAIL_CONTEXTS),
    "PHONE": (_phone, PHONE_CONTEXTS),
    "SSN": (_ssn, SSN_CONTEXTS),
    "CREDIT_CARD": (_card, CARD_CONTEXTS),
    "IP_ADDRESS": None,
    "API_KEY": None,
}


def pii_instances(per_type: int = 2000, seed: int = 0) -> list[Instance]:
    """``per_type`` labeled PII values of each of the six types, each in a sentence."""
    rng = random.Random(seed)
    out = []
    for kind, spec in GENERATORS.items():
        for _ in range(per_type):
            if spec is not None:
                value, category = spec[0](rng)
                contexts = spec[1]
                if category.endswith("after_keyword"):
                    contexts = ["call me at {}", "phone {}"] if kind == "PHONE" else ["SSN {}", "ssn: {}"]
            else:
                value, category, contexts = (_ip if kind == "IP_ADDRESS" else _api_key)(rng)
            text, start, end = _embed(rng, contexts, value)
            out.append(Instance(text, kind, category, start, end))
    return out


# ---------------------------------------------------------------------------------------------------------- benign
def _isbn13(rng: random.Random, hyphens: bool) -> str:
    body = rng.choice(["978", "979"]) + _digits(rng, 9)
    check = str((10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body)) % 10) % 10)
    if not hyphens:
        return body + check
    g = rng.randint(1, 2)
    p = rng.randint(2, 4)
    rest = body[3:]
    return f"{body[:3]}-{rest[:g]}-{rest[g : g + p]}-{rest[g + p :]}-{check}"


def _isbn10(rng: random.Random, hyphens: bool) -> str:
    body = _digits(rng, 9)
    c = (11 - sum(int(ch) * (10 - i) for i, ch in enumerate(body)) % 11) % 11
    check = "X" if c == 10 else str(c)
    if not hyphens:
        return body + check
    g = rng.randint(1, 2)
    p = rng.randint(2, 4)
    return f"{body[:g]}-{body[g : g + p]}-{body[g + p :]}-{check}"


def _luhn_failing(rng: random.Random) -> str:
    number = _digits(rng, 16)
    while _luhn_digit(number[:-1]) == number[-1]:
        number = _digits(rng, 16)
    return number


LOOKALIKES: dict[str, Callable[[random.Random], str]] = {
    "unix_timestamp": lambda r: str(r.randint(1_000_000_000, 1_900_000_000)),
    "unix_timestamp_ms": lambda r: str(r.randint(1_000_000_000_000, 1_900_000_000_000)),
    "version": lambda r: (
        r.choice(["", "v", "Python ", "node v", "release "])
        + ".".join(str(r.randint(0, 20)) for _ in range(3))
        + r.choice(["", "", "-rc.1", "-beta.2", "+build.5114"])
    ),
    "order_number": lambda r: r.choice(
        [
            f"Order #A-{_digits(r, 6)}",
            f"ORD-{r.randint(2015, 2026)}-{_digits(r, 6)}",
            f"order no. {_digits(r, 8)}",
            f"INV-{r.randint(2015, 2026)}-{_digits(r, 5)}",
            f"PO-{_digits(r, 5)}-{_digits(r, 2)}",
            f"ticket #{_digits(r, 6)}",
        ]
    ),
    "isbn": lambda r: (
        "ISBN " + (_isbn13(r, r.random() < 0.7) if r.random() < 0.6 else _isbn10(r, r.random() < 0.7))
    ),
    "date": lambda r: r.choice(
        [
            f"{r.randint(1990, 2030)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
            f"{r.randint(1, 12):02d}/{r.randint(1, 28):02d}/{r.randint(1990, 2030)}",
            f"{r.randint(1, 28):02d}.{r.randint(1, 12):02d}.{r.randint(1990, 2030)}",
            f"{r.randint(1990, 2030)}/{r.randint(1, 12):02d}/{r.randint(1, 28):02d}",
            f"{r.randint(1, 28)} Nov {r.randint(1990, 2030)}",
        ]
    ),
    "time": lambda r: r.choice(
        [
            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}",
            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
            f"{r.randint(1, 12)}:{r.randint(0, 59):02d} PM",
            f"{r.randint(2000, 2030)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:"
            f"{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
            f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}.{_digits(r, 3)}",
        ]
    ),
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128), version=4)),
    "git_hash": lambda r: _rand(r, HEX, r.choice([7, 8, 12, 40])),
    "port": lambda r: r.choice(
        [
            f"localhost:{r.randint(1024, 65535)}",
            f":{r.randint(1024, 65535)}",
            f"port {r.randint(1, 65535)}",
            f"http://localhost:{r.randint(1024, 9999)}/api/v{r.randint(1, 3)}",
        ]
    ),
    "price": lambda r: r.choice(
        [
            f"${r.randint(1, 9)},{_digits(r, 3)}.{_digits(r, 2)}",
            f"€ {r.randint(1, 999)}.{_digits(r, 2)}",
            f"£{r.randint(1, 99)}.{_digits(r, 2)}",
            f"USD {r.randint(1, 999)},{_digits(r, 3)},{_digits(r, 3)}",
            f"{r.randint(1, 9)}.{_digits(r, 3)},{_digits(r, 2)} €",
        ]
    ),
    "measurement": lambda r: r.choice(
        [
            f"{r.randint(1, 9)},{_digits(r, 3)} users",
            f"{r.randint(1, 999)}.{r.randint(0, 9)} kg",
            f"{r.choice([1280, 1920, 2560, 3840])}x{r.choice([720, 1080, 1440, 2160])}",
            f"{r.randint(1, 300)} km/h",
            f"{r.randint(1, 9999)} ms",
            f"{r.randint(1, 64)} GB",
            f"{r.randint(1, 9)} x {r.randint(1, 9)} x {r.randint(1, 9)} cm",
            f"{r.randint(100_000, 99_999_999)} rows",
        ]
    ),
    "percentage": lambda r: r.choice(
        [
            f"{r.randint(0, 100)}.{r.randint(0, 9)}%",
            f"{r.randint(0, 100)} %",
            f"+{r.randint(0, 20)}.{r.randint(0, 9)}%",
        ]
    ),
    "luhn_failing_16_digits": lambda r: (
        lambda n: n if r.random() < 0.6 else " ".join(n[i : i + 4] for i in range(0, 16, 4))
    )(_luhn_failing(r)),
    "code_identifier": lambda r: r.choice(
        [
            f"max_tokens={r.randint(64, 8192)}",
            f"token_count: {r.randint(1, 9999)}",
            "password_reset: true",
            "use_api_key: false",
            f"num_tokens = {r.randint(1, 9999)}",
            f"secret_santa_budget={r.randint(5, 50)}",
            f"tokens_used: {r.randint(1, 99999)}",
            "api_key_required: yes",
        ]
    ),
    "math_and_ranges": lambda r: r.choice(
        [
            f"{r.randint(1, 9)}+{r.randint(1, 9)}={r.randint(2, 18)}",
            f"x = {r.randint(1, 99)} + {r.randint(1, 99)}",
            f"{r.randint(0, 5)}-{r.randint(0, 5)} win",
            f"pages {r.randint(1, 50)}-{r.randint(51, 99)}",
            f"{r.randint(1950, 1999)}-{r.randint(2000, 2025)}",
            f"{r.randint(1, 9)}.{_digits(r, 3)}e{r.randint(5, 30)}",
        ]
    ),
    "coordinates": lambda r: f"{r.uniform(-90, 90):.4f}, {r.uniform(-180, 180):.4f}",
    "big_number": lambda r: r.choice(
        [
            f"{r.randint(1, 999)},{_digits(r, 3)},{_digits(r, 3)}",
            f"{r.randint(1, 9)},{_digits(r, 3)},{_digits(r, 3)} bytes",
        ]
    ),
    "at_sign": lambda r: r.choice(
        [
            "icon@2x.png",
            "logo@3x.jpg",
            "@alice",
            "@types/node",
            f"@angular/core@{r.randint(10, 18)}.0.1",
            "root@server01:~$",
            "user@localhost",
            "@property",
        ]
    ),
    "scope_operator": lambda r: r.choice(
        ["std::vector<int>", "a::b::c", "Foo::bar()", "crate::module::Item"]
    ),
    "hex_color": lambda r: "#" + _rand(r, HEX, 6),
    "word": lambda r: r.choice(
        [
            "task-force",
            "sk-ate",
            "ask-me-anything",
            "desk-bound",
            "risk-free",
            "e-mail",
            "A-Z",
            "skate",
            "xoxo",
            "Asia-Pacific",
            "ASIAN markets",
            "ghost_town",
            "bearer bonds",
            "the token: a unit of text",
            "eyJ",
            "mask-wearing",
            "whisk-like",
        ]
    ),
}
LOOKALIKE_CONTEXTS = [
    "The value was {} yesterday.",
    "See {} for details",
    "{}",
    "We logged {} in the report.",
    "Note: {} is expected here",
    "(ref {})",
    "Updated to {}, then restarted.",
]


def lookalikes(n: int = 6000, seed: int = 1) -> list[Instance]:
    """``n`` benign values that resemble PII (spread evenly over the categories), each in a sentence."""
    rng = random.Random(seed)
    names = list(LOOKALIKES)
    out = []
    for i in range(n):
        category = names[i % len(names)]
        text, start, end = _embed(rng, LOOKALIKE_CONTEXTS, LOOKALIKES[category](rng))
        out.append(Instance(text, None, category, start, end))
    return out


# ---------------------------------------------------------------------------------------------------------- prose
SENTENCES = [
    "The team reviewed {n} tickets last week and closed most of them before the release.",
    "Our latency dropped by {p} after the cache was moved closer to the database.",
    "In {y} the project switched to a monthly release cycle, which made planning easier.",
    "The model answered the question correctly, but the explanation was longer than it needed to be.",
    "Please compare the results of version {v} with the previous run and summarise the differences.",
    "The invoice of {price} was approved on {d} by the finance department.",
    "Retrieval returned {n} documents, of which only a handful were relevant to the query.",
    "Why does the tree search explore so many branches when the first move is already obvious?",
    "We expect roughly {n} requests per minute during the peak hours of the campaign.",
    "The meeting has been moved to {t} because the room was double booked.",
    "Explain how Monte Carlo tree search balances exploration and exploitation in simple terms.",
    "The agent chose the hierarchical reasoning model for this query with moderate confidence.",
    "Users rated the new answers higher, although the sample is still small.",
    "A summary of the changes, the open questions and the next steps is attached below.",
]


def prose(rng: random.Random, length: int = 1000, inserts: list[str] | None = None) -> str:
    """English-like text of about ``length`` characters with a few numbers; ``inserts`` are woven in as
    extra sentences (used to place PII)."""

    def fill(template: str) -> str:
        return template.format(
            n=rng.randint(2, 5000),
            p=f"{rng.randint(1, 60)}%",
            y=rng.randint(1995, 2026),
            v=f"{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
            price=f"${rng.randint(10, 9999)}.00",
            d=f"{rng.randint(2020, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            t=f"{rng.randint(8, 17)}:{rng.choice(['00', '15', '30', '45'])}",
        )

    parts: list[str] = []
    extra = list(inserts or [])
    total = 0
    while total < length:
        sentence = extra.pop() if extra and rng.random() < 0.4 else fill(rng.choice(SENTENCES))
        parts.append(sentence)
        total += len(sentence) + 1
    parts.extend(extra)
    return " ".join(parts)
