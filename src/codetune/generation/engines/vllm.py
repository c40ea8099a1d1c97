"""vLLM behind the same interface (optional: ``pip install 'codetune[vllm]'``; offline ``run`` only).

vLLM decodes; codetune's sequence rules still finish each row: the same stop strings, client
patterns and post-processing are applied to vLLM's text, so its output matches the HF engines'.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from codetune.generation.engines.base import Engine
from codetune.generation.sequence import Completion, Sequence, final_text, finish


class VllmEngine(Engine):
    """Offline generation through ``vllm.LLM``; ``submit``/``stream`` are not offered."""

    name = "vllm"

    def __init__(
        self, model: Any, tokenizer: Any, *, llm: Any = None, lora: Any = None, **options: Any
    ) -> None:
        for name in ("wait_s", "regroup_s", "token_budget", "kv_token_budget"):
            options.pop(name, None)
        super().__init__(model, tokenizer, **options)
        self.llm, self.lora = llm, lora

    @classmethod
    def load(cls, ref: Any, tokenizer: Any, **options: Any) -> VllmEngine:
        """An engine over vLLM for a resolved model (base + optional LoRA adapter)."""
        from codetune.errors import ConfigError

        try:
            import vllm
        except ImportError:
            raise ConfigError("engine 'vllm' needs vllm installed (pip install 'codetune[vllm]')") from None
        llm = vllm.LLM(model=ref.base, tokenizer=ref.tokenizer_source, enable_lora=ref.adapter is not None)
        lora = None
        if ref.adapter is not None:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, str(ref.adapter))
        return cls(None, tokenizer, llm=llm, lora=lora, **options)

    def submit(self, seqs: list[Sequence]) -> None:
        raise NotImplementedError("the vllm engine runs offline jobs only (codetune generate)")

    def _run_inline(self, seqs: list[Sequence]) -> Iterator[Sequence]:
        import vllm

        chunk = max(self.max_batch_size * 16, 256)
        for begin in range(0, len(seqs), chunk):
            part = seqs[begin : begin + chunk]
            outputs = self.llm.generate(
                [{"prompt_token_ids": s.prompt_ids} for s in part],
                [_vllm_params(vllm, s) for s in part],
                lora_request=self.lora,
            )
            for seq, output in zip(part, outputs):
                completion = output.outputs[0]
                text, cut = final_text(seq, completion.text)
                seq.tokens, seq.text = list(completion.token_ids), text
                finish(seq, "stop" if cut else completion.finish_reason or "stop")
                yield seq

    def _worker(self) -> None:  # pragma: no cover - never started
        raise NotImplementedError


def _vllm_params(vllm: Any, seq: Sequence) -> Any:
    p = seq.params
    return vllm.SamplingParams(
        n=1,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k or -1,
        repetition_penalty=p.repetition_penalty,
        presence_penalty=p.presence_penalty,
        frequency_penalty=p.frequency_penalty,
        max_tokens=p.max_new_tokens,
        min_tokens=p.min_new_tokens,
        stop=p.stop or None,
        seed=p.copy_seed(seq.copy),
    )


__all__ = ["Completion", "VllmEngine"]
