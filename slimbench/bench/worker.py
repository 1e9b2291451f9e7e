"""One measurement in a fresh process, so its peak memory is its own.

`python -m slimbench.bench.worker '<job json>'` prints one line `SLIMBENCH_RESULT <json>`.
The parent sets the thread count in the environment before this process starts.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

RESULT_PREFIX = "SLIMBENCH_RESULT "


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since it started.

    On Linux, VmHWM of the current address space: ru_maxrss would also count the parent's
    pages, since it survives fork and exec."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure_latency(job: dict) -> dict:
    import torch

    from slimbench.bench.loaders import load
    from slimbench.bench.timing import TimingPlan, summarize, time_calls
    from slimbench.data import read_texts
    from slimbench.environment import cpu_model

    device, bs, seq_len = job["device"], job["batch_size"], job["seq_len"]
    cuda = device == "cuda"
    loaded = load(Path(job["model_dir"]), device, job["num_threads"])
    texts = read_texts(job["eval_path"])
    # a few distinct real batches, encoded before timing starts
    n_batches = max(1, min(8, len(texts) // bs))
    pool = [
        loaded.encode([texts[(b * bs + j) % len(texts)] for j in range(bs)], seq_len)
        for b in range(n_batches)
    ]
    if loaded.generate is not None:  # causal LM: a prompt of seq_len tokens, then NEW_TOKENS greedy
        from slimbench.lm import NEW_TOKENS

        def call(i):
            return loaded.generate(pool[i % n_batches], NEW_TOKENS)

        items = bs * NEW_TOKENS  # throughput in generated tokens per second
    else:

        def call(i):
            return loaded.forward(pool[i % n_batches])

        items = bs
    times = time_calls(call, TimingPlan(**job["plan"]), cuda=cuda)
    out = summarize(times, items)
    out["peak_rss_bytes"] = peak_rss_bytes()
    out["num_threads"] = torch.get_num_threads()
    if cuda:
        out["device_name"] = torch.cuda.get_device_name()
        out["gpu_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        out["gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    else:
        out["device_name"] = cpu_model()
        out["gpu_peak_allocated_bytes"] = out["gpu_peak_reserved_bytes"] = None
    return out


def measure_perplexity(loaded, job: dict) -> dict:
    """Perplexity on the first EVAL_BLOCKS blocks of the packed eval text; predictions are the
    argmax next token at every position, for agreement with the baseline."""
    import numpy as np

    from slimbench.data import read_texts
    from slimbench.lm import EVAL_BLOCKS, pack, perplexity

    blocks = pack(loaded.tokenizer, read_texts(job["eval_path"]), job["seq_len"])[:EVAL_BLOCKS]

    def logits_of(ids):
        batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if loaded.return_tensors == "pt":
            import torch

            batch = {k: torch.from_numpy(v) for k, v in batch.items()}
        return loaded.logits(loaded.to_device(batch))

    ppl, predictions = perplexity(logits_of, blocks)
    return {"metric_name": "perplexity", "metric": ppl, "predictions": predictions}


def measure_accuracy(job: dict) -> dict:
    import numpy as np
    from transformers import AutoConfig

    from slimbench.bench.loaders import load
    from slimbench.data import read_labelled

    model_dir = Path(job["model_dir"])
    loaded = load(model_dir, job["device"], job["num_threads"])
    if loaded.manifest["task"] == "causal-lm":
        return measure_perplexity(loaded, job)
    if loaded.manifest["task"] != "text-classification":
        from slimbench import SlimbenchError

        raise SlimbenchError(f"{model_dir}: scoring task {loaded.manifest['task']!r} is not supported yet")
    data = read_labelled(job["eval_path"], AutoConfig.from_pretrained(model_dir).label2id)
    logits = []
    for i in range(0, len(data), 32):
        logits.append(loaded.logits(loaded.encode(data.texts[i : i + 32], job["seq_len"])))
    logits = np.concatenate(logits)
    predictions = logits.argmax(-1)
    return {
        "metric_name": "accuracy",
        "metric": float((predictions == np.asarray(data.labels)).mean()),
        "predictions": predictions.tolist(),
        "logits": logits.round(5).tolist(),
    }


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    out = measure_latency(job) if job["mode"] == "latency" else measure_accuracy(job)
    print(RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
