"""Recipes: data, not code. An ordered list of registered steps with their parameters, or a
search: a grid of such recipes, measured, the fastest within budget kept (slimbench.optimize.search
runs it).

A recipe is validated completely (step names, fields, types, values, step order) before
any model loads. Built-in recipes ship as YAML files beside this module.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slimbench import RecipeError, SlimbenchError
from slimbench.backends.device import Device
from slimbench.optimize import steps
from slimbench.optimize.registry import build_config, config_to_dict

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class StepCall:
    name: str
    config: Any


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[StepCall, ...]
    description: str = ""

    @property
    def output_kind(self) -> str:
        kind = "torch"
        registry = steps()
        for call in self.steps:
            kind = registry[call.name].output_kind(kind)
        return kind

    @property
    def min_compute_capability(self) -> tuple[int, int] | None:
        """The CUDA compute capability its variant needs (fp8 weights, 2:4 sparse kernels); None: any device."""
        needs = [
            c.config.min_compute_capability()
            for c in self.steps
            if hasattr(c.config, "min_compute_capability")
        ]
        return max((n for n in needs if n), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "steps": [{c.name: config_to_dict(c.config)} for c in self.steps],
        }


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """Validate `data` (a mapping as read from YAML) into a Recipe, or raise RecipeError."""
    if not isinstance(data, dict):
        raise RecipeError(
            f"{source}: a recipe is a mapping with 'name' and 'steps', got {type(data).__name__}"
        )
    unknown = set(data) - {"name", "steps", "description"}
    if unknown:
        raise RecipeError(f"{source}: unknown key {sorted(unknown)[0]!r} (allowed: name, steps, description)")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RecipeError(
            f"{source}: 'name' must be letters, digits, '.', '_' or '-' (it names a directory), got {name!r}"
        )
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise RecipeError(f"{source}: 'steps' must be a non-empty list, got {raw_steps!r}")
    registry = steps()
    calls, kind = [], "torch"
    for i, raw in enumerate(raw_steps, start=1):
        if isinstance(raw, str):
            raw = {raw: {}}
        if not isinstance(raw, dict) or len(raw) != 1:
            raise RecipeError(
                f"{source}: step {i}: write each step as '- name: {{field: value}}', got {raw!r}"
            )
        ((step_name, params),) = raw.items()
        if step_name not in registry:
            raise RecipeError(
                f"{source}: step {i}: unknown step {step_name!r} (known: {', '.join(sorted(registry))})"
            )
        step = registry[step_name]
        try:
            config = build_config(step, params)
        except (ValueError, TypeError) as e:
            raise RecipeError(f"{source}: step {i} '{step_name}': {e}") from None
        if kind not in step.takes:
            raise RecipeError(
                f"{source}: step {i} '{step_name}': takes a {' or '.join(step.takes)} model, "
                f"but the steps before it produce a {kind} model"
            )
        kind = step.output_kind(kind)
        calls.append(StepCall(step_name, config))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise RecipeError(f"{source}: 'description' must be text, got {description!r}")
    return Recipe(name, tuple(calls), description)


@dataclass(frozen=True)
class Search:
    name: str
    candidates: tuple[Recipe, ...]
    batch_size: int
    seq_len: int
    # per candidate: its pruning level (the index in the grid's `prune` list, least to most aggressive)
    # and its finish (the index in `finish`); the search's early stop reads them
    levels: tuple[int, ...]
    finishes: tuple[int, ...]
    description: str = ""
    device: str = "cpu"  # where the candidates are measured unless the caller says (optimize --device)


def parse_search(data: dict, source: str) -> Search:
    """A recipe file with `grid: {prune: [...], recover: {...}, finish: [...]}` instead of `steps`."""
    if not isinstance(data.get("name"), str) or not _NAME.match(data["name"]):
        raise RecipeError(
            f"{source}: 'name' must be letters, digits, '.', '_' or '-', got {data.get('name')!r}"
        )
    grid = data.get("grid")
    if not isinstance(grid, dict) or not {"prune", "finish"} <= set(grid):
        raise RecipeError(
            f"{source}: 'grid' needs 'prune' (a list) and 'finish' (a list of steps, or of lists of steps)"
        )
    unknown = set(grid) - {"prune", "recover", "finish", "batch_size", "seq_len", "device"}
    if unknown:
        raise RecipeError(f"{source}: grid: unknown key {sorted(unknown)[0]!r}")
    if not isinstance(grid["prune"], list) or not grid["prune"]:
        raise RecipeError(f"{source}: grid: 'prune' must be a non-empty list (null: no pruning)")
    candidates, levels, finishes = [], [], []
    grid_cells = itertools.product(enumerate(grid["prune"]), enumerate(grid["finish"]))
    for i, ((level, prune), (f, finish)) in enumerate(grid_cells, start=1):
        steps_: list[Any] = []
        if prune is not None:  # null: the finish alone, on the unpruned model
            steps_.append({"prune": prune})
            if grid.get("recover") is not None:
                steps_.append({"recover": grid["recover"]})
        steps_.extend(finish if isinstance(finish, list) else [finish])  # a finish of one step, or several
        candidates.append(
            parse_recipe({"name": f"{data['name']}-{i:02d}", "steps": steps_}, f"{source}: candidate {i}")
        )
        levels.append(level)
        finishes.append(f)
    device = str(grid.get("device", "cpu"))
    try:
        Device.parse(device)
    except SlimbenchError as e:
        raise RecipeError(f"{source}: grid: {e}") from None
    return Search(data["name"], tuple(candidates), int(grid.get("batch_size", 32)), int(grid.get("seq_len", 128)),
                  tuple(levels), tuple(finishes), data.get("description", ""), device)  # fmt: skip


def _parse_any(data: Any, source: str) -> Recipe | Search:
    """A Recipe, or a Search for a file with a `grid`."""
    if isinstance(data, dict) and "grid" in data:
        return parse_search(data, source)
    return parse_recipe(data, source)


def _builtins() -> dict:
    out = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            recipe = _parse_any(yaml.safe_load(entry.read_text()), f"built-in recipe {entry.name}")
            out[recipe.name] = recipe
    return out


def builtin_recipes() -> dict[str, Recipe]:
    """Built-in recipes with a fixed list of steps."""
    return {name: r for name, r in _builtins().items() if isinstance(r, Recipe)}


def builtin_searches() -> dict[str, Search]:
    """Built-in search recipes (a grid of candidates, measured, the fastest within budget kept)."""
    return {name: r for name, r in _builtins().items() if not isinstance(r, Recipe)}


def load_recipe(name_or_path: str | Path) -> Recipe | Search:
    """A built-in recipe by name, or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise RecipeError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        return _parse_any(data, str(path))
    builtin = _builtins()
    if str(name_or_path) not in builtin:
        raise RecipeError(
            f"unknown recipe {str(name_or_path)!r}: not a file, and not a built-in "
            f"(built-in: {', '.join(builtin)})"
        )
    return builtin[str(name_or_path)]
