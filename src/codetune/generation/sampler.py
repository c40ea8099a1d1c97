"""The one sampler: penalties, the minimum length, temperature, top-k, top-p, per-row generators.

The continuous engine calls ``choose`` on each decode step's logits; the static engine runs
``model.generate`` greedily with ``RowSampler`` as its logits processor, which picks each row's token
with the same code and hands it to ``generate`` as the only finite logit. Either way one row's
settings never leak into another's, and a row whose sampling fails is reported, not raised.
"""

from __future__ import annotations

from typing import Any

from codetune.generation.params import SamplingParams


def make_generator(params: SamplingParams, copy: int, device: Any) -> Any:
    """The row's own random generator (None when greedy): seeded rows draw the same text in any batch."""
    import torch

    if params.greedy:
        return None
    generator = torch.Generator(device=device)
    seed = params.copy_seed(copy)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def penalize(
    x: Any, params: SamplingParams, seen: list[int], generated: list[int], stop_ids: set[int]
) -> Any:
    """Logits (1-D, float) after repetition, presence and frequency penalties and the minimum length."""
    import torch

    if params.repetition_penalty != 1.0 and (seen or generated):
        index = torch.tensor(sorted(set(seen) | set(generated)), device=x.device)
        values = x[index]
        x[index] = torch.where(
            values < 0, values * params.repetition_penalty, values / params.repetition_penalty
        )
    if (params.presence_penalty or params.frequency_penalty) and generated:
        counts = torch.bincount(torch.tensor(generated, device=x.device), minlength=x.shape[0])
        counts = counts[: x.shape[0]].to(x.dtype)
        x = x - params.frequency_penalty * counts - params.presence_penalty * (counts > 0).to(x.dtype)
    if len(generated) < params.min_new_tokens and stop_ids:
        x[sorted(stop_ids)] = float("-inf")
    return x


def pick(x: Any, params: SamplingParams, generator: Any) -> int:
    """The next token from penalised logits: argmax, or a draw after temperature, top-k and top-p."""
    import torch

    if params.greedy:
        return int(x.argmax())
    x = x / params.temperature
    if params.top_k and params.top_k < x.shape[0]:
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(x, descending=True)
        probs = ordered.softmax(-1)
        drop = probs.cumsum(-1) - probs > params.top_p
        drop[0] = False
        x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = x.softmax(-1)
    if not bool(torch.isfinite(probs).all()):
        raise FloatingPointError("sampling probabilities are not finite")
    return int(torch.multinomial(probs, 1, generator=generator))


def plain(params: SamplingParams, generated: int) -> bool:
    """Greedy with no penalty, minimum or logprobs: a batched argmax is enough."""
    return (
        params.greedy
        and not params.penalised
        and generated >= params.min_new_tokens
        and params.logprobs is None
    )


def choose_one(
    x: Any,
    params: SamplingParams,
    seen: list[int],
    generated: list[int],
    stop_ids: set[int],
    generator: Any,
    keep_logprobs: bool = False,
) -> tuple[int, Any]:
    """One row's next token and (when it asked, or ``keep_logprobs``) its log-probabilities."""
    x = penalize(x.float().clone(), params, seen, generated, stop_ids)
    logp = x.log_softmax(-1) if params.logprobs is not None or keep_logprobs else None
    return pick(x, params, generator), logp


class RowSampler:
    """Logits processor for ``model.generate``: each row's token chosen by ``choose_one``.

    Greedy search then takes exactly that token. With beams it applies only the penalties (beam
    search needs the whole distribution).
    """

    def __init__(self, seqs: list[Any], generators: list[Any], stop_ids: set[int], beams: int, seq2seq: bool):
        self.seqs, self.generators, self.stop_ids = seqs, generators, stop_ids
        self.beams, self.seq2seq = beams, seq2seq
        self.start: int | None = None
        self.logps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.start is None:
            self.start = input_ids.shape[1]
        generated_rows = input_ids[:, self.start :].tolist()
        out = torch.full_like(scores, float("-inf")) if self.beams == 1 else scores.clone()
        self.logps = []
        for row in range(scores.shape[0]):
            seq = self.seqs[row // self.beams]
            seen = [] if self.seq2seq else seq.prompt_ids
            if self.beams > 1:
                out[row] = penalize(
                    scores[row].float().clone(), seq.params, seen, generated_rows[row], self.stop_ids
                )
                continue
            token, logp = self.filler, None
            if not seq.done:
                try:
                    token, logp = choose_one(
                        scores[row],
                        seq.params,
                        seen,
                        generated_rows[row],
                        self.stop_ids,
                        self.generators[row],
                        seq.keep_logprobs,
                    )
                except Exception as error:  # this row fails, the batch goes on
                    from codetune.generation.sequence import fail

                    fail(seq, error)
                    token = self.filler
            out[row, token] = 0.0
            self.logps.append(logp)
        return out

    @property
    def filler(self) -> int:
        """The token a finished row is fed until the batch ends (a stop token, so generate may end early)."""
        return min(self.stop_ids) if self.stop_ids else 0
