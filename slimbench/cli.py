"""The command line: demo, optimize, bench, report, recipes. Errors meant for people print one
line and exit with code 2."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from slimbench import SlimbenchError, __version__

DEMO_RECIPES = {
    "text-classification": ("baseline", "torch-int8", "onnx", "onnx-o2-int8"),
    "causal-lm": (
        "baseline", "onnx", "onnx-o2-int8", "torchao-int8wo", "bnb-int8", "bnb-nf4", "sparse-2of4",
        "magnitude-50",
    ),
}  # fmt: skip


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 1,32, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,32, got {text!r}")
    return values


def _add_bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 32], help="comma-separated (default: 1,32)")
    p.add_argument("--seq-lens", type=_int_list, default=[128], help="comma-separated (default: 128)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to measure (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--min-reps", type=int, default=10, help="timed repetitions at least (default: 10)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds at least (default: 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default: 3)")


def _plan(args):
    from slimbench.bench.timing import TimingPlan

    return TimingPlan(warmup=args.warmup, min_reps=args.min_reps, min_seconds=args.min_seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimbench",
        description="Compress a fine-tuned transformer checkpoint and measure every variant honestly.",
    )
    parser.add_argument("--version", action="version", version=f"slimbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="the whole path on the embedded default: fine-tune (once), optimize, bench, report",
        description="Build (or reuse) the embedded default - all-MiniLM-L6-v2 fine-tuned on BBC News, or with "
        "--task causal-lm a small Llama trained on BBC News - run the built-in recipes, benchmark every variant "
        "and write a report.",
    )
    p.add_argument(
        "--task",
        choices=list(DEMO_RECIPES),
        default="text-classification",
        help="which embedded default (default: text-classification)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: ./slimbench-out, or ./slimbench-out-lm with --task causal-lm)",
    )
    p.add_argument(
        "--recipes",
        default=None,
        help="comma-separated (default: "
        + "; ".join(f"{task}: {','.join(names)}" for task, names in DEMO_RECIPES.items())
        + ")",
    )
    _add_bench_options(p)

    p = sub.add_parser(
        "optimize",
        help="apply a recipe to a checkpoint and save the variant",
        description="Apply a recipe to a checkpoint; the variant is saved as OUT/<recipe name>/.",
    )
    p.add_argument("checkpoint", help="a local Hugging Face model directory, or a hub id in the local cache")
    p.add_argument(
        "--recipe", required=True, help="a built-in recipe name (see `slimbench recipes`) or a YAML file"
    )
    p.add_argument("--out", type=Path, required=True, help="directory that receives the variant")
    p.add_argument(
        "--sample-data",
        type=Path,
        help="JSONL/CSV with a 'text' column: real inputs for tracing and "
        "parity checks (default: BBC News articles)",
    )
    p.add_argument(
        "--task", help="text-classification, token-classification or causal-lm (default: from the config)"
    )
    p.add_argument(
        "--train-data", type=Path, help="JSONL/CSV with 'text' and 'label': for recover and calibration"
    )
    p.add_argument(
        "--eval-data",
        type=Path,
        help="JSONL/CSV with 'text' and 'label': search recipes measure candidates on it",
    )
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")
    p.add_argument("--force", action="store_true", help="rebuild even if an up-to-date variant exists")

    p = sub.add_parser(
        "bench",
        help="measure saved variants (each in a fresh process) into a JSONL file",
        description="Measure latency, memory and accuracy of saved variants. Records already in "
        "--results are kept and not measured again.",
    )
    p.add_argument("model_dirs", nargs="+", type=Path, metavar="MODEL_DIR", help="variant directories")
    p.add_argument(
        "--eval-data", type=Path, required=True, help="JSONL or CSV with 'text' and 'label' columns"
    )
    p.add_argument("--results", type=Path, required=True, help="JSONL file the records are appended to")
    p.add_argument("--baseline", help="variant the others are compared with (default: the 'baseline' recipe)")
    p.add_argument(
        "--eval-seq-len", type=int, default=128, help="sequence length for accuracy (default: 128)"
    )
    _add_bench_options(p)

    p = sub.add_parser(
        "report",
        help="compare results side by side: report.md and report.csv",
        description="Read results files and write report.md and report.csv.",
    )
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS.jsonl")
    p.add_argument("--out", type=Path, default=Path("."), help="output directory (default: .)")

    p = sub.add_parser(
        "recipes",
        help="list every step with its parameters, and the built-in recipes",
        description="List every registered step with its parameters and defaults, and every built-in recipe.",
    )
    p.add_argument("--markdown", action="store_true", help="print the tables the README carries")
    return parser


def recipes_markdown() -> str:
    """The README's step and recipe tables, generated from the registry."""
    from slimbench.recipes import builtin_recipes, builtin_searches
    from slimbench.registry import LOADERS, config_fields, steps

    lines = ["| step | what it does | parameters (default) | takes -> gives |", "|---|---|---|---|"]
    for name, step in sorted(steps().items()):
        params = (
            "<br>".join(f"`{f}`: {tp} (`{d!r}`)" for f, tp, d in config_fields(step.config_cls)) or "none"
        )
        lines.append(
            f"| `{name}` | {step.summary} | {params.replace('|', '&#124;')} | "
            f"{'/'.join(step.takes)} -> {step.gives or 'same'} |"
        )
    lines += ["", "| recipe | steps | deploys with |", "|---|---|---|"]
    for name, recipe in builtin_recipes().items():
        chain = " -> ".join(c.name for c in recipe.steps)
        lines.append(f"| `{name}` | {chain} | `{LOADERS[recipe.output_kind]}` |")
    for name, search in builtin_searches().items():
        lines.append(f"| `{name}` | search: {len(search.candidates)} candidates measured, fastest within 99% kept | "
                     "the winner's loader |")  # fmt: skip
    return "\n".join(lines)


def cmd_recipes(args) -> int:
    from slimbench.recipes import builtin_recipes, builtin_searches
    from slimbench.registry import LOADERS, config_fields, steps

    if args.markdown:
        print(recipes_markdown())
        return 0
    print("Steps (use them in a recipe as '- name: {field: value}'):\n")
    for name, step in sorted(steps().items()):
        print(f"  {name}  - {step.summary}")
        print(f"      takes a {' or '.join(step.takes)} model, gives {step.gives or 'the same kind'}")
        for field, tp, default in config_fields(step.config_cls):
            print(f"      {field}: {tp} = {default!r}")
    print("\nBuilt-in recipes:\n")
    for name, recipe in builtin_recipes().items():
        chain = " -> ".join(c.name for c in recipe.steps)
        print(f"  {name}: {chain}  [saved for {LOADERS[recipe.output_kind]}]")
        if recipe.description:
            print(f"      {recipe.description}")
    for name, search in builtin_searches().items():
        print(f"  {name}: search over {len(search.candidates)} candidates, measured at batch "
              f"{search.batch_size}, seq {search.seq_len}; needs --train-data and --eval-data")  # fmt: skip
        if search.description:
            print(f"      {search.description}")
        for candidate in search.candidates:
            print(f"      {candidate.name}: {' -> '.join(c.name for c in candidate.steps)}")
    return 0


def _sample_texts(path: Path | None) -> list[str]:
    if path is not None:
        from slimbench.data import read_texts

        return read_texts(path)[:16]
    from slimbench.defaults import bbc_news

    data, _ = bbc_news()
    return data.texts[::139][:16]  # one article in 139: all five topics


def cmd_optimize(args) -> int:
    from slimbench.checkpoint import Checkpoint
    from slimbench.pipeline import optimize
    from slimbench.recipes import Recipe, load_recipe

    recipe = load_recipe(args.recipe)  # validated before any model loads
    checkpoint = Checkpoint.open(args.checkpoint, args.task, args.trust_remote_code, args.allow_pickle)
    train = None
    if args.train_data is not None:
        from slimbench.data import read_labelled

        train = read_labelled(args.train_data, checkpoint.load_config().label2id)
    if not isinstance(recipe, Recipe):  # a search: build, measure, choose
        from slimbench.search import run_search

        if args.eval_data is None:
            raise SlimbenchError(f"recipe {recipe.name!r} measures its candidates: pass --eval-data FILE")
        path = run_search(recipe, checkpoint, args.out, eval_path=args.eval_data, train_data=train,
                          sample_texts=_sample_texts(args.sample_data), bench_kwargs={})  # fmt: skip
        print(path)
        return 0
    variant = optimize(
        checkpoint,
        recipe,
        args.out,
        sample_texts=_sample_texts(args.sample_data),
        train_data=train,
        force=args.force,
    )
    print(variant.path)
    return 0


def _bench(args, model_dirs, eval_path, results, baseline=None, eval_seq_len=128) -> int:
    from slimbench.bench import run_bench

    _, failures = run_bench(
        model_dirs, eval_path, args.batch_sizes, args.seq_lens, results, device=args.device,
        num_threads=args.threads, baseline=baseline, plan=_plan(args), eval_seq_len=eval_seq_len,
    )  # fmt: skip
    print(f"results: {results}")
    return 1 if failures else 0


def cmd_bench(args) -> int:
    return _bench(args, args.model_dirs, args.eval_data, args.results, args.baseline, args.eval_seq_len)


def cmd_report(args) -> int:
    from slimbench.reports import write_report

    print(f"report: {write_report(args.results, args.out)}")
    return 0


def cmd_demo(args) -> int:
    from slimbench.checkpoint import Checkpoint
    from slimbench.data import read_labelled
    from slimbench.defaults import default_decoder, default_encoder
    from slimbench.pipeline import optimize
    from slimbench.recipes import load_recipe
    from slimbench.reports import write_report

    names = args.recipes.split(",") if args.recipes else DEMO_RECIPES[args.task]
    if args.out is None:  # one directory per task: variant names and results would collide
        args.out = Path("slimbench-out-lm" if args.task == "causal-lm" else "slimbench-out")
    recipes = [load_recipe(name.strip()) for name in names if name.strip()]
    if args.task == "causal-lm":
        default = default_decoder()
        quality = f"held-out perplexity {default.info['eval_perplexity']:.2f}"
    else:
        default = default_encoder()
        quality = f"held-out accuracy {default.info['eval_accuracy']:.4f}"
    print(f"Embedded default: {default.path} ({quality})")
    checkpoint = Checkpoint.open(default.path)
    samples = read_labelled(default.eval_path).texts[:16]
    train = read_labelled(default.train_path)
    dirs = [
        optimize(checkpoint, r, args.out / "models", sample_texts=samples, train_data=train).path
        for r in recipes
    ]
    results = args.out / "results.jsonl"
    status = _bench(args, dirs, default.eval_path, results)
    report = write_report([results], args.out)
    print(f"\nReport: {report}\nVariants: {args.out / 'models'}/<variant>/ (each loads without slimbench)")
    return status


COMMANDS = {
    "demo": cmd_demo,
    "optimize": cmd_optimize,
    "bench": cmd_bench,
    "report": cmd_report,
    "recipes": cmd_recipes,
}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends a run as cleanly as Ctrl-C
    try:
        return COMMANDS[args.command](args)
    except SlimbenchError as e:
        print(f"slimbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nslimbench: interrupted; finished results and variants are kept", file=sys.stderr)
        return 130
