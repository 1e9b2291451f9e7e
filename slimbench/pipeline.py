"""The one entry from a checkpoint to saved variants: a recipe runs its steps (optimize.apply), a
search builds, measures and chooses among candidates (optimize.search)."""

from __future__ import annotations

from pathlib import Path

from slimbench import SlimbenchError
from slimbench.core.checkpoint import Checkpoint
from slimbench.optimize.apply import MIN_AGREEMENT, DegradedVariant, Variant, optimize, reads_eval_data
from slimbench.optimize.recipes import Recipe, Search
from slimbench.tasks import BUDGET

__all__ = ["MIN_AGREEMENT", "DegradedVariant", "Variant", "optimize", "run"]


def search_device(recipe: Recipe | Search, device: str | None):
    """Where a search builds and measures its candidates: `device`, else the one the search names; refused in one
    line where that device is missing here, and for a recipe that is not a search (None without a device)."""
    from slimbench.backends.device import Device

    if not isinstance(recipe, Search):
        if device is not None:
            raise SlimbenchError(f"--device chooses where a search measures its candidates; {recipe.name!r} is not a "
                                 "search (its steps run on the GPU where there is one)")  # fmt: skip
        return None
    try:
        return Device.parse(device or recipe.device).require()
    except SlimbenchError as e:
        raise SlimbenchError(
            f"{recipe.name!r} measures its candidates on {e} (--device chooses where)"
        ) from None


def run(checkpoint: Checkpoint, recipe: Recipe | Search, out_dir: Path, *, sample_texts: list[str], train_data=None,
        eval_path: Path | None = None, force: bool = False, min_agreement: float = MIN_AGREEMENT,
        allow_degraded: bool = False, overwrite: bool = False, budget: float = BUDGET,
        max_minutes: float | None = None, device: str | None = None, log=print) -> Path:  # fmt: skip
    """Apply a recipe, or run a search (its candidates measured on `device`, else on the device the search
    names); returns the directory of the variant kept."""
    gate = {"min_agreement": min_agreement, "allow_degraded": allow_degraded, "overwrite": overwrite}
    where = search_device(recipe, device)  # said before anything is built
    if isinstance(recipe, Search):
        from slimbench.optimize.search import run_search

        if eval_path is None:
            raise SlimbenchError(f"recipe {recipe.name!r} measures its candidates: pass --eval-data FILE")
        return run_search(recipe, checkpoint, Path(out_dir), eval_path=eval_path, train_data=train_data,
                          sample_texts=sample_texts, bench_kwargs={"device": where}, gate_kwargs=gate, budget=budget,
                          max_minutes=max_minutes, log=log)  # fmt: skip
    eval_data = None
    if eval_path is not None and any(reads_eval_data(call) for call in recipe.steps):
        from slimbench.tasks import get_task

        eval_data = get_task(checkpoint.task).read_train(eval_path, checkpoint.load_config())
    return optimize(checkpoint, recipe, out_dir, sample_texts=sample_texts, train_data=train_data,
                    eval_data=eval_data, force=force, log=log, **gate).path  # fmt: skip
