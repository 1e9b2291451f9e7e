"""Where bitsandbytes LLM.int8 loses the encoder (the H100 record: 17% accuracy, chance level): held-out accuracy
of one sequence classifier quantized in memory, after save_pretrained + from_pretrained, without the outlier
path (threshold 0), from fp16 weights, and with the pooler kept unquantized. Needs bitsandbytes; runs on a CUDA
GPU, or with --device cpu on bitsandbytes' CPU backend (which tells a GPU-only cause from one in the model).

    python3 bnb_int8_probe.py VARIANT_DIR EVAL_JSONL OUT.json [--limit 400] [--seq-len 128] [--device cuda|cpu]
"""

import argparse
import json
import tempfile
from importlib.metadata import version

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

ap = argparse.ArgumentParser()
ap.add_argument("model"), ap.add_argument("eval"), ap.add_argument("out")
ap.add_argument("--limit", type=int, default=400), ap.add_argument("--seq-len", type=int, default=128)
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
args = ap.parse_args()
bnb_version = version("bitsandbytes")
tok = AutoTokenizer.from_pretrained(args.model)
rows = [json.loads(line) for line in open(args.eval)][: args.limit]
base = AutoModelForSequenceClassification.from_pretrained(args.model)
label2id = base.config.label2id
labels = torch.tensor([label2id[r["label"]] if isinstance(r["label"], str) else r["label"] for r in rows])


def accuracy(model) -> float:
    preds = []
    with torch.inference_mode():
        for i in range(0, len(rows), 32):
            enc = tok([r["text"] for r in rows[i : i + 32]], padding=True, truncation=True,
                      max_length=args.seq_len, return_tensors="pt").to(args.device)  # fmt: skip
            preds.append(model(**enc).logits.float().argmax(-1).cpu())
    return float((torch.cat(preds) == labels).float().mean())


def int8(path, **kw):
    q = BitsAndBytesConfig(load_in_8bit=True, **kw)
    return AutoModelForSequenceClassification.from_pretrained(
        path, quantization_config=q, device_map=args.device
    ).eval()


device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
results = {"device": device_name, "torch": torch.__version__, "bitsandbytes": bnb_version}
results["fp32"] = accuracy(base.to(args.device).eval())
print("fp32", results["fp32"], flush=True)
cases = {
    "int8 in memory (threshold 6)": lambda: int8(args.model),
    "int8 threshold 0 (no fp16 outlier path)": lambda: int8(args.model, llm_int8_threshold=0.0),
    "int8, pooler kept": lambda: int8(args.model, llm_int8_skip_modules=["classifier", "pooler"]),
}
for name, make in cases.items():
    try:
        results[name] = accuracy(make())
    except Exception as e:  # a probe that breaks is itself a finding
        results[name] = f"{type(e).__name__}: {e}"
    print(name, results[name], flush=True)
try:
    with tempfile.TemporaryDirectory() as saved:
        int8(args.model).save_pretrained(saved)
        results["int8 saved and reloaded"] = accuracy(
            AutoModelForSequenceClassification.from_pretrained(saved, device_map=args.device).eval()
        )
except Exception as e:
    results["int8 saved and reloaded"] = f"{type(e).__name__}: {e}"
print("int8 saved and reloaded", results["int8 saved and reloaded"], flush=True)
with tempfile.TemporaryDirectory() as half:
    base.half().save_pretrained(half)
    tok.save_pretrained(half)
    try:
        results["int8 from fp16 weights"] = accuracy(int8(half))
    except Exception as e:
        results["int8 from fp16 weights"] = f"{type(e).__name__}: {e}"
print("int8 from fp16 weights", results["int8 from fp16 weights"], flush=True)
json.dump(results, open(args.out, "w"), indent=1)
