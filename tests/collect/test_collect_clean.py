"""Issue 13's cleaning cases on real-shaped files, through `codetune collect` as a user runs it: what
redaction must leave alone, real files that must stay, junk that must go under its true reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.cli import run_cli

from codetune.artifacts import read_corpus

LICENCE = "/*\n * Copyright 2021 Example Corp.\n * Licensed under the Apache License, Version 2.0.\n */\n"

LABELLED_THIS = """package okio

class Buffer : Sink {
  // Questions to jane.doe@corp-mail.io
  fun copy(data: ByteArray): Buffer {
    this@Buffer.write(data)
    return this@Buffer
  }

  fun write(data: ByteArray) {
    items.forEach { if (it.isEmpty()) return@forEach; this@Buffer.size += it.size }
  }
}
"""

GRADLE = """plugins {
  kotlin("jvm")
}

val armourStart = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
val signingKey = providers.environmentVariable("SIGNING_KEY").map { armourStart + it }
val armourEnd = "-----END PGP PRIVATE KEY BLOCK-----"

publishing {
  pom {
    scm {
      connection.set("scm:git:git@github.com:square/okio.git")
      developerConnection.set("scm:git:ssh://git@github.com/square/okio.git")
    }
  }
}
"""

SCM = """publishing {
  pom {
    scm {
      url.set("https://github.com/square/okio")
      connection.set("scm:git:git@github.com:square/okio.git")
      developerConnection.set("scm:git:ssh://git@github.com/square/okio.git")
    }
  }
}
"""

VERSIONS = """package build

// The image pins OpenJDK-Corretto-11.0.14.1.1; see sections 2.3.3.1 of the spec.
const val JDK = "Corretto-11.0.14.1"
const val RELEASE = "v1.2.3.4"
const val RESOLVER = "81.2.69.160"

fun describe(): String = "$JDK at $RELEASE via $RESOLVER"
"""

# tree-sitter-kotlin misreads `object : Source by buffer { ... }.buffer()` and errors on the whole
# file (error fraction 0.98 here) although this is valid Kotlin.
DELEGATION = """package demo

enum class SourceFactory {
  Plain {
    override val slow: Boolean
      get() = false

    override fun make(): Pipe {
      val buffer = Buffer()
      return Pipe(
        buffer,
        object : Source by buffer {
          override fun read(sink: Buffer, count: Long): Long {
            val box = Buffer()
            val result = buffer.read(box, minOf(count, 1L))
            if (result > 0L) sink.write(box.copy(), result)
            return result
          }
        }.buffer(),
      )
    }
  },

  Slow {
    override val slow: Boolean
      get() = true

    override fun make(): Pipe {
      val buffer = Buffer()
      return Pipe(buffer, buffer)
    }
  },
  ;

  abstract val slow: Boolean

  abstract fun make(): Pipe

  class Pipe(val sink: Buffer, val source: Source)
}
"""

# Prose that tree-sitter-kotlin parses as chains of infix calls.
MAIL = """Hi all

are we still on for lunch on Friday at noon
I think we said the usual place but let me know if that changed
see you there
Bob
"""

NUL_IN_DOC = "package demo\n\n/** Reads until the terminator \0 byte. */\nfun readUntil(source: Source): String {\n  return source.readUtf8()\n}\n"

LONG_COMMENT = (
    "package demo\n\nclass ParserTest {\n"
    + "  // val expected = listOf("
    + ", ".join(f'"item{i}"' for i in range(150))
    + ")\n"
    + "".join(f'  fun case{i}() = check(parse("{i}") == {i})\n' for i in range(40))
    + "}\n"
)
LONG_CODE = (
    "package demo\n\nval table = listOf(" + ", ".join(str(i) for i in range(400)) + ")\nfun f() = table\n"
)

KTLINT_HEADER = (
    "// ktlint-disable filename\n"
    + LICENCE
    + '/*\n * Portions (c) 2019 Other Corp, MIT license.\n */\npackage demo\n\nfun greet(name: String) = "Hello, $name"\nfun main() = println(greet("x"))\n'
)

ONLY_LICENCE = LICENCE
ONLY_COMMENTS = LICENCE + "\n// fun old() {\n//   return legacy()\n// }\n/* kept for reference */\n"

# One identifier-shaped "key" (`fun <KEY>()` does not parse) and one in a string literal.
KEY_AS_NAME = (
    'package demo\n\nfun AKIAIOSFODNN7EXAMPLE(): Int = 1\nval id = "AKIAIOSFODNN7EXAMPLF"\nfun f() = id\n'
)
KEY_ONLY_AS_NAME = "package demo\n\nfun AKIAIOSFODNN7EXAMPLE(): Int = 1\nfun g() = AKIAIOSFODNN7EXAMPLE()\n"

KOTLIN_FILES = {
    "okio/Buffer.kt": LABELLED_THIS,
    "build.gradle.kts": GRADLE,
    "publish.gradle.kts": SCM,
    "buildinfo/Versions.kt": VERSIONS,
    "demo/SourceFactory.kt": DELEGATION,
    "notes/Mail.kt": MAIL,
    "demo/ReadUntil.kt": NUL_IN_DOC,
    "demo/ParserTest.kt": LONG_COMMENT,
    "demo/Table.kt": LONG_CODE,
    "demo/Greeter.kt": KTLINT_HEADER,
    "demo/Licence.kt": ONLY_LICENCE,
    "demo/Old.kt": ONLY_COMMENTS,
    "demo/Keys.kt": KEY_AS_NAME,
    "demo/KeyName.kt": KEY_ONLY_AS_NAME,
    "third_party/okhttp/Call.kt": "package okhttp\n\nclass Call(val url: String) {\n  fun execute() = url.length\n}\n",
}

JQUERY = "/*!\n * jQuery JavaScript Library v3.6.0\n * https://jquery.com/\n */\n(function (global, factory) {\n  factory(global);\n})(this, function (window) {\n  var version = '3.6.0';\n  return window;\n});\n"
APP = "import { render } from './render.js';\n\nexport function start(root) {\n  const view = render(root);\n  return view.mount();\n}\n"
MINIFIED = "!function(n,r){var t='" + "abcdefghij" * 150 + "';n.u=t}(this);\n"
BUNDLE = "//     Lib 1.0.0\n\nfunction map(list, fn) {\n  return list.map(fn);\n}\n\nexports.map = map;\n//# sourceMappingURL=lib-node.cjs.map\n"

JS_FILES = {
    "src/app.js": APP,
    "external/jquery-3.6.0.js": JQUERY,
    "public/lib/jq.js": JQUERY.replace("3.6.0", "3.5.1"),
    "vendor-libs/helper.js": APP.replace("start", "boot"),
    "underscore-min.js": MINIFIED,
    "lib-node.cjs": BUNDLE,
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return root


def read_outputs(out: Path, rejected: Path) -> tuple[dict[str, str], dict[str, str], dict]:
    """A corpus and its --rejected folder: kept {path: content}, dropped {path: reason}, the manifest."""
    kept = {row["path"]: row["content"] for row in read_corpus(out)}
    index = [json.loads(line) for line in (rejected / "rejected.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    return kept, {entry["path"]: entry["reason"] for entry in index}, manifest


def collect(root: Path, language: str, out: Path) -> tuple[dict[str, str], dict[str, str], dict]:
    """Run the CLI; return kept {path: content}, dropped {path: reason} and the manifest."""
    rejected = out.parent / f"{out.name}-rejected"
    proc = run_cli(
        "collect", str(root), "--language", language, "--out", str(out), "--rejected", str(rejected)
    )
    assert proc.returncode == 0, proc.stderr
    return read_outputs(out, rejected)


@pytest.fixture(scope="module")
def kotlin(tmp_path_factory):
    base = tmp_path_factory.mktemp("kotlin")
    return collect(write_tree(base / "repo", KOTLIN_FILES), "kotlin", base / "corpus")


@pytest.fixture(scope="module")
def javascript(tmp_path_factory):
    base = tmp_path_factory.mktemp("javascript")
    return collect(write_tree(base / "repo", JS_FILES), "javascript", base / "corpus")


def test_labelled_this_is_not_an_email(kotlin):
    kept, _, _ = kotlin
    text = kept["okio/Buffer.kt"]
    assert text.count("this@Buffer") == 3 and "return@forEach" in text
    assert "jane.doe@corp-mail.io" not in text and "user@example.com" in text  # the real one goes


def test_armour_strings_with_code_between_are_not_a_key(kotlin):
    kept, _, manifest = kotlin
    assert kept["build.gradle.kts"] == GRADLE  # nothing deleted
    assert "private_key" not in manifest["redactions"]


def test_scm_urls_are_not_emails(kotlin):
    kept, _, _ = kotlin
    assert kept["publish.gradle.kts"] == SCM


def test_versions_and_sections_are_not_addresses(kotlin):
    kept, _, _ = kotlin
    text = kept["buildinfo/Versions.kt"]
    for kept_text in (
        "OpenJDK-Corretto-11.0.14.1.1",
        '"Corretto-11.0.14.1"',
        "sections 2.3.3.1",
        '"v1.2.3.4"',
    ):
        assert kept_text in text
    assert "81.2.69.160" not in text and "192.0.2.1" in text


def test_delegation_is_kotlin_and_prose_is_not(kotlin):
    kept, dropped, _ = kotlin
    assert kept["demo/SourceFactory.kt"] == DELEGATION
    assert dropped["notes/Mail.kt"] == "not_language"


def test_one_nul_byte_is_not_binary(kotlin):
    kept, _, _ = kotlin
    assert "\0" in kept["demo/ReadUntil.kt"]


def test_line_length_judges_code_lines(kotlin):
    kept, dropped, _ = kotlin
    assert "demo/ParserTest.kt" in kept  # a 1,000+ character commented-out line
    assert dropped["demo/Table.kt"] == "max_line_length"  # a code line that long still goes


def test_licence_after_ktlint_directive_and_stacked_headers_are_stripped(kotlin):
    kept, _, _ = kotlin
    text = kept["demo/Greeter.kt"]
    assert text.startswith("// ktlint-disable filename\npackage demo\n")
    assert "Copyright" not in text and "Portions" not in text


def test_comment_only_files_have_their_own_reason(kotlin):
    _, dropped, _ = kotlin
    assert dropped["demo/Licence.kt"] == "only_comments"
    assert dropped["demo/Old.kt"] == "only_comments"


def test_redaction_never_breaks_the_parse(kotlin):
    kept, dropped, _ = kotlin
    text = kept["demo/Keys.kt"]  # the identifier stays, the literal is redacted
    assert "fun AKIAIOSFODNN7EXAMPLE(): Int = 1" in text and '"<KEY>"' in text
    assert dropped["demo/KeyName.kt"] == "redaction_broke_syntax"


def test_vendored_paths_and_library_headers(kotlin, javascript):
    kept, dropped, manifest = javascript
    assert list(kept) == ["src/app.js"]
    assert dropped["external/jquery-3.6.0.js"] == "vendored"
    assert dropped["public/lib/jq.js"] == "vendored"  # by its jQuery banner
    assert dropped["vendor-libs/helper.js"] == "vendored"
    assert manifest["counts"]["dropped"]["vendored"]["files"] == 3
    assert kotlin[1]["third_party/okhttp/Call.kt"] == "vendored"


def test_minified_and_bundles_report_their_true_reason(javascript):
    _, dropped, _ = javascript
    assert dropped["underscore-min.js"] == "minified"
    assert dropped["lib-node.cjs"] == "bundle"
