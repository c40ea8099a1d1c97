"""The quickstart's pretrained base: a tiny GPTBigCode that learnt Python from the standard library.

A randomly initialised model knows nothing, so comparing it with a tuned copy would prove nothing,
and pretraining one well takes far longer than a first run should. So codetune pretrained it once,
with the recipe below, and ships the result (``codetune/assets/quickstart-base``: fp16 weights,
tokenizer, ``recipe.json``). ``recipe.json`` records the recipe, the corpus it read (the standard
library of the Python that built it, minus the package the quickstart holds out) and the SHA-256 of
every file; a test checks the shipped folder against the recipe in this file. To make it again::

    codetune quickstart --rebuild-base src/codetune/assets/quickstart-base

The same recipe with other steps or another source pretrains here instead (cached per recipe).
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from codetune.errors import InputError
from codetune.files import atomic_dir, fingerprint, read_json_object, write_json
from codetune.stage import StageResult

PRESET = "tiny-gpt-bigcode"
HELD_OUT_PACKAGE = "email"
SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "quickstart-base"
RECIPE_FILE = "recipe.json"
REBUILD = "codetune quickstart --rebuild-base src/codetune/assets/quickstart-base"
# Left out of the pretraining corpus besides the held-out package: tests, GUI and tool code.
STDLIB_SKIP = (
    "test/**",
    "idlelib/**",
    "lib2to3/**",
    "site-packages/**",
    "**/tests/**",
    "tkinter/**",
    "turtledemo/**",
    "ensurepip/**",
    "pydoc_data/**",
)


@dataclass(frozen=True)
class BaseRecipe:
    """How the base is made. The shipped one came from exactly these values (``recipe.json``)."""

    # tiny-gpt-bigcode narrowed (256 -> 192 wide, MLP 4x): 2.5M parameters, 5 MB in fp16 with its
    # 4,096-token vocabulary; the family's layout (multi-query attention, learned positions) is kept.
    # Small is also what the budget wants: 2M tokens (0.75 of a pass over the 2.7M of the corpus).
    shape: dict[str, int] = field(
        default_factory=lambda: {"n_embd": 192, "n_inner": 768, "n_layer": 4, "n_head": 4}
    )
    steps: int = 500
    # Large steps at a high peak rate, warmed up briefly and decayed to zero (cosine): on 2 cores
    # few steps can be afforded, and each should move the weights as far as it safely can.
    lr: float = 3e-3
    warmup_ratio: float = 0.05
    batch_tokens: int = 4096
    max_length: int = 256  # packed blocks of whole files, no padding
    # Half the blocks in fill-in-the-middle form, as code models are pretrained (StarCoder: 0.5): an
    # editor's requests carry the text after the cursor, and a base that never saw FIM answers noise.
    fim_rate: float = 0.5
    seed: int = 0
    held_out: str = HELD_OUT_PACKAGE
    skip: tuple[str, ...] = STDLIB_SKIP

    def record(self) -> dict[str, Any]:
        """Everything that decides the weights besides the corpus, as recorded in recipe.json."""
        from codetune.modeling.presets import preset_fingerprint

        return {
            "preset": PRESET,
            "preset_fingerprint": preset_fingerprint(PRESET),
            **asdict(self),
            "skip": list(self.skip),
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_base(folder: Path = SHIPPED, recipe: BaseRecipe | None = None) -> dict[str, Any]:
    """recipe.json of a base folder, checked: made by ``recipe`` (default: this file's), files intact."""
    recipe = recipe or BaseRecipe()
    path = folder / RECIPE_FILE
    if not path.is_file():
        raise InputError(f"{folder} holds no quickstart base ({RECIPE_FILE} missing); rebuild it: {REBUILD}")
    info = read_json_object(path)
    if info.get("recipe") != recipe.record():
        raise InputError(
            f"the quickstart base in {folder} was made by another recipe than codetune's "
            f"(codetune/quickstart/base.py); rebuild it: {REBUILD}"
        )
    for name, digest in (info.get("files") or {}).items():
        if not (folder / name).is_file() or _sha256(folder / name) != digest:
            raise InputError(
                f"{folder / name} is missing or damaged; reinstall codetune or rebuild it: {REBUILD}"
            )
    if "model.safetensors" not in (info.get("files") or {}):
        raise InputError(f"{path} lists no weights; rebuild it: {REBUILD}")
    return info


def shipped_base() -> Path:
    """The shipped base as a float32 model folder in the cache (made once from the fp16 files)."""
    import torch
    from transformers import AutoModelForCausalLM

    from codetune.modeling.presets import cache_dir

    info = check_base(SHIPPED)
    folder = cache_dir() / "quickstart" / f"shipped-{info['files']['model.safetensors'][:16]}"
    if (folder / "config.json").is_file():
        return folder
    with atomic_dir(folder) as tmp:
        model = AutoModelForCausalLM.from_pretrained(str(SHIPPED), dtype=torch.float32, local_files_only=True)
        model.save_pretrained(tmp)
        for name in [*info["files"], RECIPE_FILE]:
            if name.startswith("tokenizer") or name in {"special_tokens_map.json", RECIPE_FILE}:
                (tmp / name).write_bytes((SHIPPED / name).read_bytes())
    return folder


def _initial_model(root: Path, recipe: BaseRecipe) -> Path:
    """The preset's config narrowed to ``recipe.shape``, randomly initialised with ``recipe.seed``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from codetune.modeling.presets import PRESETS, preset_tokenizer_dir

    folder = root / "init"
    if (folder / "config.json").is_file():
        return folder
    preset = PRESETS[PRESET]
    tokenizer = AutoTokenizer.from_pretrained(str(preset_tokenizer_dir(preset.tokenizer)))
    config = preset.config(tokenizer)
    config.update(recipe.shape)
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=config.bos_token_id,
    )
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def files_dataset(
    root: Path, model: Path, max_length: int, split: tuple[float, float], seed: int, **options: Any
) -> Any:
    """The build the quickstart makes of ROOT/corpus into ROOT/dataset: whole files packed, ``split``
    the (valid, test) shares; ``options`` are further BuildConfig fields (fim_rate, repo_context)."""
    from codetune.dataset.config import BuildConfig

    return BuildConfig(
        corpus=root / "corpus",
        format="files",
        model=str(model),
        out=root / "dataset",
        max_length=max_length,
        valid_fraction=split[0],
        test_fraction=split[1],
        seed=seed,
        **options,
    )


def pretrain(
    recipe: BaseRecipe, source: Path | None = None, say: Any = print
) -> tuple[Path, list[StageResult]]:
    """Pretrain by ``recipe`` on ``source`` (default: this Python's standard library); cached per recipe.

    Returns the run's model folder and the stage results (none when the cache had it).
    """
    from codetune.artifacts.run import weights_folder
    from codetune.collect.config import CollectConfig
    from codetune.collect.pipeline import collect
    from codetune.dataset.builder import build
    from codetune.modeling.presets import cache_dir, stdlib_dir
    from codetune.train.config import TrainConfig
    from codetune.train.recipe import train

    source = source or stdlib_dir()
    key = fingerprint(recipe.record(), str(source), platform.python_version_tuple()[:2])
    root = cache_dir() / "quickstart" / f"base-{key}"
    run = root / "run"
    model = weights_folder(run, peft=False)
    if (model / "config.json").is_file():
        say(f"reusing the pretrained base in {run}")
        return model, []
    say(f"pretraining a tiny base on {source} ({recipe.steps} steps; cached for next time)")
    results = [
        collect(
            CollectConfig(
                sources=[str(source)],
                language="python",
                out=root / "corpus",
                exclude=[*recipe.skip, f"{recipe.held_out}/**"],
            )
        )
    ]
    initial = _initial_model(root, recipe)
    results.append(
        build(
            files_dataset(
                root, initial, recipe.max_length, (0.01, 0.01), recipe.seed, fim_rate=recipe.fim_rate
            )
        )
    )
    results.append(
        train(
            TrainConfig(
                model=str(initial),
                dataset=root / "dataset",
                method="full",
                out=run,
                max_steps=recipe.steps,
                lr=recipe.lr,
                warmup_ratio=recipe.warmup_ratio,
                batch_tokens=recipe.batch_tokens,
                pack_length=recipe.max_length,
                eval_max_batches=4,
                eval_every=max(recipe.steps // 4, 1),
                save_every=max(recipe.steps // 4, 1),
                seed=recipe.seed,
                resume=run.exists(),
            )
        )
    )
    return model, results


def rebuild(
    out: Path, recipe: BaseRecipe | None = None, source: Path | None = None, say: Any = print
) -> StageResult:
    """Pretrain by ``recipe`` on ``source`` (default: the standard library; cached) and write the
    shippable folder: fp16 weights, tokenizer, recipe.json. ``out`` is replaced whole, so it must be
    new, empty or an earlier base."""
    import torch
    from transformers import AutoModelForCausalLM

    from codetune.artifacts.manifest import read_manifest

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--rebuild-base {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECIPE_FILE).is_file():
        raise InputError(
            f"--rebuild-base {out} holds files that are not a quickstart base; give a new or empty folder"
        )
    recipe = recipe or BaseRecipe()
    model_dir, _ = pretrain(recipe, source, say=say)
    run = model_dir.parent
    corpus = run.parent / "corpus"
    trained = read_manifest(run).get("summary", {})
    corpus_manifest = read_manifest(corpus)
    with atomic_dir(out) as tmp:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        for file in sorted(model_dir.iterdir()):
            if file.name.startswith("tokenizer") or file.name == "special_tokens_map.json":
                (tmp / file.name).write_bytes(file.read_bytes())
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json(
            tmp / RECIPE_FILE,
            {
                "about": "The pretrained base `codetune quickstart` adapts; made by codetune itself.",
                "rebuild": REBUILD,
                "recipe": recipe.record(),
                "corpus": {
                    "source": f"the standard library of Python {platform.python_version()}"
                    if source is None
                    else str(source),
                    "fingerprint": corpus_manifest.get("fingerprint"),
                    "summary": corpus_manifest.get("summary", {}),
                },
                "result": {
                    k: trained.get(k) for k in ("steps", "train_loss", "best_eval_loss", "tokens_per_s")
                },
                "files": files,
            },
        )
    summary = {"files": len(files), **{k: trained.get(k) for k in ("steps", "train_loss", "best_eval_loss")}}
    return StageResult("quickstart base", out, summary)


def base_recipe(steps: int | None) -> BaseRecipe:
    """The shipped recipe, with another number of steps when given."""
    return BaseRecipe() if steps is None else replace(BaseRecipe(), steps=steps)
