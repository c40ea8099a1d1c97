"""Load models and tokenizers from a hub id, a local folder, a run folder or a tiny preset.

Offline-aware: with no network and nothing cached, loading fails with one clear line instead
of a chain of connection tracebacks.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from codetune.artifacts.paths import ADAPTER_CONFIG
from codetune.artifacts.run import adapter_folder, is_run, read_run
from codetune.errors import InputError, ModelLoadError
from codetune.modeling.gguf import find_gguf, gguf_to_hf
from codetune.modeling.presets import PRESETS, is_preset, preset_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: the base weights, an optional adapter, and the tokenizer to use."""

    base: str
    adapter: Path | None = None
    tokenizer: str | None = None

    @property
    def tokenizer_source(self) -> str:
        return self.tokenizer or self.base


def resolve_model(name: str | Path, adapter: str | Path | None = None) -> ModelRef:
    """Turn what a user typed into a ModelRef: preset, local folder, run folder, GGUF file or hub id.

    A GGUF file (or a folder holding one) is converted once into the cache (codetune.modeling.gguf)
    and stands for that folder from then on.
    """
    text = str(name).strip()
    if not text:
        raise ModelLoadError("no model given")
    if is_preset(text):
        ref = ModelRef(str(preset_dir(text)))
    else:
        path = Path(text).expanduser()
        if is_run(path):
            run = read_run(path)
            tokenizer = str(run.tokenizer) if run.tokenizer is not None else None
            if run.model is not None:
                ref = ModelRef(str(run.model), None, tokenizer)
            else:
                ref = ModelRef(resolve_model(run.base).base, run.adapter, tokenizer)
        elif path.exists() and (gguf_file := find_gguf(path)) is not None:
            ref = ModelRef(str(gguf_to_hf(gguf_file)))
        elif path.exists():
            markers = ("config.json", "tokenizer.json", "tokenizer_config.json")
            if not any((path / marker).is_file() for marker in markers):
                raise ModelLoadError(
                    f"{path} is not a model or tokenizer folder (no config.json) nor a codetune run folder"
                )
            ref = ModelRef(str(path))
        elif text.startswith((".", "/", "~")) or text.count("/") > 1:
            raise ModelLoadError(f"model path not found: {text}")
        else:
            ref = ModelRef(text)
    if adapter is not None:
        try:
            adapter_path, run_tokenizer = adapter_folder(adapter)
        except InputError as error:
            raise ModelLoadError(str(error)) from None
        tokenizer = (
            ref.tokenizer if ref.tokenizer is not None or run_tokenizer is None else str(run_tokenizer)
        )
        ref = ModelRef(ref.base, adapter_path, tokenizer)
    return ref


def _hub_error(name: str, error: Exception) -> ModelLoadError:
    offline = "" if hub_reachable() else " (offline: the hub cannot be reached)"
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelLoadError(
        f"cannot load model {name!r}: not a tiny preset ({', '.join(PRESETS)}), not a local folder, and not "
        f"available from the Hugging Face hub or its cache{offline}. Download it where there is network "
        f"(`hf download {name}`) or pass a local path. [{reason[:160]}]"
    )


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub can be reached at all; huggingface_hub otherwise retries for about a minute."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def from_pretrained(loader: Callable[..., Any], name: str, **kwargs: Any) -> Any:
    """Call a ``from_pretrained``: local files first, the hub only when it can be reached."""
    try:
        return loader(name, local_files_only=True, **kwargs)
    except Exception as error:
        if Path(name).exists() or not hub_reachable():
            raise _hub_error(name, error) from None
    try:
        return loader(name, **kwargs)
    except Exception as error:
        raise _hub_error(name, error) from None


def load_config(name: str) -> Any:
    """AutoConfig for a resolved base, with the offline-aware error."""
    from transformers import AutoConfig

    return from_pretrained(AutoConfig.from_pretrained, name)


def is_seq2seq_config(config: Any) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def load_tokenizer(name: str | Path | ModelRef, adapter: str | Path | None = None) -> Any:
    """The tokenizer for a model (a run's own tokenizer wins: it may carry added FIM tokens)."""
    from transformers import AutoTokenizer

    ref = name if isinstance(name, ModelRef) else resolve_model(name, adapter)
    tokenizer = from_pretrained(AutoTokenizer.from_pretrained, ref.tokenizer_source)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    # transformers warns "Token indices sequence length is longer than the specified maximum ...
    # will result in indexing errors" whenever a text longer than the context is tokenized. codetune
    # tokenizes whole files and cuts them itself (prompts are trimmed to the context as served,
    # datasets to max_length), so no such sequence reaches the model: the warning is marked as given.
    if isinstance(getattr(tokenizer, "deprecation_warnings", None), dict):
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tokenizer


def load_model(
    name: str | Path | ModelRef,
    adapter: str | Path | None = None,
    *,
    dtype: Any = None,
    device: str | None = None,
    trainable_adapter: bool = False,
    quantization_config: Any = None,
    merge: bool = False,
) -> Any:
    """Load base weights (+ a peft adapter) as an eval-mode model on ``device``.

    The adapter stays a separate peft layer unless ``merge``: then it is folded into the base's
    weights in memory where the method allows (``merge_in_memory``), so inference runs at the base's speed.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from codetune.progress import activity

    ref = name if isinstance(name, ModelRef) else resolve_model(name, adapter)
    config = load_config(ref.base)
    auto = AutoModelForSeq2SeqLM if is_seq2seq_config(config) else AutoModelForCausalLM
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    with activity(f"loading model {ref.base}"):
        model = from_pretrained(auto.from_pretrained, ref.base, **kwargs)
    if ref.adapter is not None:
        tokenizer = load_tokenizer(ref)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model = load_adapter(model, ref.adapter, trainable=trainable_adapter)
        if merge and not trainable_adapter:
            model = merge_in_memory(model)
    if device is not None:
        model = model.to(device)
    model.eval()
    return model


def merge_in_memory(model: Any) -> Any:
    """A peft model's adapter folded into its base weights (the files are untouched).

    An unmerged LoRA adds two small matmuls to every targeted layer: on a CPU the tuned tiny model
    generated at about half the base's speed. Left as it is where merging is impossible or lossy:
    a quantized base (4-bit weights cannot hold the update exactly) and methods without a merge
    (prompt tuning).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "hf_quantizer", None) is not None or getattr(base, "is_loaded_in_4bit", False):
        return model
    try:
        return model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError) as error:
        logger.info("adapter kept unmerged: %s", error)
        return model


def load_adapter(model: Any, folder: Path, *, trainable: bool = False) -> Any:
    """A peft adapter over ``model``; an AdaLoRA adapter comes back with its pruned ranks exactly.

    AdaLoRA saves its ranks as ``rank_pattern`` masks keyed ``<module>.lora_E``; peft (0.21) then
    checks those keys as if they were LoRA's module-name patterns while injecting and warns that they
    "did not match any targeted module". So the modules are injected at init_r without the pattern,
    and the pattern is put back before the weights load: peft's loader resizes every module to its
    rank from it.
    """
    from peft import AdaLoraConfig, PeftConfig, PeftModel, load_peft_weights, set_peft_model_state_dict

    config = PeftConfig.from_pretrained(str(folder))
    if not (isinstance(config, AdaLoraConfig) and config.rank_pattern):
        return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    pattern, config.rank_pattern = config.rank_pattern, None
    config.inference_mode = not trainable
    peft_model = PeftModel(model, config)
    config.rank_pattern = pattern
    weights = load_peft_weights(str(folder), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(peft_model, weights)
    missing = [key for key in result.missing_keys if "lora_" in key]
    if missing:
        raise ModelLoadError(f"adapter {folder} lacks {len(missing)} AdaLoRA tensors (e.g. {missing[0]})")
    if not trainable:
        peft_model.requires_grad_(False)
    return peft_model


def _same_base(a: str, b: str) -> bool:
    def norm(name: str) -> str:
        return str(Path(name).resolve()) if Path(name).exists() else name

    return norm(a) == norm(b)


def resolve_adapters(model: str, adapters: dict[str, Path]) -> tuple[ModelRef, dict[str, Path]]:
    """The one base and each named adapter's folder, checked to share that base and its tokenizer.

    A run folder names its base in its manifest, a bare adapter folder in its adapter_config.json.
    Only LoRA adapters (and QLoRA's) are served side by side: peft runs rows of different LoRA adapters
    in one batch (``adapter_names``), while its AdaLoRA layers ignore that argument.
    """
    from peft import PeftConfig

    base = resolve_model(model)
    if base.adapter is not None:
        raise ModelLoadError(
            f"--model {model} is a run folder with an adapter; with named adapters give the base "
            f"model as --model (its base is {base.base}) and the run as --adapter NAME={model}"
        )
    folders: dict[str, Path] = {}
    tokenizer_of: dict[str, str] = {}
    for name, given in adapters.items():
        path = Path(given).expanduser()
        if is_run(path):
            ref = resolve_model(path)
            if ref.adapter is None:
                raise ModelLoadError(f"adapter {name!r}: {path} holds a merged model, not an adapter")
            folder, trained_on = ref.adapter, ref.base
            if ref.tokenizer is not None:
                tokenizer_of[name] = ref.tokenizer
        elif (path / ADAPTER_CONFIG).is_file():
            folder = path
            trained_on = resolve_model(PeftConfig.from_pretrained(str(path)).base_model_name_or_path).base
        else:
            raise ModelLoadError(
                f"adapter {name!r}: no adapter found at {path} (expected a run folder or an adapter folder)"
            )
        if not _same_base(trained_on, base.base):
            raise ModelLoadError(
                f"adapter {name!r} ({path}) was trained on {trained_on}, but the served base is {base.base} "
                f"(--model {model}): all adapters must share one base model"
            )
        kind = str(PeftConfig.from_pretrained(str(folder)).peft_type).rsplit(".", 1)[-1]
        if kind != "LORA":
            raise ModelLoadError(
                f"adapter {name!r} ({path}) is {kind}: only LoRA adapters share batches (peft's "
                f"adapter_names); serve it alone (--adapter {path}) or merge it (codetune merge)"
            )
        folders[name] = folder
    if tokenizer_of and len(tokenizer_of) < len(folders):
        tokenizer_of["the base"] = base.tokenizer_source  # the adapters without a tokenizer of their own
    tokenizer = _one_tokenizer(base, tokenizer_of)
    return ModelRef(base.base, None, tokenizer), folders


def _one_tokenizer(base: ModelRef, tokenizer_of: dict[str, str]) -> str | None:
    """The runs' own tokenizer (it may add FIM tokens), which every adapter must then share."""
    if not tokenizer_of:
        return base.tokenizer
    vocabularies = {
        name: load_tokenizer(ModelRef(base.base, None, source)).get_vocab()
        for name, source in tokenizer_of.items()
    }
    first, vocab = next(iter(vocabularies.items()))
    for name, other in vocabularies.items():
        if other != vocab:
            raise ModelLoadError(
                f"{first!r} and {name!r} use different tokenizers "
                f"({tokenizer_of[first]}, {tokenizer_of[name]}): they cannot share one server"
            )
    return tokenizer_of[first]


def load_with_adapters(
    base: ModelRef, adapters: dict[str, Path], *, dtype: Any = None, device: str | None = None
) -> Any:
    """The base model with every named LoRA adapter loaded (unmerged), in eval mode on ``device``."""
    from peft import PeftModel

    model = load_model(ModelRef(base.base), dtype=dtype)
    tokenizer = load_tokenizer(base)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    (first, folder), *rest = adapters.items()
    model = PeftModel.from_pretrained(model, str(folder), adapter_name=first)
    for name, folder in rest:
        model.load_adapter(str(folder), adapter_name=name)
    if device is not None:
        model = model.to(device)
    model.eval()
    return model


def default_device() -> str:
    """cuda when present, else mps, else cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
