"""Accuracy-aware int8, the "fallback" strategy of Intel Neural Compressor: quantize every layer; where
the int8 model falls below the budget, measure what each layer costs on its own (that layer alone in
int8, logit error against fp32 on a calibration slice), then keep the most sensitive layers in fp32,
one at a time, until the model keeps `budget` of the fp32 model's accuracy. The manifest records which
layers stayed in fp32, their sensitivities and the accuracy after each step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

MAX_SAMPLES = 512  # labelled examples scored per candidate (evenly spaced over the data)
CALIBRATION = 32  # of those, the ones each layer's sensitivity is measured on


def weight_matmuls(model: Path) -> list[str]:
    """Names of the MatMul and Gemm nodes that multiply by a weight (an initializer): what int8 quantizes."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    # ORT's dynamic quantizer first rewrites each Gemm as a MatMul named `<gemm>_MatMul` (plus an Add):
    # that is the name its nodes_to_quantize / nodes_to_exclude match
    return [
        n.name + ("_MatMul" if n.op_type == "Gemm" else "")
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input)
    ]


def quantize_with_fallback(fp32: Path, work: Path, config, ctx, quantize) -> Path:
    """`quantize(src, dst, per_channel, exclude=(), only=None) -> dst` is ORT dynamic int8."""
    import onnxruntime as ort

    if ctx.task.name != "text-classification":
        raise ValueError(f"fallback_budget scores text classification, not {ctx.task.name}")
    data, source = (ctx.eval_data, "eval") if ctx.eval_data is not None else (ctx.train_data, "train")
    if data is None:
        raise ValueError("fallback_budget needs labelled data: pass --eval-data (or --train-data)")
    picked = np.linspace(0, len(data) - 1, min(len(data), MAX_SAMPLES)).round().astype(int)
    labels = np.asarray(data.labels)[picked]
    enc = ctx.tokenizer([data.texts[i] for i in picked], max_length=128, truncation=True, padding="max_length",
                        return_tensors="np")  # fmt: skip

    def logits(model_dir: Path, rows: slice = slice(None)) -> np.ndarray:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 0
        session = ort.InferenceSession(
            str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        feed = {k: enc[k][rows] for k in names}
        n = len(feed[names[0]])
        return np.concatenate(
            [session.run(None, {k: v[i : i + 32] for k, v in feed.items()})[0] for i in range(0, n, 32)]
        )

    def accuracy(model_dir: Path) -> float:
        return float((logits(model_dir).argmax(-1) == labels).mean())

    reference = logits(fp32)
    fp32_accuracy = float((reference.argmax(-1) == labels).mean())
    target = config.fallback_budget * fp32_accuracy
    current = quantize(fp32, work / "quantized", config.per_channel)
    int8_accuracy = accuracy(current)
    notes = {"budget": config.fallback_budget, "data": source, "samples": len(picked),
             "fp32_accuracy": fp32_accuracy, "int8_everywhere_accuracy": int8_accuracy, "int8_accuracy": int8_accuracy,
             "fp32_layers": [], "steps": []}  # fmt: skip
    if int8_accuracy < target:
        calibration = slice(0, min(CALIBRATION, len(picked)))
        sensitivity = {}
        for node in tqdm(weight_matmuls(fp32 / "model.onnx"), desc="int8 sensitivity", unit="layer"):
            probe = quantize(fp32, work / "probe", config.per_channel, only=[node])
            sensitivity[node] = float(((logits(probe, calibration) - reference[calibration]) ** 2).mean())
        order = sorted(sensitivity, key=sensitivity.get, reverse=True)
        notes["sensitivity"] = {node: sensitivity[node] for node in order}
        for node in order[: config.max_fp32_layers]:
            notes["fp32_layers"].append(node)
            current = quantize(fp32, work / "quantized", config.per_channel, exclude=notes["fp32_layers"])
            int8_accuracy = accuracy(current)
            notes["steps"].append({"fp32_layer": node, "accuracy": int8_accuracy})
            if int8_accuracy >= target:
                break
        notes["int8_accuracy"] = int8_accuracy
        if int8_accuracy < target:
            raise ValueError(
                f"fallback: with {len(notes['fp32_layers'])} layers in fp32 the int8 model keeps "
                f"{int8_accuracy / fp32_accuracy:.2%} of the fp32 accuracy on {len(picked)} {source} examples, "
                f"below {config.fallback_budget:.0%} (kept in fp32: {', '.join(notes['fp32_layers'])}); raise "
                "max_fp32_layers or choose another recipe"
            )
    notes["reason"] = (
        "int8 everywhere kept the budget" if not notes["fp32_layers"]
        else "the most sensitive layers, kept in fp32 until the budget was kept"
    )  # fmt: skip
    ctx.notes["fallback"] = notes
    return current
