"""Generated text continues its prompt exactly: prompt text + completion text is the decoded whole.

SentencePiece-style decoders drop the leading space of the first token of a string; a completion is
not a string start, so the served text must keep it (a CodeLlama or Llama model completing `x =`
with ` 1` must answer ` 1`, not `1`).
"""

from __future__ import annotations

import pytest

from codetune.generation.api import CodeModel
from codetune.modeling.loading import load_tokenizer

PROMPT = "def total(values):\n    result ="


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-codellama", "tiny-gpt-bigcode", "tiny-deepseek-coder"])
def test_completion_text_continues_the_prompt(name):
    model = CodeModel(name)
    tokenizer = load_tokenizer(name)
    text = model.complete(PROMPT, max_tokens=8, temperature=0, postprocess=False)
    assert text, "greedy decoding of a tiny model still produces tokens"
    prompt_ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    generated = tokenizer(PROMPT + text, add_special_tokens=False)["input_ids"][len(prompt_ids) :]
    # the re-encoded continuation decodes, behind the prompt, to exactly prompt + text
    whole = tokenizer.decode(prompt_ids + generated, skip_special_tokens=True)
    assert whole == PROMPT + text


def test_the_first_generated_token_keeps_its_leading_space():
    from codetune.generation.sequence import Detokenizer

    for name in ("tiny-llama", "tiny-codellama"):
        tokenizer = load_tokenizer(name)
        ids = tokenizer(PROMPT + " 1", add_special_tokens=False)["input_ids"]
        prompt_len = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
        new = ids[prompt_len:]
        detok = Detokenizer()
        streamed = "".join(detok.step(tokenizer, new[: i + 1]) for i in range(len(new)))
        assert streamed + detok.step(tokenizer, new, final=True) == " 1"
