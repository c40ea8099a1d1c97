"""vLLM behind the same interface (optional: ``pip install 'codetune[vllm]'``; offline ``run`` only).

vLLM decodes; codetune finishes each row as the HF engines do: prompts come from the one request
builder (trimming, FIM through ``codetune.fim``), vLLM stops on the same stop token ids
(``stop_token_ids``: EOS, or a FIM family's end and sentinels) and stop strings, and the text is
decoded from vLLM's token ids by codetune's decoder, then cut by the same stops, client patterns and
post-processing. What vLLM cannot do the same way is refused before any model loads (beam search
here; seq2seq models and adapters with added-token rows in :mod:`codetune.inference.vllm_checks`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from codetune.generation.engines.base import Engine
from codetune.generation.params import SamplingParams
from codetune.generation.sequence import (
    Completion,
    Sequence,
    decode_generated,
    final_text,
    finish,
    stop_token_ids,
)


def vllm_sampling_kwargs(params: SamplingParams, copy: int, stop_ids: set[int]) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for one row (the ``copy``-th of its request).

    One vLLM row per codetune row (``n=1``): ``n`` copies are separate rows with seeds seed, seed+1,
    ... as on the HF engines. Raises ConfigError for settings vLLM would run differently.
    """
    from codetune.errors import ConfigError

    if params.num_beams > 1:
        raise ConfigError(
            f"engine 'vllm' does not run beam search (num_beams={params.num_beams}): vLLM moved it out "
            "of SamplingParams into a separate API; use --engine hf for beams"
        )
    if params.max_new_tokens < 1:
        raise ConfigError("engine 'vllm' needs max_new_tokens >= 1 (rows with 0 finish before vLLM)")
    return {
        "n": 1,
        "temperature": params.temperature,  # 0: greedy, as codetune's
        "top_p": params.top_p,
        "top_k": params.top_k or -1,  # codetune's 0 and vLLM's -1 both mean off
        "repetition_penalty": params.repetition_penalty,  # over prompt and output, as HF's
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "max_tokens": params.max_new_tokens,
        "min_tokens": params.min_new_tokens,  # holds back EOS and the stop ids, as codetune's sampler
        "stop": list(params.stop) or None,
        # Exactly codetune's stop ids (EOS among them): vLLM's own EOS, from generation_config.json,
        # may differ from the tokenizer's, which the HF engines stop on.
        "stop_token_ids": sorted(stop_ids),
        "ignore_eos": True,
        "seed": params.copy_seed(copy),
        "logprobs": params.logprobs,
        "skip_special_tokens": True,
    }


def complete_row(
    seq: Sequence,
    token_ids: list[int],
    finish_reason: str | None,
    stop_ids: set[int],
    tokenizer: Any,
    logprobs: list[dict[int, Any]] | None = None,
) -> None:
    """Finish ``seq`` from vLLM's output for it as codetune's own loop would have.

    A stop token ends a row without joining its tokens (vLLM keeps it); the text is decoded by
    codetune's decoder (the first token's leading space kept) and cut by the row's stops, patterns and
    post-processor; a cut makes the reason "stop".
    """
    ids = list(token_ids)
    stopped_on_token = bool(ids) and ids[-1] in stop_ids and finish_reason == "stop"
    if stopped_on_token:
        ids.pop()
    seq.tokens = ids
    if seq.params.logprobs is not None and logprobs:
        for token, entry in zip(ids, logprobs, strict=False):
            chosen = entry.get(token)
            seq.token_logprobs.append(float(_logprob(chosen)) if chosen is not None else float("-inf"))
            if seq.params.logprobs:
                ranked = sorted(entry.items(), key=lambda item: -_logprob(item[1]))[: seq.params.logprobs]
                seq.top_logprobs.append({tokenizer.decode([i]): float(_logprob(v)) for i, v in ranked})
    text, cut = final_text(seq, decode_generated(tokenizer, ids))
    seq.text = text
    finish(seq, "length" if finish_reason == "length" and not cut else "stop")


def _logprob(value: Any) -> float:
    return value.logprob if hasattr(value, "logprob") else float(value)


class VllmEngine(Engine):
    """Offline generation through ``vllm.LLM``; ``submit``/``stream`` are not offered."""

    name = "vllm"

    def __init__(
        self, model: Any, tokenizer: Any, *, llm: Any = None, lora: Any = None, **options: Any
    ) -> None:
        for name in ("wait_s", "regroup_s", "token_budget", "kv_token_budget", "fused_prefill_tokens"):
            options.pop(name, None)
        super().__init__(model, tokenizer, **options)
        self.llm, self.lora = llm, lora
        self.stop_ids = stop_token_ids(tokenizer)

    @classmethod
    def load(cls, ref: Any, tokenizer: Any, **options: Any) -> VllmEngine:
        """An engine over vLLM for a resolved model (base + optional LoRA adapter), on one GPU."""
        from codetune.errors import ConfigError
        from codetune.inference.vllm_checks import vllm_llm_kwargs

        try:
            import vllm
        except ImportError:
            raise ConfigError("engine 'vllm' needs vllm installed (pip install 'codetune[vllm]')") from None
        llm = vllm.LLM(**vllm_llm_kwargs(ref))
        lora = None
        if ref.adapter is not None:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, str(ref.adapter))
        return cls(None, tokenizer, llm=llm, lora=lora, **options)

    def submit(self, seqs: list[Sequence]) -> None:
        raise NotImplementedError("the vllm engine runs offline jobs only (codetune generate)")

    def _run_inline(self, seqs: list[Sequence]) -> Iterator[Sequence]:
        import vllm

        for seq in seqs:
            if seq.cancelled or seq.params.max_new_tokens == 0:  # as the HF engines: no decoding
                finish(seq, "cancelled" if seq.cancelled else "length")
                yield seq
        live = [s for s in seqs if not s.done]
        # Chunks keep a killed run's loss small (finished rows are written as each chunk ends) while
        # giving vLLM's scheduler far more rows than one batch.
        chunk = max(self.max_batch_size * 16, 256)
        for begin in range(0, len(live), chunk):
            part = live[begin : begin + chunk]
            outputs = self.llm.generate(
                [{"prompt_token_ids": s.prompt_ids} for s in part],
                [vllm.SamplingParams(**vllm_sampling_kwargs(s.params, s.copy, self.stop_ids)) for s in part],
                lora_request=self.lora,
                use_tqdm=False,
            )
            for seq, output in zip(part, outputs, strict=True):
                completion = output.outputs[0]
                complete_row(
                    seq,
                    list(completion.token_ids),
                    completion.finish_reason,
                    self.stop_ids,
                    self.tokenizer,
                    completion.logprobs,
                )
                yield seq

    def _worker(self) -> None:  # pragma: no cover - never started
        raise NotImplementedError


__all__ = ["Completion", "VllmEngine", "complete_row", "vllm_sampling_kwargs"]
