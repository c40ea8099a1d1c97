"""Fair admission: which client's rows the engine runs next, so that one client cannot starve the others.

Every completion call's rows (one per prompt and per ``n``) wait here until the engine can run them;
the engine is only ever handed about one batch of rows, so a row handed over runs at its next step
rather than behind a long queue. Clients are told apart by :class:`~codetune.serve.http.Caller` (the
peer's address and the API key it gave): a request's ``user`` field does not buy another share.

Two bounds, each shared between the clients holding rows:

- **The queue** (``max_queue`` rows waiting or running). While it has room every request is queued;
  when it is full, a client holding less than its share (``max_queue`` / clients holding rows) is
  still queued, up to twice ``max_queue`` in all, and a client over its share gets a 503.
- **The batch** (``max_batch_size`` rows, and ``kv_token_budget`` tokens, a row costing its prompt
  plus its ``max_tokens``). A client with nothing running may always start a row while the batch has
  room; the last ``reserve`` share of rows and tokens is kept for such newcomers, so a client that
  came first and asked for much never holds the whole batch. Beyond that, a client over its share
  (the unreserved capacity / clients holding rows) starts no new row while another client waits.
  The client with the least running goes first.

Everything here runs on the event loop: a row's end is reported back to it from the engine's thread.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from codetune.generation.engines import Engine, QueueFull
from codetune.generation.sequence import Sequence, finish


def row_cost(seq: Sequence) -> int:
    """KV tokens a row may grow to: its prompt plus every token it may generate."""
    return len(seq.prompt_ids) + max(seq.params.max_new_tokens, 0)


@dataclass
class _Client:
    waiting: deque[Sequence] = field(default_factory=deque)
    running: set[Sequence] = field(default_factory=set)
    tokens: int = 0  # cost of the running rows

    @property
    def held(self) -> int:
        return len(self.waiting) + len(self.running)


class FairAdmission:
    """Holds every row until its client's share of the queue and of the batch lets it run."""

    def __init__(
        self, engine: Engine, *, max_queue: int, max_rows: int, token_budget: int, reserve: float
    ) -> None:
        self.engine, self.max_queue = engine, max_queue
        self.max_rows, self.token_budget = max(1, min(max_rows, max_queue)), token_budget
        # what only a client with nothing running may take
        self.reserved_rows = min(self.max_rows - 1, math.ceil(self.max_rows * reserve))
        self.reserved_tokens = int(token_budget * reserve)
        self._clients: dict[Hashable, _Client] = defaultdict(_Client)
        self._owner: dict[Sequence, Hashable] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running_rows = 0
        self.running_tokens = 0

    # -- the calls ------------------------------------------------------------------------------
    def admit(self, who: Hashable, seqs: list[Sequence]) -> None:
        """Queue a call's rows (all or none), QueueFull when the client is over its share of a full
        queue; those that fit the batch start now."""
        self._loop = self._loop or asyncio.get_running_loop()
        held = sum(c.held for c in self._clients.values())
        mine = self._clients[who].held if who in self._clients else 0
        if held + len(seqs) > self.max_queue:
            holders = sum(1 for key, c in self._clients.items() if c.held and key != who) + 1
            share = self.max_queue // holders
            if mine + len(seqs) > share or held + len(seqs) > 2 * self.max_queue:
                raise QueueFull(
                    f"{held} rows queued or running (limit {self.max_queue}); this client holds {mine}, "
                    f"its share is {share}"
                )
        client = self._clients[who]
        for seq in seqs:
            self._owner[seq] = who
            client.waiting.append(seq)
        self._dispatch()

    def cancel(self, seqs: list[Sequence]) -> None:
        """Stop rows: a waiting one ends now (``cancelled``), a running one at the engine's next step."""
        running = []
        for seq in seqs:
            who = self._owner.get(seq)
            client = self._clients.get(who) if who is not None else None
            if client is not None and seq in client.waiting:
                client.waiting.remove(seq)
                self._drop(seq)
                seq.cancel()
                finish(seq, "cancelled")
            elif not seq.done:
                running.append(seq)
        if running:
            self.engine.cancel(running)
        self._dispatch()

    def stats(self) -> dict[str, int]:
        """Rows waiting for their turn here, and the clients holding rows."""
        return {
            "waiting": sum(len(c.waiting) for c in self._clients.values()),
            "clients": sum(1 for c in self._clients.values() if c.held),
        }

    # -- the batch ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start every waiting row the batch and the shares allow, least-served client first."""
        while True:
            waiting = [(key, c) for key, c in self._clients.items() if c.waiting]
            if not waiting:
                return
            waiting.sort(key=lambda item: (len(item[1].running), item[1].tokens))
            holders = sum(1 for c in self._clients.values() if c.held)
            for _, client in waiting:
                others_wait = len(waiting) > 1
                if self._may_start(client, client.waiting[0], holders, others_wait):
                    if not self._start(client):
                        return
                    break
            else:
                return

    def _may_start(self, client: _Client, seq: Sequence, holders: int, others_wait: bool) -> bool:
        cost = row_cost(seq)
        if self.running_rows >= self.max_rows:
            return False
        if self.running_rows and self.running_tokens + cost > self.token_budget:
            return False
        if not client.running:  # a newcomer: the reserve is for it
            return True
        rows_left = self.max_rows - self.reserved_rows
        tokens_left = self.token_budget - self.reserved_tokens
        if self.running_rows + 1 > rows_left or self.running_tokens + cost > tokens_left:
            return False
        if not others_wait:
            return True
        return (
            len(client.running) + 1 <= max(1, rows_left // holders)
            and client.tokens + cost <= tokens_left // holders
        )

    def _start(self, client: _Client) -> bool:
        """Hand the client's next row to the engine; False when the engine refuses it (kept waiting)."""
        seq = client.waiting[0]
        inner, loop = seq.on_done, self._loop

        def done(s: Sequence) -> None:
            if inner is not None:
                inner(s)
            if loop is not None and not loop.is_closed():  # its end is counted on the event loop
                loop.call_soon_threadsafe(self._ended, s)

        seq.on_done = done
        try:
            self.engine.submit([seq])
        except QueueFull:  # the engine's own bound is below the batch's: wait for a row to end
            seq.on_done = inner
            return False
        client.waiting.popleft()
        cost = row_cost(seq)
        client.running.add(seq)
        client.tokens += cost
        self.running_rows += 1
        self.running_tokens += cost
        return True

    def _ended(self, seq: Sequence) -> None:
        if self._stopped(seq):
            self._dispatch()

    def _stopped(self, seq: Sequence) -> bool:
        """Forget a running row; whether it was one."""
        who = self._owner.pop(seq, None)
        client = self._clients.get(who) if who is not None else None
        if client is None or seq not in client.running:
            return False
        client.running.discard(seq)
        cost = row_cost(seq)
        client.tokens -= cost
        self.running_rows -= 1
        self.running_tokens -= cost
        if not client.held:
            del self._clients[who]
        return True

    def _drop(self, seq: Sequence) -> None:
        who = self._owner.pop(seq, None)
        if who is not None and who in self._clients and not self._clients[who].held:
            del self._clients[who]
