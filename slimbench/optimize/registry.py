"""Steps and their configs: a step is a frozen config dataclass plus one function
`apply(model, config, ctx) -> model`; recipe parameters are validated against the config's field
types before any model loads. The list of steps (the registry the CLI, recipes and the README
table read) is in slimbench.optimize."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# What a model is between steps; each kind is a format of slimbench.backends (how it is saved,
# loaded and placed). "torch": a transformers PreTrainedModel; "torch-int8": eager PyTorch with
# dynamically quantized Linear layers (saved as TorchScript); "onnx": an optimum ORTModel;
# "torch-kernels": a transformers model with slimbench's Triton kernels swapped in; "torch-aoti": an
# AOTInductor package compiled for one device; "onnx-genai": an ONNX Runtime GenAI model directory (causal LMs).
ModelKind = Literal["torch", "torch-int8", "torch-kernels", "onnx", "torch-aoti", "onnx-genai"]


@dataclass(frozen=True)
class Step:
    name: str
    config_cls: type
    apply: Callable[..., Any]
    takes: tuple[ModelKind, ...]
    gives: ModelKind | None  # None: the step keeps the kind it was given
    summary: str
    tasks: tuple[str, ...] | None = None  # the tasks it applies to; None: every task

    def refuses(self, task: str) -> str | None:
        """Why this step cannot apply to a checkpoint of `task`, or None."""
        if self.tasks is None or task in self.tasks:
            return None
        names = ", ".join(self.tasks[:-1]) + " and " * (len(self.tasks) > 1) + self.tasks[-1]
        return f"step '{self.name}' applies to {names} checkpoints, not {task}"

    def output_kind(self, kind: str) -> str:
        return self.gives or kind

    def __call__(self, model, config, ctx):
        return self.apply(model, config, ctx)


def register(name: str, config_cls: type, *, takes=("torch",), gives: str | None = None, tasks=None):
    """Make `apply(model, config, ctx) -> model` the step `name`, the word recipes use. The steps a
    recipe may name are the explicit list in slimbench.optimize."""

    def wrap(fn) -> Step:
        doc = (fn.__doc__ or config_cls.__doc__ or "").strip().splitlines()
        return Step(name, config_cls, fn, tuple(takes), gives, doc[0] if doc else "",
                    tuple(tasks) if tasks is not None else None)  # fmt: skip

    return wrap


# ---------------------------------------------------------------------------------------
# Config validation: a recipe's parameters are checked against the dataclass field types
# before any model loads; a config's __post_init__ checks what types alone cannot.


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_type(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(tp) or (Any,)
        return f"list of {describe_type(inner)}"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp` or raise ValueError with what is allowed."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp) and not (isinstance(value, bool) and True not in typing.get_args(tp)):
            return value
        hint = ""
        if isinstance(value, int) and any(isinstance(a, str) and ":" in a for a in typing.get_args(tp)):
            hint = " (YAML reads an unquoted 2:4 as the number 124: quote it)"
        raise ValueError(f"must be {describe_type(tp)}, got {value!r}{hint}")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg)
            except ValueError:
                pass
        raise ValueError(f"must be {describe_type(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ValueError(f"must be null, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"must be a {describe_type(tp)}, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return tuple(coerce(v, inner) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(value, tp):
        return value
    raise ValueError(f"must be {describe_type(tp)}, got {value!r}")


def build_config(step: Step, params: dict[str, Any] | None) -> Any:
    """Build `step`'s config from recipe parameters. Raises ValueError naming the field."""
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ValueError(f"parameters must be a mapping of field: value, got {params!r}")
    hints = typing.get_type_hints(step.config_cls)
    fields = {f.name: f for f in dataclasses.fields(step.config_cls)}
    kwargs = {}
    for key, value in params.items():
        if key not in fields:
            allowed = ", ".join(fields) or "no parameters"
            raise ValueError(f"unknown field {key!r} (allowed: {allowed})")
        try:
            kwargs[key] = coerce(value, hints[key])
        except ValueError as e:
            raise ValueError(f"{key} {e}") from None
    return step.config_cls(**kwargs)


def config_fields(config_cls: type) -> list[tuple[str, str, Any]]:
    """(name, type, default) for each field, for `slimbench recipes` and the README table."""
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append((f.name, describe_type(hints[f.name]), default))
    return out


def config_to_dict(config: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
