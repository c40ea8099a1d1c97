"""Train a byte-level BPE tokenizer on a corpus, carrying EOS, PAD and the FIM tokens codetune adds."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from codetune.artifacts.corpus import is_corpus, read_corpus
from codetune.artifacts.manifest import check_output_folder
from codetune.artifacts.paths import TOKENIZER_RECORD
from codetune.errors import InputError
from codetune.files import atomic_dir, write_json
from codetune.stage import StageResult

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
MAX_FILE_BYTES = 200_000
MAX_VOCAB_SIZE = 1_048_576


def iter_texts(source: str | Path) -> Iterator[str]:
    """Texts of a corpus folder (Parquet shards) or, failing that, of the files under a folder."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"corpus not found: {source}")
    if is_corpus(source):
        for row in read_corpus(source, columns=["content"]):
            yield row["content"] or ""
        return
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in paths:
        if path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            yield path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def train_tokenizer_from_texts(texts: Iterable[str], vocab_size: int, out: str | Path) -> int:
    """Train and save a PreTrainedTokenizerFast to ``out``; returns the number of texts seen."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    seen = 0

    def counted() -> Iterator[str]:
        nonlocal seen
        for text in texts:
            seen += 1
            yield text

    from codetune.fim import ADDED_FAMILY, FAMILIES

    fim = list(FAMILIES[ADDED_FAMILY].sentinels)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN, *fim],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(counted(), trainer=trainer)
    if seen == 0:
        raise InputError("no text to train a tokenizer on")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=fim,
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    with atomic_dir(out) as tmp:
        fast.save_pretrained(tmp)
    return seen


def train_tokenizer(corpus: str | Path, vocab_size: int = 4096, out: str | Path = "tokenizer") -> StageResult:
    """CLI entry: train on a corpus folder or a folder of files and report what was written."""
    if vocab_size < 300:
        raise InputError(f"--vocab-size must be at least 300 (256 bytes + special tokens), got {vocab_size}")
    if vocab_size > MAX_VOCAB_SIZE:  # the tokenizers library aborts the process allocating for more
        raise InputError(f"--vocab-size must be at most {MAX_VOCAB_SIZE:,} (real code models use 32k-256k)")
    check_output_folder(out, stage="tokenizer")
    seen = train_tokenizer_from_texts(iter_texts(corpus), vocab_size, out)
    write_json(
        Path(out) / TOKENIZER_RECORD,
        {"corpus": str(corpus), "vocab_size": vocab_size, "texts": seen},
    )
    return StageResult("tokenizer", Path(out), {"texts": seen, "vocab_size": vocab_size})
