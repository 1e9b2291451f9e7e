"""Causal LMs as ONNX Runtime GenAI models (a genai_config.json beside model.onnx), run by
onnxruntime-genai's C++ generation loop: GroupQueryAttention over a KV cache that is written in place
(no copy of the cache per token) and a prefill that projects only the last position."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from slimbench.backends.base import Backend, Loaded
from slimbench.backends.device import Device
from slimbench.backends.ort import session_options

CONFIG = "genai_config.json"
PRUNED = "/prune/"  # onnxruntime-genai's builder names the last-position slice before the LM head so


def every_position(model_path: Path, out_dir: Path) -> Path:
    """A copy of the graph whose LM head projects every position: the builder's last-position slice
    (Gather at -1, Unsqueeze) is bypassed, nothing else changes. For perplexity and agreement, which
    read the logits at every position; generation runs the graph as built."""
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    slice_nodes = [n for n in graph.node if PRUNED in n.name]
    gather = next((n for n in slice_nodes if n.op_type == "Gather"), None)
    unsqueeze = next((n for n in slice_nodes if n.op_type == "Unsqueeze"), None)
    if gather is not None and unsqueeze is not None:
        for node in graph.node:
            node.input[:] = [gather.input[0] if i == unsqueeze.output[0] else i for i in node.input]
        for node in (gather, unsqueeze):
            graph.node.remove(node)
        logits = next(o for o in graph.output if o.name == "logits")
        positions = logits.type.tensor_type.shape.dim[1]
        positions.Clear()
        positions.dim_param = "sequence_length"
    out = out_dir / "model.onnx"
    onnx.save(model, str(out), save_as_external_data=True, location="model.onnx.data")
    return out


def head_size(model_dir: Path) -> int:
    return json.loads((Path(model_dir) / CONFIG).read_text())["model"]["decoder"]["head_size"]


def all_logits(session, head_size: int, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Logits at every position of a batch, from an empty KV cache (one prefill)."""
    feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values"):  # [batch, kv heads, 0, head size]
            dtype = np.float16 if i.type == "tensor(float16)" else np.float32
            feed[i.name] = np.zeros((len(input_ids), i.shape[1], 0, head_size), dtype=dtype)
    return session.run(["logits"], feed)[0]


class GenAI(Backend):
    kind = "onnx-genai"
    loader = "onnxruntime_genai.Model"

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        reason = device.unavailable()
        if reason:
            return reason
        if importlib.util.find_spec("onnxruntime_genai") is None:
            return (
                "ONNX Runtime GenAI models need the onnxruntime-genai package (pip install onnxruntime-genai)"
            )
        target = (manifest or {}).get("notes", {}).get("genai_execution_provider", "cpu")
        if device.is_cuda != (target == "cuda"):
            return f"this GenAI model was built for {target}; build one for {device.type} (genai: {{execution_provider: ...}})"
        if device.is_cuda:
            import onnxruntime_genai as og

            if not og.is_cuda_available():
                return "this onnxruntime-genai has no CUDA support: install onnxruntime-genai-cuda"
        return None

    def save(self, model, path: Path, example_inputs=None) -> None:
        shutil.copytree(Path(model), path, dirs_exist_ok=True)

    def load(self, model_dir, manifest, task, tokenizer, config, device, num_threads=None) -> Loaded:
        import onnxruntime as ort
        import onnxruntime_genai as og

        model_dir = Path(model_dir)
        genai_config = og.Config(str(model_dir))
        if num_threads:
            genai_config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": num_threads, "inter_op_num_threads": 1}}}}))  # fmt: skip
        model = og.Model(genai_config)
        pad = tokenizer.pad_token_id

        def run(ids: np.ndarray, new_tokens: int) -> np.ndarray:
            params = og.GeneratorParams(model)
            length = ids.shape[1] + new_tokens
            params.set_search_options(
                max_length=length, min_length=length, do_sample=False, batch_size=len(ids)
            )
            generator = og.Generator(model, params)
            generator.append_tokens(ids)
            while not generator.is_done():
                generator.generate_next_token()
            return np.stack([generator.get_sequence(i) for i in range(len(ids))])

        def generate(batch, new_tokens: int):
            """Greedy tokens after each prompt, left-padded rows as [pad..., prompt, new tokens]. A batch
            whose prompts all fill the width runs as one; otherwise each prompt length runs as its own batch
            without padding (this onnxruntime-genai mixes up left-padded rows of one batch)."""
            ids = np.asarray(batch["input_ids"], dtype=np.int32)
            lengths = np.asarray(batch["attention_mask"]).sum(1)
            if (lengths == ids.shape[1]).all():
                return run(ids, new_tokens)
            out = np.full(
                (len(ids), ids.shape[1] + new_tokens), pad if pad is not None else 0, dtype=np.int32
            )
            for n in np.unique(lengths):
                rows = np.flatnonzero(lengths == n)
                out[rows, ids.shape[1] - n :] = run(ids[rows, ids.shape[1] - n :], new_tokens)
            return out

        # perplexity and agreement read every position: ONNX Runtime runs the same graph without the
        # last-position slice, written once per load to a scratch directory that lives as long as `forward`
        scratch = tempfile.TemporaryDirectory(prefix="slimbench-genai-")
        full = every_position(model_dir / "model.onnx", Path(scratch.name))
        providers = ["CUDAExecutionProvider"] if device.is_cuda else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(full), session_options(num_threads), providers=providers)
        size = head_size(model_dir)

        def forward(batch, _scratch=scratch):
            ids = np.asarray(batch["input_ids"])
            return all_logits(session, size, ids, np.asarray(batch.get("attention_mask", np.ones_like(ids))))

        return Loaded(manifest, config, tokenizer, forward, "np", lambda b: b, generate)


BACKEND = GenAI()
