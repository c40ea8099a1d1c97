"""Syntax units of Haskell, Lua, Nim and Solidity files shaped like real ones (hledger, Kong, nimble,
OpenZeppelin): whole functions with their doc, nothing twice, nothing cut mid-comment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.helpers.dataset import TRAIN_ONLY, corpus_row, run_build, units_of, write_corpus

HASKELL = """{-|
Module      : Hledger.Cli.Balance
Description : The balance command.
-}
module Hledger.Cli.Balance (
  balance,
  balanceReport,
  showAmount,
) where

import Data.List (sortOn)
import qualified Data.Text as T

-- | The balance command: print each account's balance.
-- Accounts with a zero balance are hidden unless --empty is given.
balance :: CliOpts -> Journal -> IO ()
balance opts j = do
  let report = balanceReport opts j
  mapM_ (putStrLn . showRow) report
  where
    showRow (name, amount) = T.unpack name ++ "  " ++ showAmount amount

-- | Render an amount, with its sign.
showAmount :: Amount -> String
showAmount (Amount 0 _) = "0"
showAmount (Amount q c)
  | q < 0 = "-" ++ c ++ show (negate q)
  | otherwise = c ++ show q

-- helper, not exported
balanceReport :: CliOpts -> Journal -> [(T.Text, Amount)]
balanceReport _ [] = []
balanceReport opts (t : ts) =
  sortOn fst (summarise opts t : balanceReport opts ts)

defaultWidth :: Int
defaultWidth = 80

{- | An amount of one commodity. -}
data Amount = Amount
  { quantity :: Integer
  , commodity :: String
  }
  deriving (Show, Eq)

class Pretty a where
  pretty :: a -> String
  prettyList :: [a] -> String
  prettyList = unlines . map pretty

instance Pretty Amount where
  pretty = showAmount
"""

LUA = """local kong = kong
local ngx = ngx


local _M = {}


--- Parse the Authorization header.
-- The header must use the Bearer scheme.
-- @tparam string header the raw header value
-- @treturn string|nil the token, or nil
-- @return sum
function _M.parse(header)
  if not header then
    return nil
  end
  -- strip the scheme
  local token = header:match("^Bearer%s+(.+)$")
  return token
end


---
-- Log a failure (LDoc block with an empty first line).
-- @param err the error
local function log_failure(err)
  kong.log.err("auth failed: ", err)
end


--[[
  Long comment before a function.
]]
function _M.access(conf)
  local token = _M.parse(ngx.var.http_authorization)
  if not token then
    log_failure("no token")
    return kong.response.exit(401)
  end
end


return _M
"""

NIM = """## Version handling for packages.

import std/strutils

type
  Version* = distinct string ## A package version.

proc newVersion*(ver: string): Version =
  ## Makes a version from a string.
  ## Empty strings are allowed.
  result = Version(ver)

# Compares two versions, one part at a time.
# Parts are compared as numbers.
proc `<`*(a, b: Version): bool =
  let pa = string(a).split('.')
  let pb = string(b).split('.')
  for i in 0 ..< min(pa.len, pb.len):
    if pa[i] != pb[i]:
      return parseInt(pa[i]) < parseInt(pb[i])
  result = pa.len < pb.len

## Whether `ver` is a special version (``#head``).
proc isSpecial*(ver: Version): bool =
  return string(ver).startsWith("#")
"""

SOLIDITY = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/**
 * @dev Standard math utilities missing in the Solidity language.
 */
library Math {
    /// @dev Returns the largest of two numbers.
    function max(uint256 a, uint256 b) internal pure returns (uint256) {
        return a > b ? a : b;
    }

    /**
     * @dev Returns the average of two numbers. The result is rounded towards
     * zero.
     */
    function average(uint256 a, uint256 b) internal pure returns (uint256) {
        // (a + b) / 2 can overflow.
        return (a & b) + (a ^ b) / 2;
    }
}

/**
 * @dev Interface of the ERC-20 standard.
 */
interface IERC20 {
    /**
     * @dev Returns the value of tokens in existence.
     */
    function totalSupply() external view returns (uint256);

    function transfer(address to, uint256 value) external returns (bool);
}
"""


def code_lines(text: str, comment: str | tuple[str, ...]) -> list[str]:
    """The lines of ``text`` that are not blank and not comment lines."""
    return [line for line in text.split("\n") if line.strip() and not line.lstrip().startswith(comment)]


def test_haskell_functions_are_one_unit_with_signature_equations_and_haddock(tmp_path: Path) -> None:
    texts = units_of(
        tmp_path, {"src/Hledger/Cli/Balance.hs": HASKELL}, name=Path("src/Hledger/Cli/Balance.hs").stem
    )
    # a signature is never a unit of its own beside its function
    assert not [t for t in texts if re.fullmatch(r"(--[^\n]*\n)*\w+ :: [^\n]*", t)], texts
    by_name: dict[str, list[str]] = {}
    for text in texts:
        first = code_lines(text, "--")[0] if not text.startswith("{-") else text.split("-}\n", 1)[1]
        by_name.setdefault(
            first.split()[1] if first.startswith(("data", "class", "instance")) else first.split()[0], []
        ).append(text)
    for name in ("balance", "showAmount", "balanceReport", "defaultWidth"):
        assert len(by_name.get(name, [])) == 1, (name, texts)
    show = by_name["showAmount"][0]
    assert show.startswith("-- | Render an amount, with its sign.\nshowAmount :: Amount -> String\n")
    assert 'showAmount (Amount 0 _) = "0"' in show and "| otherwise = c ++ show q" in show
    balance = by_name["balance"][0]
    assert balance.startswith("-- | The balance command: print each account's balance.\n-- Accounts with")
    assert balance.rstrip().endswith("showAmount amount")  # the where clause is in its function
    report = by_name["balanceReport"][0]
    assert (
        report.startswith("-- helper, not exported\nbalanceReport ::")
        and "balanceReport opts (t : ts) =" in report
    )
    assert by_name["Amount"][0].startswith("{- | An amount of one commodity. -}\ndata Amount")
    # class methods stay inside the class; the instance is its own unit
    assert not any(t.startswith(("pretty ::", "prettyList")) for t in texts)
    assert any(t.startswith("instance Pretty Amount where") for t in texts)
    # 7 functions/types/classes: each text once, in source order
    assert len(texts) == 7, [t.split("\n")[0] for t in texts]


@pytest.mark.parametrize(
    ("path", "content", "comment"),
    [("kong/plugins/auth/handler.lua", LUA, "--"), ("src/nimblepkg/version.nim", NIM, "#")],
    ids=["lua", "nim"],
)
def test_units_start_at_their_doc_comment_marker(
    tmp_path: Path, path: str, content: str, comment: str
) -> None:
    texts = units_of(tmp_path, {path: content}, name=Path(path).stem)
    assert texts
    lines = content.split("\n")
    for text in texts:
        first = text.split("\n")[0]
        # the unit's first line is a whole line of the file: never the middle of a comment
        assert first in lines, (first, text)
        # its doc block is whole: the line above the unit in the file is not a comment of the block
        index = content.index(text)
        above = content[:index].rstrip("\n").split("\n")[-1] if index else ""
        assert not (above.startswith(comment) and content[:index].endswith(above + "\n")), (above, text)
        # and it does not end with the next unit's doc comment
        assert not text.rstrip().split("\n")[-1].startswith(comment), text
    docs = {text.split("\n")[0] for text in texts}
    if path.endswith(".lua"):
        assert {"--- Parse the Authorization header.", "---", "--[["} <= docs, docs
        parse = next(t for t in texts if t.startswith("--- Parse"))
        assert "-- @return sum\nfunction _M.parse(header)" in parse
    else:
        assert "# Compares two versions, one part at a time." in docs, docs
        assert "## Whether `ver` is a special version (``#head``)." in docs, docs
        new = next(t for t in texts if t.startswith("proc newVersion"))
        assert new.rstrip().endswith("result = Version(ver)")


@pytest.mark.parametrize("nested", [False, True])
def test_solidity_units_keep_first_line_and_body_aligned(tmp_path: Path, nested: bool) -> None:
    texts = units_of(
        tmp_path, {"contracts/utils/math/Math.sol": SOLIDITY}, name=f"math{nested}", nested=nested
    )
    assert texts
    for text in texts:
        lines = code_lines(text, ("/", "*"))
        head, last = lines[0], lines[-1]
        indent = len(head) - len(head.lstrip())
        assert indent == 0, text
        if last.strip() in ("}", "};"):
            assert len(last) - len(last.lstrip()) == indent, text
        # every line of the body is indented at least as much as the first line
        assert all(len(line) - len(line.lstrip()) >= indent for line in lines), text
    heads = [code_lines(t, ("/", "*"))[0] for t in texts]
    assert "library Math {" in heads and "interface IERC20 {" in heads
    functions = [h for h in heads if h.startswith("function")]
    assert len(functions) == (4 if nested else 0), heads
    if nested:
        average = next(
            t
            for t in texts
            if t.split("\n")[4:5]
            == ["function average(uint256 a, uint256 b) internal pure returns (uint256) {"]
        )
        assert average.startswith("/**\n * @dev Returns the average of two numbers.")


def long_kotlin_class() -> str:
    """A class of twelve documented methods (about 400 tokens), then a short function."""
    members = []
    for k in range(12):
        members.append(
            f"    /** Step {k} of the pipeline. */\n"
            f"    fun step{k}(value: Int): Int {{\n"
            f"        val next = value * {k + 2} + offset\n"
            f"        return if (next > limit) limit else next\n"
            "    }\n"
        )
    body = "\n".join(members)
    return (
        "/** Runs values through every step. */\n"
        "class Pipeline(private val offset: Int, private val limit: Int) {\n"
        f"{body}"
        "}\n\n"
        "fun run(pipeline: Pipeline): Int = pipeline.step0(1)\n"
    )


def test_units_over_max_length_are_cut_between_members_never_trimmed(tmp_path: Path, caplog) -> None:
    import logging

    source = long_kotlin_class()
    rows = [
        corpus_row("src/Pipeline.kt", source),
        # only a property at the top: no unit at all
        corpus_row("src/Constants.kt", "package app\n\nconst val LIMIT = 10\n"),
    ]
    corpus = write_corpus(tmp_path / "corpus", rows)
    with caplog.at_level(logging.WARNING):
        _, dataset, stats = run_build(
            corpus,
            tmp_path / "ds",
            format="units",
            fim_rate=0.5,
            max_length=128,
            **TRAIN_ONLY,
        )
    texts = dataset["train"]["text"]
    assert stats["trimmed"] == 0
    assert all(len(ids) <= 128 for ids in dataset["train"]["input_ids"])
    # the blocks of the class, joined, are the class; the function is its own unit
    assert texts[-1] == "fun run(pipeline: Pipeline): Int = pipeline.step0(1)"
    assert "".join(texts[:-1]) == source.split("\n\nfun run")[0]
    assert len(texts) > 3
    # each block after the first starts a member (its doc comment), each but the last ends a line
    for block in texts[1:-1]:
        assert block.startswith("    /** Step "), block[:40]
    for block in texts[:-2]:
        assert block.endswith("\n"), block[-40:]
    overlong = stats["overlong"]
    assert overlong["split_texts"] == 1 and overlong["split_blocks"] == len(texts) - 1
    warning = "1 units were longer than max_length (128 tokens"
    assert any(w.startswith(warning) for w in stats["warnings"]), stats["warnings"]
    assert any(r.getMessage().startswith(warning) for r in caplog.records)
    # documents: files that gave examples; the file with none is counted apart
    assert stats["splits"]["train"]["documents"] == 1
    assert stats["splits"]["train"]["documents_without_examples"] == 1


HASKELL_INFIX = """module Hledger.Data.AccountName where

isAccountNamePrefixOf :: AccountName -> AccountName -> Bool
isAccountNamePrefixOf = T.isPrefixOf . (<> acctsep)

isSubAccountNameOf :: AccountName -> AccountName -> Bool
s `isSubAccountNameOf` p =
  (p `isAccountNamePrefixOf` s) && (accountNameLevel s == (accountNameLevel p + 1))

(|||) :: (a -> Bool) -> (a -> Bool) -> (a -> Bool)
p ||| q = \\v -> p v || q v

makeinfo = "makeinfo --no-split"  -- silence makeinfo warnings
pandoc = "pandoc --strip-comments"
"""

JULIA = """## Compare a key with the node's split keys: 1 or 2,
## as the key goes left or right.
@inline function cmp2_nonleaf(o::Ordering,
                              treenode::TreeNode,
                              k)
    lt(o, k, treenode.splitkey1) ? 1 : 2
end

x = 1; function helper(y) y end
"""

ZIG = """const std = @import("std");

/// The versions a release supports.
pub const Metadata = struct {
    zlsVersion: []const u8,
    zigVersion: []const u8,
};

/// Writes the release payload.
pub fn main() !void {
    const arena = std.heap.page_allocator;
    _ = arena;
}
"""


@pytest.mark.parametrize(
    ("path", "source", "starts"),
    [
        (
            "Hledger/Data/AccountName.hs",
            HASKELL_INFIX,
            [
                "isAccountNamePrefixOf :: AccountName -> AccountName -> Bool\n",
                "isSubAccountNameOf :: AccountName -> AccountName -> Bool\ns `isSubAccountNameOf` p =\n",
                "(|||) :: (a -> Bool) -> (a -> Bool) -> (a -> Bool)\np ||| q = ",
                'makeinfo = "makeinfo --no-split"',
                'pandoc = "pandoc --strip-comments"',  # not after the comment ending the line above
            ],
        ),
        (
            "src/balanced_tree.jl",
            JULIA,
            [
                "## Compare a key with the node's split keys: 1 or 2,\n## as the key goes left or right.\n@inline function",
                "function helper(y) y end",
            ],
        ),
        (
            "src/release.zig",
            ZIG,
            [
                'const std = @import("std");',
                "/// The versions a release supports.\npub const Metadata = struct {",
                "/// Writes the release payload.\npub fn main() !void {",
            ],
        ),
    ],
    ids=["haskell-infix", "julia-macro", "zig-pub"],
)
def test_units_keep_what_their_first_line_says(
    tmp_path: Path, path: str, source: str, starts: list[str]
) -> None:
    """Shapes of hledger, DataStructures.jl and zls: an infix equation is one unit with its signature,
    a comment ending a line of code is not the next unit's doc, ``@inline`` and ``pub`` stay."""
    texts = units_of(tmp_path, {path: source}, name=Path(path).stem)
    assert len(texts) == len(starts), [t[:50] for t in texts]
    for text, start in zip(texts, starts, strict=True):
        assert text.startswith(start), (text[:80], start)


OCAML_INTERFACE = """(** Sets of strings, ordered. *)

(** The empty set. *)
val empty : t

(** [add x s] is [s] with [x] in it. *)
val add : string -> t -> t

external length : t -> int = "caml_set_length"

module type ORDERED = sig
  type t
  val compare : t -> t -> int
end
"""


def test_ocaml_interfaces_parse_with_their_own_grammar_and_give_one_unit_per_declaration(
    tmp_path: Path,
) -> None:
    """An .mli parses with ``ocaml_interface`` (the implementation grammar errors on ``val``): each
    ``val``, ``external`` and ``module type`` is a unit with its doc comment."""
    texts = units_of(tmp_path, {"lib/strset.mli": OCAML_INTERFACE})
    assert texts == [
        "(** The empty set. *)\nval empty : t",
        "(** [add x s] is [s] with [x] in it. *)\nval add : string -> t -> t",
        'external length : t -> int = "caml_set_length"',
        "module type ORDERED = sig\n  type t\n  val compare : t -> t -> int\nend",
    ], texts
