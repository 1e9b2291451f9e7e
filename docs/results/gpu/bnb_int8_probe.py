"""Where bitsandbytes LLM.int8 loses the encoder (the H100 record: 17% accuracy, chance level).

Three parts, each written to OUT.json as soon as it is done (a probe cut short keeps what it finished):
- `ops`: each bitsandbytes int8 op on the device against a float64 reference at the model's own Linear
  shapes (row-wise quantization with and without outlier columns, the int8 matmul, its dequantization, and
  `Linear8bitLt` end to end with fp32, fp16, non-contiguous fp16 and single-row inputs);
- `layers`: every int8 Linear of the quantized model on one batch of held-out articles, its output against
  the fp32 matmul of the same input with the dequantized weight: the first layer that goes wrong, and why;
- accuracy: held-out accuracy quantized in memory, after save_pretrained + from_pretrained, without the
  outlier path (threshold 0), from fp16 weights, with the pooler kept unquantized, and in fp16.
Needs bitsandbytes; runs on a CUDA GPU, or with --device cpu on bitsandbytes' CPU backend (which tells a
GPU-only cause from one in the model). `--read-as-cuda` (CPU) makes the int8 quantizer read its input the
way bitsandbytes' CUDA kernel does, through data_ptr() as contiguous rows whatever the input's strides.

The cause this finds on the CPU: BERT's pooler takes `hidden_states[:, 0]`, a strided view; in the fp16
that transformers gives an 8-bit model by default, the CUDA kernel quantizes the wrong rows for every
sequence but a batch's first. With --read-as-cuda the CPU falls to the H100's 17%; on a GPU the same shows as
a wrong "fp16 non-contiguous input" op, `bert.pooler.dense` as the first wrong layer, and chance accuracy in
every case but "int8, pooler kept".

`--variant DIR` adds the accuracy of a saved 8-bit variant (slimbench's bnb-int8) loaded with a plain
from_pretrained.

    python3 bnb_int8_probe.py MODEL_DIR EVAL_JSONL OUT.json [--limit 400] [--seq-len 128] [--device cuda|cpu]
        [--read-as-cuda] [--variant DIR]
"""

import argparse
import json
import tempfile
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

ap = argparse.ArgumentParser()
ap.add_argument("model"), ap.add_argument("eval"), ap.add_argument("out")
ap.add_argument("--limit", type=int, default=400), ap.add_argument("--seq-len", type=int, default=128)
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
ap.add_argument("--read-as-cuda", action="store_true"), ap.add_argument("--variant")
args = ap.parse_args()
# relative error above which an op or a layer counts as wrong: int8 rounding stays under 5% even without the
# outlier path (CPU, the embedded default's shapes), a misread input gives 45% and more
BAD = 0.2

import bitsandbytes as bnb  # noqa: E402
from bitsandbytes.cextension import BNB_BACKEND, lib  # noqa: E402

if args.read_as_cuda:
    import bitsandbytes.functional as F

    quantize_rows = F.int8_vectorwise_quant

    def as_cuda_reads(A, threshold=0.0):
        if not A.is_contiguous():  # the memory from the first element on, as contiguous rows
            A = torch.as_strided(A, A.shape, (A.shape[-1], 1), A.storage_offset()).clone()
        return quantize_rows(A, threshold)

    F.int8_vectorwise_quant = as_cuda_reads

tok = AutoTokenizer.from_pretrained(args.model)
rows = [json.loads(line) for line in open(args.eval)][: args.limit]
base = AutoModelForSequenceClassification.from_pretrained(args.model)
label2id = base.config.label2id
labels = torch.tensor([label2id[r["label"]] if isinstance(r["label"], str) else r["label"] for r in rows])
on_cuda = args.device.startswith("cuda")
results = {
    "device": torch.cuda.get_device_name() if on_cuda else "cpu",
    "capability": ".".join(map(str, torch.cuda.get_device_capability())) if on_cuda else None,
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "bitsandbytes": version("bitsandbytes"),
    "bnb_backend": BNB_BACKEND,
    "bnb_library": getattr(getattr(lib, "_lib", None), "_name", None),
    "read_as_cuda": args.read_as_cuda,
}


def save():
    Path(args.out).write_text(json.dumps(results, indent=1))


def batch(texts):
    return tok(texts, padding=True, truncation=True, max_length=args.seq_len, return_tensors="pt").to(
        args.device
    )


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double().cpu(), want.double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


# ---- ops: each int8 op against a float64 reference, at the model's Linear shapes --------------------------
def ref_quant(a: torch.Tensor, threshold: float):
    """LLM.int8 row-wise quantization (bitsandbytes' algorithm): outlier columns (|a| >= threshold) are
    left out of the row scales and zeroed in the int8 rows."""
    a = a.double().cpu()
    outliers = a.abs() >= threshold if threshold > 0 else torch.zeros_like(a, dtype=torch.bool)
    cols = outliers.any(0)
    stats = a.masked_fill(outliers, 0).abs().amax(1)
    q = torch.round(a * (127.0 / stats.clamp_min(1e-12)).unsqueeze(1))
    if a.shape[0] > 1:
        q[:, cols] = 0
    return q, stats, cols


def dequant_weight(cb: torch.Tensor, scb: torch.Tensor) -> torch.Tensor:
    return cb.double().cpu() * (scb.double().cpu() / 127.0).unsqueeze(1)


def op_checks(n_in: int, n_out: int, n_rows: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_rows, n_in, generator=gen)
    x[:, :: max(1, n_in // 3)] *= 20  # a few outlier columns, as in real activations
    w = torch.randn(n_out, n_in, generator=gen) * n_in**-0.5
    bias = torch.randn(n_out, generator=gen)
    dev, out = args.device, []

    def record(name, err, **extra):
        out.append(
            {"op": name, "shape": f"{n_rows}x{n_in}->{n_out}", "rel_err": err, "ok": err < BAD, **extra}
        )

    x16 = x.to(dev, torch.float16)
    for threshold in (0.0, 6.0):
        q, stats, cols = torch.ops.bitsandbytes.int8_vectorwise_quant(x16.clone(), threshold)
        rq, rstats, rcols = ref_quant(x16, threshold)
        got_cols = torch.zeros(n_in, dtype=torch.bool)
        if cols is not None and cols.numel():
            got_cols[cols.cpu()] = True
        record(f"int8_vectorwise_quant threshold {threshold:g}", rel_err(stats, rstats),
               max_int8_diff=int((q.cpu().double() - rq).abs().max()), outlier_cols=int(got_cols.sum()),
               outlier_cols_match=bool((got_cols == rcols).all()))  # fmt: skip
    ca, sca, _ = torch.ops.bitsandbytes.int8_vectorwise_quant(x16.clone(), 0.0)
    cb, scb, _ = torch.ops.bitsandbytes.int8_vectorwise_quant(w.to(dev, torch.float16), 0.0)
    acc = torch.ops.bitsandbytes.int8_linear_matmul(ca, cb)
    want = ca.double().cpu() @ cb.double().cpu().t()
    record(
        "int8_linear_matmul", rel_err(acc, want), max_abs_diff=float((acc.double().cpu() - want).abs().max())
    )
    deq = torch.ops.bitsandbytes.int8_mm_dequant(acc, sca, scb, dtype=torch.float32, bias=bias.to(dev))
    want = want * sca.double().cpu().unsqueeze(1) * scb.double().cpu().unsqueeze(0) / 127**2 + bias.double()
    record("int8_mm_dequant", rel_err(deq, want), out_dtype=str(deq.dtype))
    for threshold in (0.0, 6.0):
        layer = bnb.nn.Linear8bitLt(n_in, n_out, threshold=threshold, has_fp16_weights=False)
        layer.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
        layer.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)
        layer = layer.to(dev).eval()
        wide = torch.zeros(n_rows, 3, n_in)
        wide[:, 1] = x
        inputs = {  # name: (input on the device, its fp64 reference)
            "fp32": (x.to(dev), x),
            "fp16": (x16, x16.float().cpu()),
            "fp16 non-contiguous": (wide.to(dev, torch.float16)[:, 1], x16.float().cpu()),
            "fp32 one row": (x[:1].to(dev), x[:1]),
        }
        for name, (inp, ref_in) in inputs.items():
            with torch.inference_mode():
                y = layer(inp)
            cb_now = layer.state.CB if layer.state.CB is not None else layer.weight.CB
            scb_now = layer.state.SCB if layer.state.SCB is not None else layer.weight.SCB
            want = ref_in.double() @ dequant_weight(cb_now, scb_now).t() + bias.double()
            record(f"Linear8bitLt threshold {threshold:g}, {name} input", rel_err(y, want),
                   contiguous=inp.is_contiguous(), out_dtype=str(y.dtype))  # fmt: skip
    return out


def int8(path, **kw):
    q = BitsAndBytesConfig(load_in_8bit=True, **kw)
    return AutoModelForSequenceClassification.from_pretrained(
        path, quantization_config=q, device_map=args.device
    ).eval()


shapes = sorted({(m.in_features, m.out_features) for m in base.modules() if isinstance(m, torch.nn.Linear)})
n_rows = min(len(rows), 4) * args.seq_len
results["ops"] = []
for n_in, n_out in shapes:
    try:
        results["ops"] += op_checks(n_in, n_out, n_rows)
    except Exception as e:  # an op that raises is itself a finding
        results["ops"].append({"shape": f"{n_rows}x{n_in}->{n_out}", "error": f"{type(e).__name__}: {e}"})
results["ops_wrong"] = [f"{o['op']} at {o['shape']}" for o in results["ops"] if not o.get("ok", False)]
print("ops wrong:", results["ops_wrong"] or "none", flush=True)
save()


# ---- layers: each int8 Linear of the quantized model on one batch of held-out articles --------------------
def layer_errors(model, texts) -> tuple[list[dict], torch.Tensor]:
    found = []

    def hook(name):
        def check(mod, inputs, output):
            x = inputs[0]
            cb = mod.state.CB if mod.state.CB is not None else mod.weight.CB
            scb = mod.state.SCB if mod.state.SCB is not None else mod.weight.SCB
            want = x.double().cpu() @ dequant_weight(cb, scb).t()
            if mod.bias is not None:
                want = want + mod.bias.double().cpu()
            found.append({"layer": name, "rel_err": rel_err(output, want), "input_dtype": str(x.dtype),
                          "input_contiguous": x.is_contiguous(), "input_absmax": float(x.abs().max()),
                          "output_nonfinite": int((~torch.isfinite(output)).sum())})  # fmt: skip

        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, bnb.nn.Linear8bitLt)]  # fmt: skip
    with torch.inference_mode():
        logits = model(**batch(texts)).logits.float().cpu()
    for h in handles:
        h.remove()
    return found, logits


texts = [r["text"] for r in rows[:32]]
try:
    found, logits = layer_errors(int8(args.model), texts)
    with torch.inference_mode():
        want = base.to(args.device).eval()(**batch(texts)).logits.float().cpu()
    results["layers"] = found
    bad = [f for f in found if f["rel_err"] >= BAD]
    results["first_wrong_layer"] = bad[0] if bad else None
    results["layers_logits_rel_err"] = rel_err(logits, want)
    results["layers_agreement"] = float((logits.argmax(-1) == want.argmax(-1)).float().mean())
except Exception as e:
    results["layers"] = f"{type(e).__name__}: {e}"
print("first wrong layer:", results.get("first_wrong_layer"), flush=True)
save()


# ---- accuracy on the held-out articles --------------------------------------------------------------------
def accuracy(model) -> float:
    preds = []
    with torch.inference_mode():
        for i in range(0, len(rows), 32):
            preds.append(
                model(**batch([r["text"] for r in rows[i : i + 32]])).logits.float().argmax(-1).cpu()
            )
    return float((torch.cat(preds) == labels).float().mean())


def saved_and_reloaded():
    with tempfile.TemporaryDirectory() as saved:
        int8(args.model).save_pretrained(saved)
        return AutoModelForSequenceClassification.from_pretrained(saved, device_map=args.device).eval()


def from_fp16_weights():
    with tempfile.TemporaryDirectory() as half:
        base.half().save_pretrained(half)
        tok.save_pretrained(half)
        return int8(half)


def in_fp16():
    q = BitsAndBytesConfig(load_in_8bit=True)
    return AutoModelForSequenceClassification.from_pretrained(
        args.model, quantization_config=q, device_map=args.device, dtype=torch.float16
    ).eval()


results["fp32"] = accuracy(base.float().to(args.device).eval())
print("fp32", results["fp32"], flush=True)
save()
cases = {
    "int8 in memory (threshold 6)": lambda: int8(args.model),
    "int8 threshold 0 (no fp16 outlier path)": lambda: int8(args.model, llm_int8_threshold=0.0),
    "int8, pooler kept": lambda: int8(args.model, llm_int8_skip_modules=["classifier", "pooler"]),
    "int8 saved and reloaded": saved_and_reloaded,
    "int8 from fp16 weights": from_fp16_weights,
    "int8 in fp16 (activations fp16)": in_fp16,
}
if args.variant:
    cases[f"saved variant {Path(args.variant).name}"] = lambda: AutoModelForSequenceClassification.from_pretrained(
        args.variant, device_map=args.device
    ).eval()
for name, make in cases.items():
    try:
        results[name] = accuracy(make())
    except Exception as e:  # a case that breaks is itself a finding
        results[name] = f"{type(e).__name__}: {e}"
    print(name, results[name], flush=True)
    save()
