"""Bad input through the CLI: each case exits 2 with one line naming the fix and no traceback, before
any model is loaded where the input can be checked first. docs/reliability.md is generated from CASES
(`python -m pytest tests/test_reliability.py` fails when it drifts)."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import LABELS
from slimbench.cli import main

# (what is wrong, command, what the one line says)
CASES = [
    ("checkpoint path does not exist", "optimize {tmp}/nope --recipe baseline --out {tmp}/o",
     "is neither a local directory nor a hub id in the local cache"),
    ("checkpoint directory has no config.json", "optimize {empty} --recipe baseline --out {tmp}/o",
     "has no config.json: not a Hugging Face model directory"),
    ("config.json is not valid JSON", "optimize {badjson} --recipe baseline --out {tmp}/o", "is not valid JSON"),
    ("weights file truncated", "optimize {truncated} --recipe baseline --out {tmp}/o",
     "is not a readable safetensors file"),
    ("only pickle weights", "optimize {pickle} --recipe baseline --out {tmp}/o",
     "pickle .bin weights load only with --allow-pickle"),
    ("architecture names no task", "optimize {notask} --recipe baseline --out {tmp}/o",
     "cannot tell the task of"),
    ("unknown --task", "optimize {bert} --task summarization --recipe baseline --out {tmp}/o",
     "unknown task 'summarization'"),
    ("unknown recipe name", "optimize {bert} --recipe fastest --out {tmp}/o", "unknown recipe 'fastest'"),
    ("recipe file does not exist", "optimize {bert} --recipe {tmp}/nope.yaml --out {tmp}/o", "does not exist"),
    ("recipe file is not YAML", "optimize {bert} --recipe {badyaml} --out {tmp}/o", "not valid YAML"),
    ("recipe names an unknown field", "optimize {bert} --recipe {badfield} --out {tmp}/o",
     "step 1 'prune': unknown field 'sparsty'"),
    ("recipe value out of range", "optimize {bert} --recipe {badvalue} --out {tmp}/o",
     "step 1 'prune': sparsity must be between 0 and 1"),
    ("recipe steps in an impossible order", "optimize {bert} --recipe {badorder} --out {tmp}/o",
     "step 2 'prune': takes a torch model, but the steps before it produce a onnx model"),
    ("recover without training data", "optimize {bert} --recipe magnitude-50 --out {tmp}/o",
     "has a 'recover' step: pass training data (--train-data FILE)"),
    ("a one-score head's label is not a number", "optimize {scorer} --recipe magnitude-50 --train-data {badscore} --out {tmp}/o",
     "row 1: label 'good' is not a number (the model has one output, a score)"),
    ("a question-answering model's training answer is not in its context",
     "optimize {reader} --recipe magnitude-50 --train-data {badanswer} --out {tmp}/o",
     "row 1: the answer 'zebra' is not in the context (an extractive model answers with a span of it)"),
    ("question-answering data given as texts and labels", "optimize {reader} --recipe magnitude-50 --train-data {train} --out {tmp}/o",
     "lacks column(s) ['answers', 'context', 'question']"),
    ("a speech-to-text model (Whisper) given as a seq2seq checkpoint", "optimize {whisper} --recipe baseline --out {tmp}/o",
     "is a WhisperForConditionalGeneration, but transformers' AutoModelForSeq2SeqLM loads no whisper checkpoints"),
    ("structured pruning of a seq2seq model", "optimize {summarizer} --recipe pruned-l2-int8 --out {tmp}/o",
     "structured pruning supports BERT-family encoders (BERT, RoBERTa, MiniLM, DistilBERT, ...), not "
     "BartForConditionalGeneration"),
    ("static int8 of a seq2seq model's several ONNX graphs", "optimize {summarizer} --recipe onnx-int8-static --out {tmp}/o",
     "a seq2seq model exports 3 ONNX graphs (encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx); "
     "static-int8 and fallback_budget calibrate and probe one graph"),
    ("a device for a recipe that is not a search", "optimize {bert} --recipe baseline --device cpu --out {tmp}/o",
     "--device chooses where a search measures its candidates; 'baseline' is not a search"),
    ("a checkpoint saved without its tokenizer", "optimize {notokenizer} --recipe baseline --out {tmp}/o",
     "checkpoint '{notokenizer}' has no tokenizer (tokenizer.json, tokenizer_config.json, vocab.txt, ...): save the one "
     "it was fine-tuned with beside it"),
    ("a LoRA adapter whose base model is not on this machine", "optimize {orphan} --recipe baseline --out {tmp}/o",
     "its base model 'org/missing-base' is neither a local directory nor a hub id in the local cache"),
    ("a prompt-tuning adapter (nothing to merge into the weights)", "optimize {prompted} --recipe baseline --out {tmp}/o",
     "is a PROMPT_TUNING adapter: it adds virtual tokens at run time and cannot be merged into the weights"),
    ("training data does not exist", "optimize {bert} --recipe magnitude-50 --train-data {tmp}/none.jsonl --out {tmp}/o",
     "data file '{tmp}/none.jsonl' does not exist"),
    ("training data lacks a column", "optimize {bert} --recipe magnitude-50 --train-data {nolabel} --out {tmp}/o",
     "lacks column(s) ['label']"),
    ("training label unknown to the model", "optimize {bert} --recipe magnitude-50 --train-data {badlabel} --out {tmp}/o",
     "label 'weather' is neither an id nor one of"),
    ("training data empty", "optimize {bert} --recipe magnitude-50 --train-data {emptydata} --out {tmp}/o",
     "has no rows"),
    ("training data of an unknown format", "optimize {bert} --recipe magnitude-50 --train-data {txt} --out {tmp}/o",
     "use .jsonl or .csv"),
    ("sample data does not exist", "optimize {bert} --recipe baseline --sample-data {tmp}/none.jsonl --out {tmp}/o",
     "does not exist"),
    ("output holds a file of the user's", "optimize {bert} --recipe baseline --out {usersout}",
     "holds files slimbench did not write (notes.txt)"),
    ("--min-agreement outside 0..1", "optimize {bert} --recipe baseline --min-agreement 2 --out {tmp}/o",
     "--min-agreement must be between 0 and 1"),
    ("search budget outside (0, 1]", "optimize {bert} --recipe baseline --budget 0 --out {tmp}/o",
     "--budget must be in (0, 1], got 0.0"),
    ("negative search time budget", "optimize {bert} --recipe baseline --max-minutes -1 --out {tmp}/o",
     "--max-minutes must be >= 0, got -1.0"),
    ("search batch size below 1", "optimize {bert} --recipe fastest-within-1pct --batch-size 0 --out {tmp}/o",
     "--batch-size must be >= 1, got 0"),
    ("search workload for a plain recipe", "optimize {bert} --recipe baseline --seq-len 32 --out {tmp}/o",
     "--batch-size and --seq-len choose a search's workload; 'baseline' is not a search"),
    ("calibration auto without a budget", "optimize {bert} --recipe {autocalib} --out {tmp}/o",
     "calibration auto needs quantize static-int8 and a fallback_budget to choose by"),
    ("search recipe without eval data", "optimize {bert} --recipe fastest-within-1pct --train-data {train} --out {tmp}/o",
     "measures its candidates: pass --eval-data FILE"),
    ("ONNX Runtime has no graph optimizations for the architecture", "optimize {qwen2} --recipe onnx-o2-int8 --out {tmp}/o",
     "ONNX Runtime has no graph optimizations (O2) for qwen2 models; the `onnx` recipe, or `optimize: null` in a "
     "recipe of your own, exports the model without them"),
    ("ONNX export of a task optimum does not export for the architecture",
     "optimize {llamaner} --recipe onnx --out {tmp}/o",
     "optimum exports no llama token-classification models to ONNX (for llama: feature-extraction, "),
    ("token-classification training data as text and label", "optimize {llamaner} --recipe magnitude-50 --train-data {train} --out {tmp}/o",
     "train.jsonl' line 1: needs 'tokens' and 'tags' lists"),
    ("token-classification sample inputs as text", "optimize {llamaner} --recipe baseline --sample-data {nolabel} --out {tmp}/o",
     "nolabel.jsonl' line 1: needs 'tokens' lists"),
    ("structured pruning of a decoder", "optimize {qwen2} --recipe pruned-l2-int8 --train-data {train} --out {tmp}/o",
     "structured pruning supports BERT-family encoders (BERT, RoBERTa, MiniLM, DistilBERT, ...), not Qwen2ForSequenceClassification"),
    ("bench: not a variant directory", "bench {bert} --eval-data {eval} --results {tmp}/r.jsonl",
     "is not a slimbench variant (no slimbench.json)"),
    ("bench: variant manifest is not JSON", "bench {badmanifest} --eval-data {eval} --results {tmp}/r.jsonl",
     "slimbench.json' is not valid JSON"),
    ("bench: eval data does not exist", "bench {variant} --eval-data {tmp}/none.jsonl --results {tmp}/r.jsonl",
     "does not exist"),
    ("bench: eval data lacks columns", "bench {variant} --eval-data {nolabel} --results {tmp}/r.jsonl",
     "lacks column(s) ['label']"),
    ("bench: eval label unknown to the model", "bench {variant} --eval-data {badlabel} --results {tmp}/r.jsonl",
     "label 'weather' is neither an id nor one of"),
    ("bench: eval data empty", "bench {variant} --eval-data {emptydata} --results {tmp}/r.jsonl", "has no rows"),
    ("bench: feature-extraction eval data with neither labels nor sentence pairs",
     "bench {fevariant} --eval-data {nolabel} --results {tmp}/r.jsonl",
     "feature-extraction eval data has 'text' and 'label', or 'sentence1', 'sentence2', 'score'"),
    ("bench: eval data not UTF-8", "bench {variant} --eval-data {latin1} --results {tmp}/r.jsonl", "could not be read"),
    ("bench: sequence longer than the model takes",
     "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --seq-lens 100000",
     "sequence length 100000 is longer than baseline takes (128 positions)"),
    ("bench: --device cuda without a GPU", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --device cuda",
     "PyTorch sees no CUDA GPU on this machine"),
    ("bench: unknown device", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --device gpu",
     "device must be cpu, cuda or cuda:N, got 'gpu'"),
    ("bench: --baseline not among the variants", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --baseline x",
     "baseline 'x' is not among the variants benchmarked"),
    ("bench: batch size 0", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --batch-sizes 0",
     "expected positive integers like 1,32, got '0'"),
    ("bench: sequence the special tokens fill", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --seq-lens 2",
     "sequence length 2 holds no text for baseline: its tokenizer adds 2 special token(s) to every text; use "
     "--seq-lens/--eval-seq-len of at least 3"),
    ("bench: eval sequence of one token", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --eval-seq-len 1",
     "sequence length 1 holds no text for baseline"),
    ("bench: 0 threads", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --threads 0",
     "argument --threads: expected an integer of at least 1, got '0'"),
    ("bench: negative warm-up", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --warmup -1",
     "argument --warmup: expected an integer of at least 0, got '-1'"),
    ("bench: minimum seconds not a number", "bench {variant} --eval-data {eval} --results {tmp}/r.jsonl --min-seconds soon",
     "argument --min-seconds: expected a number, got 'soon'"),
    ("bench: a variant's config.json is not JSON", "bench {badconfig} --eval-data {eval} --results {tmp}/r.jsonl",
     "It looks like the config file at '{badconfig}/config.json' is not a valid JSON file"),
    ("bench: --results is a directory", "bench {variant} --eval-data {eval} --results {tmp}",
     "--results '{tmp}' is a directory; give a file"),
    ("bench: --results under a file", "bench {variant} --eval-data {eval} --results {txt}/r.jsonl",
     "--results '{txt}/r.jsonl' cannot be written: '{txt}' is a file"),
    ("optimize: --out is a file", "optimize {bert} --recipe baseline --out {txt}", "--out '{txt}' is a file; give a directory"),
    ("bench: two variants of one name", "bench {variant} {variant} --eval-data {eval} --results {tmp}/r.jsonl",
     "two variants share a name"),
    ("report: results file does not exist", "report {tmp}/none.jsonl --out {tmp}/rep", "does not exist"),
    ("report: results file holds no record", "report {emptydata} --out {tmp}/rep", "the results files hold no records"),
    ("report: --out holds the user's report.md", "report {results} --out {usersreport}",
     "were not written by slimbench"),
    ("report: --out under a file", "report {results} --out {txt}/rep", "--out '{txt}/rep' cannot be written: '{txt}' is a file"),
    ("report: --budget outside (0, 1]", "report {results} --out {tmp}/rep --budget 1.5", "--budget must be in (0, 1]"),
    ("report: --baseline not in the results", "report {results} --out {tmp}/rep --baseline nope",
     "--baseline 'nope' is not a variant in these results"),
    ("report: a file of another schema", "report {future} --out {tmp}/rep",
     "holds records of schema_version 99; this slimbench reads up to 3"),
    ("compare: a rule without a percent", "compare {results} {results} --fail-on latency_ms_p50", "write each rule as FIELD:PERCENT%"),
    ("compare: unknown field", "compare {results} {results} --fail-on speed:5%", "unknown field 'speed'"),
    ("verify: not a variant", "verify {bert}", "is not a slimbench variant"),
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tiny_variants, tiny_bert, eval_jsonl, tmp_path_factory):
    from transformers import (
        AutoConfig,
        AutoModelForQuestionAnswering,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        WhisperConfig,
        WhisperForConditionalGeneration,
    )

    tmp = tmp_path_factory.mktemp("reliability")
    paths = {"tmp": tmp, "bert": tiny_bert, "eval": eval_jsonl, "variant": tiny_variants["baseline"].path}
    for name in ("empty", "badjson", "notask", "pickle", "truncated"):
        paths[name] = tmp / name
    (tmp / "empty").mkdir()
    for name, config, architecture in [("badjson", "{not json", None), ("notask", None, "BertForMaskedLM"),
                                       ("sentence", None, "BertModel")]:  # fmt: skip
        d = paths[name] = tmp / name
        d.mkdir()
        cfg = json.loads((tiny_bert / "config.json").read_text())
        cfg["architectures"] = [architecture]
        (d / "config.json").write_text(config or json.dumps(cfg))
        (d / "model.safetensors").write_bytes((tiny_bert / "model.safetensors").read_bytes())
    for f in tiny_bert.glob("*.json"):
        if f.name != "config.json":
            shutil.copy2(f, paths["sentence"] / f.name)
    for f in tiny_bert.glob("*.txt"):
        shutil.copy2(f, paths["sentence"] / f.name)
    from slimbench.core.checkpoint import Checkpoint
    from slimbench.optimize.recipes import load_recipe
    from slimbench.pipeline import optimize

    paths["fevariant"] = optimize(Checkpoint.open(paths["sentence"]), load_recipe("baseline"), tmp / "fe-models",
                                  sample_texts=["a b c"], log=lambda *_: None, progress=False).path  # fmt: skip
    (tmp / "truncated").mkdir()
    (tmp / "truncated" / "config.json").write_text((tiny_bert / "config.json").read_text())
    (tmp / "truncated" / "model.safetensors").write_bytes(
        (tiny_bert / "model.safetensors").read_bytes()[:1000]
    )
    (tmp / "notokenizer").mkdir()  # as Trainer saves a model it was not given the tokenizer of
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(tiny_bert / name, tmp / "notokenizer" / name)
    paths["notokenizer"] = tmp / "notokenizer"
    (tmp / "pickle").mkdir()
    (tmp / "pickle" / "config.json").write_text((tiny_bert / "config.json").read_text())
    (tmp / "pickle" / "pytorch_model.bin").write_bytes(b"")
    recipes = {
        "badyaml": "name: [unclosed\n",
        "badfield": "name: r\nsteps:\n  - prune: {sparsty: 0.5}\n",
        "badvalue": "name: r\nsteps:\n  - prune: {sparsity: 1.5}\n",
        "badorder": "name: r\nsteps:\n  - export: {}\n  - prune: {}\n",
        "autocalib": "name: r\nsteps:\n  - export: {quantize: static-int8, calibration: auto}\n",
    }
    for name, text in recipes.items():
        paths[name] = tmp / f"{name}.yaml"
        paths[name].write_text(text)
    rows = {
        "nolabel": [{"text": "a"}],
        "badlabel": [{"text": "a", "label": "weather"}],
        "train": [{"text": "a b c", "label": LABELS[0]}],
        "badscore": [{"sentence1": "a b", "sentence2": "c", "label": "good"}],
        "badanswer": [{"question": "who?", "context": "a b c", "answers": ["zebra"]}],
    }
    for name, data in rows.items():
        paths[name] = tmp / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in data))
    paths["emptydata"] = tmp / "empty.jsonl"
    paths["emptydata"].write_text("")
    paths["txt"] = tmp / "data.txt"
    paths["txt"].write_text("text,label\n")
    paths["latin1"] = tmp / "latin1.jsonl"
    paths["latin1"].write_bytes(b'{"text": "caf\xe9", "label": 0}\n')
    paths["usersout"] = tmp / "users-out"
    (paths["usersout"] / "baseline").mkdir(parents=True)
    (paths["usersout"] / "baseline" / "notes.txt").write_text("mine")
    paths["usersreport"] = tmp / "users-report"
    paths["usersreport"].mkdir()
    (paths["usersreport"] / "report.md").write_text("# my own notes\n")
    paths["badconfig"] = tmp / "badconfig"
    shutil.copytree(tiny_variants["baseline"].path, paths["badconfig"])
    with open(paths["badconfig"] / "config.json", "a") as f:
        f.write("x")
    paths["badmanifest"] = tmp / "badmanifest"
    paths["badmanifest"].mkdir()
    (paths["badmanifest"] / "slimbench.json").write_text("{")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, model_input_names=["input_ids", "attention_mask"])
    decoder = dict(vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                   num_attention_heads=2, num_key_value_heads=1, id2label=dict(enumerate(LABELS)),
                   label2id={n: i for i, n in enumerate(LABELS)}, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    for name, model_type, auto in (("qwen2", "qwen2", AutoModelForSequenceClassification),
                                   ("llamaner", "llama", AutoModelForTokenClassification)):  # fmt: skip
        paths[name] = tmp / name
        auto.from_config(AutoConfig.for_model(model_type, **decoder)).save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    paths["scorer"] = tmp / "scorer"  # a cross-encoder's one-score head
    AutoModelForSequenceClassification.from_config(
        AutoConfig.from_pretrained(tiny_bert, num_labels=1)
    ).save_pretrained(paths["scorer"])
    tokenizer.save_pretrained(paths["scorer"])
    paths["reader"] = tmp / "reader"  # an extractive question-answering head
    AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(tiny_bert)).save_pretrained(
        paths["reader"]
    )
    tokenizer.save_pretrained(paths["reader"])
    paths["summarizer"] = tmp / "summarizer"  # an encoder-decoder (BART)
    AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(
        "bart", vocab_size=tokenizer.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
    )).save_pretrained(paths["summarizer"])  # fmt: skip
    tokenizer.save_pretrained(paths["summarizer"])
    paths["whisper"] = tmp / "whisper"  # speech to text: an encoder-decoder no text task loads
    WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=8, max_target_positions=8, num_mel_bins=4,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )).save_pretrained(paths["whisper"])  # fmt: skip
    from peft import LoraConfig, PromptTuningConfig, get_peft_model

    for name, method in (("orphan", LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query"])),
                         ("prompted", PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2))):  # fmt: skip
        paths[name] = tmp / name  # peft adapters: one whose base is nowhere here, one that cannot merge
        get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert), method).save_pretrained(
            paths[name]
        )
    config = json.loads((paths["orphan"] / "adapter_config.json").read_text())
    (paths["orphan"] / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "org/missing-base"})
    )
    paths["results"] = tmp / "results.jsonl"
    record = {"status": "ok", "task": "text-classification", "variant": "baseline", "recipe": "baseline",
              "device": "cpu", "device_name": "cpu", "num_threads": 1, "batch_size": 1, "seq_len": 8,
              "latency_ms_p50": 1.0, "timestamp": "2026", "metric": 0.9, "metric_name": "accuracy"}  # fmt: skip
    paths["results"].write_text(json.dumps(record) + "\n")
    paths["future"] = tmp / "future.jsonl"
    paths["future"].write_text(json.dumps({**record, "schema_version": 99}) + "\n")
    return paths


def _fill(text: str, world) -> str:
    return text.format(**{k: str(v) for k, v in world.items()})


@pytest.mark.parametrize("case, command, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(case, command, message, world, capsys):
    try:
        code = main(_fill(command, world).split())
    except SystemExit as e:  # argparse's own checks
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("slimbench") and "error: " in last
    if "usage:" not in err:
        assert len(err.strip().splitlines()) == 1, err
    assert _fill(message, world) in last


def test_user_files_survive_every_refusal(world):
    assert (world["usersout"] / "baseline" / "notes.txt").read_text() == "mine"
    assert (world["usersreport"] / "report.md").read_text() == "# my own notes\n"


def reliability_markdown() -> str:
    lines = [
        "# What slimbench says to bad input",
        "",
        "Every case below exits with code 2 and prints one line, `slimbench: error: ...` (argparse's own checks "
        "print the usage line first), with no Python traceback unless `--debug` is given. Inputs are checked "
        "before any model is loaded or any measuring process starts, where they can be. Generated from "
        "`CASES` in `tests/test_reliability.py`, which runs each one through the CLI: the table cannot drift "
        "from what slimbench does. `{tmp}` and the other braces stand for paths the test creates.",
        "",
        "| # | what is wrong | command | the line says (excerpt) |",
        "|---|---|---|---|",
    ]
    for i, (case, command, message) in enumerate(CASES, start=1):
        lines.append(f"| {i} | {case} | `slimbench {command}` | {message.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


def test_docs_table_is_generated_from_the_cases():
    doc = Path(__file__).parents[1] / "docs" / "reliability.md"
    assert len(CASES) >= 30
    assert doc.read_text() == reliability_markdown(), (
        'docs/reliability.md is stale: python -c \'import sys; sys.path.insert(0, "tests"); '
        'from test_reliability import reliability_markdown as m; print(m(), end="")\' > docs/reliability.md'
    )
