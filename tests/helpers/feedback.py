"""Records a test can reason about: completions with known log-probabilities and verdicts, and
Continue's autocomplete dev-data lines as Continue writes them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from codetune.artifacts.records import CompletionRecord, FeedbackRecord, RecordWriter

START = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.timezone.utc)


def stamp(seconds: float) -> str:
    return (START + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def completion(ident: str, seconds: float = 0, **fields) -> CompletionRecord:
    base = {"prefix": "def add(a, b):\n    return ", "suffix": "\n", "text": "a + b", "time": stamp(seconds)}
    return CompletionRecord(id=ident, **{**base, **fields})


def verdict(ident: str, accepted: bool | None, seconds: float = 1, **fields) -> FeedbackRecord:
    event = {True: "select", False: "dismiss", None: "view"}[accepted]
    return FeedbackRecord(id=ident, event=event, accepted=accepted, time=stamp(seconds), **fields)


def write(folder: Path, rows) -> Path:
    with RecordWriter(folder) as writer:
        for row in rows:
            assert writer.append(row)
    return folder


def typed_on(count: int, files: int) -> list:
    """``count`` prompts, each with an accepted suggestion and, one typed character later, a rejected
    one (a DPO pair of nearly the same prompt), spread over ``files`` files."""
    rows = []
    for n in range(count):
        prefix = f"def f{n}(x):\n    return "
        path = f"m{n % files}.py"
        rows += [
            completion(f"a{n}", n, prefix=prefix, suffix="\n", text="x + 1", path=path),
            completion(f"b{n}", n + 0.1, prefix=prefix + "x", suffix="\n", text=" * 2 - 1", path=path),
            verdict(f"a{n}", True, n + 0.2),
            verdict(f"b{n}", False, n + 0.3),
        ]
    return rows


# "a + c" as three tokens: "a" and " +" sure, " c" a guess (the developer typed "a + b").
GUESS = {"text": "a + c", "token_logprobs": [-0.1, -0.2, -3.0], "token_ends": [1, 3, 5]}


def guessed_history(files: int = 24, **guess) -> list:
    """In each file a suggestion is rejected, then the developer's next prompt shows the line typed."""
    rows = []
    for n in range(files):
        path, prefix = f"m{n}.py", f"def add{n}(a, b):\n    return "
        rows += [
            completion(f"g{n}", n, prefix=prefix, path=path, **{**GUESS, **guess}),
            verdict(f"g{n}", False, n + 0.2),
            completion(
                f"next{n}", n + 0.5, prefix=prefix + "a + b\n", path=path, text="", token_logprobs=None
            ),
        ]
    return rows


# Continue core/autocomplete/util/types.ts AutocompleteOutcome, logged by AutocompleteLoggingService through
# DataLogger.logLocalData, validated by config-yaml's autocomplete schema 0.2.0 (all fields, level "all").
CONTINUE_0_2_0 = {
    "eventName": "autocomplete",
    "schema": "0.2.0",
    "timestamp": "2026-07-01T09:15:02.114Z",
    "userId": "",
    "userAgent": "Visual Studio Code/1.101.2 (Continue/1.0.14)",
    "selectedProfileId": "local",
    "disable": False,
    "maxPromptTokens": 1024,
    "debounceDelay": 350,
    "maxSuffixPercentage": 0.2,
    "prefixPercentage": 0.3,
    "template": None,
    "multilineCompletions": "auto",
    "slidingWindowPrefixPercentage": 0.75,
    "slidingWindowSize": 500,
    "useCache": True,
    "onlyMyCode": True,
    "useRecentlyEdited": True,
    "useImports": True,
    "accepted": True,
    "time": 412,
    "prefix": "def area(r):\n    return ",
    "suffix": "\n\nprint(area(2))\n",
    "prompt": "<fim_prefix>def area(r):\n    return <fim_suffix>\n\nprint(area(2))\n<fim_middle>",
    "completion": "3.14159 * r * r",
    "modelProvider": "openai",
    "modelName": "codetune",
    "cacheHit": False,
    "filepath": "file:///home/dev/geometry/shapes%20v2/area.py",
    "gitRepo": "https://github.com/dev/geometry",
    "completionId": "5e1f2c7a-31c4-4f62-9d7e-2b0a9c1e8d55",
    "uniqueId": "0f9e8d7c6b5a",
    "enabledStaticContextualization": False,
}
# 0.1.0 (older Continue): no eventName/schema/userAgent; completionOptions, disableInFiles, useFileSuffix.
CONTINUE_0_1_0 = {
    "disable": False,
    "useFileSuffix": True,
    "maxPromptTokens": 1024,
    "debounceDelay": 350,
    "maxSuffixPercentage": 0.2,
    "prefixPercentage": 0.3,
    "multilineCompletions": "auto",
    "slidingWindowPrefixPercentage": 0.75,
    "slidingWindowSize": 500,
    "useCache": True,
    "onlyMyCode": True,
    "useRecentlyEdited": True,
    "disableInFiles": [],
    "accepted": False,
    "time": 388,
    "prefix": "fun main() {\n    ",
    "suffix": "\n}\n",
    "prompt": "",
    "completion": 'println("hi")',
    "modelProvider": "ollama",
    "modelName": "qwen2.5-coder:1.5b",
    "completionOptions": {"stop": ["\n\n"]},
    "cacheHit": False,
    "filepath": "file:///home/dev/app/Main.kt",
    "completionId": "b7a9d0e2-6c41-4e0f-8f59-3d2c1b0a9e88",
    "uniqueId": "0f9e8d7c6b5a",
    "timestamp": "2026-06-30T17:02:45.001Z",
}
