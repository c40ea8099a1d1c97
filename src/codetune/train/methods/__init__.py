"""Fine-tuning methods: one file per method, one registry. A method wraps the loaded base model and
may hook into the loop (an extra loss term, work after each optimizer step, its own summary, state to
checkpoint, its own objective: the rows it trains on, how they are batched and what loss they give);
the recipe calls the hooks and knows no method by name.

Adding a method: a module here with a ``Method`` subclass and one ``@register_method`` line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from codetune.artifacts.dataset import OBJECTIVE_COLUMN
from codetune.errors import ConfigError, InputError


class Method:
    """How a method wraps the base model; ``quantized`` methods load the base in 4 bits (CUDA only).

    ``objective``: the rows of a dataset's ``objective`` column it trains on (``sft``: next-token
    cross-entropy on ``loss_mask``, the recipe's own loss); ``columns``: what its batches need besides
    ``input_ids`` and ``loss_mask``.
    """

    name: str = ""
    peft: bool = True
    quantized: bool = False
    objective: str = "sft"
    columns: tuple[str, ...] = ()
    # collate(rows, pad_id) -> the tensors of one micro-batch of batch_size rows; None: the recipe
    # packs or pads them itself.
    collate: Callable[[Sequence[dict[str, Any]], int], dict[str, Any]] | None = None

    def check(self, cfg: Any) -> None:
        """Refuse settings the method cannot train with, before any weights load."""

    def wrap(self, model: Any, cfg: Any, total_steps: int, new_tokens: Sequence[int] = ()) -> Any:
        """The trainable model; ``new_tokens`` are token ids the dataset added to the tokenizer."""
        raise NotImplementedError

    def extra_loss(self, model: Any) -> Any | None:
        """A term added to each micro-batch's loss (already per optimizer step), or None."""
        return None

    def after_step(self, model: Any, step: int) -> None:
        """Called after each optimizer step."""

    def units(self, batch: dict[str, Any]) -> int | None:
        """What the loss of a micro-batch is a sum over (pairs, examples); None: target tokens."""
        return None

    def loss(self, model: Any, batch: dict[str, Any], cfg: Any) -> tuple[Any, int] | None:
        """The summed loss of a micro-batch and its ``units``; None: the recipe's cross-entropy."""
        return None

    def summary(self, model: Any, run: Path | None) -> dict[str, Any]:
        """Extra fields for the run summary (and files of the method's own in ``run``, on the main process)."""
        return {}

    def checkpoint_state(self, model: Any) -> dict[str, Any] | None:
        """What a resumable checkpoint must keep besides the weights and the optimizer."""
        return None

    def restore_state(self, model: Any, state: dict[str, Any]) -> None:
        """Put back what ``checkpoint_state`` returned."""


METHODS: dict[str, Method] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Register a ``Method`` subclass under ``name``."""

    def decorator(cls: type[Method]) -> type[Method]:
        instance = cls()
        instance.name = name
        METHODS[name] = instance
        return cls

    return decorator


def get_method(name: str) -> Method:
    """The registered method, or a one-line error listing the known ones."""
    _load_builtin()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    return METHODS[name]


# The order messages list the built-in methods in (registration order depends on who imports first).
_LISTED = ("lora", "adalora", "qlora", "full", "kto", "dpo")


def method_names() -> list[str]:
    """Every registered method: the built-in ones in their listed order, then any others."""
    _load_builtin()
    return [n for n in _LISTED if n in METHODS] + [n for n in METHODS if n not in _LISTED]


def all_methods() -> dict[str, Method]:
    """Every registered method by name, in the listed order, the built-in ones loaded."""
    return {name: METHODS[name] for name in method_names()}


def _load_builtin() -> None:
    from codetune.train.methods import adalora, dpo, full, kto, lora, qlora  # noqa: F401  (registration)


def method_rows(method: Method, split: Any, where: str = "the dataset") -> Any:
    """The rows of a dataset split ``method`` trains on: all of them, or its objective's when the
    dataset holds several (a column ``objective``)."""
    if OBJECTIVE_COLUMN not in split.column_names:
        if method.objective != "sft":
            raise InputError(
                f"--method {method.name} trains on {method.objective} rows, which {where} has none of; "
                "build one from editor records: codetune build RECORDS --format feedback"
            )
        return split
    keep = [i for i, objective in enumerate(split[OBJECTIVE_COLUMN]) if objective == method.objective]
    return split.select(keep)


def task_type(model: Any) -> str:
    return "SEQ_2_SEQ_LM" if getattr(model.config, "is_encoder_decoder", False) else "CAUSAL_LM"


def new_token_modules(model: Any, new_tokens: Sequence[int]) -> dict[str, Any]:
    """peft settings that make the embedding and LM-head rows of ``new_tokens`` trainable.

    New rows start random (resize_token_embeddings), and LoRA alone never trains them. peft's
    ``trainable_token_indices`` trains just those rows (and saves them with the adapter); an LM head
    with a bias (Phi, CodeGen) is not handled by it, so that head is trained and saved whole instead.
    """
    if not new_tokens:
        return {}
    import torch

    ids = sorted(set(int(i) for i in new_tokens))
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    names = {module: name for name, module in model.named_modules()}
    settings: dict[str, Any] = {"trainable_token_indices": {names[embedding]: ids}}
    tied = head is not None and head.weight is embedding.weight
    if head is not None and not tied:
        if isinstance(head, torch.nn.Linear) and head.bias is None:
            settings["trainable_token_indices"][names[head]] = ids
        else:
            settings["modules_to_save"] = [names[head].split(".")[-1]]
    return settings


def quantization_config() -> Any:
    """bitsandbytes NF4 with double quantization and bf16 compute (CUDA only)."""
    from codetune.train.methods.lora import quantization_config as nf4

    return nf4()


__all__ = [
    "METHODS",
    "Method",
    "all_methods",
    "get_method",
    "method_names",
    "method_rows",
    "new_token_modules",
    "quantization_config",
    "register_method",
    "task_type",
]
