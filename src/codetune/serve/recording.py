"""What the server keeps of its suggestions (``serve --record DIR``) and which it withholds
(``--min-confidence auto|X``).

The completion service calls :meth:`Recorder.settle` once for every row it has finished: the row
becomes a :class:`~codetune.artifacts.records.CompletionRecord` (the id the client sees, the choice
index, the editor's prefix and suffix, the text, the mean token log-probability...), the confidence
gate decides whether the editor gets it (or an empty completion), and the record is appended to the
records folder. Editor events (``/v1/events``, ``/v1/feedback``: ``codetune.serve.feedback``) come
back through :meth:`Recorder.feedback` and join their completion by id; an id this server never
served is counted, not written. Continue's outcomes (``--continue-log``: :class:`ContinueFollower`
reads its dev-data file as it is written) join the suggestion they are about by prompt and text, since
Continue names them by its own id. The folder's format and its writer (daily files, appends safe across
threads, processes and kill -9, a size cap) are ``codetune.artifacts.records``'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter, OrderedDict
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from codetune.artifacts.paths import CONTINUE_POSITION
from codetune.artifacts.records import (
    CompletionRecord,
    FeedbackRecord,
    RecordWriter,
    read_records,
)
from codetune.errors import CodetuneError
from codetune.feedback.confidence import ConfidenceGate, fit_gate, gate_report, min_confidence
from codetune.feedback.cut import SuggestionCut, cut_below, fit_cut

logger = logging.getLogger(__name__)

# The calling editor (its User-Agent), set per request by :class:`CallerAgent`: the records' ``client``.
CALLER: ContextVar[str | None] = ContextVar("codetune_caller", default=None)
# Served ids remembered for joining events (the newest ones; an older id's event is counted unknown).
KNOWN_IDS = 1_000_000
# Editor events kept per suggestion (tabby-agent sends a view and a select or dismiss): one client
# repeating events about its suggestion must not fill the records folder's cap for everyone.
MAX_EVENTS_PER_SUGGESTION = 8
MAX_AGENT_CHARS = 200
# Suggestions kept for Continue's outcomes to join (Continue reports within 10 s of showing one).
OPEN_PROMPTS = 100_000
# Day-files read at start-up when no gate is fitted: editors report on a suggestion within seconds
# (Continue: 10 s), so today's and yesterday's hold every id an event may still name.
RECENT_DAY_FILES = 2


def _prompt_key(prefix: str, suffix: str | None) -> bytes:
    return hashlib.blake2b(
        json.dumps([prefix, suffix]).encode("utf-8", "surrogatepass"), digest_size=16
    ).digest()


class CallerAgent:
    """ASGI middleware: the request's User-Agent in :data:`CALLER` while the request is served."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        agent = next((v for k, v in scope.get("headers", []) if k == b"user-agent"), b"")
        token = CALLER.set(agent.decode("latin-1")[:MAX_AGENT_CHARS] or None)
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(token)


class Recorder:
    """The records folder and the confidence gate of one server (either may be off)."""

    def __init__(
        self,
        folder: Path | None,
        *,
        max_bytes: int | None = None,
        when_full: str = "stop",
        gate: ConfidenceGate | None = None,
        gate_report: dict[str, Any] | None = None,
        cut: SuggestionCut | None = None,
        cut_report: dict[str, Any] | None = None,
        join_outcomes: bool = False,
    ) -> None:
        self.folder = folder
        self.writer = (
            RecordWriter(folder, when_full=when_full, **({"max_bytes": max_bytes} if max_bytes else {}))
            if folder
            else None
        )
        self.gate = gate
        self.gate_report = gate_report
        self.cut, self.cut_report = cut, cut_report
        self.join_outcomes = join_outcomes  # keep served prompts for an editor log's outcomes to join
        self.counts: Counter = Counter()
        self._known: OrderedDict[tuple[str, int], int] = OrderedDict()  # -> events kept for it
        # Suggestions no editor has judged yet, by prompt (newest last), for Continue's outcomes to join.
        self._open: OrderedDict[bytes, list[tuple[tuple[str, int], str]]] = OrderedDict()
        self._editor_ids: OrderedDict[str, None] = OrderedDict()  # Continue ids already taken in
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls,
        folder: Path | None,
        min_confidence_spec: str | None,
        *,
        keep_accepted: float = 0.95,
        cut_spec: str | None = None,
        max_bytes: int | None = None,
        when_full: str = "stop",
        join_outcomes: bool = False,
    ) -> Recorder:
        """The server's recorder: the folder's history read once: the newest day-files (the ids events
        and Continue's outcomes may still name), or all of it for ``--min-confidence auto`` or
        ``--cut-below auto`` to be fitted on; InputError for a gate or a cut that cannot be made."""
        spec = (min_confidence_spec or "").strip() or None
        cut_spec = (cut_spec or "").strip() or None
        fit_cut_floor = cut_spec is not None and cut_spec.lower() == "auto"
        fit = spec is not None and spec.lower() == "auto"
        history = None
        if folder is not None and folder.is_dir():
            history = read_records(folder, newest_files=None if fit or fit_cut_floor else RECENT_DAY_FILES)
        if history is not None and not history.files:
            history = None
        for option, fitted, example in (
            ("--min-confidence", fit, "-1.5"),
            ("--cut-below", fit_cut_floor, "-2"),
        ):
            if fitted and history is None:
                from codetune.errors import InputError

                raise InputError(
                    f"{option} auto fits its threshold on the records of --record DIR, and "
                    f"{folder or 'no --record folder'} has none yet: serve with --record first, or give a "
                    f"number (e.g. {option} {example})"
                )
        labeled = history.labeled() if history is not None else None
        gate = fit_gate(labeled, keep_accepted) if fit else min_confidence(spec)  # type: ignore[arg-type]
        report = gate_report(gate, labeled) if gate is not None and labeled is not None else None
        cut, cut_report = fit_cut(labeled) if fit_cut_floor else (cut_below(cut_spec), None)  # type: ignore[arg-type]
        recorder = cls(
            folder,
            max_bytes=max_bytes,
            when_full=when_full,
            gate=gate,
            gate_report=report,
            cut=cut,
            cut_report=cut_report,
            join_outcomes=join_outcomes,
        )
        if history is not None:
            events = history.feedback
            for key in list(history.completions)[-KNOWN_IDS:]:
                recorder._known[key] = len(events.get(key, ()))
                completion = history.completions[key]
                if completion.source == "continue":
                    recorder._remember_editor_id(completion.id)
                elif not events.get(key) and not completion.withheld:
                    recorder._remember_open(completion)
            for kept in events.values():
                for event in kept:
                    if event.editor_id is not None:
                        recorder._remember_editor_id(event.editor_id)
        return recorder

    @property
    def active(self) -> bool:
        """Whether finished rows need a record (to write, to gate or to cut)."""
        return self.writer is not None or self.holds

    @property
    def holds(self) -> bool:
        """Whether a row's text may change once it is done (a gate or a cut): streams hold it till then."""
        return self.gate is not None or self.cut is not None

    def describe(self) -> list[str]:
        """Lines for the server's start-up log: where records go, what the gate removes, where the cut is."""
        lines = []
        if self.folder is not None:
            lines.append(
                f"recording suggestions and editor events to {self.folder} (they stay on this machine)"
            )
        if self.gate is not None:
            line = f"min-confidence: suggestions with a mean token log-probability under {self.gate.threshold:.4f} are answered empty"
            report = self.gate_report
            if report and report["suggestions"]:
                line += (
                    f"; on the {report['suggestions']} recorded suggestions with feedback it removes "
                    f"{report['removed']} ({100 * report['removed_share']:.1f}%), {report['accepted_lost']} of "
                    f"them accepted ({100 * report['accepted_lost_share']:.1f}% of the accepts); acceptance "
                    f"rate {report['acceptance_rate_before']} -> {report['acceptance_rate_after']}"
                )
            lines.append(line)
        if self.cut is not None or self.cut_report is not None:
            line = (
                f"cut-below: suggestions are answered up to their first token with a log-probability under {self.cut.floor:.4f}"
                if self.cut is not None
                else "cut-below auto: no floor would have had more characters accepted; suggestions are answered whole"
            )
            report = self.cut_report
            if report:
                before, after = report["before"], report["after"]
                line += (
                    f"; on the {report['judged']} recorded suggestions with a known truth: shown "
                    f"{before['shown']} -> {after['shown']}, accepted {before['accepted']} -> {after['accepted']}, "
                    f"accepted characters {before['accepted_chars']} -> {after['accepted_chars']}"
                )
            lines.append(line)
        return lines

    def settle(self, record: CompletionRecord) -> bool:
        """Gate, cut and record one finished suggestion; whether the editor gets its text (the record's
        ``text``, cut where the cut says, with the trace of the tokens it keeps)."""
        shown = self.gate is None or self.gate.allows(record)
        if shown and self.cut is not None:
            self.cut.cut_record(record)
        record.withheld = not shown
        self.counts["suggestions"] += 1
        self.counts["withheld" if record.withheld else "shown"] += 1
        if self.writer is not None and self._append(record):
            self.counts["recorded"] += 1
            self._remember((record.id, record.index))
            if shown:
                self._remember_open(record)
        return shown

    def _append(self, record: CompletionRecord | FeedbackRecord) -> bool:
        """Write one row; False (counted) when the size cap stops it or the folder cannot take it
        (a link planted as a day's file, a full disk): the editor is answered all the same."""
        try:
            written = self.writer.append(record)  # type: ignore[union-attr]
        except (OSError, CodetuneError) as error:
            if not self.counts["record_write_failed"]:
                logger.warning("records not written: %s", error)
            self.counts["record_write_failed"] += 1
            return False
        if not written:
            self.counts["dropped_by_size_cap"] += 1
        return written

    def _remember(self, key: tuple[str, int]) -> None:
        self._known[key] = 0
        if len(self._known) > KNOWN_IDS:
            self._known.popitem(last=False)

    def _remember_open(self, record: CompletionRecord) -> None:
        if not self.join_outcomes:
            return
        with self._lock:
            self._open.setdefault(_prompt_key(record.prefix, record.suffix), []).append(
                ((record.id, record.index), record.text)
            )
            if len(self._open) > OPEN_PROMPTS:
                self._open.popitem(last=False)

    def _remember_editor_id(self, ident: str) -> None:
        self._editor_ids[ident] = None
        if len(self._editor_ids) > KNOWN_IDS:
            self._editor_ids.popitem(last=False)

    def _served(self, completion: CompletionRecord) -> tuple[tuple[str, int], str] | None:
        """The newest suggestion this server made for the prompt of an editor's own record, whose text
        starts with what the editor showed (Continue trims what it shows); taken off the open ones."""
        shown = completion.text.strip()
        if not shown:
            return None
        with self._lock:
            candidates = self._open.get(_prompt_key(completion.prefix, completion.suffix), [])
            for position in range(len(candidates) - 1, -1, -1):
                key, text = candidates[position]
                if text.strip().startswith(shown):
                    del candidates[position]
                    return key, text
        return None

    def continue_outcome(self, completion: CompletionRecord, feedback: FeedbackRecord | None) -> str:
        """Keep one of Continue's outcomes; what became of it (counted ``continue_<what>``): joined to
        the suggestion this server made, imported as Continue's own, already_imported, or not_kept."""
        if completion.id in self._editor_ids:
            outcome = "already_imported"
        elif feedback is not None and (served := self._served(completion)) is not None:
            (feedback.id, feedback.index), text = served
            feedback.editor_id = completion.id
            if feedback.accepted and completion.text != text:
                feedback.kept_text = completion.text  # what Continue showed, and the developer took
            outcome = "joined" if self._append(feedback) else "not_kept"
        elif (completion.id, completion.index) in self._known:
            outcome = "already_imported"
        elif self._append(completion) and (feedback is None or self._append(feedback)):
            self._remember((completion.id, completion.index))
            outcome = "imported"
        else:
            outcome = "not_kept"
        if outcome != "not_kept":
            self._remember_editor_id(completion.id)
        self.counts[f"continue_{outcome}"] += 1
        return outcome

    def feedback(self, record: FeedbackRecord) -> str | None:
        """Keep one editor event: None when kept, else why not (counted): recording is off, the id was
        never served, its suggestion has all the events it may have, or the folder did not take it."""
        key = (record.id, record.index)
        if self.writer is None:
            self.counts["events_not_recorded"] += 1
            return "recording is off (serve --record DIR)"
        if key not in self._known:
            self.counts["events_unknown_id"] += 1
            return "no suggestion with this id and index was recorded"
        if self._known[key] >= MAX_EVENTS_PER_SUGGESTION:
            self.counts["events_over_limit"] += 1
            return f"this suggestion has {MAX_EVENTS_PER_SUGGESTION} events recorded already"
        if not self._append(record):
            return "the records folder did not take it (see the server's log)"
        self._known[key] += 1
        self.counts[f"events_{record.event}"] += 1
        return None

    def stats(self) -> dict[str, Any]:
        """Counts since start-up, and the gate with what it removed from the history it was fitted on."""
        counts = self.counts + Counter({"day_files_rotated_out": self.writer.rotated if self.writer else 0})
        out: dict[str, Any] = {
            "folder": str(self.folder) if self.folder is not None else None,
            "counts": dict(sorted(counts.items())),
        }
        if self.gate is not None:
            out["min_confidence"] = {"threshold": self.gate.threshold, "fitted_on": self.gate_report}
        if self.cut is not None or self.cut_report is not None:
            out["cut_below"] = {"floor": self.cut.floor if self.cut else None, "fitted_on": self.cut_report}
        return out

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ContinueFollower:
    """A thread that reads Continue's dev-data file as Continue appends to it (``--continue-log``) and
    gives each outcome to the recorder; the read position is kept in the records folder."""

    def __init__(self, recorder: Recorder, path: Path, poll_s: float = 1.0) -> None:
        from codetune.feedback.continue_dev import AppendedLines

        assert recorder.folder is not None
        self.recorder = recorder
        self.lines = AppendedLines(Path(path).expanduser(), recorder.folder / CONTINUE_POSITION)
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="continue-log", daemon=True)

    def start(self) -> ContinueFollower:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # a full disk, a file gone mid-read: the next poll tries again
                logger.exception("reading Continue's dev data from %s failed", self.lines.path)
            self._stop.wait(self.poll_s)

    def poll(self) -> None:
        """Take in every complete line appended since the last poll, then keep the position."""
        from codetune.feedback.continue_dev import continue_records

        before = Counter(self.lines.counts)
        for raw in self.lines.lines():
            if not raw.strip():
                continue
            try:
                completion, feedback = continue_records(json.loads(raw))
            except (ValueError, UnicodeDecodeError, RecursionError) as error:
                kind = "not_autocomplete" if "not an autocomplete" in str(error) else "malformed"
                self.recorder.counts[f"continue_{kind}"] += 1
                continue
            self.recorder.continue_outcome(completion, feedback)
        self.lines.save()
        for name, value in (self.lines.counts - before).items():
            self.recorder.counts[f"continue_{name}"] += value
            if name in ("refused_link", "not_regular_file"):
                logger.warning("%s is not a regular file (a link?): not read", self.lines.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.lines.close()
