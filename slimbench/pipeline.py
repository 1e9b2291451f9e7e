"""checkpoint -> recipe steps -> saved variant. The only place that runs a recipe."""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from slimbench import SlimbenchError
from slimbench.artifacts import MANIFEST, read_manifest, save_variant
from slimbench.checkpoint import Checkpoint
from slimbench.optimize.context import StepContext
from slimbench.recipes import Recipe
from slimbench.registry import steps


@dataclass
class Variant:
    """The model a recipe produced, in memory (None when an up-to-date artifact was reused),
    plus its artifact directory."""

    name: str
    kind: str
    path: Path
    model: Any = None


def reads_train_data(call) -> bool:
    """Steps whose result depends on the training data: recovery, structured-pruning scores,
    static int8 calibration."""
    config = call.config
    return (
        call.name == "recover"
        or (call.name == "prune" and config.method == "structured")
        or (call.name == "export" and config.quantize == "static-int8")
    )


def data_sha256(data) -> str | None:
    if data is None:
        return None
    h = hashlib.sha256()
    for text, label in zip(data.texts, data.labels, strict=True):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()


def is_current(variant_dir: Path, recipe: Recipe, source: dict) -> bool:
    """True when `variant_dir` already holds this recipe applied to this exact checkpoint and data."""
    if not (variant_dir / MANIFEST).is_file():
        return False
    manifest = read_manifest(variant_dir)
    return manifest.get("recipe") == recipe.to_dict() and manifest.get("source") == source


def optimize(
    checkpoint: Checkpoint,
    recipe: Recipe,
    out_dir: Path,
    *,
    sample_texts: list[str],
    train_data=None,
    force: bool = False,
    log=print,
    progress: bool = True,
) -> Variant:
    """Apply `recipe` to `checkpoint` and save the variant as `<out_dir>/<recipe.name>/`."""
    if not sample_texts:
        raise SlimbenchError("optimize needs a few real texts for tracing and parity checks")
    uses_data = train_data is not None and any(reads_train_data(call) for call in recipe.steps)
    if train_data is None and any(call.name == "recover" for call in recipe.steps):
        raise SlimbenchError(
            f"recipe {recipe.name!r} has a 'recover' step: pass training data (--train-data FILE)"
        )
    source = {
        "path": str(checkpoint.path),
        "sha256": checkpoint.weights_sha256,
        "train_data_sha256": data_sha256(train_data) if uses_data else None,
    }
    final = Path(out_dir) / recipe.name
    if not force and is_current(final, recipe, source):
        log(f"[{recipe.name}] up to date in {final}")
        return Variant(recipe.name, read_manifest(final)["kind"], final)
    registry = steps()
    tokenizer = checkpoint.load_tokenizer()
    model = checkpoint.load_model()
    kind = "torch"
    with tempfile.TemporaryDirectory(prefix="slimbench-") as work:
        ctx = StepContext(checkpoint, tokenizer, Path(work), sample_texts, train_data=train_data)
        timings = {}
        bar = tqdm(recipe.steps, desc=recipe.name, unit="step", disable=not progress)
        for i, call in enumerate(bar, start=1):
            step = registry[call.name]
            bar.set_postfix_str(call.name)
            log(f"[{recipe.name}] step {i}/{len(recipe.steps)}: {call.name}")
            start = time.perf_counter()
            try:
                model = step.apply(model, call.config, ctx)
            except SlimbenchError:
                raise
            except Exception as e:
                raise SlimbenchError(f"recipe {recipe.name!r} step {i} '{call.name}' failed: {e}") from e
            timings[f"{i}:{call.name}"] = round(time.perf_counter() - start, 3)
            kind = step.output_kind(kind)
        bar.close()
        manifest = {
            "recipe": recipe.to_dict(),
            "task": checkpoint.task,
            "source": source,
            "dtype": ctx.notes.get("dtype", "float32"),
            "steps_seconds": timings,
            "notes": ctx.notes,
        }
        path = save_variant(
            model,
            kind,
            out_dir,
            recipe.name,
            tokenizer=tokenizer,
            manifest=manifest,
            example_inputs=ctx.sample_batch(batch_size=2, seq_len=32),
        )
    log(f"[{recipe.name}] saved {path}")
    return Variant(recipe.name, kind, path, model)
