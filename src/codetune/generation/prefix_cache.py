"""Prefix KV cache: a keystroke re-sends nearly the same prompt, so reuse the KV of its longest cached prefix.

After a prompt is prefilled, its per-layer keys and values (one row, on the model's device and dtype)
are kept here under its token ids. A new prompt looks up the entry sharing the longest token prefix
with it; the engine copies those columns into the row's cache and prefills only the rest. Entries
are evicted least recently used first once their bytes pass the budget, and an entry whose ids are a
prefix of a newer one is dropped (the newer one answers every lookup it would).

Every entry holds all of its prompt's columns, sliding-window layers too (the engine's prefill
records them before the window trims the row's cache): a later prompt may share only the first
half, and then needs columns that the window of the whole prompt no longer covers.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# Reusing fewer tokens than this is not worth prefilling the row on its own (outside the batch).
MIN_REUSE = 16


@dataclass(eq=False)
class Entry:
    ids: Any  # the prompt's token ids, a 1-D int64 tensor on the CPU
    layers: list[tuple[Any, Any]]  # per layer: keys and values [1, kv heads, prompt tokens, head dim]
    namespace: Any
    nbytes: int
    blocks: list[int]  # chained hashes of the prompt's whole blocks of min_reuse ids (_block_hashes)


@dataclass
class Hit:
    """The cached prefix a row reuses: ``tokens`` ids, and each layer's columns for them."""

    tokens: int
    layers: list[tuple[Any, Any]]


def _block_hashes(ids: list[int], block: int) -> list[int]:
    """Hash j-1 covers ids[: j * block]: equal hashes at j mean (up to a collision) equal first blocks."""
    hashes, running = [], 0
    for start in range(0, len(ids) - block + 1, block):
        running = hash((running, tuple(ids[start : start + block])))
        hashes.append(running)
    return hashes


class PrefixCache:
    """Prompt KV by token ids, LRU-bounded by bytes.

    Entries are indexed by the chained hashes of their whole blocks of ``min_reuse`` ids, so a lookup
    compares ids only with the entries that share the most whole blocks with the query, not with
    every entry: an editor session leaves thousands, and a scan over them cost more than the prefill
    it saved. A usable hit shares at least ``min_reuse`` ids, so it always shares the first block.
    """

    def __init__(self, max_bytes: int, min_reuse: int = MIN_REUSE) -> None:
        self.max_bytes, self.min_reuse = max_bytes, max(1, min_reuse)
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        # (namespace, hash of the first j blocks) -> the entries that have them all, and those that end there
        self._sharing: dict[tuple[Any, int], set[int]] = {}
        self._ending: dict[tuple[Any, int], set[int]] = {}
        self._next = 0
        self.bytes = 0
        self.hits = 0
        self.lookups = 0
        self.reused_tokens = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        return {
            "prefix_cache_entries": len(self._entries),
            "prefix_cache_bytes": self.bytes,
            "prefix_cache_lookups": self.lookups,
            "prefix_cache_hits": self.hits,
            "prefix_cache_tokens_reused": self.reused_tokens,
            "prefix_cache_evictions": self.evictions,
        }

    @staticmethod
    def _common(a: Any, b: Any) -> int:
        """Length of the common prefix of two 1-D id tensors."""
        n = min(len(a), len(b))
        if n == 0:
            return 0
        differ = (a[:n] != b[:n]).nonzero()
        return int(differ[0]) if len(differ) else n

    def lookup(self, ids: list[int], namespace: Any = None) -> Hit | None:
        """The longest usable cached prefix of ``ids`` (never the last token: its logits are needed)."""
        import torch

        self.lookups += 1
        if len(ids) <= self.min_reuse or not self._entries:
            return None
        hashes = _block_hashes(ids, self.min_reuse)
        deepest = next(
            (j for j in range(len(hashes) - 1, -1, -1) if (namespace, hashes[j]) in self._sharing), None
        )
        if deepest is None:
            return None
        query = torch.tensor(ids, dtype=torch.long)
        best, best_key, best_n = None, None, 0
        for key in self._sharing[(namespace, hashes[deepest])]:
            entry = self._entries[key]
            n = min(self._common(query, entry.ids), len(ids) - 1)
            if n > best_n or (n == best_n and best_key is not None and key > best_key):
                best, best_key, best_n = entry, key, n
        if best is None or best_n < self.min_reuse:
            return None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best_n
        return Hit(best_n, [(k[:, :, :best_n], v[:, :, :best_n]) for k, v in best.layers])

    def store(self, ids: list[int], layers: list[tuple[Any, Any]], namespace: Any = None) -> None:
        """Keep a prompt's KV (the tensors are the cache's own: pass copies); evict down to the budget."""
        import torch

        if len(ids) <= self.min_reuse:
            return
        nbytes = sum(t.numel() * t.element_size() for pair in layers for t in pair)
        if nbytes > self.max_bytes:
            return
        key_ids = torch.tensor(ids, dtype=torch.long)
        hashes = _block_hashes(ids, self.min_reuse)
        # An older prompt that this one extends answers no lookup better than this one will; it has
        # as many whole blocks as some j here, all equal to this prompt's.
        for value in hashes:
            for key in list(self._ending.get((namespace, value), ())):
                entry = self._entries[key]
                if len(entry.ids) <= len(key_ids) and self._common(key_ids, entry.ids) == len(entry.ids):
                    self._drop(key)
        key = self._next
        self._next += 1
        self._entries[key] = Entry(key_ids, layers, namespace, nbytes, hashes)
        for value in hashes:
            self._sharing.setdefault((namespace, value), set()).add(key)
        self._ending.setdefault((namespace, hashes[-1]), set()).add(key)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.nbytes
        for value in entry.blocks:
            bucket = self._sharing[(entry.namespace, value)]
            bucket.discard(key)
            if not bucket:
                del self._sharing[(entry.namespace, value)]
        ending = self._ending[(entry.namespace, entry.blocks[-1])]
        ending.discard(key)
        if not ending:
            del self._ending[(entry.namespace, entry.blocks[-1])]

    def clear(self) -> None:
        self._entries.clear()
        self._sharing.clear()
        self._ending.clear()
        self.bytes = 0
