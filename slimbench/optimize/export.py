"""ONNX export through optimum-onnx, then optional ONNX Runtime graph optimization and
dynamic int8 quantization, the standard optimum path. Ends with a parity check on real text."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from slimbench.backends import Device
from slimbench.optimize.registry import register


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export (optimum), optional ORT graph optimization and dynamic int8."""

    format: Literal["onnx"] = "onnx"
    optimize: Literal["O1", "O2", "O3", "O4"] | None = None
    quantize: Literal["dynamic-int8", "static-int8"] | None = None
    per_channel: bool = False
    calibration_samples: int = 128  # static-int8: texts (training data, else samples) for ranges
    opset: int | None = None
    # max |logit difference| against the PyTorch model on real inputs, checked before int8
    # quantization (the int8 difference is recorded, not checked)
    parity_atol: float = 1e-3
    # dynamic-int8: keep the most sensitive layers in fp32 until the int8 model keeps this share of the
    # fp32 model's accuracy on labelled data (--eval-data, else --train-data); null: no fallback
    fallback_budget: float | None = None
    max_fp32_layers: int = 8  # fallback: the most layers kept in fp32 before giving up

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
        if self.fallback_budget is not None:
            if self.quantize != "dynamic-int8":
                raise ValueError(f"fallback_budget applies to quantize dynamic-int8, not {self.quantize}")
            if not 0 < self.fallback_budget <= 1:
                raise ValueError(f"fallback_budget must be in (0, 1], got {self.fallback_budget}")
        if self.max_fp32_layers < 1:
            raise ValueError(f"max_fp32_layers must be >= 1, got {self.max_fp32_layers}")


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


def _only_onnx(src: Path, dst: Path, onnx_name: str) -> Path:
    """Copy the configs of `src` and one ONNX file, renamed model.onnx, so that
    ORTModel.from_pretrained(dst) finds exactly one model."""
    _copy_configs(src, dst)
    shutil.copy2(src / onnx_name, dst / "model.onnx")
    return dst


def _copy_configs(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".json":
            shutil.copy2(f, dst / f.name)


def _quantize_dynamic(src: Path, dst: Path, per_channel: bool, exclude=(), only=None) -> Path:
    """ORT dynamic int8 with optimum's preset for this CPU. Called through onnxruntime itself:
    after ORT graph optimization the fused ops defeat shape inference, and only ORT's own
    entry point takes the `DefaultTensorType` option that fixes it."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    preset = cpu_quantization_config(per_channel)
    shutil.rmtree(dst, ignore_errors=True)
    _copy_configs(src, dst)
    quantize_dynamic(
        src / "model.onnx",
        dst / "model.onnx",
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


def _quantize_static(src: Path, dst: Path, per_channel: bool, texts: list[str], tokenizer) -> Path:
    """ORT static int8 in QDQ format, activation ranges calibrated on real text."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    names = {i.name for i in onnx.load(str(src / "model.onnx"), load_external_data=False).graph.input}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(
                {
                    k: v
                    for k, v in tokenizer([t], max_length=128, truncation=True, return_tensors="np").items()
                    if k in names
                }
                for t in texts
            )

        def get_next(self):
            return next(self.items, None)

    _copy_configs(src, dst)
    quantize_static(
        src / "model.onnx",
        dst / "model.onnx",
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "WeightSymmetric": True},
    )
    return dst


@register("export", ExportConfig, takes=("torch",), gives="onnx")
def export(model, config: ExportConfig, ctx):
    """ONNX export through optimum, ORT graph optimization O1-O4, optional ORT dynamic int8."""
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    if config.optimize == "O4" and Device("cuda").unavailable():
        raise RuntimeError(
            f"export: optimize O4 (fp16) runs only on a CUDA GPU ({Device('cuda').unavailable()}); use O1-O3"
        )
    work = ctx.workdir / "export"
    shutil.rmtree(work, ignore_errors=True)
    exported = work / "exported"
    onnx_export_from_model(
        model.float().eval(),
        exported,
        opset=config.opset,
        task=ctx.task.export_task,
        do_validation=False,
    )
    current = exported
    if config.optimize:
        level = AutoOptimizationConfig.with_optimization_level(
            config.optimize, for_gpu=config.optimize == "O4"
        )
        ORTOptimizer.from_pretrained(current).optimize(level, work / "optimized_raw")
        current = _only_onnx(work / "optimized_raw", work / "optimized", "model_optimized.onnx")
    batch = ctx.sample_batch()
    with torch.inference_mode():
        reference = model(**batch).logits
    ort_cls = ctx.task.ort_class()

    # positions of real tokens: a causal LM's logits at padding depend on position-id conventions
    real = batch["attention_mask"].bool()

    def parity(path: Path) -> float:
        got = ort_cls.from_pretrained(path, provider="CPUExecutionProvider")(**batch).logits
        diff = (torch.as_tensor(got) - reference).abs()
        return float(diff[real].max() if diff.dim() == 3 else diff.max())

    diff = parity(current)
    ctx.notes["export_parity_max_abs_logit_diff"] = diff
    if diff > config.parity_atol:
        raise RuntimeError(
            f"ONNX logits differ from PyTorch by {diff:.3g} > parity_atol {config.parity_atol:g}"
        )
    if config.quantize == "dynamic-int8" and config.fallback_budget is not None:
        from slimbench.optimize.fallback import quantize_with_fallback

        current = quantize_with_fallback(current, work, config, ctx, _quantize_dynamic)
    elif config.quantize == "dynamic-int8":
        current = _quantize_dynamic(current, work / "quantized", config.per_channel)
    elif config.quantize == "static-int8":
        texts = ctx.train_data.texts if ctx.train_data is not None else ctx.sample_texts
        calibration = [
            texts[i] for i in range(0, len(texts), max(1, len(texts) // config.calibration_samples))
        ]
        current = _quantize_static(
            current, work / "quantized", config.per_channel, calibration, ctx.tokenizer
        )
    if config.quantize:
        ctx.notes["dtype"] = "int8"
        ctx.notes["int8_max_abs_logit_diff"] = parity(current)
    return ort_cls.from_pretrained(current, provider="CPUExecutionProvider")
