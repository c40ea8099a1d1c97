"""The language registry: every built-in grammar loads, unit types exist, recipes add languages."""

from __future__ import annotations

import pytest

from codetune.config import LanguageSpec
from codetune.errors import InputError
from codetune.languages import (
    error_fraction,
    get_language,
    get_parser,
    language_for_path,
    language_names,
    parse,
    register_spec,
)

REQUIRED = [
    "python",
    "javascript",
    "typescript",
    "java",
    "kotlin",
    "scala",
    "elm",
    "haskell",
    "ocaml",
    "lua",
    "r",
    "julia",
    "swift",
    "dart",
    "zig",
    "nim",
    "solidity",
    "clojure",
    "go",
    "rust",
    "c",
    "cpp",
    "c_sharp",
    "ruby",
    "php",
    "bash",
]


def test_every_required_language_is_registered():
    assert set(REQUIRED) <= set(language_names())


@pytest.mark.parametrize("name", REQUIRED)
def test_grammar_loads_and_unit_types_exist(name):
    language = get_language(name)
    assert language.extensions and all(ext.startswith(".") for ext in language.extensions)
    assert language.line_comment or language.block_comment
    ts_language = get_parser(language.grammar).language
    for unit in (*language.unit_types, *language.top_level_types):
        assert ts_language.id_for_node_kind(unit, True) is not None, (name, unit)


@pytest.mark.parametrize("name", language_names())
def test_extension_grammars_load_and_suspects_exist(name):
    """Every per-extension grammar loads for one of the language's extensions; suspect and evidence
    node types exist in the grammar."""
    language = get_language(name)
    for extension, grammar in language.extension_grammars:
        assert extension in language.extensions and language.grammar_for(f"a{extension}") == grammar
        get_parser(grammar)
    ts_language = get_parser(language.grammar).language if language.suspect_types else None
    for suspect, evidence in language.suspect_types:
        for node_type in (suspect, *evidence):
            assert ts_language.id_for_node_kind(node_type, True) is not None, (name, node_type)


def test_lookup_by_alias_and_path():
    assert get_language("C#").name == "c_sharp"
    assert get_language("Kotlin").name == "kotlin"
    assert language_for_path("src/Main.elm").name == "elm"
    assert language_for_path("a/b.KT").name == "kotlin"
    assert language_for_path("notes.txt") is None


def test_unknown_language_is_a_clear_error():
    with pytest.raises(InputError, match="unknown language 'cobolx'"):
        get_language("cobolx")


def test_error_fraction_separates_code_from_mail():
    elm = get_language("elm")
    good = "module Main exposing (main)\n\nmain : Int\nmain =\n    42\n"
    mail = "From: Bob <bob@corp.io>\nSubject: lunch?\n\nHi all, are we still on for Friday?\n"
    assert error_fraction(parse(elm, good)) == 0.0
    assert error_fraction(parse(elm, mail)) > 0.5


def test_register_spec_adds_a_language_from_a_recipe():
    spec = LanguageSpec(name="airscript", extensions=["airs"], grammar="javascript", line_comment="//")
    language = register_spec(spec)
    assert get_language("airscript") is language
    assert language_for_path("x.airs").name == "airscript"
    assert error_fraction(parse(language, "function f(a) { return a + 1; }\n")) == 0.0
