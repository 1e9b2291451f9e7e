"""checkpoint -> recipe steps -> checked, saved variant. The only place that runs a recipe.

Before a variant takes its name, the saved directory is loaded back with its standard loader and
compared with the source checkpoint on sample inputs (agreement of predictions, logits error); a
variant below the threshold is refused with the figures unless the caller allows degraded ones.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from slimbench import SlimbenchError
from slimbench.backends import Device, cannot_run, load
from slimbench.backends.base import scores
from slimbench.core.artifacts import check_replaceable, save_variant
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import encode
from slimbench.core.manifest import MANIFEST, read_manifest
from slimbench.optimize import steps
from slimbench.optimize.context import StepContext
from slimbench.optimize.recipes import Recipe
from slimbench.tasks import get_task

MIN_AGREEMENT = 0.9  # share of the source's predictions a saved variant must keep on the sample inputs


class DegradedVariant(SlimbenchError):
    """A saved variant that disagrees with its source beyond the threshold."""


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


def reads_eval_data(call) -> bool:
    """Steps whose result depends on held-out labelled data: accuracy-aware quantization (fallback)."""
    return getattr(call.config, "fallback_budget", None) is not None


def data_sha256(data) -> str | None:
    if data is None:
        return None
    h = hashlib.sha256()
    labels = data.labels if data.labels is not None else [""] * len(data)
    for text, label in zip(data.texts, labels, strict=True):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()


def is_current(variant_dir: Path, recipe: Recipe, source: dict) -> bool:
    """True when `variant_dir` already holds this recipe applied to this exact checkpoint and data."""
    if not (variant_dir / MANIFEST).is_file():
        return False
    manifest = read_manifest(variant_dir)
    return manifest.get("recipe") == recipe.to_dict() and manifest.get("source") == source


def check_device(manifest: dict, prefer: Device | None = None) -> tuple[Device | None, str | None]:
    """Where the agreement check runs: `prefer` (else the GPU where there is one) where the variant runs there,
    else the CPU; (None, reason) where the variant runs on neither."""
    reasons = []
    for device in dict.fromkeys([prefer or Device.best(), Device("cpu")]):
        reason = cannot_run(manifest, device)
        if reason is None:
            return device, None
        reasons.append(f"{device}: {reason}")
    return None, "; ".join(reasons)


def agreement_check(checkpoint: Checkpoint, variant_dir: Path, texts: list[str], max_len: int = 128,
                    prefer: Device | None = None) -> dict:  # fmt: skip
    """Load the saved variant as a deployment would and compare it with the source checkpoint on
    `texts` (one right-padded batch; causal LMs compared at real tokens only, where position
    conventions cannot differ; a seq2seq model along its source's own output): the share of predictions
    (class, tag or next token) it keeps, and the largest logit difference."""
    import torch

    device, reason = check_device(read_manifest(variant_dir), prefer)
    if device is None:
        return {"checked": False, "reason": f"cannot run here ({reason})"}
    task = get_task(checkpoint.task)
    loaded = load(variant_dir, device)
    tokenizer = checkpoint.load_tokenizer()
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = encode(tokenizer, texts, max_len, return_tensors="np", padding="longest")
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    as_torch = {k: torch.from_numpy(v).to(str(device)) for k, v in enc.items()}
    source = checkpoint.load_model().to(str(device))
    as_torch, mask = task.compared_inputs(source, as_torch)
    with torch.inference_mode():
        expected = scores(source(**as_torch)).float().cpu().numpy()
    del source
    as_numpy = {k: v.cpu().numpy() for k, v in as_torch.items()}
    got = loaded.logits(as_torch if loaded.return_tensors == "pt" else as_numpy)
    diff = np.abs(expected - got)
    return {
        "checked": True,
        "device": str(device),
        "samples": len(texts),
        "agreement": task.agreement(expected, got, mask, checkpoint.path),
        "max_abs_logit_diff": float(task.at_real_tokens(diff, mask).max()),
    }


def optimize(
    checkpoint: Checkpoint,
    recipe: Recipe,
    out_dir: Path,
    *,
    sample_texts: list[str],
    train_data=None,
    eval_data=None,
    force: bool = False,
    min_agreement: float = MIN_AGREEMENT,
    allow_degraded: bool = False,
    overwrite: bool = False,
    device: Device | str | None = None,
    log=print,
    progress: bool = True,
) -> Variant:
    """Apply `recipe` to `checkpoint` and save the variant as `<out_dir>/<recipe.name>/`, once it
    has passed the agreement check (or `allow_degraded`). Steps that choose a device, and the check, work on
    `device` (a search's: where it measures), else on the first GPU where there is one."""
    if not sample_texts:
        raise SlimbenchError("optimize needs a few real texts for tracing and parity checks")
    device = None if device is None else Device.parse(device).require()
    registry = steps()
    for i, call in enumerate(recipe.steps, start=1):
        reason = registry[call.name].refuses(checkpoint.task)
        if reason:
            raise SlimbenchError(f"recipe {recipe.name!r}: {reason}")
        reason = call.config.refuses(checkpoint) if hasattr(call.config, "refuses") else None
        if reason:
            raise SlimbenchError(f"recipe {recipe.name!r} step {i} '{call.name}': {reason}")
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
    if checkpoint.adapter is not None:
        source["adapter"] = str(checkpoint.adapter)
    if any(reads_eval_data(call) for call in recipe.steps):
        source["eval_data_sha256"] = data_sha256(eval_data)
    final = Path(out_dir) / recipe.name
    check_replaceable(final, overwrite)  # said before any work is done, and again when saving
    if not force and is_current(final, recipe, source):
        log(f"[{recipe.name}] up to date in {final}")
        return Variant(recipe.name, read_manifest(final)["kind"], final)
    tokenizer = checkpoint.load_tokenizer()
    model = checkpoint.load_model()
    kind = "torch"
    with tempfile.TemporaryDirectory(prefix="slimbench-") as work:
        ctx = StepContext(checkpoint, tokenizer, Path(work), sample_texts, train_data=train_data,
                          eval_data=eval_data, device=device)  # fmt: skip
        timings = {}
        with tqdm(
            recipe.steps, desc=recipe.name, unit="step", disable=not progress
        ) as bar:  # closed on Ctrl-C too
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
        manifest = {
            "recipe": recipe.to_dict(),
            "task": checkpoint.task,
            "source": source,
            "dtype": ctx.notes.get("dtype", "float32"),
            "steps_seconds": timings,
            "notes": ctx.notes,
        }

        def check(staged: Path) -> dict:
            try:
                result = agreement_check(checkpoint, staged, sample_texts, prefer=device)
            except Exception as e:  # a variant that cannot even run on the sample inputs
                if not allow_degraded:
                    raise DegradedVariant(
                        f"recipe {recipe.name!r}: the saved variant failed on the sample inputs "
                        f"({type(e).__name__}: {e}); not saved. Pass --allow-degraded to keep it anyway"
                    ) from e
                log(f"[{recipe.name}] WARNING: the saved variant failed on the sample inputs ({type(e).__name__}: "
                    f"{e}; kept: --allow-degraded)")  # fmt: skip
                return {"checked": False, "reason": f"failed on the sample inputs: {type(e).__name__}: {e}",
                        "passed": False}  # fmt: skip
            result["min_agreement"] = min_agreement
            if not result["checked"]:
                log(f"[{recipe.name}] agreement with the source not checked: {result['reason']}")
                return result
            task = get_task(checkpoint.task)
            measure = task.agreement_described(checkpoint.path)
            figures = (f"agreement {result['agreement']:.1%} ({measure}) with the source on "
                       f"{result['samples']} sample inputs, max |{task.output_name} diff| "
                       f"{result['max_abs_logit_diff']:.3g}")  # fmt: skip
            result["passed"] = result["agreement"] >= min_agreement
            if not result["passed"]:
                if not allow_degraded:
                    raise DegradedVariant(
                        f"recipe {recipe.name!r}: the saved variant keeps only {figures} (needs "
                        f"{min_agreement:.0%}); not saved. Pass --allow-degraded to keep it anyway"
                    )
                log(f"[{recipe.name}] WARNING: degraded variant kept (--allow-degraded): {figures}")
            else:
                log(f"[{recipe.name}] checked: {figures}")
            return result

        try:
            path = save_variant(
                model,
                kind,
                out_dir,
                recipe.name,
                tokenizer=tokenizer,
                manifest=manifest,
                example_inputs=ctx.sample_batch(batch_size=2, seq_len=32),
                check=check,
                overwrite=overwrite,
            )
        except SlimbenchError:
            raise
        except Exception as e:  # one line, as a failed step: the demo and the suite go on to the next recipe
            raise SlimbenchError(
                f"recipe {recipe.name!r}: saving the variant failed: {type(e).__name__}: {e}"
            ) from e
    log(f"[{recipe.name}] saved {path}")
    return Variant(recipe.name, kind, path, model)
