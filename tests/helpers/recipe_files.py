"""Small, distinct source files and data files standing in for each recipe's real sources."""

from __future__ import annotations

import json
import random
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

WORDS = [
    *[
        "account",
        "balance",
        "cache",
        "client",
        "config",
        "cursor",
        "device",
        "driver",
        "engine",
        "event",
        "filter",
        "gateway",
        "handler",
    ],
    *[
        "index",
        "invoice",
        "journal",
        "kernel",
        "ledger",
        "matrix",
        "module",
        "network",
        "order",
        "packet",
        "parser",
        "payment",
        "queue",
    ],
    *[
        "record",
        "region",
        "report",
        "router",
        "sample",
        "schema",
        "session",
        "shard",
        "signal",
        "socket",
        "stream",
        "ticket",
        "token",
    ],
    *["tracker", "upload", "vector", "window", "worker"],
]


def _names(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(WORDS) + rng.choice(WORDS).capitalize() + str(rng.randint(2, 99)) for _ in range(count)
    ]


def kotlin_file(seed: int) -> str:
    """A small Kotlin file with a class and a few functions, different for every seed."""
    a, b, c, d, e = _names(seed, 5)
    return (
        f"package com.acme.{a.lower()}\n\n"
        f"data class {a.capitalize()}(val {b}: Int, val {c}: String)\n\n"
        f"fun {d}({b}: Int, {c}: Int): Int {{\n"
        f"    val {e} = {b} * {seed + 3} + {c}\n"
        f"    return if ({e} > {seed * 7}) {e} - {b} else {e} + {c}\n"
        "}\n\n"
        f"fun {e}(items: List<{a.capitalize()}>): Map<String, Int> {{\n"
        f"    return items.groupBy {{ it.{c} }}.mapValues {{ entry -> entry.value.sumOf {{ it.{b} }} }}\n"
        "}\n\n"
        f"class {c.capitalize()}Service(private val limit: Int = {seed * 11 + 5}) {{\n"
        f"    fun {b}Check(value: Int): Boolean = value in 0..limit\n"
        f'    override fun toString(): String = "{c.capitalize()}Service(limit=$limit)"\n'
        "}\n"
    )


def elm_file(seed: int) -> str:
    """A small Elm module that tree-sitter-elm parses without errors."""
    a, b, c, d = (n[0].lower() + n[1:] for n in _names(seed + 1000, 4))
    t = a[0].upper() + a[1:]
    return (
        f"module Page{seed} exposing ({b}, {c})\n\n"
        "import Html exposing (Html, div, text)\n\n\n"
        f"-- {d} helpers\n\n\n"
        f"type alias {t} =\n    {{ {b}Count : Int\n    , {c}Name : String\n    }}\n\n\n"
        f"{b} : Int -> Int -> Int\n{b} x y =\n    x * {seed + 2} + y\n\n\n"
        f"{c} : List Int -> Int\n{c} values =\n    List.foldl (+) {seed} values\n\n\n"
        f"{d} : {t} -> Html msg\n{d} model =\n    div [] [ text model.{c}Name ]\n"
    )


def javascript_file(seed: int) -> str:
    """An AirScript-like script: WPS spreadsheet automation in JavaScript."""
    a, b, c, _ = _names(seed + 2000, 4)
    col = "ABCDEFGH"[seed % 8]
    return (
        f"/* {a}: highlight rows of {col}1:{col}{seed + 10} above a threshold */\n"
        f"function {a}() {{\n"
        f'  const {b} = ActiveSheet.Range("{col}1:{col}{seed + 10}")\n'
        f"  for (let i = 1; i <= {b}.Rows.Count; i++) {{\n"
        f"    const cell = {b}.Cells.Item(i)\n"
        f"    if (cell.Value > {seed * 13 + 7}) {{\n"
        f"      cell.Interior.Color = RGB({seed * 9 % 255}, 200, 120)\n"
        "    }\n"
        "  }\n"
        "}\n\n"
        f"function {c}(sheetName) {{\n"
        "  const sheet = Application.Worksheets.Item(sheetName)\n"
        f'  sheet.Range("A1").Value = "{c} {seed}"\n'
        "  return sheet.UsedRange.Rows.Count\n"
        "}\n"
    )


def python_file(seed: int) -> str:
    a, b, c, d = _names(seed + 3000, 4)
    return (
        f"def {a}({b}, {c}={seed}):\n"
        f'    """Combine {b} and {c}."""\n'
        f"    {d} = [{b} * i + {c} for i in range({seed % 7 + 3})]\n"
        f"    return sum({d}) // max(1, len({d}))\n\n\n"
        f"class {d.capitalize()}:\n"
        f"    def __init__(self, {b}):\n"
        f"        self.{b} = {b}\n\n"
        f"    def {c}(self):\n"
        f"        return self.{b} + {seed}\n"
    )


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        [
            "git",
            "-c",
            "user.email=t@example.com",
            "-c",
            "user.name=t",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def make_git_repo(root: Path, files: dict[str, str]) -> Path:
    """A committed local git repository holding ``files``."""
    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q", cwd=root)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "init", cwd=root)
    return root


def kotlin_repo(root: Path, count: int = 12) -> Path:
    """A Kotlin repository: distinct files, one with a copyright header, one with a huge literal, one one-liner."""
    files = {f"src/main/kotlin/File{i}.kt": kotlin_file(i) for i in range(count)}
    files["src/main/kotlin/File0.kt"] = (
        "/*\n * Copyright 2010-2024 Acme s.r.o. and contributors.\n"
        " * Use of this source code is governed by the Apache 2.0 license.\n */\n\n" + kotlin_file(0)
    )
    files["src/test/kotlin/Literals.kt"] = (
        'const val S127 = "' + "-\\uD83C\\uDF10" * 200 + '"\n' + kotlin_file(99)
    )
    files["src/main/kotlin/One.kt"] = "package one\n"
    files["build.gradle.kts"] = 'plugins { kotlin("jvm") version "2.0.0" }\n' * 3
    return make_git_repo(root, files)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def doccano_export(path: Path, count: int = 10) -> Path:
    """A doccano sequence-labelling export: an `instruction` span over the leading comment of a script."""
    rows = []
    for i in range(count):
        text = javascript_file(i + 500)
        end = text.index("*/") + 2
        rows.append({"id": i, "text": text, "label": [[0, end, "instruction"]], "Comments": []})
    return write_jsonl(path, rows)


def conala_curated(path: Path, count: int = 24) -> Path:
    """A CoNaLa-curated-shaped JSON list (intent, snippet, rewritten_intent; some rewrites missing)."""
    rows = []
    for i in range(count):
        a, b, c = _names(i + 4000, 3)
        rows.append(
            {
                "question_id": 1000 + i,
                "intent": f"How to combine {a} with {b}?",
                "snippet": f"{c} = {a} + {b} * {i}",
                "rewritten_intent": None if i % 8 == 7 else f"add {b} times {i} to {a} and store it in {c}",
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def conala_mined(path: Path, count: int = 6) -> Path:
    """Mined rows as CoNaLa ships them: {question_id, parent_answer_post_id, prob, snippet, intent, id};
    a question has several answers' snippets, so only ``id`` is unique."""
    rows = []
    for i in range(count):
        a, b = _names(i + 5000, 2)
        question, answer = 9000 + i // 2, 7000 + i
        rows.append(
            {
                "question_id": question,
                "parent_answer_post_id": answer,
                "prob": round(0.9 - i / 50, 3),
                "snippet": f"sorted({a}, key=lambda x: x.{b})",
                "intent": f"sort {a} by {b}",
                "id": f"{question}_{answer}_{i}",
            }
        )
    return write_jsonl(path, rows)


def code_json(path: Path, count: int = 12) -> Path:
    """PaddleNLP-style training file: one {"code": ...} per line."""
    return write_jsonl(path, [{"code": python_file(i)} for i in range(count)])


class FakeGitHub(BaseHTTPRequestHandler):
    """GitHub's /search/repositories answer listing local repositories by file:// clone URL."""

    repos: ClassVar[list[dict[str, Any]]] = []
    calls: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).calls.append(self.path)
        if not self.path.startswith("/search/repositories"):
            self.send_error(404)
            return
        body = json.dumps({"total_count": len(self.repos), "incomplete_results": False, "items": self.repos})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-RateLimit-Remaining", "29")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def fake_github(repos: list[Path]) -> tuple[ThreadingHTTPServer, str]:
    """Start the fake search API on 127.0.0.1 (a free port) in a thread; returns (server, base URL)."""
    import threading

    FakeGitHub.repos = [
        {
            "full_name": f"elm-fans/{path.name}",
            "clone_url": f"file://{path}",
            "default_branch": "main",
            "stargazers_count": 30 - i,
        }
        for i, path in enumerate(repos)
    ]
    FakeGitHub.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def codexglue_method(path: Path, count: int = 3) -> Path:
    """A CodeXGLUE method-generation-shaped file: signature, docstring, body (CodeXGLUE token text)."""
    rows = []
    for i in range(count):
        a, b = _names(i + 6000, 2)
        rows.append(
            {
                "signature": f"def {a} ( {b} ) :",
                "docstring": f"Return {b} plus {i} .",
                "body": f"return {b} + {i}",
            }
        )
    return write_jsonl(path, rows)
