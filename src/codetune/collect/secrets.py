"""Redact personal data and secrets with placeholders, counting each kind.

E-mails become ``user@example.com`` and public IP addresses documentation addresses (so the code
still parses); keys and tokens become ``<KEY>``, passwords in assignments ``<PASSWORD>``. Private,
loopback and documentation addresses are kept.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

EMAIL_PLACEHOLDER = "user@example.com"
KEY_PLACEHOLDER = "<KEY>"
PASSWORD_PLACEHOLDER = "<PASSWORD>"

# Kind -> pattern; the whole match (or group "secret" when present) is replaced by <KEY>.
KEY_PATTERNS: dict[str, re.Pattern[str]] = {
    "private_key": re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    ),
    "aws_key": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b"),
    "aws_secret": re.compile(
        r"(?i)aws_?secret_?(?:access_?)?key\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
    ),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "stripe_key": re.compile(r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
}
_PASSWORD = re.compile(
    r"(?i)\b(?P<name>[a-z_]*(?:password|passwd|pwd|secret|api_?key|access_?token|auth_?token|secret_?key|token))"
    r"(?P<sep>\s*[:=]\s*|\s*=>\s*)(?P<q>[\"'])(?P<value>[^\"'\s]{8,})(?P=q)"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_DIGITS_DOTS = bytes(c if chr(c) in "0123456789." else 32 for c in range(256))
_KEEP_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``."""
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def _public_ip(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return ip.is_global


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
_PASSWORD_WORDS = ("passw", "pwd", "secret", "apikey", "api_key", "token")


def _has_password_word(line: str) -> bool:
    lowered = line.lower()
    return any(word in lowered for word in _PASSWORD_WORDS)


def _sub_lines(pattern: re.Pattern[str], text: str, keep: Callable[[str], bool], repl: Any) -> str:
    """Apply ``pattern.sub`` only to the lines for which ``keep`` is true (patterns never span lines)."""
    lines = text.split("\n")
    changed = False
    for i, line in enumerate(lines):
        if keep(line):
            new = pattern.sub(repl, line)
            if new != line:
                lines[i], changed = new, True
    return "\n".join(lines) if changed else text


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Return ``text`` with secrets and personal data replaced, and counts per kind."""
    counts: Counter[str] = Counter()

    for kind, pattern in KEY_PATTERNS.items():
        if not any(hint in text for hint in _HINTS[kind]):
            continue

        def key_sub(match: re.Match[str], kind: str = kind) -> str:
            counts[kind] += 1
            if "secret" in match.groupdict() and match.group("secret"):
                start, end = match.span("secret")
                whole = match.group(0)
                offset = match.start()
                return whole[: start - offset] + KEY_PLACEHOLDER + whole[end - offset :]
            return KEY_PLACEHOLDER

        text = pattern.sub(key_sub, text)

    def password_sub(match: re.Match[str]) -> str:
        value = match.group("value")
        if value.startswith("<") or shannon_entropy(value) < 3.0:
            return match.group(0)  # placeholders and plain words are not secrets
        counts["password"] += 1
        return f"{match.group('name')}{match.group('sep')}{match.group('q')}{PASSWORD_PLACEHOLDER}{match.group('q')}"

    lowered = text.lower()
    if any(word in lowered for word in _PASSWORD_WORDS):
        text = _sub_lines(_PASSWORD, text, _has_password_word, password_sub)

    def email_sub(match: re.Match[str]) -> str:
        address = match.group(0)
        if address.lower().endswith(_KEEP_EMAIL_DOMAINS):
            return address
        counts["email"] += 1
        return EMAIL_PLACEHOLDER

    if "@" in text:
        text = _sub_lines(_EMAIL, text, lambda line: "@" in line, email_sub)

    def ip_sub(match: re.Match[str]) -> str:
        start, end, whole = match.start(), match.end(), match.string
        inside = (start and (whole[start - 1].isalnum() or whole[start - 1] in "._")) or (
            end < len(whole) and (whole[end].isalnum() or whole[end] in "._")
        )
        if inside or not _public_ip(match.group(0)):
            return match.group(0)
        counts["ip_address"] += 1
        return "192.0.2.1"

    # Only run the IP pattern when some run of digits and dots has three dots (cheap, in C).
    if any(run.count(b".") == 3 for run in text.encode("utf-8", "replace").translate(_DIGITS_DOTS).split()):
        text = _IPV4.sub(ip_sub, text)
    return text, dict(counts)
