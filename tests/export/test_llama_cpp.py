"""The exported GGUF run by llama.cpp itself (llama-cpp-python): same tokens, FIM ids, greedy text."""

from __future__ import annotations

import pytest
from tests.helpers.export import READ_BACK, f16_exact

from codetune.export.config import ExportConfig
from codetune.export.parity import check_prompts, compare, greedy
from codetune.export.runner import export
from codetune.fim import FimFormat
from codetune.modeling.loading import load_model, load_tokenizer

pytestmark = pytest.mark.slow
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (`pip install llama-cpp-python` builds llama.cpp)"
)
pytest.importorskip("conversion")

FAMILIES = {**READ_BACK, "gpt-bigcode": "tiny-gpt-bigcode"}


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def _greedy_until_stop(llm, ids: list[int], stops: set[int], max_tokens: int) -> str:
    """llama.cpp's greedy tokens for ``ids``, up to the first of ``stops``, as text."""
    out: list[int] = []
    for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
        if token in stops or llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token):
            break
        out.append(token)
        if len(out) == max_tokens:
            break
    return llm.detokenize(out, prev_tokens=ids).decode("utf-8", errors="replace")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_llama_cpp_reads_the_export_as_codetune_does(family, tmp_path):
    source = f16_exact(FAMILIES[family], tmp_path / "model")
    # f32 in the file: llama.cpp then computes as transformers does, so only the export can differ
    gguf_file = export(
        ExportConfig(model=str(source), out=tmp_path / "m.gguf", dtype="f32", check_prompts=0)
    ).out
    tokenizer = load_tokenizer(str(source))
    fmt = FimFormat.from_tokenizer(tokenizer)
    llm = llama_cpp.Llama(str(gguf_file), n_ctx=512, n_threads=1, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    if fmt is not None:
        # the FIM ids llama.cpp's /infill uses are codetune.fim's
        assert llama_cpp.llama_vocab_fim_pre(vocab) == fmt.prefix_id
        assert llama_cpp.llama_vocab_fim_suf(vocab) == fmt.suffix_id
        assert llama_cpp.llama_vocab_fim_mid(vocab) == fmt.middle_id

    # codetune stops a middle at any of the family's special tokens, as the Ollama Modelfile's `stop`
    # lines do; llama.cpp alone stops at its end-of-generation ids only (not <fim_middle>, which a
    # random tiny model may emit)
    stops = (fmt.stop_ids if fmt is not None else set()) | {tokenizer.eos_token_id}
    prompts = check_prompts(tokenizer, 16)
    reference = greedy(load_model(str(source)), tokenizer, prompts, 16)
    texts = []
    for prefix, suffix in prompts:
        text = prefix if suffix is None else fmt.prompt_text(prefix, suffix)
        ids = llm.tokenize(text.encode(), add_bos=_adds_bos(tokenizer), special=True)
        expected = tokenizer(prefix)["input_ids"] if suffix is None else fmt.prompt(prefix, suffix)
        # llama.cpp puts a space before every text that follows a special token in a SentencePiece
        # vocabulary with a space prefix (Code Llama): its FIM text differs from Meta's layout there
        # (docs/export.md), so the model is given codetune's ids and only the rest is compared as text.
        if suffix is None or not fmt.adds_leading_space:
            assert ids == expected, (prefix, suffix)
        texts.append(_greedy_until_stop(llm, expected, stops, 16))
    parity = compare(prompts, reference, texts)
    print(parity.line(f"{family}: codetune vs llama.cpp"))
    # random tiny models have near-ties that another summation order can flip; most must agree
    assert parity.same >= 12, parity.differing
