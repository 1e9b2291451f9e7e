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
