"""``acceptance``: editor records replayed, each suggestion scored by whether the developer would
have taken it.

``--records DIR`` (a records folder: ``serve --record``, ``records import-continue``) gives the
prompts: every recorded suggestion (the newest ``records_newest`` share of them, at most ``samples``)
is asked again with the prefix and suffix its editor sent. Its reference is what the developer went
on to type (the rest of the cursor's line, read from the later records of the same file and client:
a later prompt that extends this one by what was typed) or, when that is not known, the text they
kept of an accepted suggestion. A suggestion counts as accepted when its first line is not empty and
begins the reference's first line: the replay's acceptance proxy, the rule ``bench/feedback_loop.py``'s
simulated developer accepts by. Give records the model was not trained on (a later folder, or
``records_newest`` below 1 with a model trained on the older records).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codetune.artifacts.records import CompletionRecord, parse_time, read_records, typed_after
from codetune.errors import InputError
from codetune.evaluate.config import EvalConfig
from codetune.evaluate.metrics import accepts, first_line
from codetune.evaluate.tasks.base import Item, ReferenceTask

METRICS = ["accepted", "accepted_chars", "empty_rate", "first_line_exact_match"]


@dataclass
class AcceptanceTask(ReferenceTask):
    """Reference metrics of the replay, its acceptance rate among suggestions shown, and the same
    proxy applied to what was served when the records were made."""

    def score(
        self, generations: list[list[str]], cfg: EvalConfig, language: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        scores, rows = super().score(generations, cfg, language)
        firsts = [g[0] if g else "" for g in generations]
        hits = [accepts(p, i.reference or "") for p, i in zip(firsts, self.items)]
        shown = sum(1 for p in firsts if first_line(p))
        served = [i.meta["served"] for i in self.items]
        served_hits = sum(accepts(s, i.reference or "") for s, i in zip(served, self.items))
        served_shown = sum(1 for s in served if first_line(s))
        scores |= {
            "acceptance_rate": round(100 * sum(hits) / shown, 2) if shown else 0.0,
            "shown": shown,
            "accepted_count": sum(hits),
            "recorded_accepted": round(100 * served_hits / max(len(served), 1), 2),
            "recorded_acceptance_rate": round(100 * served_hits / served_shown, 2) if served_shown else 0.0,
        }
        for row, hit in zip(rows, hits):
            row["accepted"] = hit
        return scores, rows


def build(cfg: EvalConfig, rows: list[dict[str, Any]], stats: dict[str, Any]) -> AcceptanceTask | None:
    if cfg.records is None:
        return None
    records = read_records(cfg.records)
    if not records.completions:
        raise InputError(
            f"no suggestions recorded in {cfg.records} ({records.counts['malformed_row']} malformed rows)"
        )
    labeled = sorted(records.labeled(), key=lambda item: parse_time(item.completion.time))
    typed = typed_after(labeled)
    start = len(labeled) - max(1, round(len(labeled) * cfg.records_newest))
    items: list[Item] = []
    for index in range(start, len(labeled)):
        item = labeled[index]
        reference = typed.get(index)
        if reference is None and item.accepted:
            reference = item.target
        if reference is None:
            continue
        items.append(_item(item.completion, reference, item.accepted))
    items = items[-cfg.samples :]
    if not items:
        raise InputError(
            f"the records in {cfg.records} say nothing of what developers kept or typed: none of the "
            f"{len(labeled) - start} replayed suggestion(s) was accepted or followed by a prompt of the same "
            "file that finished its line (turn on editor events: docs/editors.md)"
        )
    return AcceptanceTask(
        "acceptance",
        items,
        f"editor records replayed: {len(items)} suggestions of {cfg.records} (the newest "
        f"{cfg.records_newest:.0%}), each accepted when its first line begins what the developer kept or "
        "went on to type",
        stop=["\n"],
        single_line=True,
        fim_optional=True,
        metrics=list(METRICS),
    )


def _item(c: CompletionRecord, reference: str, accepted: bool | None) -> Item:
    return Item(
        c.prefix,
        reference,
        suffix=c.suffix,
        meta={"id": c.id, "path": c.path or "", "served": c.text, "verdict": accepted},
    )
