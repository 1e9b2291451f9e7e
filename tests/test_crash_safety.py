"""SIGKILL at any point loses nothing finished and leaves nothing half-written under a final name;
two runs sharing a results file write whole lines and no duplicates; no test reaches the network."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import LABELS, TEXTS
from slimbench.bench.runner import read_results, record_key
from slimbench.core.artifacts import verify


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "slimbench", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def kill(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def train_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "label": LABELS[i % 5]}) + "\n" for i, t in enumerate(TEXTS * 4))
    )
    return path


def test_optimize_killed_at_any_point_never_leaves_a_half_written_variant(tiny_bert, train_jsonl, tmp_path):
    out = tmp_path / "out"
    args = ["optimize", tiny_bert, "--recipe", "magnitude-50", "--train-data", train_jsonl, "--out", out,
            "--allow-degraded"]  # fmt: skip
    started = time.perf_counter()
    proc = start(*args)
    proc.wait(timeout=600)
    assert proc.returncode == 0
    full = time.perf_counter() - started
    final = out / "magnitude-50"
    assert verify(final) == []
    for fraction in (0.2, 0.5, 0.8, 0.95):  # during imports, a step, the check, the save
        proc = start(*args, "--force")
        time.sleep(full * fraction)
        kill(proc)
        assert final.is_dir() and verify(final) == [], f"killed at {fraction:.0%}: the variant is not whole"
        finals = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        assert finals == ["magnitude-50"]  # temporary directories are hidden, never under a final name
    proc = start(*args, "--force")
    assert proc.wait(timeout=600) == 0 and verify(final) == []


def bench_args(tiny_variants, eval_jsonl, results):
    dirs = [tiny_variants[n].path for n in ("baseline", "onnx")]
    return ["bench", *dirs, "--eval-data", eval_jsonl, "--results", results, "--batch-sizes", "1,2,3",
            "--seq-lens", "16", "--threads", "1", "--warmup", "1", "--min-reps", "3", "--min-seconds", "0"]  # fmt: skip


def test_bench_killed_while_measuring_keeps_whole_records_and_resumes_to_the_same_set(
    tiny_variants, eval_jsonl, tmp_path
):
    results = tmp_path / "r.jsonl"
    for delay in (3.0, 8.0):
        proc = start(*bench_args(tiny_variants, eval_jsonl, results))
        time.sleep(delay)
        kill(proc)
        lines = results.read_text().splitlines() if results.exists() else []
        assert all(json.loads(line) for line in lines)  # whole lines only
    proc = start(*bench_args(tiny_variants, eval_jsonl, results))
    assert proc.wait(timeout=600) == 0
    keys = [record_key(r) for r in read_results(results)]
    assert len(keys) == len(set(keys)) == 6  # 2 variants x 3 batch sizes, each once


def test_ctrl_c_ends_a_bench_with_one_line_and_the_records_so_far(tiny_variants, eval_jsonl, tmp_path):
    results = tmp_path / "r.jsonl"
    # a shell without job control starts background commands with SIGINT ignored, and the bench inherits
    # that; the terminal's Ctrl-C reaches a foreground run, so the run starts with SIGINT's default
    proc = subprocess.Popen([sys.executable, "-m", "slimbench", *map(str, bench_args(tiny_variants, eval_jsonl, results))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 300
    while not read_results(results) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "slimbench: interrupted; finished results and variants are kept"
    assert "Traceback" not in err
    kept = read_results(results)
    assert 1 <= len(kept) < 6 and all(r["status"] == "ok" for r in kept)


def test_two_runs_sharing_a_results_file_write_each_record_once(tiny_variants, eval_jsonl, tmp_path):
    results = tmp_path / "shared.jsonl"
    procs = [start(*bench_args(tiny_variants, eval_jsonl, results)) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    lines = results.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    keys = [record_key(r) for r in records]
    assert len(keys) == len(set(keys)) == 6


def test_nothing_reaches_the_network():
    import socket

    with pytest.raises(OSError, match="network"):
        socket.create_connection(("1.1.1.1", 443), timeout=5)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_an_interrupt_python_drops_is_raised_at_the_next_check(capsys):
    """A Ctrl-C whose KeyboardInterrupt is raised inside a finalizer or an at-fork callback (starting a
    measuring process runs logging's) is dropped by Python; slimbench raises it again at the next check."""
    from slimbench.core import interrupt

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook
    try:
        interrupt.install()

        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the finalizer
                sum(range(1000))

        Finalized()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        assert "Exception ignored" not in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        sys.unraisablehook = saved[2]
        interrupt._received.clear()
