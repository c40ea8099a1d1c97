"""Which weights each served name runs with, and a new adapter rolled out without a restart.

Every served name (the base's, each ``--adapter NAME=RUN``) maps to a peft adapter of the one
loaded model (``"__base__"``: none; ``None``: whatever the model runs when a batch names none).
:meth:`AdapterTable.swap` loads a LoRA run under a new internal name between two decoding steps
(``Engine.between_steps``) and points the served name at it: rows already running keep the adapter
they started with (each row names its own, peft's ``adapter_names``), new requests get the new one,
and a replaced adapter is dropped once no row runs with it. A server that began without adapters
has its model wrapped by peft at the first swap, its running rows pinned to ``"__base__"``.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import ModelLoadError

logger = logging.getLogger(__name__)

BASE = "__base__"


def is_peft(model: Any) -> bool:
    """Whether peft wraps the model (a transformers model has ``load_adapter`` of its own)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def within(root: Path, given: Path) -> Path:
    """``given`` (relative to ``root`` unless absolute) resolved; ModelLoadError when it, or a link
    anywhere under it, leads out of ``root``. Nothing outside is read, so a refusal says nothing of
    what is there."""
    root = root.expanduser().resolve()
    path = (root / given.expanduser()).resolve()
    if not path.is_relative_to(root):
        raise ModelLoadError(f"{given} is outside --adapter-dir {root}: adapters are rolled out from it only")
    for folder, dirs, files in os.walk(path):  # links are not followed, only checked
        for name in dirs + files:
            item = Path(folder, name)
            if item.is_symlink() and not item.resolve().is_relative_to(root):
                raise ModelLoadError(f"{item} links outside --adapter-dir {root}")
    return path


@dataclass
class Swap:
    """What a swap did: the served name, the run's adapter folder, the internal adapter name, and
    whether it replaced one (rather than adding a new served name)."""

    name: str
    folder: str
    adapter: str
    replaced: bool


class AdapterTable:
    """Served name -> internal adapter, for a model an engine runs (``engine.model``)."""

    def __init__(self, engine: Any, base_name: str, named: dict[str, Path]) -> None:
        self.engine = engine
        self.base_name = base_name
        self.routes: dict[str, str | None] = {base_name: BASE if named else None, **{n: n for n in named}}
        self.folders: dict[str, str] = {n: str(p) for n, p in named.items()}
        # Once any row names its adapter, all must: a row naming none would run whatever peft's
        # active adapter is (the newest one loaded) instead of the weights it was served with.
        self.explicit = bool(named)
        self._lock = threading.Lock()
        self._retired: set[str] = set()
        self._serial = 0

    @property
    def model(self) -> Any:
        return self.engine.model

    def runs_with(self, name: str | None) -> str | None:
        """The internal adapter of a served name (None: the base's served name)."""
        return self.routes[name if name is not None else self.base_name]

    def pin(self, sequences: Iterable[Any]) -> None:
        """Called as rows are submitted: a row naming no adapter is given the default one's name
        when the table is explicit. Atomic with :meth:`_make_explicit` (the same lock)."""
        with self._lock:
            if self.explicit:
                default = self.routes[self.base_name]
                for seq in sequences:
                    if seq.adapter is None:
                        seq.adapter = default

    # -- swapping (the engine's worker runs the model changes) --------------------------------------
    def check(self, name: str, given: Path, root: Path, served_model: str, tokenizer: Any) -> Path:
        """The LoRA adapter folder of ``given`` (a path in folder ``root``) for served name ``name``;
        ModelLoadError when it cannot be served over this model (outside ``root``, another base or
        tokenizer, not LoRA, no safetensors weights). ``served_model``: the server's ``--model``."""
        from codetune.modeling.loading import load_tokenizer, resolve_adapters, resolve_model

        path = within(root, given)

        if is_peft(self.model):
            kinds = {str(c.peft_type).rsplit(".", 1)[-1] for c in self.model.peft_config.values()}
            if kinds - {"LORA"}:
                raise ModelLoadError(
                    f"this server runs a {', '.join(sorted(kinds))} adapter: only LoRA adapters share "
                    "batches, so a new one cannot be rolled out beside it; serve a LoRA run"
                )
        ref, folders = resolve_adapters(resolve_model(served_model).base, {name: path})
        folder = folders[name]  # in ``path``: a run's adapter/ and tokenizer/, or the adapter folder itself
        if not (folder / "adapter_model.safetensors").is_file():
            raise ModelLoadError(
                f"{folder} has no adapter_model.safetensors: only safetensors weights are loaded into a "
                "running server (a pickle file could run code)"
            )
        if ref.tokenizer is not None and load_tokenizer(ref).get_vocab() != tokenizer.get_vocab():
            raise ModelLoadError(
                f"adapter {name!r} ({path}) was trained with another tokenizer than the served one"
            )
        return folder

    def swap(self, name: str, folder: Path, live: Callable[[], Iterable[Any]]) -> Swap:
        """Load ``folder`` and serve it as ``name`` (new or replacing); ``live()``: the rows queued
        or running. Blocks until the engine's worker has loaded it (call it off the event loop)."""
        self._serial += 1
        internal = f"swap{self._serial}"
        self.engine.between_steps(lambda: self._load(internal, folder, live)).result()
        with self._lock:
            old = self.routes.get(name)
            self.routes[name] = internal
            self.folders[name] = str(folder)
            if old not in (None, BASE) and old not in self.routes.values():
                self._retired.add(old)  # type: ignore[arg-type]
        self.drop_retired(live)
        return Swap(name, str(folder), internal, old is not None)

    def _load(self, internal: str, folder: Path, live: Callable[[], Iterable[Any]]) -> None:
        import torch

        model = self.model
        # Rows naming no adapter keep the weights they started with: the active adapter of a peft
        # model, or none for a model peft has not wrapped yet.
        default = model.active_adapter if is_peft(model) else BASE
        with torch.inference_mode(False):
            if is_peft(model):
                model.load_adapter(str(folder), adapter_name=internal)
            else:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(folder), adapter_name=internal)
            model.eval()
        self._make_explicit(default, live)
        self.engine.model = model

    def _make_explicit(self, default: str, live: Callable[[], Iterable[Any]]) -> None:
        """From now on every row names its adapter; those naming none run with ``default``."""
        with self._lock:
            if self.explicit:
                return
            self.routes = {k: (default if v is None else v) for k, v in self.routes.items()}
            for seq in live():
                if seq.adapter is None:
                    seq.adapter = default
            self.explicit = True

    def drop_retired(self, live: Callable[[], Iterable[Any]]) -> None:
        """Delete replaced adapters no row runs with any more (between steps)."""
        with self._lock:
            if not self._retired:
                return
            used = {seq.adapter for seq in live()}
            idle = [name for name in self._retired if name not in used]
            self._retired -= set(idle)
        if idle:
            self.engine.between_steps(lambda: self._delete(idle))
            logger.info("dropped replaced adapter(s) %s", ", ".join(idle))

    def _delete(self, names: list[str]) -> None:
        with warnings.catch_warnings():  # peft warns when the active adapter goes: rows name theirs
            warnings.simplefilter("ignore", UserWarning)
            for name in names:
                self.model.delete_adapter(name)
