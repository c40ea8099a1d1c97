"""Redact personal data and secrets with placeholders, counting each kind, without damaging code.

E-mails become ``user@example.com`` and public IP addresses a documentation address (so the code
still parses); keys and tokens become ``<KEY>``, passwords in assignments ``<PASSWORD>``. Each
distinct value of a file gets its own placeholder (``user2@example.com``, ``192.0.2.2``, ``<KEY_2>``),
so ``listOf("5.9.10.1", "5.9.10.2")`` does not become two equal strings.

Detection knows code:
- an e-mail needs a real top-level domain and is not a Kotlin label (``this@Buffer.write(data)``),
  a call, or an SCM address (``git@github.com:owner/repo``, ``ssh://git@host/...``);
- an IP is exactly four octets <= 255, not part of a longer dotted run (``Corretto-11.0.14.1.1``) nor
  a version or section number (``v1.2.3.4``, ``sections 2.3.3.1``, ``process 1.6.20.0+``) nor
  version-shaped (``"1.27.1.2"``, ``1.2.3.4``: small numbers) nor a made-up test value (``50.50.50.50``,
  ``12.34.56.78``); private, loopback, documentation and multicast addresses, networks
  (``52.95.110.0/24``, ``81.2.69.0``) and public DNS resolvers are kept;
- an e-mail is not a made-up one (``test@test.com``, ``someone@somedomain.com``, ``a@thing.com``);
- a password is a value of 8+ characters with some entropy assigned to a secret-sounding name, and
  not a name (``REFRESH_TOKEN = "refresh_token"``, ``"x-auth-token"``), a reference to where the
  secret lives (``"{vault://env/pg_password}"``, ``"${DB_PASSWORD}"``), one lowercase word
  (``"wrongpassword"``) nor a value naming itself (``"password123"``, ``"secret_4232"``);
- a private key needs a base64 body between its armour lines (two armour string constants with
  code between them are not a key).

:func:`redact_code` re-parses the result: a redaction must never make a file stop parsing.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

EMAIL_PLACEHOLDER = "user@example.com"
IP_PLACEHOLDER = "192.0.2.1"
KEY_PLACEHOLDER = "<KEY>"
PASSWORD_PLACEHOLDER = "<PASSWORD>"

_ARMOUR_LABEL = r"(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?"
# Separators inside a key: real newlines, \n escapes when the key sits in a string literal, and the
# seams of a literal split over lines (`...\n" +\n  "...`). Any other code between armour lines
# (two armour constants in a Gradle script) ends the match.
_KEY_GAP = r"""(?:\s|\\[nr]|"\s*\+?\s*"|'\s*\+?\s*')*"""
_PRIVATE_KEY = re.compile(
    rf"-----BEGIN (?P<label>{_ARMOUR_LABEL})-----{_KEY_GAP}"
    r"(?:[A-Za-z][A-Za-z0-9-]*: [^\n\\]*" + _KEY_GAP + ")*"  # Proc-Type:, Version: ... headers
    r"(?P<body>(?:[A-Za-z0-9+/=]{4,}" + _KEY_GAP + r")+)"
    r"-----END (?P=label)-----"
)
_KEY_MIN_BODY = 16

# Kind -> pattern; the whole match (or group "secret" when present) is replaced by <KEY>.
KEY_PATTERNS: dict[str, re.Pattern[str]] = {
    "private_key": _PRIVATE_KEY,
    "aws_key": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b"),
    "aws_secret": re.compile(
        r"(?i)aws_?secret_?(?:access_?)?key\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
    ),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "stripe_key": re.compile(r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
}
# Cheap substring checks that gate each pattern (most files contain no secret at all).
_HINTS: dict[str, tuple[str, ...]] = {
    "private_key": ("PRIVATE KEY",),
    "aws_key": ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA"),
    "aws_secret": ("aws", "AWS", "Aws"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "slack_token": ("xox",),
    "stripe_key": ("_live_", "_test_"),
    "jwt": ("eyJ",),
}
_PASSWORD = re.compile(
    r"(?i)\b(?P<name>[a-z_]*(?:password|passwd|pwd|secret|api_?key|access_?token|auth_?token|secret_?key|token))"
    r"[\"']?(?P<sep>\s*[:=]\s*|\s*=>\s*)(?P<q>[\"'])(?P<value>[^\"'\s]{8,})(?P=q)"
)
_PASSWORD_WORDS = ("passw", "pwd", "secret", "apikey", "api_key", "token")
# Where a secret lives, not the secret: ${ENV}, $(cmd), {{ template }}, {vault://...}, #{...},
# %(name)s, env:NAME, arn:aws:..., op://vault/item (1Password).
_REFERENCE = re.compile(
    r"(?i)^(?:\$|\{|#\{|%\(|@\{|env:|vault:|ref\+|arn:aws:|op://|secret(?:s)?://)|\$\{|\{\{"
)
# A value spelling out what it stands for is a test's or a doc's, not a real secret.
_MADE_UP_WORDS = ("password", "passwd", "secret", "token", "apikey", "api_key", "credential", "changeme")
# Keyboard and alphabet runs in a value mark a made-up one.
_SEQUENCE = re.compile(
    r"qwerty|asdfgh|123456|" + "|".join("abcdefghijklmnopqrstuvwxyz"[i : i + 6] for i in range(21))
)
# A field name, header or key rather than a value: words joined by _ - . or camelCase, no digits.
_NAME_SHAPED = re.compile(r"[A-Za-z]+(?:[-_.:/][A-Za-z]+)+|[a-z]+(?:[A-Z][a-z]+)+|(?:[A-Z][a-z]+){2,}")
_URL_OR_PATH = re.compile(r"(?i)^(?:https?://[^@]*$|\.{0,2}/)")


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def is_secret_value(name: str, value: str) -> bool:
    """Whether ``value`` assigned to the secret-sounding ``name`` looks like a secret itself."""
    if value.startswith("<") or shannon_entropy(value) < 3.0:
        return False  # placeholders and plain words
    if _REFERENCE.search(value) or _URL_OR_PATH.match(value) or "\\(" in value:
        return False  # Swift's interpolation: "a\\(count)"
    letters = re.sub(r"\d", "", value)
    if letters.isalpha() and letters.islower() and len(value) - len(letters) <= 2:
        return False  # one word, maybe a digit or two: "wrongpassword", "credentials", "hard2guess"
    if _SEQUENCE.search(value.lower()):
        return False  # "abcdefgh", "qwerty123", "!abCDefGHijKL4#1"
    if any(word in value.lower() for word in _MADE_UP_WORDS):
        return False  # a test's value: "password123", "secret_4232", "mytoken01"
    own = _alnum(value)
    if own and (own == _alnum(name) or _alnum(name).endswith(own)):
        return False  # REFRESH_TOKEN = "refresh_token"
    return not _NAME_SHAPED.fullmatch(value)


_EMAIL = re.compile(
    r"\b[A-Za-z0-9._%+-]+@(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?P<tld>[A-Za-z]{2,}))\b"
)
_KEEP_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
# Made-up addresses of tests and docs (test@test.com, someone@somedomain.com, a@thing.com,
# user@project.org): a placeholder local part or domain, or a one-letter local part.
_FAKE_LOCAL = frozenset(
    {
        *("test", "tester", "testing", "user", "username", "someone", "somebody", "nobody", "anyone"),
        *("foo", "bar", "baz", "qux", "me", "you", "name", "email", "mail", "address", "your.name"),
        *("first.last", "firstname.lastname", "abc", "xyz", "xxx", "noreply", "no-reply"),
    }
)
_FAKE_DOMAIN = re.compile(
    r"(?i)^(?:[\w-]+\.)*(?:test|tests|testing|example|exmaple|invalid|localhost|domain|somedomain|"
    r"yourdomain|mydomain|anydomain|email|foo|bar|baz|foobar|thing|here|there|company|yourcompany|"
    r"mycompany|acme|host|server|site)\.[a-z]{2,}$"
)
# Kotlin's labelled this/super/return/break/continue: `this@Buffer.write(data)` is code.
_LABEL_KEYWORDS = frozenset({"this", "super", "return", "break", "continue"})
# Top-level domains an address can end in: common generic ones and the two-letter country codes.
_TLD_TEXT = """
com net org edu gov mil int info biz name pro aero coop museum mobi asia tel travel jobs cat
app dev page cloud tech online site xyz top club shop store blog email link live news
media network systems solutions software digital studio design agency group company global
world today life space website services consulting works tools zone center team
engineering foundation academy institute ventures capital finance fund bank law health
science social community expert codes run host computer google microsoft apple amazon
mozilla ninja guru one plus lol wtf fun art music photo games ltd llc inc gmbh srl
ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo br bs bt
bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee eg er
es et eu fi fj fk fm fo fr ga gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm hn hr ht
hu id ie il im in io iq ir is it je jm jo jp ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr
ls lt lu lv ly ma mc md me mg mh mk ml mm mn mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng
ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd
se sg sh si sk sl sm sn so sr ss st su sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw
tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw
"""
TLDS = frozenset(_TLD_TEXT.split())

_IPV4 = re.compile(r"(?<![\w.-])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)(?![\w+-])(?P<prefix>/\d{1,2}\b)?")
# Public DNS resolvers (Google, Cloudflare, Quad9, OpenDNS, Comodo, AdGuard, Control D): service
# addresses everyone's code names, not anyone's personal data.
PUBLIC_RESOLVERS = frozenset(
    [
        "8.8.8.8",
        "8.8.4.4",
        "1.1.1.1",
        "1.0.0.1",
        "9.9.9.9",
        "149.112.112.112",
        "208.67.222.222",
        "208.67.220.220",
        "8.26.56.26",
        "8.20.247.20",
        "94.140.14.14",
        "94.140.15.15",
        "76.76.2.0",
        "76.76.10.0",
    ]
)
# Version-shaped: every number small (1.27.1.2, 3.9.0.0, 1.2.3.4); public addresses that look like
# this are a sliver of the space and in code are nearly always versions or made-up test values.
_VERSION_FIRST_MAX = 32
_VERSION_REST_MAX = 64
_DIGITS_DOTS = bytes(c if chr(c) in "0123456789." else 32 for c in range(256))
# Words after which a dotted number is a version or a section, not an address.
_VERSION_CONTEXT = re.compile(
    r"(?i)(?:\bv|version|ver\.|release|rev\.?|build|update|jdk|section|sections|chapter|clause|rfc|§|"
    r"item|step|rule|figure|table|appendix)\s*[:#-]?\s*$"
)


@dataclass(frozen=True)
class Redaction:
    """One replacement: characters [start, end) of the text become ``replacement``."""

    start: int
    end: int
    replacement: str
    kind: str


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``."""
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def _whole_literal(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] (an address, maybe followed by :port) is all of a string literal."""
    port = re.match(r":\d{1,5}", text[end : end + 6])
    end += port.end() if port else 0
    quote = text[start - 1 : start]
    return quote in ("'", '"', "`") and text[end : end + 1] == quote


def _made_up_address(octets: list[int]) -> bool:
    """Test values and networks rather than a host: equal steps (50.50.50.50, 10.20.30.40),
    ascending digits (12.34.56.78, 123.45.67.89), a network or broadcast address (x.y.z.0, x.y.z.255)."""
    steps = {b - a for a, b in itertools.pairwise(octets)}
    digits = "".join(map(str, octets))
    ascending = all(int(b) == int(a) + 1 for a, b in itertools.pairwise(digits))
    return len(steps) == 1 or ascending or octets[3] in (0, 255)


def _public_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.is_global and not address.is_multicast


def _lines_with(text: str, words: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(offset, line) of the lines containing one of ``words`` (case-insensitive)."""
    offset = 0
    for line in text.split("\n"):
        lowered = line.lower()
        if any(word in lowered for word in words):
            yield offset, line
        offset += len(line) + 1


def _key_redactions(text: str) -> Iterator[Redaction]:
    for kind, pattern in KEY_PATTERNS.items():
        if not any(hint in text for hint in _HINTS[kind]):
            continue
        for match in pattern.finditer(text):
            if kind == "private_key" and len(re.sub(r"\s|\\[nr]", "", match.group("body"))) < _KEY_MIN_BODY:
                continue
            if "secret" in match.groupdict() and match.group("secret"):
                yield Redaction(*match.span("secret"), KEY_PLACEHOLDER, kind)
            else:
                yield Redaction(*match.span(), KEY_PLACEHOLDER, kind)


def _password_redactions(text: str) -> Iterator[Redaction]:
    for offset, line in _lines_with(text, _PASSWORD_WORDS):
        for match in _PASSWORD.finditer(line):
            if not is_secret_value(match.group("name"), match.group("value")):
                continue
            start, end = match.span("value")
            yield Redaction(offset + start, offset + end, PASSWORD_PLACEHOLDER, "password")


def is_email(text: str, match: re.Match[str]) -> bool:
    """Whether an address-shaped match is an e-mail address and not code or an SCM address."""
    address, start, end = match.group(0), match.start(), match.end()
    local = address.split("@", 1)[0]
    if match.group("tld").lower() not in TLDS or address.lower().endswith(_KEEP_EMAIL_DOMAINS):
        return False
    if local in _LABEL_KEYWORDS or local == "git":
        return False
    if len(local) == 1 or local.lower() in _FAKE_LOCAL or _FAKE_DOMAIN.match(match.group("domain")):
        return False
    if text.startswith("://", max(start - 3, 0)) and start >= 3:
        return False  # user@host in a URL (ssh://git@github.com/...)
    following, after = text[end : end + 1], text[end + 1 : end + 2]
    # Not a call (this@Outer.method()) nor an scp-like host:path.
    return following != "(" and not (following == ":" and after not in ("", " ", "\t"))


def _email_redactions(text: str) -> Iterator[Redaction]:
    if "@" not in text:
        return
    for offset, line in _lines_with(text, ("@",)):
        for match in _EMAIL.finditer(line):
            if is_email(line, match):
                yield Redaction(offset + match.start(), offset + match.end(), EMAIL_PLACEHOLDER, "email")


def _ip_redactions(text: str, test: bool = False) -> Iterator[Redaction]:
    """Public host addresses; in a test file (``test``) an address that is a whole string literal
    (``{ ip = "172.168.0.1" }``, ``"120.0.9.32:90"``) is a test value and stays, one inside
    longer text (a log line, a comment) does not."""
    # Only run the pattern when some run of digits and dots has three dots (cheap, in C).
    if not any(
        run.count(b".") >= 3 for run in text.encode("utf-8", "replace").translate(_DIGITS_DOTS).split()
    ):
        return
    for match in _IPV4.finditer(text):
        address = match.group(0).split("/")[0]
        octets = [int(octet) for octet in address.split(".")]
        if any(octet > 255 for octet in octets) or any(
            len(o) > 1 and o[0] == "0" for o in address.split(".")
        ):
            continue
        if match.group("prefix") and int(match.group("prefix")[1:]) < 32:
            continue  # a network, not a host
        if octets[0] < _VERSION_FIRST_MAX and max(octets[1:]) < _VERSION_REST_MAX:
            continue
        if _made_up_address(octets) or (test and _whole_literal(text, match.start(), match.end())):
            continue
        if address in PUBLIC_RESOLVERS or _VERSION_CONTEXT.search(
            text, max(match.start() - 24, 0), match.start()
        ):
            continue
        if _public_ip(address):
            yield Redaction(match.start(), match.start() + len(address), IP_PLACEHOLDER, "ip_address")


def find_redactions(text: str, path: str | None = None) -> list[Redaction]:
    """Every redaction for ``text`` (of the file at ``path``, when known), non-overlapping (keys
    first, then passwords, e-mails, IPs)."""
    from codetune.collect.filters import is_test_path

    test = path is not None and is_test_path(path)
    chosen: list[Redaction] = []
    found = (*_key_redactions(text), *_password_redactions(text), *_email_redactions(text))
    for item in (*found, *_ip_redactions(text, test)):
        if all(item.end <= other.start or item.start >= other.end for other in chosen):
            chosen.append(item)
    return sorted(chosen, key=lambda item: item.start)


def _numbered(placeholder: str, n: int) -> str:
    """The ``n``-th distinct placeholder of a kind (1: the placeholder itself)."""
    if n == 1:
        return placeholder
    if placeholder == IP_PLACEHOLDER:  # the three documentation networks, 254 hosts each
        network = ("192.0.2", "198.51.100", "203.0.113")[(n - 1) // 254 % 3]
        return f"{network}.{(n - 1) % 254 + 1}"
    if placeholder == EMAIL_PLACEHOLDER:
        return f"user{n}@example.com"
    return f"{placeholder[:-1]}_{n}>"


def apply_redactions(text: str, redactions: list[Redaction]) -> tuple[str, dict[str, int]]:
    """Apply sorted non-overlapping redactions, each distinct value getting its own placeholder
    (numbered in order of first appearance, never one the text already holds); return the text
    and counts per kind."""
    parts, last, counts = [], 0, Counter()
    chosen: dict[tuple[str, str], str] = {}
    used: Counter[str] = Counter()
    for item in redactions:
        key = (item.replacement, text[item.start : item.end])
        if key not in chosen:
            while True:
                used[item.replacement] += 1
                candidate = _numbered(item.replacement, used[item.replacement])
                if candidate not in text or used[item.replacement] > 1000:
                    break
            chosen[key] = candidate
        parts += [text[last : item.start], chosen[key]]
        last = item.end
        counts[item.kind] += 1
    parts.append(text[last:])
    return "".join(parts), dict(counts)


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Return ``text`` with secrets and personal data replaced, and counts per kind."""
    return apply_redactions(text, find_redactions(text))


def _inside_literals(text: str, tree: Any, redactions: list[Redaction]) -> list[Redaction]:
    """The redactions that lie wholly inside one string literal or comment of the parse."""
    spans: list[tuple[int, int]] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if "comment" in node.type or "string" in node.type:
            spans.append((node.start_byte, node.end_byte))
        else:
            stack.extend(node.children)
    kept = []
    for item in redactions:
        start = len(text[: item.start].encode("utf-8"))
        end = start + len(text[item.start : item.end].encode("utf-8"))
        if any(low <= start and end <= high for low, high in spans):
            kept.append(item)
    return kept


def redact_code(text: str, language: Any, path: str | None = None) -> tuple[str, dict[str, int], bool]:
    """Redact ``text`` of ``language`` (a file at ``path``: its extension picks the grammar) and
    check it still parses as well as before.

    If it does not, keep only the redactions inside string literals and comments; if even that
    breaks the parse, return the original text with ``broke=True`` (the caller drops the file with
    reason ``redaction_broke_syntax``). Returns (text, counts, broke).
    """
    redactions = find_redactions(text, path)
    if not redactions:
        return text, {}, False
    redacted, counts = apply_redactions(text, redactions)
    if language is None or language.grammar_for(path) is None:
        return redacted, counts, False
    from codetune.languages import error_fraction, parse_lenient

    before = parse_lenient(language, text, path)
    damage = error_fraction(before) if before.root_node.has_error else 0.0

    def parses_as_before(candidate: str) -> bool:
        after = parse_lenient(language, candidate, path)
        return not after.root_node.has_error or error_fraction(after) <= damage + 1e-3

    if parses_as_before(redacted):
        return redacted, counts, False
    literal_only = _inside_literals(text, before, redactions)
    if literal_only:
        redacted, counts = apply_redactions(text, literal_only)
        if parses_as_before(redacted):
            return redacted, counts, False
    return text, {}, True
