"""ONNX export through optimum-onnx, then optional ONNX Runtime graph optimization and
dynamic int8 quantization, the standard optimum path. Ends with a parity check on real text."""

from __future__ import annotations

import logging
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from slimbench.backends import Device
from slimbench.backends.base import scores
from slimbench.backends.ort import full_logits, session_options
from slimbench.core.data import encode
from slimbench.optimize.fallback import Quantizer, accuracy_aware, check_fallback_fields
from slimbench.optimize.registry import register


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export (optimum), optional ORT graph optimization and dynamic int8."""

    format: Literal["onnx"] = "onnx"
    optimize: Literal["O1", "O2", "O3", "O4"] | None = None
    quantize: Literal["dynamic-int8", "static-int8"] | None = None
    per_channel: bool = False
    # static-int8: activation ranges from min/max, a percentile or entropy (KL) of their histograms; `auto`
    # tries minmax per tensor (32 texts), minmax per channel, percentile, entropy (128 texts), cheapest
    # first, and keeps the first that holds fallback_budget
    calibration: Literal["minmax", "percentile", "entropy", "auto"] = "minmax"
    calibration_samples: int = 128  # static-int8: texts (training data, else samples) for ranges
    opset: int | None = None
    # max |logit difference| against the PyTorch model on real inputs, checked before int8
    # quantization (the int8 difference is recorded, not checked)
    parity_atol: float = 1e-3
    # keep the most sensitive layers in fp32 until the int8 model keeps this share of the fp32 model's
    # accuracy on labelled data (--eval-data, else --train-data); null: no fallback
    fallback_budget: float | None = None
    max_fp32_layers: int = 8  # fallback: the most layers kept in fp32 before giving up
    # causal LMs: the prefill returns the logits of the last `logits_to_keep` positions only (what
    # generate() reads), an overridable initializer of the graph; 0 = every position
    logits_to_keep: int = 1

    def __post_init__(self):
        if self.opset is not None and not 11 <= self.opset <= 23:
            raise ValueError(f"opset must be between 11 and 23, got {self.opset}")
        if self.quantize == "static-int8" and self.optimize not in (None, "O1"):
            # ORT's transformer fusions (O2+) make contrib ops whose activations static QDQ cannot
            # quantize; ONNX Runtime still applies its own fusions to the QDQ graph at load time
            raise ValueError(
                f"static-int8 needs optimize O1 or null (got {self.optimize}): it quantizes before fusion"
            )
        if self.calibration_samples < 1:
            raise ValueError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if self.parity_atol <= 0:
            raise ValueError(f"parity_atol must be > 0, got {self.parity_atol}")
        if self.fallback_budget is not None and self.quantize is None:
            raise ValueError(
                "fallback_budget applies to quantize dynamic-int8 or static-int8, not to no quantization"
            )
        if self.calibration == "auto" and (self.quantize != "static-int8" or self.fallback_budget is None):
            raise ValueError("calibration auto needs quantize static-int8 and a fallback_budget to choose by")
        if self.logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be >= 0, got {self.logits_to_keep}")
        check_fallback_fields(self.fallback_budget, self.max_fp32_layers)

    def refuses(self, checkpoint) -> str | None:
        """Why this export cannot apply to the checkpoint's architecture, or None (asked before any load)."""
        import optimum.exporters.onnx.model_configs  # noqa: F401 - registers the ONNX configs
        from optimum.exporters.tasks import TasksManager
        from optimum.onnxruntime.utils import ORTConfigManager

        from slimbench.tasks import get_task

        model_type = checkpoint.load_config().model_type
        task = get_task(checkpoint.task).export_task
        try:
            exported = TasksManager.get_supported_tasks_for_model_type(
                model_type, "onnx", library_name="transformers"
            )
        except KeyError:
            exported = {}
        if task not in exported:
            return (f"optimum exports no {model_type} {checkpoint.task} models to ONNX (for {model_type}: "
                    f"{', '.join(exported) or 'none'}); the PyTorch recipes (bf16, torchao-int8wo, compiled) need no ONNX export")  # fmt: skip
        graphs = get_task(checkpoint.task).onnx_files
        if len(graphs) > 1 and (self.quantize == "static-int8" or self.fallback_budget is not None):
            return (f"a {checkpoint.task} model exports {len(graphs)} ONNX graphs ({', '.join(graphs)}); static-int8 "
                    "and fallback_budget calibrate and probe one graph: use quantize dynamic-int8 without "
                    "fallback_budget (the onnx-o2-int8 recipe)")  # fmt: skip
        if not self.optimize:
            return None
        try:
            ORTConfigManager.check_optimization_supported_model(model_type, None)
        except NotImplementedError:
            return (f"ONNX Runtime has no graph optimizations ({self.optimize}) for {model_type} models; the `onnx` "
                    "recipe, or `optimize: null` in a recipe of your own, exports the model without them")  # fmt: skip
        return None


def cpu_quantization_config(per_channel: bool):
    """The optimum int8 preset for the instruction set this CPU has."""
    import cpuinfo
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    flags = set(cpuinfo.get_cpu_info().get("flags", []))
    if "avx512_vnni" in flags:
        preset = AutoQuantizationConfig.avx512_vnni
    elif "avx512f" in flags:
        preset = AutoQuantizationConfig.avx512
    elif "avx2" in flags:
        preset = AutoQuantizationConfig.avx2
    else:
        preset = AutoQuantizationConfig.arm64
    return preset(is_static=False, per_channel=per_channel)


def _optimized_graphs(src: Path, dst: Path, files: tuple[str, ...]) -> Path:
    """Copy the configs of `src` (ORTOptimizer's output) and the optimized graph of each of `files`
    (`<name>_optimized.onnx`) under its own name, so that ORTModel.from_pretrained(dst) finds exactly those."""
    _copy_configs(src, dst)
    for name in files:
        shutil.copy2(src / name.replace(".onnx", "_optimized.onnx"), dst / name)
    return dst


def _copy_configs(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".json":
            shutil.copy2(f, dst / f.name)


@contextmanager
def _without_preprocessing_hint():
    """ONNX Runtime's quantizers log, on the root logger at every call, a hint to pre-process the model with
    ORT's own tools first, which slimbench's recipes do not expose: held back."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing before quantization")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _quantize_dynamic(src: Path, dst: Path, per_channel: bool, exclude=(), only=None,
                      files: tuple[str, ...] = ("model.onnx",)) -> Path:  # fmt: skip
    """ORT dynamic int8 of each graph of `files` with optimum's preset for this CPU. Called through onnxruntime
    itself: after ORT graph optimization the fused ops defeat shape inference, and only ORT's own
    entry point takes the `DefaultTensorType` option that fixes it."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    preset = cpu_quantization_config(per_channel)
    shutil.rmtree(dst, ignore_errors=True)
    _copy_configs(src, dst)
    for name in files:
        with _without_preprocessing_hint():
            quantize_dynamic(
                src / name,
                dst / name,
                per_channel=preset.per_channel,
                reduce_range=preset.reduce_range,
                weight_type=preset.weights_dtype,
                op_types_to_quantize=[getattr(op, "value", op) for op in preset.operators_to_quantize],
                nodes_to_exclude=list(exclude),
                nodes_to_quantize=list(only) if only is not None else None,
                extra_options={
                    "WeightSymmetric": preset.weights_symmetric,
                    "ActivationSymmetric": preset.activations_symmetric,
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                },
            )
    return dst


CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def calibration_settings(config: ExportConfig, available: int) -> tuple[dict, ...]:
    """Static int8 calibration settings, cheapest first (`auto`), or the one the recipe names."""
    if config.calibration != "auto":
        return ({"method": config.calibration, "per_channel": config.per_channel,
                 "samples": min(config.calibration_samples, available)},)  # fmt: skip
    few, many = min(32, available), min(config.calibration_samples, available)
    return (
        {"method": "minmax", "per_channel": False, "samples": few},
        {"method": "minmax", "per_channel": True, "samples": many},
        {"method": "percentile", "per_channel": True, "samples": many},
        {"method": "entropy", "per_channel": True, "samples": many},
    )


def _quantize_static(src: Path, dst: Path, setting: dict, texts: list, tokenizer, exclude=(), only=None,
                     cache: Path | None = None) -> Path:  # fmt: skip
    """ORT static int8 in QDQ format, activation ranges calibrated on real text (`setting`: method,
    per_channel, samples). With `cache`, the ranges are computed once and reused (layer probes)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    names = {i.name for i in onnx.load(str(src / "model.onnx"), load_external_data=False).graph.input}
    picked = [texts[i] for i in np.linspace(0, len(texts) - 1, setting["samples"]).round().astype(int)]
    # one length for every text: the histogram calibrators (percentile, entropy) stack what they collect
    length = max(len(ids) for ids in encode(tokenizer, picked, 128, "np", padding="longest")["input_ids"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(
                {k: v for k, v in encode(tokenizer, [t], length, "np").items() if k in names} for t in picked
            )

        def get_next(self):
            return next(self.items, None)

    shutil.rmtree(dst, ignore_errors=True)
    _copy_configs(src, dst)
    with _without_preprocessing_hint():
        quantize_static(
            src / "model.onnx",
            dst / "model.onnx",
            None if cache is not None and cache.is_file() else Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=setting["per_channel"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=list(exclude),
            nodes_to_quantize=list(only) if only is not None else None,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[setting["method"]]),
            calibration_cache_path=cache,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "WeightSymmetric": True},
        )
    return dst


def weight_matmuls(model: Path, dynamic: bool = True) -> list[str]:
    """Names of the MatMul and Gemm nodes that multiply by a weight: what int8 quantizes, as ORT's
    dynamic (`dynamic`) or static quantizer's nodes_to_quantize / nodes_to_exclude name them."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    # ORT's dynamic quantizer first rewrites each Gemm as a MatMul named `<gemm>_MatMul` (plus an Add)
    return [
        n.name + ("_MatMul" if dynamic and n.op_type == "Gemm" else "")
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input)
    ]


def ort_logits(model_dir: Path, enc: dict, batch_size: int = 32) -> np.ndarray:
    """A classifier graph's logits (`scores` of its outputs) on numpy encodings, ONNX Runtime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(rows: slice):
        return scores(dict(zip(outputs, session.run(None, {k: enc[k][rows] for k in names}), strict=True)))

    return np.concatenate(
        [run(slice(i, i + batch_size)) for i in range(0, len(enc["input_ids"]), batch_size)]
    )


def ort_int8(src: Path, work: Path, config: ExportConfig, ctx) -> Path:
    """ORT dynamic or static int8 of `src`; with fallback_budget, accuracy-aware (slimbench.optimize.fallback)."""
    if config.quantize == "dynamic-int8":
        settings = ({"per_channel": config.per_channel},)

        def build(setting, exclude, only):
            dst = work / ("probe" if only is not None else "quantized")
            return _quantize_dynamic(src, dst, setting["per_channel"], exclude, only, ctx.task.onnx_files)

    else:
        texts = ctx.train_data.texts if ctx.train_data is not None else ctx.sample_texts
        settings = calibration_settings(config, len(texts))

        def build(setting, exclude, only):
            dst = work / ("probe" if only is not None else "quantized")
            cache = work / "calibration-{method}-{samples}-{per_channel}.json".format(**setting)
            return _quantize_static(src, dst, setting, texts, ctx.tokenizer, exclude, only, cache)

    if config.fallback_budget is None:
        ctx.notes["quantization_settings"] = settings[0]
        return build(settings[0], [], None)
    layers = weight_matmuls(src / "model.onnx", dynamic=config.quantize == "dynamic-int8")
    return accuracy_aware(Quantizer(layers, build, ort_logits, settings), src, ctx, config.fallback_budget,
                          config.max_fp32_layers, what=f"ORT {config.quantize}")  # fmt: skip


def keep_last_logits(model_path: Path, default: int) -> None:
    """Make a causal LM graph's lm_head read only the last `logits_to_keep` positions (transformers'
    `logits_to_keep`): the hidden states are sliced to `[-k:]` before the vocabulary projection, where k
    is an overridable initializer (default `default`; 0 = every position). optimum's generate() never
    feeds it, so a prefill of b x t tokens projects b positions instead of b x t; a caller that wants every
    position (perplexity) feeds `logits_to_keep = 0`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    producers = [n for n in graph.node if "logits" in n.output]
    if len(producers) != 1 or producers[0].op_type != "MatMul":
        found = producers[0].op_type if producers else "nothing"
        raise RuntimeError(f"keep_last_logits: expected the logits to come from one MatMul, found {found}")
    head = producers[0]
    weights = {t.name for t in graph.initializer}
    hidden_index = next(i for i, name in enumerate(head.input) if name not in weights)
    hidden = head.input[hidden_index]
    graph.initializer.extend([
        numpy_helper.from_array(np.array(default, dtype=np.int64), "logits_to_keep"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], dtype=np.int64), "logits_to_keep/ends"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "logits_to_keep/axes"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "logits_to_keep/unsqueeze_axes"),
    ])  # fmt: skip
    # an initializer that is also a graph input can be overridden at run time (ONNX IR >= 4)
    graph.input.append(helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, []))
    slicing = [
        helper.make_node("Neg", ["logits_to_keep"], ["logits_to_keep/neg"], name="logits_to_keep/Neg"),
        helper.make_node("Unsqueeze", ["logits_to_keep/neg", "logits_to_keep/unsqueeze_axes"],
                         ["logits_to_keep/starts"], name="logits_to_keep/Unsqueeze"),
        helper.make_node("Slice", [hidden, "logits_to_keep/starts", "logits_to_keep/ends", "logits_to_keep/axes"],
                         ["logits_to_keep/hidden"], name="logits_to_keep/Slice"),
    ]  # fmt: skip
    head.input[hidden_index] = "logits_to_keep/hidden"
    # declared as `default` positions (what the standard loader gets), so that optimum can size its output
    # buffers (IO binding); fed logits_to_keep = 0 a caller gets every position
    positions = graph.output[[o.name for o in graph.output].index("logits")].type.tensor_type.shape.dim[1]
    positions.Clear()
    positions.dim_value = default
    # the slicing nodes go right before the head: the graph stays in topological order
    nodes = list(graph.node)
    at = nodes.index(head)
    nodes[at:at] = slicing
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(model_path))


@register("export", ExportConfig, takes=("torch",), gives="onnx")
def export(model, config: ExportConfig, ctx):
    """ONNX export through optimum, ORT graph optimization O1-O4, optional ORT dynamic or static int8
    (accuracy-aware with `fallback_budget`)."""
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    if config.optimize == "O4" and Device("cuda").unavailable():
        raise RuntimeError(
            f"export: optimize O4 (fp16) runs only on a CUDA GPU ({Device('cuda').unavailable()}); use O1-O3"
        )
    # the reference, before the export (which leaves a T5's encoder set to use a cache it cannot have); compared
    # at real tokens: a causal LM's logits at padding depend on position-id conventions
    model = model.float().eval()
    batch, real = ctx.task.compared_inputs(model, ctx.sample_batch())
    real = torch.from_numpy(real)
    with torch.inference_mode():
        reference = scores(model(**batch))
    work = ctx.workdir / "export"
    shutil.rmtree(work, ignore_errors=True)
    exported = work / "exported"
    with warnings.catch_warnings():
        # the tracer's warnings about Python values in transformers' code, which the parity check below covers
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        onnx_export_from_model(
            model, exported, opset=config.opset, task=ctx.task.export_task, do_validation=False
        )
    current = exported
    if config.optimize:
        level = AutoOptimizationConfig.with_optimization_level(
            config.optimize, for_gpu=config.optimize == "O4"
        )
        files = ctx.task.onnx_files
        ORTOptimizer.from_pretrained(current, file_names=list(files)).optimize(level, work / "optimized_raw")
        current = _optimized_graphs(work / "optimized_raw", work / "optimized", files)
    if ctx.task.generates and not ctx.task.encoder_decoder and config.logits_to_keep:  # a causal LM's prefill
        keep_last_logits(current / "model.onnx", config.logits_to_keep)
        ctx.notes["logits_to_keep"] = config.logits_to_keep
    ort_cls = ctx.task.ort_class()

    def parity(path: Path) -> float:
        got = full_logits(ort_cls.from_pretrained(path, provider="CPUExecutionProvider", session_options=session_options()),
                          batch)  # fmt: skip
        diff = (torch.as_tensor(got) - reference).abs()
        return float(ctx.task.at_real_tokens(diff, real).max())

    diff = parity(current)
    ctx.notes["export_parity_max_abs_logit_diff"] = diff
    if diff > config.parity_atol:
        raise RuntimeError(
            f"ONNX logits differ from PyTorch by {diff:.3g} > parity_atol {config.parity_atol:g}"
        )
    if config.quantize:
        current = ort_int8(current, work, config, ctx)
        ctx.notes["dtype"] = "int8"
        ctx.notes["int8_max_abs_logit_diff"] = parity(current)
    return ort_cls.from_pretrained(
        current, provider="CPUExecutionProvider", session_options=session_options()
    )
