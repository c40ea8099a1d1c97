"""Tree-sitter helpers for the build stage: syntax units with their doc, comment/import removal, FIM nodes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from codetune.errors import InputError
from codetune.languages import Language, get_language, parse

# Nodes that belong to the unit that follows them (Elm/Haskell signatures, Python/Java decorators).
ATTACHED_TYPES = frozenset({"type_annotation", "signature", "decorator", "annotation", "modifiers"})
IMPORT_TYPES = frozenset({"module_declaration", "package_header", "package_clause", "package_declaration"})
# Units whose members (methods, nested types) are units too with ``units.nested``; a unit nested in
# anything else (a function, an Elm let) never is.
CONTAINER_WORDS = (
    "class",
    "object",
    "interface",
    "trait",
    "impl",
    "struct",
    "enum",
    "module",
    "namespace",
    "contract",
    "library",
)
WHITESPACE = b" \t\r\n"
# Words of comment node types across grammars (Haskell's doc comments are ``haddock`` nodes).
COMMENT_WORDS = ("comment", "haddock")


@dataclass(frozen=True)
class Unit:
    """One syntax unit: ``text`` = doc + code; ``split`` = where header (+doc) ends and the body begins."""

    kind: str
    text: str
    split: int

    @property
    def prompt(self) -> str:
        return self.text[: self.split]

    @property
    def completion(self) -> str:
        return self.text[self.split :]


def grammar_language(name: str) -> Language:
    """The registry entry for ``name``, failing clearly when it has no tree-sitter grammar."""
    language = get_language(name)
    if language.grammar is None:
        raise InputError(
            f"language {language.name!r} has no tree-sitter grammar, so syntax units and syntax FIM "
            "cannot be cut from it; use --format files or windows, or register a grammar for it"
        )
    return language


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def _is_comment(node: Any) -> bool:
    return any(word in node.type for word in COMMENT_WORDS)


def _is_outer_comment(node: Any) -> bool:
    """A whole comment, not the ``comment_content`` inside one (Lua, Nim): the doc starts at its marker."""
    return _is_comment(node) and not (node.parent is not None and _is_comment(node.parent))


def _is_import(node: Any) -> bool:
    return node.type in IMPORT_TYPES or node.type.startswith("import") or node.type.endswith("import")


def _error_bytes(node: Any) -> int:
    return sum(n.end_byte - n.start_byte for n in _walk(node) if n.is_error or n.is_missing)


def parse_repaired(
    language: Language, data: bytes, path: str | None = None
) -> tuple[Any, list[tuple[int, int]]]:
    """The tree of ``data``, re-parsed with declarations joined across lines where the grammar broke,
    and the spans of the comments that joining hid from it.

    tree-sitter-kotlin ends ``class Buffer`` at a line end, so a primary constructor on the next line
    (often after a comment) becomes an error that swallows the class body. When an error follows a
    declaration, the gap between them (whitespace and comments) is blanked to spaces of the same
    byte length and the text parsed again; the new tree is kept when it has fewer error bytes. Byte
    offsets are unchanged, so node spans still index the original text.
    """
    tree = parse(language, data, path)
    if not tree.root_node.has_error:
        return tree, []
    shadow = bytearray(data)
    gaps = []
    for node in tree.root_node.children:
        if node.type != "ERROR":
            continue
        previous = node.prev_sibling
        while previous is not None and _is_comment(previous):
            previous = previous.prev_sibling
        if previous is None or not previous.type.endswith(("declaration", "definition")):
            continue
        gaps.append((previous.end_byte, node.start_byte))
        shadow[previous.end_byte : node.start_byte] = b" " * (node.start_byte - previous.end_byte)
    if not gaps:
        return tree, []
    repaired = parse(language, bytes(shadow), path)
    if _error_bytes(repaired.root_node) >= _error_bytes(tree.root_node):
        return tree, []
    hidden = [
        (n.start_byte, n.end_byte)
        for n in _walk(tree.root_node)
        if _is_comment(n) and any(lo <= n.start_byte and n.end_byte <= hi for lo, hi in gaps)
    ]
    return repaired, hidden


def _doc_start(node: Any, data: bytes, comments_by_end: dict[int, int], start: int) -> int:
    """Extend a unit's start backwards over adjacent doc comments and attached signatures.

    A comment counts only when it starts its line: one after code on its line is about that code.
    """
    sibling = node.prev_named_sibling
    while True:
        pos = start
        while pos > 0 and data[pos - 1] in WHITESPACE:
            pos -= 1
        # A blank line detaches a comment from the unit.
        if data[pos:start].count(b"\n") > 1:
            return start
        comment_start = comments_by_end.get(pos)
        line_start = data.rfind(b"\n", 0, comment_start or 0) + 1
        if comment_start is not None and comment_start < start and not data[line_start:comment_start].strip():
            start = comment_start
            continue
        if sibling is not None and sibling.end_byte == pos and sibling.type in ATTACHED_TYPES:
            start = sibling.start_byte
            sibling = sibling.prev_named_sibling
            continue
        return start


def _prefix_start(node: Any, data: bytes) -> int:
    """Where a unit starts when words before it on its first line belong to it: a node wrapping just
    this unit (Julia's ``@inline function``, TypeScript's ``export function``) or keywords before it
    (Zig's ``pub fn``). Its own start when anything else precedes it on the line."""
    line_start = data.rfind(b"\n", 0, node.start_byte) + 1
    start, outer = node.start_byte, node
    while (
        outer.parent is not None
        and outer.parent.parent is not None  # never the whole file
        and line_start <= outer.parent.start_byte <= start
        and not data[node.end_byte : outer.parent.end_byte].strip(b" \t;")
    ):
        outer = outer.parent
        start = outer.start_byte
    sibling = outer.prev_sibling
    while sibling is not None and sibling.start_byte >= line_start and sibling.child_count == 0:
        start = sibling.start_byte
        sibling = sibling.prev_sibling
    return start if not data[line_start:start].strip() else node.start_byte


def _cut_ranges(data: bytes, start: int, end: int, ranges: list[tuple[int, int]]) -> bytes:
    """``data[start:end]`` without ``ranges``; a range alone on its line takes the line with it."""
    out = bytearray()
    pos = start
    for lo, hi in sorted(ranges):
        if lo < pos or hi > end:
            continue
        line_start = data.rfind(b"\n", 0, lo) + 1
        line_end = data.find(b"\n", hi)
        line_end = len(data) if line_end < 0 else line_end
        if not data[line_start:lo].strip() and not data[hi:line_end].strip():
            lo, hi = max(line_start, pos), min(line_end + 1, end)
        else:
            while lo > pos and data[lo - 1] in b" \t":
                lo -= 1
        out += data[pos:lo]
        pos = hi
    out += data[pos:end]
    return bytes(out)


def _body_split(node: Any) -> int:
    """Byte offset where a unit's header ends and its body begins."""
    body = node.child_by_field_name("body")
    if body is None:
        for child in reversed(node.named_children):
            if child.type.endswith(("body", "block")):
                body = child
                break
    if body is not None:
        first = body.named_children[0] if body.named_children else None
        # Python: the docstring belongs with the signature, on the prompt side.
        if first is not None and (
            first.type == "string"
            or (
                first.type == "expression_statement"
                and first.named_children[:1]
                and first.named_children[0].type == "string"
            )
        ):
            return first.end_byte
        previous = body.prev_sibling
        while previous is not None and _is_comment(previous):
            previous = previous.prev_sibling
        return previous.end_byte if previous is not None else body.start_byte
    for child in node.children:
        if child.type in ("=", "eq"):
            return child.end_byte
    return node.start_byte + max(node.text.find(b"\n"), 0) if node.text else node.end_byte


def syntax_units(
    text: str,
    language_name: str,
    *,
    types: list[str] | None = None,
    doc: bool = True,
    drop_comments: bool = False,
    drop_imports: bool = False,
    nested: bool = False,
    path: str | None = None,
) -> list[Unit]:
    """Cut a source file into its top-level functions, classes and types, in source order (``path``:
    where the file lies; its extension may pick the grammar, as an OCaml .mli's does).

    With ``nested`` the members of classes (methods, inner classes) are units too, so their text is
    also inside their class's unit; definitions inside a function or an expression never are. A
    unit starts at its doc comment's marker; an indented one (a method) loses its indentation on
    every line, so its first line and its body stay aligned. Where the language writes one function
    as several clauses (Haskell: a signature and its equations) they are one unit.
    """
    language = grammar_language(language_name)
    unit_types = set(types or language.unit_types)
    if not unit_types:
        raise InputError(f"language {language.name!r} lists no syntax unit types; pass units.types")
    data = text.encode("utf-8")
    tree, comments = parse_repaired(language, data, path)
    imports: list[Any] = []
    found: list[Any] = []
    for node in _walk(tree.root_node):
        if _is_outer_comment(node):
            end = node.end_byte  # a comment node may hold the line end after it (Zig's ///)
            while end > node.start_byte and data[end - 1] in WHITESPACE:
                end -= 1
            comments.append((node.start_byte, end))
        elif _is_import(node):
            imports.append(node)
        elif (
            node.type in unit_types
            and (node.parent is None or node.parent.type != "decorated_definition")
            and _counts_as_unit(node, unit_types, nested)
        ):
            found.append(node)
    comments_by_end = {end: start for start, end in comments}
    units = []
    for group in _clauses(found) if language.unit_clauses else [[node] for node in found]:
        first, last = group[0], group[-1]
        start = _prefix_start(first, data)
        start = _doc_start(first, data, comments_by_end, start) if doc else start
        end = _end_before_trailing_comments(data, first, last.end_byte, comments_by_end)
        body_node = next((node for node in group if node.type != "signature"), first)
        split = min(max(_body_split(body_node), first.start_byte), end)
        cut: list[tuple[int, int]] = []
        if drop_comments:
            cut += [(lo, hi) for lo, hi in comments if lo >= first.start_byte]
            if not doc:
                cut += [(lo, hi) for lo, hi in comments if start <= lo]
        if drop_imports:
            cut += [(n.start_byte, n.end_byte) for n in imports]
        cut = [r for r in cut if start <= r[0] and r[1] <= end]
        head = _cut_ranges(data, start, split, [r for r in cut if r[1] <= split])
        body = _cut_ranges(data, split, end, [r for r in cut if r[0] >= split])
        indent = data[data.rfind(b"\n", 0, start) + 1 : start]
        if indent and not indent.strip(b" \t"):
            head = _dedent(head, indent, at_line_start=False)
            body = _dedent(body, indent, at_line_start=head.endswith(b"\n"))
        unit_text = (head + body).decode("utf-8", errors="replace")
        units.append(Unit(body_node.type, unit_text, len(head.decode("utf-8", errors="replace"))))
    return units


def _name(node: Any) -> bytes | None:
    """The name a clause defines: its name field, or the operator of an infix equation (Haskell's
    ``s `isSubOf` p = ...``, ``p ||| q = ...``), without backticks or parentheses."""
    name = node.child_by_field_name("name")
    if name is None:
        infix = next((child for child in node.named_children if child.type == "infix"), None)
        name = infix.child_by_field_name("operator") if infix is not None else None
    return name.text.strip(b"`() \t") if name is not None else None


def _clauses(found: list[Any]) -> list[list[Any]]:
    """Units grouped into functions: a node joins the one before it when both are children of the
    same parent with the same name, only comments lie between them, and it is another clause of the
    same kind (an equation after an equation) or the definition after its signature."""
    groups: list[list[Any]] = []
    for node in found:
        previous = groups[-1][-1] if groups else None
        if (
            previous is not None
            and node.type != "signature"
            and previous.type in (node.type, "signature")
            and previous.parent == node.parent
            and _name(node) is not None
            and _name(node) == _name(previous)
            and _only_comments_between(previous, node)
        ):
            groups[-1].append(node)
        else:
            groups.append([node])
    return groups


def _only_comments_between(a: Any, b: Any) -> bool:
    sibling = a.next_named_sibling
    while sibling is not None and sibling != b:
        if not _is_comment(sibling):
            return False
        sibling = sibling.next_named_sibling
    return sibling is not None


def _end_before_trailing_comments(data: bytes, node: Any, end: int, comments_by_end: dict[int, int]) -> int:
    """Where a unit ends when comments at its end are outdented to its own column or further.

    tree-sitter-nim keeps the comment lines after a proc's last statement inside the proc, though
    at the proc's own indentation they document the next one.
    """
    column = node.start_byte - (data.rfind(b"\n", 0, node.start_byte) + 1)
    while True:
        comment_start = comments_by_end.get(end)
        if comment_start is None or comment_start <= node.start_byte:
            return end
        if comment_start - (data.rfind(b"\n", 0, comment_start) + 1) > column:
            return end
        end = comment_start
        while end > node.start_byte and data[end - 1] in WHITESPACE:
            end -= 1


def _dedent(chunk: bytes, indent: bytes, *, at_line_start: bool) -> bytes:
    """``chunk`` without ``indent`` at the start of each of its lines (the first only when it starts one)."""
    lines = chunk.split(b"\n")
    return b"\n".join(
        line[len(indent) :] if (k or at_line_start) and line.startswith(indent) else line
        for k, line in enumerate(lines)
    )


def _counts_as_unit(node: Any, unit_types: set[str], nested: bool) -> bool:
    """Top level, or (``nested``) inside class-like units only, with no function in between."""
    parent = node.parent
    while parent is not None:
        enclosing = parent.type in unit_types and parent.type != "decorated_definition"
        if enclosing and not (nested and any(word in parent.type for word in CONTAINER_WORDS)):
            return False
        parent = parent.parent
    return True


# Rank of a line start no syntax node begins at: a cut there still keeps lines whole.
LINE_RANK = 1_000


def inner_boundaries(text: str, language_name: str, path: str | None = None) -> dict[int, int]:
    """Where a long unit may be cut, ranked: character positions of line starts, each ranked by the
    depth of the shallowest syntax node beginning on that line (between two methods of a class
    before between two statements of a method), :data:`LINE_RANK` where none begins or where the
    line above is a comment (it documents this line: they stay together)."""
    from codetune.dataset.blocks import line_starts

    ranked = {pos: LINE_RANK for pos in line_starts(text)}
    language = get_language(language_name)
    if language.grammar is None:
        return ranked
    data = text.encode("utf-8")
    char_at = _byte_to_char(text) if len(data) != len(text) else None
    starting: dict[int, tuple[int, bool]] = {}  # line start (bytes) -> (depth, is a comment)
    stack = [(child, 1) for child in parse(language, data, path).root_node.children]
    while stack:
        node, depth = stack.pop()
        line_start = data.rfind(b"\n", 0, node.start_byte) + 1
        if node.is_named and not data[line_start : node.start_byte].strip():
            known = starting.get(line_start)
            if known is None or depth < known[0]:
                starting[line_start] = (depth, _is_comment(node))
        stack.extend((child, depth + 1) for child in node.children)
    for line_start, (depth, _) in starting.items():
        above = data.rfind(b"\n", 0, max(line_start - 1, 0)) + 1
        pos = char_at[line_start] if char_at else line_start
        if pos in ranked and not (line_start and starting.get(above, (0, False))[1]):
            ranked[pos] = depth
    return ranked


# Words of node types (across tree-sitter grammars) for what an editor asks a model to fill:
# statements, blocks and bodies, expressions (calls, arguments, lambdas, operators, collections).
MIDDLE_WORDS = frozenset(
    [
        "statement",
        "statements",
        "declaration",
        "definition",
        "declarator",
        "assignment",
        "return",
        "jump",
        "block",
        "body",
        "suite",
        "clause",
        "branch",
        "entry",
        "case",
        "expr",
        "expression",
        "call",
        "suffix",
        "argument",
        "arguments",
        "lambda",
        "arrow",
        "function",
        "operator",
        "list",
        "dictionary",
        "object",
        "array",
        "tuple",
        "record",
        "collection",
        "pair",
    ]
)
# Words that make a node a name, a header or a marker rather than code to fill in.
NOT_MIDDLE_WORDS = frozenset(
    [
        "comment",
        "identifier",
        "qid",
        "modifier",
        "modifiers",
        "annotation",
        "import",
        "package",
        "module",
        "exposing",
        "left",
    ]
)


BARE_NAME = re.compile(rb"\s*[\w.$@]+\s*")


def is_middle_type(node_type: str) -> bool:
    """Whether a node type names a statement, block or expression an editor would ask to fill."""
    words = set(node_type.split("_"))
    if words & NOT_MIDDLE_WORDS:
        return False
    if "type" in words and not words & {"declaration", "definition"}:
        return False
    return bool(words & MIDDLE_WORDS)


def middle_nodes(text: str, language_name: str, path: str | None = None) -> list[tuple[int, int]]:
    """Character spans of the nodes a syntax-aware FIM may take as its middle: error-free
    statements, blocks and expressions (not names, types or comments), each span once."""
    language = get_language(language_name)
    if language.grammar is None:
        return []
    data = text.encode("utf-8")
    tree, _ = parse_repaired(language, data, path)
    root = tree.root_node
    spans: set[tuple[int, int]] = set()
    for node in _walk(root):
        if node is root or not node.is_named or node.is_error or node.has_error or not node.named_children:
            continue
        if not is_middle_type(node.type) or (node.start_byte, node.end_byte) == (0, len(data)):
            continue
        if BARE_NAME.fullmatch(data[node.start_byte : node.end_byte]):  # `onClick`, `.size`: just a name
            continue
        spans.add((node.start_byte, node.end_byte))
    ordered = sorted(spans)
    # Byte offsets -> character offsets (node boundaries always fall between characters).
    if len(data) == len(text):
        return ordered
    char_at = _byte_to_char(text)
    return [(char_at[lo], char_at[hi]) for lo, hi in ordered]


def _byte_to_char(text: str) -> dict[int, int]:
    table = {}
    pos = 0
    for index, char in enumerate(text):
        table[pos] = index
        pos += len(char.encode("utf-8"))
    table[pos] = len(text)
    return table
