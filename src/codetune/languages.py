"""The language registry: name, extensions, tree-sitter grammar, comment syntax, syntax-unit node types.

Parsers come from ``tree-sitter-language-pack`` (pinned to 0.13.0, which ships its grammars in the
wheel; 1.x downloads them at run time and fails offline).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.errors import InputError


@dataclass(frozen=True)
class Language:
    name: str
    extensions: tuple[str, ...]
    grammar: str | None
    line_comment: str | None = None
    block_comment: tuple[str, str] | None = None
    unit_types: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, Language] = {}


def register_language(language: Language) -> Language:
    """Add or replace a language; later registrations win (a recipe may refine a built-in)."""
    _REGISTRY[language.name] = language
    return language


def _builtin(
    name: str,
    exts: str,
    grammar: str | None,
    line: str | None,
    block: tuple[str, str] | None,
    units: str = "",
) -> None:
    register_language(Language(name, tuple(exts.split()), grammar, line, block, tuple(units.split())))


C_BLOCK = ("/*", "*/")
# Grammar names are those of tree-sitter-language-pack 0.13 (note ``csharp``, not ``c_sharp``);
# tests/test_languages.py checks that every grammar loads and every unit type exists in it.
_builtin(
    "python", ".py .pyi", "python", "#", None, "function_definition class_definition decorated_definition"
)
_builtin(
    "javascript",
    ".js .mjs .cjs .jsx",
    "javascript",
    "//",
    C_BLOCK,
    "function_declaration class_declaration method_definition generator_function_declaration",
)
_builtin(
    "typescript",
    ".ts .mts .cts",
    "typescript",
    "//",
    C_BLOCK,
    "function_declaration class_declaration method_definition interface_declaration type_alias_declaration",
)
_builtin(
    "java",
    ".java",
    "java",
    "//",
    C_BLOCK,
    "class_declaration interface_declaration method_declaration constructor_declaration enum_declaration",
)
_builtin(
    "kotlin", ".kt .kts", "kotlin", "//", C_BLOCK, "function_declaration class_declaration object_declaration"
)
_builtin(
    "scala",
    ".scala .sc",
    "scala",
    "//",
    C_BLOCK,
    "function_definition class_definition object_definition trait_definition",
)
_builtin(
    "elm", ".elm", "elm", "--", ("{-", "-}"), "value_declaration type_declaration type_alias_declaration"
)
_builtin(
    "haskell",
    ".hs .lhs",
    "haskell",
    "--",
    ("{-", "-}"),
    "function signature data_type newtype class instance",
)
_builtin(
    "ocaml", ".ml .mli", "ocaml", None, ("(*", "*)"), "value_definition type_definition module_definition"
)
_builtin("lua", ".lua", "lua", "--", ("--[[", "]]"), "function_declaration")
_builtin("r", ".r", "r", "#", None, "function_definition")
_builtin(
    "julia",
    ".jl",
    "julia",
    "#",
    ("#=", "=#"),
    "function_definition struct_definition macro_definition module_definition",
)
_builtin(
    "swift", ".swift", "swift", "//", C_BLOCK, "function_declaration class_declaration protocol_declaration"
)
_builtin("dart", ".dart", "dart", "//", C_BLOCK, "class_definition function_signature method_signature")
_builtin("zig", ".zig", "zig", "//", None, "Decl FnProto")
_builtin(
    "nim",
    ".nim .nims",
    "nim",
    "#",
    ("#[", "]#"),
    "proc_declaration func_declaration method_declaration iterator_declaration type_section",
)
_builtin(
    "solidity",
    ".sol",
    "solidity",
    "//",
    C_BLOCK,
    "contract_declaration function_definition modifier_definition event_definition struct_declaration",
)
_builtin("clojure", ".clj .cljs .cljc .edn", "clojure", ";", None, "list_lit")
_builtin("go", ".go", "go", "//", C_BLOCK, "function_declaration method_declaration type_declaration")
_builtin("rust", ".rs", "rust", "//", C_BLOCK, "function_item impl_item struct_item enum_item trait_item")
_builtin("c", ".c .h", "c", "//", C_BLOCK, "function_definition struct_specifier")
_builtin(
    "cpp",
    ".cpp .cc .cxx .hpp .hh .hxx",
    "cpp",
    "//",
    C_BLOCK,
    "function_definition class_specifier struct_specifier namespace_definition",
)
_builtin(
    "c_sharp",
    ".cs",
    "csharp",
    "//",
    C_BLOCK,
    "class_declaration interface_declaration struct_declaration enum_declaration method_declaration "
    "constructor_declaration",
)
_builtin("ruby", ".rb", "ruby", "#", ("=begin", "=end"), "method singleton_method class module")
_builtin(
    "php",
    ".php",
    "php",
    "//",
    C_BLOCK,
    "function_definition class_declaration method_declaration interface_declaration trait_declaration",
)
_builtin("bash", ".sh .bash", "bash", "#", None, "function_definition")


def register_spec(spec: Any) -> Language:
    """Register a language given in a recipe (a ``config.LanguageSpec``)."""
    return register_language(
        Language(
            name=spec.name,
            extensions=tuple(e if e.startswith(".") else f".{e}" for e in spec.extensions),
            grammar=spec.grammar,
            line_comment=spec.line_comment,
            block_comment=tuple(spec.block_comment) if spec.block_comment else None,
            unit_types=tuple(spec.unit_types),
        )
    )


def language_names() -> list[str]:
    return sorted(_REGISTRY)


def get_language(name: str) -> Language:
    """Look a language up by name (case-insensitive) or fail with the list of known ones."""
    key = name.strip().lower().replace("-", "_")
    aliases = {
        "c#": "c_sharp",
        "csharp": "c_sharp",
        "c++": "cpp",
        "js": "javascript",
        "ts": "typescript",
        "py": "python",
        "kt": "kotlin",
        "sh": "bash",
        "shell": "bash",
    }
    key = aliases.get(key, key)
    if key not in _REGISTRY:
        raise InputError(f"unknown language {name!r}; known: {', '.join(language_names())}")
    return _REGISTRY[key]


def language_for_path(path: str | Path) -> Language | None:
    suffix = Path(path).suffix.lower()
    for language in _REGISTRY.values():
        if suffix in language.extensions:
            return language
    return None


@functools.lru_cache(maxsize=64)
def get_parser(grammar: str) -> Any:
    """A tree-sitter parser for a grammar name, cached per process."""
    try:
        from tree_sitter_language_pack import get_parser as pack_parser
    except ImportError as error:  # pragma: no cover - a dependency of the package
        raise InputError("tree-sitter-language-pack is not installed: pip install codetune") from error
    try:
        return pack_parser(grammar)
    except Exception as error:  # the pack raises LookupError/ValueError depending on version
        raise InputError(f"no tree-sitter grammar named {grammar!r}: {error}") from None


def parse(language: Language, source: str | bytes) -> Any:
    """Parse source text and return the tree-sitter tree."""
    if language.grammar is None:
        raise InputError(f"language {language.name!r} has no tree-sitter grammar")
    data = source.encode("utf-8") if isinstance(source, str) else source
    return get_parser(language.grammar).parse(data)


def error_fraction(tree: Any) -> float:
    """Fraction of the source bytes covered by ERROR or MISSING nodes (0.0 for a clean parse)."""
    root = tree.root_node
    total = max(root.end_byte - root.start_byte, 1)
    if not root.has_error:
        return 0.0
    bad = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            bad += max(node.end_byte - node.start_byte, 1)
            continue
        if node.has_error:
            stack.extend(node.children)
    return min(bad / total, 1.0)
