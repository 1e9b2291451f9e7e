"""The command line: demo, optimize, bench, report, recipes. Errors meant for people print one
line and exit with code 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from slimbench import SlimbenchError, __version__
from slimbench.core import interrupt

DEMO_RECIPES = {
    "text-classification": ("baseline", "torch-int8", "onnx", "onnx-o2-int8"),
    "causal-lm": (
        "baseline", "onnx", "onnx-o2-int8", "onnx-genai-int8", "torchao-int8wo", "bnb-int8", "bnb-nf4",
        "sparse-2of4", "magnitude-50",
    ),
    "feature-extraction": ("baseline", "torch-int8", "onnx-o2", "onnx-o2-int8", "bf16"),
}  # fmt: skip
# on a GPU: half precision, compiled packages, slimbench's kernels, bitsandbytes and ONNX (not run without ONNX
# Runtime's CUDA provider)
GPU_DEMO_RECIPES = {
    "text-classification": (
        "baseline", "fp16", "bf16", "bf16-compiled", "pruned-l2-bf16-compiled", "compiled", "fp8", "sparse-2of4-bf16",
        "kernels-bf16", "bnb-int8", "bnb-nf4", "torchao-int8wo", "onnx-o2",
    ),
    "causal-lm": ("baseline", "bf16-static-cache", "fp16", "bf16", "fp8", "kernels-bf16", "kernels-int4-bf16",
                  "bnb-int8", "bnb-nf4", "torchao-int8wo", "onnx"),
    "feature-extraction": ("baseline", "fp16", "bf16", "bf16-compiled", "compiled", "fp8", "kernels-bf16", "bnb-int8",
                           "bnb-nf4", "torchao-int8wo", "onnx-o2"),
}  # fmt: skip
# task -> (which embedded default, output directory, its quality figure in the default's info)
DEMO_DEFAULTS = {
    "text-classification": ("encoder", "slimbench-out", "eval_accuracy"),
    "causal-lm": ("decoder", "slimbench-out-lm", "eval_perplexity"),
    "feature-extraction": ("sentence", "slimbench-out-embed", "eval_nn_accuracy"),
}


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


def _at_least(least: float, kind: type = int):
    """An argparse type: a number of `kind` no smaller than `least`."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {what} of at least {least}, got {text!r}")
        return value

    return parse


def check_output(path: Path, what: str, directory: bool) -> None:
    """Refuse, before any work, an output path slimbench could not write: a file where a directory
    goes (or the reverse), under a file, or in a directory it may not write in."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        kind = "a file" if directory else "a directory"
        raise SlimbenchError(f"{what} {str(path)!r} is {kind}; give a {'directory' if directory else 'file'}")
    existing = path if path.exists() and directory else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SlimbenchError(f"{what} {str(path)!r} cannot be written: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SlimbenchError(
            f"{what} {str(path)!r} cannot be written: no permission to write in {str(existing)!r}"
        )


def _device(text: str) -> str:
    from slimbench.backends import Device

    try:
        return str(Device.parse(text))
    except SlimbenchError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite", action="store_true",
        help="where the output holds files slimbench did not write, move them aside instead of stopping "
        "(nothing is ever deleted)",
    )  # fmt: skip


def _add_bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 32], help="comma-separated (default: 1,32)")
    p.add_argument("--seq-lens", type=_int_list, default=[128], help="comma-separated (default: 128)")
    p.add_argument(
        "--device", type=_device, default="cpu", help="where to measure: cpu, cuda or cuda:N (default: cpu)"
    )
    p.add_argument("--threads", type=_at_least(1), default=None, help="CPU threads (default: physical cores)")
    p.add_argument(
        "--min-reps", type=_at_least(1), default=10, help="timed repetitions at least (default: 10)"
    )
    p.add_argument("--min-seconds", type=_at_least(0, float), default=2.0,
                   help="timed seconds at least (default: 2)")  # fmt: skip
    p.add_argument("--warmup", type=_at_least(0), default=3, help="untimed calls first (default: 3)")


def _plan(args):
    from slimbench.bench.timing import TimingPlan

    return TimingPlan(warmup=args.warmup, min_reps=args.min_reps, min_seconds=args.min_seconds)


def build_parser() -> argparse.ArgumentParser:
    from slimbench.tasks import DATA_FORMATS, TASKS

    parser = argparse.ArgumentParser(
        prog="slimbench",
        description="Compress a fine-tuned transformer checkpoint and measure every variant honestly.",
    )
    parser.add_argument("--version", action="version", version=f"slimbench {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print Python tracebacks instead of one-line errors, and other libraries' notices otherwise held back",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="the whole path on the embedded default: fine-tune (once), optimize, bench, report",
        description="Build (or reuse) the embedded default - all-MiniLM-L6-v2 fine-tuned on BBC News, with "
        "--task causal-lm a small Llama trained on BBC News, or with --task feature-extraction all-MiniLM-L6-v2 "
        "as a sentence encoder, scored by nearest-neighbour accuracy on BBC News - run the built-in recipes, "
        "benchmark every variant and write a report.",
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
        help="output directory (default: ./slimbench-out; ./slimbench-out-lm with --task causal-lm, "
        "./slimbench-out-embed with --task feature-extraction)",
    )
    p.add_argument(
        "--recipes",
        default=None,
        help="comma-separated (default on the CPU: "
        + "; ".join(f"{task}: {','.join(names)}" for task, names in DEMO_RECIPES.items())
        + "; with --device cuda: "
        + "; ".join(f"{task}: {','.join(names)}" for task, names in GPU_DEMO_RECIPES.items())
        + ")",
    )
    _add_bench_options(p)

    p = sub.add_parser(
        "optimize",
        help="apply a recipe to a checkpoint and save the variant",
        description="Apply a recipe to a checkpoint; the variant is saved as OUT/<recipe name>/.",
    )
    p.add_argument("checkpoint", help="a local Hugging Face model directory, a peft adapter directory (LoRA and "
                   "others that merge: served merged into its base), or a hub id in the local cache")  # fmt: skip
    p.add_argument(
        "--recipe", required=True, help="a built-in recipe name (see `slimbench recipes`) or a YAML file"
    )
    p.add_argument("--out", type=Path, required=True, help="directory that receives the variant")
    p.add_argument(
        "--sample-data",
        type=Path,
        help="JSONL/CSV with a 'text' column (sentence pairs: 'sentence1', 'sentence2'; token classification: its "
        "JSONL, 'tokens'; question answering: 'question', 'context'; seq2seq: 'source'): real inputs for tracing and "
        "parity checks "
        "(default: BBC News articles; for question answering, each the context of a general question)",
    )
    p.add_argument(
        "--task",
        help=f"{', '.join(TASKS)} (default: from the config)",
    )
    p.add_argument(
        "--train-data",
        type=Path,
        help=f"{DATA_FORMATS}: for recover and calibration",
    )
    p.add_argument(
        "--eval-data",
        type=Path,
        help=f"{DATA_FORMATS}: search recipes measure candidates on it; int8 fallback scores on it",
    )
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")
    p.add_argument("--force", action="store_true", help="rebuild even if an up-to-date variant exists")
    p.add_argument(
        "--min-agreement", type=float, default=None, metavar="SHARE",
        help="the saved variant must keep this share of the source's predictions on the sample inputs (a "
        "feature extractor: this Spearman correlation of its pairwise similarities with the source's) (default: 0.9)",
    )  # fmt: skip
    p.add_argument(
        "--allow-degraded", action="store_true",
        help="keep a variant that fails the agreement check (it is recorded in its slimbench.json)",
    )  # fmt: skip
    p.add_argument("--budget", type=float, default=0.99,
                   help="search recipes: share of the baseline's metric the winner must keep (default: 0.99)")  # fmt: skip
    p.add_argument("--max-minutes", type=float, default=None,
                   help="search recipes: start no new candidate after this many minutes (default: no limit)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None,
                   help="search recipes: the batch size the winner must be fastest at (default: the recipe's)")  # fmt: skip
    p.add_argument("--seq-len", type=int, default=None,
                   help="search recipes: the sequence length it is measured at (default: the recipe's)")  # fmt: skip
    p.add_argument("--device", type=_device, default=None,
                   help="search recipes: where the candidates are built (recovery, compiling) and measured, cpu, cuda or "
                   "cuda:N (default: the recipe's: cpu for fastest-within-1pct, cuda for fastest-within-1pct-gpu)")  # fmt: skip
    _add_overwrite(p)

    p = sub.add_parser(
        "bench",
        help="measure saved variants (each in a fresh process) into a JSONL file",
        description="Measure latency, memory and accuracy of saved variants. Records already in "
        "--results are kept and not measured again.",
    )
    p.add_argument("model_dirs", nargs="+", type=Path, metavar="MODEL_DIR", help="variant directories")
    p.add_argument(
        "--eval-data", type=Path, required=True, help=f"{DATA_FORMATS}: accuracy and latency inputs"
    )
    p.add_argument("--results", type=Path, required=True, help="JSONL file the records are appended to")
    p.add_argument("--baseline", help="variant the others are compared with (default: the 'baseline' recipe)")
    p.add_argument(
        "--eval-seq-len", type=_at_least(1), default=128, help="sequence length for accuracy (default: 128)"
    )
    p.add_argument(
        "--ray", metavar="ADDRESS",
        help="run each variant as a Ray task: 'auto' (the running cluster), 'local' (start one here) or an "
        "address; needs the ray extra and the same paths on every node",
    )  # fmt: skip
    p.add_argument(
        "--accelerator-type", help="with --ray: the GPU type a task asks for (Ray's accelerator_type)"
    )
    _add_bench_options(p)

    p = sub.add_parser(
        "report",
        help="compare results across hardware: report.md, report.csv, report.html and plots",
        description="Read results files (from any number of machines and runs) and write one comparison: per "
        "hardware configuration the variant x workload table, the variant to deploy there, a cross-hardware table, "
        "Pareto and speedup plots, as report.md, report.csv, a self-contained report.html and PNG files.",
    )
    p.add_argument(
        "results", nargs="+", type=Path, metavar="RESULTS", help="results JSONL or pytest-benchmark JSON"
    )
    p.add_argument("--out", type=Path, default=Path("."), help="output directory (default: .)")
    p.add_argument(
        "--baseline", help="variant the others are compared with (default: the 'baseline' recipe's)"
    )
    p.add_argument("--budget", type=float, default=0.99,
                   help="share of the baseline's metric a variant must keep (default: 0.99)")  # fmt: skip
    p.add_argument("--no-plots", action="store_true", help="tables only (faster)")
    _add_overwrite(p)

    p = sub.add_parser(
        "compare",
        help="the regression gate: diff two results files, exit 1 on a regression beyond the thresholds",
        description="Compare every cell (variant x workload x device) measured in both files; exit 1 where a "
        "field got worse by more than its threshold (latency and memory up, throughput and accuracy down, "
        "perplexity up).",
    )
    p.add_argument("old", type=Path, metavar="OLD.jsonl")
    p.add_argument("new", type=Path, metavar="NEW.jsonl")
    p.add_argument(
        "--fail-on", default="latency_ms_p50:5%,metric:0.5%",
        help="comma-separated FIELD:PERCENT%% rules (default: latency_ms_p50:5%%,metric:0.5%%)",
    )  # fmt: skip

    p = sub.add_parser(
        "verify",
        help="check a saved variant against the sha256 of every file its slimbench.json lists",
        description="Exit 0 when every file of the variant is as slimbench wrote it; otherwise list the changed, "
        "missing and unlisted files and exit 1.",
    )
    p.add_argument("model_dirs", nargs="+", type=Path, metavar="MODEL_DIR")

    p = sub.add_parser(
        "recipes",
        help="list every step with its parameters, and the built-in recipes",
        description="List every registered step with its parameters and defaults, and every built-in recipe.",
    )
    p.add_argument("--markdown", action="store_true", help="print the tables the README carries")
    return parser


def recipes_markdown() -> str:
    """The README's step and recipe tables, generated from the registry."""
    from slimbench.backends import LOADERS
    from slimbench.optimize import steps
    from slimbench.optimize.recipes import builtin_recipes, builtin_searches
    from slimbench.optimize.registry import config_fields

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
        lines.append(f"| `{name}` | search: up to {len(search.candidates)} candidates, most pruned first, fastest "
                     f"on {search.device} within 99% kept | the winner's loader |")  # fmt: skip
    return "\n".join(lines)


def cmd_recipes(args) -> int:
    from slimbench.backends import LOADERS
    from slimbench.optimize import steps
    from slimbench.optimize.recipes import builtin_recipes, builtin_searches
    from slimbench.optimize.registry import config_fields

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
        print(f"  {name}: search over up to {len(search.candidates)} candidates, measured at batch "
              f"{search.batch_size}, seq {search.seq_len} (--batch-size, --seq-len); needs --train-data and "
              "--eval-data")  # fmt: skip
        if search.description:
            print(f"      {search.description}")
        for candidate in search.candidates:
            print(f"      {candidate.name}: {' -> '.join(c.name for c in candidate.steps)}")
    return 0


def _sample_texts(path: Path | None, task: str) -> list:
    from slimbench.tasks import get_task

    if path is not None:
        return get_task(task).latency_texts(path)[:16]
    from slimbench.defaults import bbc_news

    data, _ = bbc_news()
    return get_task(task).inputs_from_texts(data.texts[::139][:16])  # one article in 139: all five topics


def cmd_optimize(args) -> int:
    import dataclasses

    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import Search, load_recipe
    from slimbench.pipeline import MIN_AGREEMENT, run, search_device

    recipe = load_recipe(args.recipe)  # validated before any model loads
    check_output(args.out, "--out", directory=True)
    min_agreement = MIN_AGREEMENT if args.min_agreement is None else args.min_agreement
    if not 0 <= min_agreement <= 1:
        raise SlimbenchError(f"--min-agreement must be between 0 and 1, got {min_agreement}")
    if not 0 < args.budget <= 1:
        raise SlimbenchError(f"--budget must be in (0, 1], got {args.budget}")
    if args.max_minutes is not None and args.max_minutes < 0:
        raise SlimbenchError(f"--max-minutes must be >= 0, got {args.max_minutes}")
    for flag, value in (("--batch-size", args.batch_size), ("--seq-len", args.seq_len)):
        if value is not None and value < 1:
            raise SlimbenchError(f"{flag} must be >= 1, got {value}")
    if (args.batch_size or args.seq_len) and not isinstance(recipe, Search):
        raise SlimbenchError(
            f"--batch-size and --seq-len choose a search's workload; {recipe.name!r} is not a search"
        )
    search_device(recipe, args.device)  # before any model loads (an adapter is merged on opening)
    if isinstance(recipe, Search):
        recipe = dataclasses.replace(recipe, batch_size=args.batch_size or recipe.batch_size,
                                     seq_len=args.seq_len or recipe.seq_len)  # fmt: skip
    checkpoint = Checkpoint.open(args.checkpoint, args.task, args.trust_remote_code, args.allow_pickle)
    train = None
    if args.train_data is not None:
        from slimbench.tasks import get_task

        train = get_task(checkpoint.task).read_train(args.train_data, checkpoint.load_config())
    samples = _sample_texts(args.sample_data, checkpoint.task)
    path = run(checkpoint, recipe, args.out, sample_texts=samples, train_data=train, eval_path=args.eval_data,
               force=args.force, min_agreement=min_agreement, allow_degraded=args.allow_degraded,
               overwrite=args.overwrite, budget=args.budget, max_minutes=args.max_minutes, device=args.device)  # fmt: skip
    print(path)
    return 0


def _bench(args, model_dirs, eval_path, results, baseline=None, eval_seq_len=128) -> int:
    from slimbench.bench import run_bench

    check_output(results, "--results", directory=False)
    _, failures = run_bench(
        model_dirs, eval_path, args.batch_sizes, args.seq_lens, results, device=args.device,
        num_threads=args.threads, baseline=baseline, plan=_plan(args), eval_seq_len=eval_seq_len,
        ray=getattr(args, "ray", None), accelerator_type=getattr(args, "accelerator_type", None),
    )  # fmt: skip
    print(f"results: {results}")
    return 1 if failures else 0


def cmd_bench(args) -> int:
    return _bench(args, args.model_dirs, args.eval_data, args.results, args.baseline, args.eval_seq_len)


def cmd_report(args) -> int:
    from slimbench.reports import write_report

    check_output(args.out, "--out", directory=True)
    report = write_report(args.results, args.out, overwrite=args.overwrite, budget=args.budget,
                          baseline=args.baseline, plots=not args.no_plots)  # fmt: skip
    print(f"report: {report}\nhtml: {report.with_suffix('.html')}")
    return 0


def cmd_compare(args) -> int:
    from slimbench.bench.compare import compare, format_rows, parse_rules

    rows, alone = compare(args.old, args.new, parse_rules(args.fail_on))
    print(format_rows(rows))
    for line in alone:
        print(line)
    bad = [r for r in rows if r["regression"]]
    print(f"\n{len(bad)} regression(s) in {len(rows)} comparison(s)")
    return 1 if bad else 0


def cmd_verify(args) -> int:
    from slimbench.core.artifacts import verify

    status = 0
    for model_dir in args.model_dirs:
        problems = verify(model_dir)
        print(f"{model_dir}: {'ok' if not problems else 'DIFFERS'}")
        for line in problems:
            print(f"  {line}")
        status = status or (1 if problems else 0)
    return status


def cmd_demo(args) -> int:
    from slimbench.backends import Device
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.core.data import read_labelled
    from slimbench.defaults import default_decoder, default_encoder, default_sentence_encoder
    from slimbench.optimize.recipes import load_recipe
    from slimbench.pipeline import optimize
    from slimbench.reports import write_report

    device = Device.parse(args.device).require()
    names = (
        args.recipes.split(",")
        if args.recipes
        else (GPU_DEMO_RECIPES if device.is_cuda else DEMO_RECIPES)[args.task]
    )
    build, out_name, info_key = DEMO_DEFAULTS[args.task]
    if args.out is None:  # one directory per task: variant names and results would collide
        args.out = Path(out_name)
    check_output(args.out, "--out", directory=True)
    recipes = [load_recipe(name.strip()) for name in names if name.strip()]
    # the default trains where the demo measures when it is built
    builders = {"encoder": default_encoder, "decoder": default_decoder, "sentence": default_sentence_encoder}
    default = builders[build](device=str(device))
    quality = f"held-out {info_key.removeprefix('eval_')} {default.info[info_key]:.4f}"
    print(f"Embedded default: {default.path} ({quality})")
    checkpoint = Checkpoint.open(default.path)
    samples = read_labelled(default.eval_path).texts[:16]
    train = read_labelled(default.train_path)
    dirs, not_built = [], []
    for recipe in recipes:  # a recipe this machine cannot build (no fp8 GPU, a package missing) is one line
        try:
            dirs.append(
                optimize(checkpoint, recipe, args.out / "models", sample_texts=samples, train_data=train).path
            )
        except SlimbenchError as e:
            if args.debug:
                raise
            not_built.append(recipe.name)
            print(f"[{recipe.name}] not built: {' '.join(str(e).splitlines())}", file=sys.stderr)
    if not dirs:
        raise SlimbenchError(f"no recipe could be built here ({', '.join(not_built)})")
    results = args.out / "results.jsonl"
    status = _bench(args, dirs, default.eval_path, results)
    report = write_report([results], args.out)
    print(f"\nReport: {report}\nVariants: {args.out / 'models'}/<variant>/ (each loads without slimbench)")
    if not_built:
        print(f"Not built here: {', '.join(not_built)} (reasons above)")
    return status


COMMANDS = {
    "demo": cmd_demo,
    "optimize": cmd_optimize,
    "bench": cmd_bench,
    "report": cmd_report,
    "compare": cmd_compare,
    "verify": cmd_verify,
    "recipes": cmd_recipes,
}


# Loggers whose notices say nothing about a slimbench run: torchao's, of its optional compiled extensions that
# do not load on this machine, printed wherever transformers imports it (which it does whenever it is installed),
# torch's pytree deprecations that torchao's import sets off, and bitsandbytes' CPU backend's, of an optional
# kernel package (`kernels`) missing on an AVX512-BF16 CPU, printed wherever a quantizer imports bitsandbytes;
# ONNX Runtime's attention fusion's, that a head-pruned layer's q/k/v are narrower than the model's hidden size
# (it fuses them at their own width; the export's parity check compares the result). `--debug` shows them.
QUIETED_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu", "fusion_attention")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.debug:
        for name in QUIETED_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    interrupt.install()  # Ctrl-C and `kill` end a run with one line, the finished results kept
    try:
        return COMMANDS[args.command](args)
    # OSError: a file the system will not read or write (a full disk, a corrupt config.json, ...)
    except (SlimbenchError, OSError) as e:
        if args.debug:
            raise
        where = "" if isinstance(e, SlimbenchError) else " (--debug shows where)"
        print(f"slimbench: error: {' '.join(str(e).splitlines())}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nslimbench: interrupted; finished results and variants are kept", file=sys.stderr)
        return 130
