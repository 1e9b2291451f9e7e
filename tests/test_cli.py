import subprocess
import sys

import pytest

from slimbench.cli import COMMANDS, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "slimbench", *args], capture_output=True, text=True)


def test_recipes_lists_every_step_and_builtin(capsys):
    from slimbench.optimize import steps
    from slimbench.optimize.recipes import builtin_recipes
    from slimbench.optimize.registry import config_fields

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name, step in steps().items():
        assert f"  {name}  - " in out
        for field, tp, default in config_fields(step.config_cls):
            assert f"{field}: {tp} = {default!r}" in out
    for name in builtin_recipes():
        assert f"  {name}: " in out


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"] if command else ["--help"])
    assert exit_.value.code == 0
    assert "usage: slimbench" in capsys.readouterr().out


def test_bad_recipe_is_one_line_exit_2_no_traceback(tmp_path, tiny_bert):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: bad\nsteps:\n  - baseline: {}\n  - export: {optimize: O7}\n")
    proc = run_cli("optimize", str(tiny_bert), "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"slimbench: error: {recipe}: step 2 'export': optimize must be 'O1' | 'O2' | 'O3' | 'O4' | null, got 'O7'"
    ]
    assert not (tmp_path / "out").exists()


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "x", "--eval-data", "e.jsonl", "--results", "r.jsonl", "--batch-sizes", "0,a"])
    assert exit_.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_optimize_writes_a_variant(tmp_path, tiny_bert):
    proc = run_cli("optimize", str(tiny_bert), "--recipe", "baseline", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "baseline")
    assert (tmp_path / "baseline" / "model.safetensors").is_file()


def test_readme_step_table_is_generated_from_the_registry():
    from pathlib import Path

    from slimbench.cli import recipes_markdown

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("<!-- recipes:begin -->\n", 1)[1].split("\n<!-- recipes:end -->", 1)[0]
    assert table == recipes_markdown(), "README table is stale: paste `slimbench recipes --markdown`"


@pytest.mark.parametrize("dry_run", ["0", "1"])
def test_the_gpu_plan_runs_only_commands_options_and_recipes_that_exist(tmp_path, dry_run):
    """docs/results/gpu/run.sh is run in a short GPU lease, where a misspelt option or recipe would cost the
    lease. Run here with `python3` and `nvidia-smi` stood in for (each call is recorded; slimbench's own
    command lines are parsed by its CLI), every stage exits 0, every recipe it names is built in, and every
    option it gives pytest or the plan's scripts is one they define; its dry run (PLAN_DRY_RUN=1) asks for
    the CPU everywhere, the lease for the GPU."""
    import json
    import os
    import re
    from pathlib import Path

    from slimbench.optimize.recipes import builtin_recipes, builtin_searches

    root = Path(__file__).parents[1]
    plan = root / "docs" / "results" / "gpu"
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "argv = sys.argv[1:]\n"
        "with open(os.environ['CALLS'], 'a') as f:\n"
        "    f.write(json.dumps(argv) + '\\n')\n"
        "if argv[:2] == ['-m', 'slimbench']:\n"
        "    from slimbench.cli import build_parser\n"
        "    build_parser().parse_args(argv[2:])\n"
    )
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H200, 570.00, 143771 MiB'\n")
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    stages = [
        "core",
        "anchor",
        "decoder",
        "bnbprobe",
        "more",
        "kernels",
        "kernels-speed",
        "variants",
        "search",
    ]
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "PLAN_DRY_RUN": dry_run,
    }
    done = subprocess.run(["bash", str(plan / "run.sh"), str(tmp_path / "out"), "600", *stages], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    log = (tmp_path / "out" / "run.log").read_text()
    assert done.returncode == 0, done.stderr
    assert [f"== {s}: exit 0" in log for s in stages] == [True] * len(stages), log
    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    recipes = [
        r for argv in argvs if "--recipes" in argv for r in argv[argv.index("--recipes") + 1].split(",")
    ]
    assert {"baseline", "bf16-static-cache", "fp8", "kernels-bf16"} <= set(recipes)
    assert set(recipes) <= set(builtin_recipes())
    searches = [argv[argv.index("--recipe") + 1] for argv in argvs if "--recipe" in argv]
    assert "fastest-within-1pct-gpu" in searches and set(searches) <= set(builtin_recipes()) | set(
        builtin_searches()
    )
    devices = {argv[i + 1] for argv in argvs for i, a in enumerate(argv) if a in ("--device", "--slimbench-devices",
                                                                            "--kernel-device")}  # fmt: skip
    assert devices == ({"cpu"} if dry_run == "1" else {"cuda"})
    # installed, slimbench's plugin is loaded by its entry point (the GPU machine's PYTHONPATH copy needs -p)
    pytest_help = subprocess.run([sys.executable, "-m", "pytest", "tests", "--help"], cwd=root, capture_output=True,
                                 text=True).stdout  # fmt: skip
    scripts = [argv for argv in argvs if argv and argv[0].endswith(".py")]
    anchor = {"plain_pytorch_anchor.py"} if dry_run == "0" else set()  # the anchor times CUDA only
    assert {Path(argv[0]).name for argv in scripts} == {"bnb_int8_probe.py"} | anchor
    for argv in argvs:
        options = {a.split("=")[0] for a in argv if a.startswith("--")}
        if argv[:2] == ["-m", "pytest"]:
            assert options and all(re.search(rf"\s{o}[\s=,]", pytest_help) for o in options), options
            nodes = [a.split("::") for a in argv if "::" in a]  # test functions named, in the order to run
            assert all(f"def {name}(" in (root / path).read_text() for path, name in nodes), nodes
            if nodes:  # ... all of the file's: a benchmark added later is not left out of the plan
                speed = (root / nodes[0][0]).read_text()
                assert sorted(name for _, name in nodes) == sorted(
                    re.findall(r"^def (test_\w+)\(", speed, re.M)
                )
        elif argv in scripts:
            assert all(f'"{o}"' in Path(argv[0]).read_text() for o in options), options


def test_other_libraries_import_notices_are_held_back_unless_debug(capsys):
    """torchao logs, on import, each optional compiled extension that does not load on the machine, and
    transformers imports torchao wherever it is installed: the CLI holds such notices back; --debug shows them."""
    import logging

    from slimbench.cli import QUIETED_LOGGERS

    loggers = [logging.getLogger(name) for name in QUIETED_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.NOTSET)
        assert main(["--debug", "recipes"]) == 0
        assert all(logger.isEnabledFor(logging.WARNING) for logger in loggers)
        assert main(["recipes"]) == 0
        assert not any(logger.isEnabledFor(logging.WARNING) for logger in loggers)
        assert all(logger.isEnabledFor(logging.ERROR) for logger in loggers)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    assert "baseline" in capsys.readouterr().out
