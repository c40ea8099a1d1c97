"""Redaction precision and recall: codetune's code-aware redaction against plain regexes.

1. Planted: files of real-shaped lines in several languages, each holding either a planted secret
   (keys, tokens, passwords, e-mails, public addresses) or a decoy that is not one (a field name
   as its value, a vault or ${ENV} reference, versions, documentation, private and test addresses,
   networks, Kotlin labels, SCM URLs). Recall: planted secrets removed; precision: redactions that
   hit a planted secret.
2. Real repositories (optional, folders given on the command line): every redaction codetune makes
   in their source files, with its line, written to ``--review`` for a person to label; with
   ``--labels`` (a TSV of ``value<TAB>real|not``, from such a review; ``kind:private_key<TAB>real``
   labels a whole kind) the precision on them.

    python bench/redaction.py --files 400
    python bench/redaction.py --files 400 /tmp/repos/kong /tmp/repos/coil --review /tmp/review.tsv

The baseline is the same key, password, e-mail and IPv4 patterns applied without any of the
code-aware checks (what a plain regex pass does). The last line is the precision ratio.
"""

from __future__ import annotations

import argparse
import random
import re
import string
import sys
from pathlib import Path

from codetune.collect.secrets import _EMAIL, _IPV4, _PASSWORD, KEY_PATTERNS, find_redactions, redact_code

# ---- planted files -------------------------------------------------------------------------------


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _public_ip(rng: random.Random) -> str:
    while True:
        first = rng.randint(40, 223)
        if first not in (100, 127, 169, 172, 192, 198, 203):
            return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def secrets(rng: random.Random) -> list[tuple[str, str]]:
    """(line template with {v}, value) for one of each planted secret."""
    upper = string.ascii_uppercase + string.digits
    alnum = string.ascii_letters + string.digits
    person = rng.choice(["jane.doe", "j.smith", "mkowalski", "li.wei", "ana-lima"])
    return [
        ('aws_access_key_id = "{v}"', "AKIA" + _rand(rng, upper, 16)),
        ('github_token = "{v}"', "ghp_" + _rand(rng, alnum, 36)),
        ('db_password = "{v}"', _rand(rng, alnum + "#$%!", 14)),
        ('"apiKey": "{v}",', _rand(rng, alnum, 32)),
        ("# Maintainer: {v}", f"{person}{rng.randint(1, 99)}@{rng.choice(['corp-mail.io', 'posteo.de'])}"),
        ('SERVER = "{v}"', _public_ip(rng)),
        (
            'slack_webhook_token = "{v}"',
            "xoxb-" + _rand(rng, string.digits, 12) + "-" + _rand(rng, alnum, 24),
        ),
        ('stripe = "{v}"', "sk_live_" + _rand(rng, alnum, 24)),
    ]


def decoys(rng: random.Random) -> list[tuple[str, str]]:
    """(line template with {v}, value) of things that look like secrets and are not."""
    return [
        ('REFRESH_TOKEN = "{v}"', "refresh_token"),
        ('const val CLIENT_SECRET = "{v}"', "client_secret"),
        ('TIME_PER_TOKEN = "{v}"', "time_per_token"),
        ('api_key_header = "{v}"', "X-Api-Key"),
        ('password_field = "{v}"', "passwordConfirmation"),
        ('pg_password = "{v}"', "{vault://env/pg_password}"),
        ('redis_password: "{v}"', "${REDIS_PASSWORD}"),
        ('token_url = "{v}"', "https://oauth2.example.com/token"),
        ('nginx = {{ "{v}" }}', rng.choice(["1.27.1.2", "1.25.3.1", "1.21.4.3"])),
        ("--[[ {v} ]]", rng.choice(["3.9.0.0", "3.4.2.0", "2.8.1.1"])),
        ("-- needs process {v}+", "1.6.20.0"),
        ('listOf("{v}", "1.2.3.5")', "1.2.3.4"),
        ('trusted = "{v}"', rng.choice(["1.1.1.0/24", "52.95.110.0/24", "10.0.0.0/8"])),
        ('doc_host = "{v}"', f"192.0.2.{rng.randint(1, 254)}"),
        ('bind = "{v}"', rng.choice(["0.0.0.0", "127.0.0.1", "10.1.2.3", "172.16.4.2"])),
        ('resolver = "{v}"', rng.choice(["8.8.8.8", "1.1.1.1", "9.9.9.9"])),
        ("this{v}.write(data)", "@Buffer"),
        ('connection.set("{v}")', "scm:git:git@github.com:square/okio.git"),
        ('owner = "{v}"', "user@example.com"),
    ]


FILLER = [
    "fun handle(request: Request): Response = router.route(request)",
    "local function merge(a, b) for k, v in pairs(b) do a[k] = v end return a end",
    "def area(width, height):\n    return width * height",
    'val retries = config.getInt("retries") ?: 3',
]


def planted_files(n: int, seed: int = 0) -> list[tuple[str, list[str], list[str]]]:
    """(text, planted secret values, decoy values) per file."""
    rng = random.Random(seed)
    files = []
    for _ in range(n):
        chosen_secrets = rng.sample(secrets(rng), 3)
        chosen_decoys = rng.sample(decoys(rng), 6)
        lines = [template.format(v=value) for template, value in chosen_secrets + chosen_decoys]
        lines += rng.sample(FILLER, 2)
        rng.shuffle(lines)
        files.append(("\n".join(lines) + "\n", [v for _, v in chosen_secrets], [v for _, v in chosen_decoys]))
    return files


# ---- the two redactors ---------------------------------------------------------------------------


def plain_regex_spans(text: str) -> list[tuple[int, int]]:
    """Every match of the same patterns, with none of the code-aware checks."""
    spans = []
    for pattern in (*KEY_PATTERNS.values(), _EMAIL, _IPV4):
        spans += [m.span() for m in pattern.finditer(text)]
    spans += [m.span("value") for m in _PASSWORD.finditer(text)]
    chosen: list[tuple[int, int]] = []
    for span in sorted(spans, key=lambda s: (s[0], -s[1])):
        if not chosen or span[0] >= chosen[-1][1]:
            chosen.append(span)
    return chosen


def codetune_spans(text: str) -> list[tuple[int, int]]:
    return [(r.start, r.end) for r in find_redactions(text)]


def score(files, spans_of) -> tuple[float, float, int]:
    """(precision, recall, redactions) of a redactor on the planted files."""
    hits = found = total = planted = 0
    for text, planted_values, _ in files:
        spans = spans_of(text)
        total += len(spans)
        planted += len(planted_values)
        secret_spans = []
        for value in planted_values:
            start = text.find(value)
            secret_spans.append((start, start + len(value)))
        for start, end in secret_spans:
            if any(low < end and start < high for low, high in spans):
                found += 1
        hits += sum(1 for low, high in spans if any(low < e and s < high for s, e in secret_spans))
    return hits / max(total, 1), found / max(planted, 1), total


# ---- real repositories ---------------------------------------------------------------------------


def review_repositories(folders: list[str], review: Path | None, labels: Path | None) -> None:
    """Redact every source file of the folders as collect does; list each redaction for review."""
    from codetune.languages import language_for_path

    known: dict[str, bool] = {}
    if labels is not None:
        for line in labels.read_text(encoding="utf-8").splitlines():
            value, _, verdict = line.rpartition("\t")
            known[value] = verdict.strip() == "real"
    rows = []
    for folder in folders:
        root = Path(folder)
        per_kind: dict[str, int] = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
            language = language_for_path(path)
            if language is None:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            rel = str(path.relative_to(root))
            redactions = find_redactions(text, rel)
            if not redactions:
                continue
            _, _, broke = redact_code(text, language, rel)
            if broke:
                continue
            for item in redactions:
                value = text[item.start : item.end]
                line_start = text.rfind("\n", 0, item.start) + 1
                line_end = text.find("\n", item.end)
                line = text[line_start : line_end if line_end >= 0 else None].strip()[:160]
                rows.append((root.name, item.kind, value, rel, line))
                per_kind[item.kind] = per_kind.get(item.kind, 0) + 1
        print(f"{root.name}: {sum(per_kind.values())} redactions {per_kind}")
    if review is not None:
        review.write_text(
            "".join("\t".join(re.sub(r"\s+", " ", c) for c in row) + "\n" for row in rows), encoding="utf-8"
        )
        print(f"review file: {review} ({len(rows)} rows: repo, kind, value, path, line)")

    def verdict(row: tuple[str, ...]) -> bool | None:
        return known.get(row[2], known.get(f"kind:{row[1]}"))

    labelled = [row for row in rows if verdict(row) is not None]
    if labelled:
        real = sum(1 for row in labelled if verdict(row))
        print(
            f"real repositories: {real}/{len(labelled)} labelled redactions are real = {real / len(labelled):.1%}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repos", nargs="*", help="Repository folders to review redactions in.")
    parser.add_argument("--files", type=int, default=400, help="Planted files.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--review", type=Path, help="Write the real redactions here (TSV) for labelling.")
    parser.add_argument(
        "--labels", type=Path, help="TSV value<TAB>real|not from a review (kind:KIND labels a whole kind)."
    )
    args = parser.parse_args()
    files = planted_files(args.files, args.seed)
    ours = score(files, codetune_spans)
    plain = score(files, plain_regex_spans)
    print(
        f"planted: {args.files} files, {sum(len(f[1]) for f in files)} secrets, {sum(len(f[2]) for f in files)} decoys"
    )
    for name, (precision, recall, total) in (("codetune", ours), ("plain regexes", plain)):
        print(f"{name:14s} precision {precision:6.1%}  recall {recall:6.1%}  ({total} redactions)")
    if args.repos:
        review_repositories(args.repos, args.review, args.labels)
    print(
        f"ratio: {ours[0] / max(plain[0], 1e-9):.2f}x precision codetune vs plain regexes "
        f"({ours[0]:.1%} vs {plain[0]:.1%}; recall {ours[1]:.1%} vs {plain[1]:.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
