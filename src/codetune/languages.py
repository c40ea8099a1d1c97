"""The language registry: name, extensions, tree-sitter grammar, comment syntax, syntax-unit node types.

Parsers come from ``tree-sitter-language-pack`` (pinned to 0.13.0, which ships its grammars in the
wheel; 1.x downloads them at run time and fails offline).
"""

from __future__ import annotations

import functools
import re
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
    # Node types a file may hold at its top level, where the grammar accepts more than the language
    # does (tree-sitter-kotlin parses any run of words as infix calls, so prose saved as .kt parses);
    # empty: anything. Files with a script extension (.kts) may hold statements too.
    top_level_types: tuple[str, ...] = field(default_factory=tuple)
    script_extensions: tuple[str, ...] = field(default_factory=tuple)
    # (extension, grammar) where one language needs several grammars: OCaml's .mli interfaces parse
    # with ``ocaml_interface`` (the implementation grammar errors on most of them).
    extension_grammars: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # Regexes of syntax the grammar does not know yet (Kotlin 2.1's multi-dollar strings ``$$"a$b"``):
    # their matches are blanked, length kept, before a file is judged, so a gap cannot drop valid code.
    grammar_gaps: tuple[str, ...] = field(default_factory=tuple)
    # (node type, evidence types): top-level nodes the grammar accepts from foreign text, counted as
    # unparsed unless they hold an evidence node (a shell line `exec runghc Setup.hs "$@"` is a
    # Haskell top-level splice; a real Template Haskell splice quotes a name: ``makeLenses ''User``).
    suspect_types: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)
    # A function is written as sibling nodes sharing its name (Haskell: a signature, then one node
    # per equation): syntax units join them into one.
    unit_clauses: bool = False

    def grammar_for(self, path: str | Path | None = None) -> str | None:
        """The grammar for a file of this language (by its extension), or the language's grammar."""
        if path is not None and self.extension_grammars:
            suffix = Path(path).suffix.lower()
            for extension, grammar in self.extension_grammars:
                if suffix == extension:
                    return grammar
        return self.grammar


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
register_language(
    Language(
        "kotlin",
        (".kt", ".kts"),
        "kotlin",
        "//",
        C_BLOCK,
        ("function_declaration", "class_declaration", "object_declaration"),
        top_level_types=[
            "shebang_line",
            "file_annotation",
            "package_header",
            "import_list",
            "import_header",
            "class_declaration",
            "object_declaration",
            "function_declaration",
            "property_declaration",
            "getter",
            "setter",
            "type_alias",
        ],
        script_extensions=(".kts",),
        grammar_gaps=(r"\$\$+(?=\")",),
    )
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
register_language(
    Language(
        "haskell",
        (".hs", ".lhs"),
        "haskell",
        "--",
        ("{-", "-}"),
        (
            "function",
            "bind",
            "signature",
            "data_type",
            "newtype",
            "type_synomym",
            "type_family",
            "class",
            "instance",
        ),
        suspect_types=(("top_splice", ("th_quoted_name", "quasiquote", "splice", "quote")),),
        unit_clauses=True,
    )
)
register_language(
    Language(
        "ocaml",
        (".ml", ".mli"),
        "ocaml",
        None,
        ("(*", "*)"),
        # the last three are what an interface (.mli) declares: `val`, `external`, `module type`
        (
            "value_definition",
            "type_definition",
            "module_definition",
            "value_specification",
            "external",
            "module_type_definition",
        ),
        extension_grammars=((".mli", "ocaml_interface"),),
    )
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
    "contract_declaration library_declaration interface_declaration function_definition modifier_definition "
    "event_definition struct_declaration enum_declaration error_declaration",
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


def parse(language: Language, source: str | bytes, path: str | Path | None = None) -> Any:
    """Parse source text and return the tree-sitter tree (with the grammar for ``path``'s extension)."""
    grammar = language.grammar_for(path)
    if grammar is None:
        raise InputError(f"language {language.name!r} has no tree-sitter grammar")
    data = source.encode("utf-8") if isinstance(source, str) else source
    return get_parser(grammar).parse(data)


def mask_gaps(language: Language, source: str | bytes) -> bytes:
    """``source`` as bytes with the grammar's known gaps blanked (same length, so offsets hold)."""
    data = source.encode("utf-8") if isinstance(source, str) else source
    for gap in language.grammar_gaps:
        data = re.sub(gap.encode(), lambda match: b" " * len(match.group(0)), data)
    return data


def parse_lenient(language: Language, source: str | bytes, path: str | Path | None = None) -> Any:
    """Parse for judging how well a file parses: the grammar's known gaps are blanked first. Node
    offsets match ``source``; node text may not, so never cut units from this tree."""
    return parse(language, mask_gaps(language, source), path)


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


# A well-formed subtree found inside an ERROR node counts as parsed when it holds at least this many
# tokens: a lone identifier or keyword inside an error is no evidence of code, a method is.
_CREDIT_MIN_TOKENS = 2
# How many times :func:`unparsed_fraction` cuts a file after its first error to parse the rest alone.
_REPARSE_DEPTH = 3
_REPARSE_CUTS = 12
_REPARSE_MAX_BYTES = 200_000


def _tokens_at_least(node: Any, wanted: int) -> bool:
    count, stack = 0, [node]
    while stack:
        current = stack.pop()
        if current.child_count == 0:
            count += 1
            if count >= wanted:
                return True
        else:
            stack.extend(current.children)
    return False


def _outside_declarations(node: Any, declarations: set[str], bad: list[tuple[int, int]]) -> None:
    """Collect the spans of ``node`` not inside an error-free declaration or comment."""
    stack = [node]
    while stack:
        current = stack.pop()
        if (current.type in declarations and not current.has_error) or "comment" in current.type:
            continue
        if current.child_count == 0:
            bad.append((current.start_byte, current.end_byte))
        else:
            stack.extend(current.children)


def _suspect_spans(language: Language, root: Any, bad: list[tuple[int, int]]) -> None:
    """Add the spans of top-level suspect nodes that hold no evidence (see ``Language.suspect_types``)."""
    suspects = dict(language.suspect_types)
    for top in root.children:
        for node in (top, *top.children):  # Haskell's splices sit in the root's `declarations`
            evidence = suspects.get(node.type)
            if evidence is None:
                continue
            stack, found = [node], False
            while stack and not found:
                current = stack.pop()
                found = current.type in evidence
                stack.extend(current.children)
            if not found:
                bad.append((node.start_byte, node.end_byte))


def _unparsed_spans(language: Language, tree: Any, script: bool) -> list[tuple[int, int]]:
    """Byte spans the grammar could not make sense of (see :func:`unparsed_fraction`)."""
    root = tree.root_node
    bad: list[tuple[int, int]] = []
    if language.suspect_types:
        _suspect_spans(language, root, bad)
    stack = [(root, root.is_error)]
    if language.top_level_types and not script and not root.is_error:
        allowed = set(language.top_level_types)
        stack = []
        for child in root.children:
            if child.type in allowed or "comment" in child.type:
                stack.append((child, child.is_error))
            else:
                _outside_declarations(child, allowed | set(language.unit_types), bad)
    elif not root.has_error:
        return bad
    while stack:
        node, inside_error = stack.pop()
        if node.is_missing:
            bad.append((node.start_byte, node.start_byte + 1))
        elif node.is_error or (inside_error and node.has_error):
            if node.child_count == 0:
                bad.append((node.start_byte, node.end_byte))
            stack.extend((child, True) for child in node.children)
        elif inside_error:
            credited = node.is_named and (
                "comment" in node.type or _tokens_at_least(node, _CREDIT_MIN_TOKENS)
            )
            if not credited:
                bad.append((node.start_byte, node.end_byte))
        elif node.has_error:
            stack.extend((child, False) for child in node.children)
    return bad


@dataclass(frozen=True)
class _Judge:
    """What judging one file needs: its language, grammar (by extension) and whether it is a script."""

    language: Language
    grammar: str
    script: bool

    def damage(self, data: bytes, tree: Any = None) -> tuple[int, list[int]]:
        """Unparsed bytes of ``data`` and the line ends after each damaged line (cut candidates)."""
        if tree is None:
            tree = get_parser(self.grammar).parse(data)
        spans = _unparsed_spans(self.language, tree, self.script)
        cuts: dict[int, None] = {}
        for start, _ in sorted(spans):
            cut = data.find(b"\n", start) + 1
            if 0 < cut < len(data):
                cuts[cut] = None
        return sum(end - start for start, end in _merged(spans)), list(cuts)

    def unparsed_bytes(self, data: bytes, depth: int, tree: Any = None) -> int:
        whole, cuts = self.damage(data, tree)
        if not whole or depth <= 0 or len(data) > _REPARSE_MAX_BYTES:
            return whole
        # Re-parse around the errors: one broken construct can throw the grammar off for the rest of
        # the file, so also try cutting after a damaged line and parsing both parts alone.
        best, best_cut = whole, None
        for cut in cuts[:_REPARSE_CUTS]:
            split = self.damage(data[:cut])[0] + self.damage(data[cut:])[0]
            if split < best:
                best, best_cut = split, cut
        if best_cut is None:
            return whole
        head = self.damage(data[:best_cut])[0]
        return min(best, head + self.unparsed_bytes(data[best_cut:], depth - 1))


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping spans as one (a suspect node can hold an error span)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def unparsed_fraction(
    language: Language,
    source: str | bytes,
    script: bool = False,
    tree: Any = None,
    path: str | Path | None = None,
) -> float:
    """Fraction of the source bytes the grammar could not make sense of: the measure of "is this
    file in this language" (unlike :func:`error_fraction`, which is all-or-nothing per ERROR node).

    - Error-free subtrees inside an ERROR node (a method, a property, a comment) count as parsed:
      tree-sitter-kotlin errors on the whole file around ``object : Source by buffer { ... }``.
    - The file is also cut after a damaged line and both parts parsed alone (a few times), keeping
      the smaller damage: one construct the grammar misreads must not condemn what follows.
    - Where ``top_level_types`` is set (and not a script), another node at the top counts as
      unparsed: tree-sitter-kotlin parses a run of words as infix calls, so prose saved as .kt parses.
    - Suspect nodes without evidence count as unparsed (``Language.suspect_types``), and the
      grammar's known gaps are blanked first (``Language.grammar_gaps``).

    ``tree`` is :func:`parse_lenient`'s tree of ``source`` when the caller has it already; ``path``
    chooses the grammar by extension.
    """
    data = mask_gaps(language, source)
    if not data.strip():
        return 0.0
    grammar = language.grammar_for(path)
    if grammar is None:
        raise InputError(f"language {language.name!r} has no tree-sitter grammar")
    judge = _Judge(language, grammar, script)
    return min(judge.unparsed_bytes(data, _REPARSE_DEPTH, tree) / len(data), 1.0)
