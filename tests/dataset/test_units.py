"""Syntax units on shapes that real Elm and Kotlin code has: let-bound definitions, methods inside
classes, a primary constructor after a comment."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.dataset import units_of

ELM_WITH_LET = """module Stats exposing (mean, spread)


{-| The average of a list. -}
mean : List Float -> Float
mean values =
    let
        total =
            List.sum values

        count =
            toFloat (List.length values)
    in
    total / count


spread : List Float -> Float
spread values =
    let
        low =
            List.minimum values |> Maybe.withDefault 0

        high =
            List.maximum values |> Maybe.withDefault 0
    in
    high - low
"""

KOTLIN_NESTED = """package okio.sample

/** Bytes in memory. */
class Buffer
// Only the factory makes buffers.
internal constructor(private val capacity: Int) : Source {
    private var size = 0

    fun write(data: ByteArray) {
        size += data.size
    }

    override fun read(sink: ByteArray): Int {
        return minOf(size, sink.size)
    }

    companion object {
        fun empty(): Buffer = Buffer(0)
    }
}

fun copy(source: Buffer, sink: Buffer) {
    sink.write(ByteArray(source.read(ByteArray(8))))
}
"""


def test_elm_let_bound_definitions_are_not_units(tmp_path: Path) -> None:
    for options in ({}, {"nested": True}):
        texts = units_of(tmp_path, {"src/Stats.elm": ELM_WITH_LET}, name=f"elm{len(options)}", **options)
        heads = sorted(text.split("\n")[0] for text in texts)
        assert heads == ["spread : List Float -> Float", "{-| The average of a list. -}"], heads
        assert all(not text.lstrip().startswith(("total", "count", "low", "high")) for text in texts)


def test_kotlin_methods_are_inside_their_class_unit_only(tmp_path: Path) -> None:
    texts = units_of(tmp_path, {"src/Buffer.kt": KOTLIN_NESTED})
    assert len(texts) == 2, [t[:30] for t in texts]
    buffer, copy = texts
    assert buffer.startswith("/** Bytes in memory. */\nclass Buffer\n// Only the factory makes buffers.\n")
    assert "override fun read(sink: ByteArray): Int" in buffer and "fun empty(): Buffer" in buffer
    assert buffer.endswith("    }\n}")
    assert copy.startswith("fun copy(source: Buffer, sink: Buffer)")


def test_kotlin_members_are_units_when_asked(tmp_path: Path) -> None:
    texts = units_of(tmp_path, {"src/Buffer.kt": KOTLIN_NESTED}, nested=True)
    starts = [text.split("\n")[0] for text in texts]
    assert "fun write(data: ByteArray) {" in starts
    assert "override fun read(sink: ByteArray): Int {" in starts
    assert "fun empty(): Buffer = Buffer(0)" in starts  # in a companion object, in the class
    assert sum(text.startswith("/** Bytes in memory. */\nclass Buffer") for text in texts) == 1


def test_a_comment_before_a_primary_constructor_keeps_the_class_body(tmp_path: Path) -> None:
    # tree-sitter-kotlin ends the class at the line end; the unit must still be the whole class.
    for gap in ("\n// made by the factory\n", "\n/* made by the factory */\n", "\n"):
        source = f"class Pipe{gap}internal constructor(val size: Int) {{\n    fun close() = Unit\n}}\n"
        texts = units_of(tmp_path, {"src/Pipe.kt": source}, name=f"pipe{len(gap)}")
        assert texts == [source.rstrip("\n")], (gap, texts)
