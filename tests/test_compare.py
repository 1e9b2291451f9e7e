"""The regression gate: `slimbench compare OLD NEW --fail-on ...` on crafted results files."""

import json

import pytest

from slimbench import SlimbenchError
from slimbench.bench.compare import compare, parse_rules
from slimbench.cli import main


def record(variant, p50, metric, *, bs=1, task="text-classification", status="ok"):
    return {"task": task, "variant": variant, "device": "cpu", "batch_size": bs, "seq_len": 128, "status": status,
            "latency_ms_p50": p50, "metric": metric, "peak_rss_bytes": 1000}  # fmt: skip


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def files(tmp_path):
    old = write(tmp_path / "old.jsonl", [record("a", 10.0, 0.90), record("b", 20.0, 0.80), record("gone", 1.0, 0.5),
                                         record("lm", 50.0, 30.0, task="causal-lm")])  # fmt: skip
    return tmp_path, old


def test_no_regression_exits_0(files, capsys):
    tmp, old = files
    new = write(tmp / "new.jsonl", [record("a", 10.4, 0.899), record("b", 15.0, 0.85),
                                    record("lm", 50.0, 30.1, task="causal-lm")])  # fmt: skip
    assert main(["compare", str(old), str(new), "--fail-on", "latency_ms_p50:5%,metric:-0.5%"]) == 0
    out = capsys.readouterr().out
    assert "0 regression(s) in 6 comparison(s)" in out
    assert f"only in {old}: gone cpu b1 s128" in out


def test_latency_regression_exits_1(files, capsys):
    tmp, old = files
    new = write(tmp / "new.jsonl", [record("a", 10.6, 0.90), record("b", 20.0, 0.80)])
    assert main(["compare", str(old), str(new), "--fail-on", "latency_ms_p50:5%"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION (> 5%)" in out and "+6.0%" in out and "1 regression(s) in 2 comparison(s)" in out


def test_metric_direction_follows_the_task(files):
    tmp, old = files
    new = write(tmp / "new.jsonl", [record("a", 10.0, 0.89), record("lm", 50.0, 30.6, task="causal-lm")])
    rows, _ = compare(old, new, parse_rules("metric:1%"))
    verdict = {r["variant"]: r["regression"] for r in rows}
    assert verdict == {"a": True, "lm": True}  # accuracy down 1.1%, perplexity up 2%
    better = write(tmp / "better.jsonl", [record("lm", 50.0, 29.0, task="causal-lm")])
    rows, _ = compare(old, better, parse_rules("metric:1%"))
    assert [r["regression"] for r in rows] == [False]


def test_not_run_records_are_not_compared(files):
    tmp, old = files
    new = write(tmp / "new.jsonl", [record("a", None, None, status="not run"), record("b", 20.0, 0.8)])
    rows, alone = compare(old, new, parse_rules("latency_ms_p50:5%"))
    assert [r["variant"] for r in rows] == ["b"] and any(
        "only in" in line and " a " in line for line in alone
    )


@pytest.mark.parametrize(
    "text, message", [("latency:5", "FIELD:PERCENT%"), ("speed:5%", "unknown field"), ("", "at least one")]
)
def test_bad_rules(text, message):
    with pytest.raises(SlimbenchError, match=message):
        parse_rules(text)
