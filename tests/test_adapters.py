"""peft adapters as checkpoints: a LoRA classifier (its head saved with it, its labels counted from that head or
named by a config beside it), a LoRA causal LM, and a base that already has the head, each merged once into its base
and served as a plain model: the same outputs as the adapter on its base through peft, variants that deploy
without peft, and adapters that cannot be served right (prompt tuning, no head, another model's, no base) refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import (
    LABELS,
    TEXTS,
    built_variants,
    deploy_without_slimbench,
    deployed,
    make_tiny_bert,
    make_tiny_llama,
)
from slimbench import SlimbenchError
from slimbench.core.adapters import PROVENANCE
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import encode
from slimbench.tasks import get_task


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch) -> Path:
    """Merged adapters go to a cache of this module's own."""
    root = tmp_path_factory.getbasetemp() / "adapter-cache"
    monkeypatch.setenv("SLIMBENCH_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def bare_bert(tmp_path_factory) -> Path:
    """A tiny BertModel without a head or label names, as a base model is published."""
    from transformers import AutoModel, AutoTokenizer

    classifier = make_tiny_bert(tmp_path_factory.mktemp("classifier"))
    path = tmp_path_factory.mktemp("bare-bert")
    model = AutoModel.from_pretrained(classifier)
    model.config.num_labels = 2  # the label names go with it
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(classifier).save_pretrained(path)
    return path


def trained_lora(model, task_type, target_modules):
    """`model` with LoRA on `target_modules`, its B matrices (and a head peft saves with it) drawn at random as
    training would leave them: a fresh LoRA changes nothing, its B matrices start at zero."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(task_type=task_type, r=4, target_modules=target_modules))
    for name, param in model.named_parameters():
        if "lora_B" in name or "modules_to_save" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model.eval()


def lora_classifier(base: Path, out: Path, with_config: bool = False) -> tuple[Path, torch.Tensor]:
    """A LoRA text classifier over `base` (5 labels), saved as peft saves it with the tokenizer (and the fine-tuned
    config, labels named, where `with_config`); and its logits on TEXTS through peft."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    model = trained_lora(model, "SEQ_CLS", ["query", "value", "dense"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if with_config:
        model.config.save_pretrained(out)
    with torch.inference_mode():
        return out, model(**encode(tokenizer, TEXTS, 64, padding="longest")).logits


@pytest.fixture(scope="module")
def lora(bare_bert, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    return lora_classifier(bare_bert, tmp_path_factory.mktemp("lora") / "adapter")


def logits_of(checkpoint: Checkpoint) -> torch.Tensor:
    with torch.inference_mode():
        return checkpoint.load_model()(
            **encode(checkpoint.load_tokenizer(), TEXTS, 64, padding="longest")
        ).logits


def test_a_lora_classifier_is_served_merged_into_its_base(lora, cache, capsys):
    adapter, expected = lora
    checkpoint = Checkpoint.open(adapter)
    assert "merging the LORA adapter" in capsys.readouterr().err
    assert checkpoint.task == "text-classification" and checkpoint.adapter == adapter.resolve()
    assert checkpoint.path.parent == cache / "merged" and (checkpoint.path / "config.json").is_file()
    assert not list(checkpoint.path.glob("adapter_*"))  # a plain model directory
    provenance = json.loads((checkpoint.path / PROVENANCE).read_text())
    assert provenance["adapter"] == str(adapter.resolve()) and provenance["peft_type"] == "LORA"
    config = checkpoint.load_config()
    # the label count read from the head the adapter carries; no names were saved with it
    assert config.num_labels == len(LABELS) and config.id2label[4] == "LABEL_4"
    got = logits_of(checkpoint)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert got.argmax(-1).unique().numel() > 1  # the adapter tells the texts apart
    again = Checkpoint.open(adapter)  # merged once: the cache answers
    assert again.path == checkpoint.path and "merging" not in capsys.readouterr().err


def test_a_changed_adapter_is_merged_again(lora, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    adapter, _ = lora
    changed = tmp_path / "adapter"
    shutil.copytree(adapter, changed)
    weights = load_file(changed / "adapter_model.safetensors")
    weights = {k: v * 2 if "lora_B" in k else v for k, v in weights.items()}
    save_file(weights, changed / "adapter_model.safetensors")
    first, second = Checkpoint.open(adapter), Checkpoint.open(changed)
    assert first.path != second.path
    assert not torch.allclose(logits_of(first), logits_of(second))


def test_an_adapter_changed_in_place_replaces_its_earlier_merge(lora, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    adapter = tmp_path / "adapter"
    shutil.copytree(lora[0], adapter)
    first = Checkpoint.open(adapter).path
    other = Checkpoint.open(lora[0]).path  # another adapter's merge stays
    weights = load_file(adapter / "adapter_model.safetensors")
    save_file(
        {k: v * 2 if "lora_B" in k else v for k, v in weights.items()}, adapter / "adapter_model.safetensors"
    )
    second = Checkpoint.open(adapter).path
    assert second != first and not first.exists() and other.exists()


def test_label_names_come_from_the_config_saved_beside_the_adapter(bare_bert, lora, eval_jsonl, tmp_path):
    task = get_task("text-classification")
    unnamed = Checkpoint.open(lora[0])
    with pytest.raises(
        SlimbenchError, match="for a peft adapter, save the fine-tuned model's config beside it"
    ):
        task.read(eval_jsonl, unnamed.load_config())
    adapter, expected = lora_classifier(bare_bert, tmp_path / "named", with_config=True)
    named = Checkpoint.open(adapter)
    assert named.load_config().id2label == dict(enumerate(LABELS))
    assert len(task.read(eval_jsonl, named.load_config())) > 0
    assert torch.allclose(logits_of(named), expected, atol=1e-5)


def test_variants_of_an_adapter_deploy_without_peft(lora, tmp_path):
    adapter, expected = lora
    variants = built_variants(adapter, ["baseline", "onnx-o2"], tmp_path / "models", TEXTS)
    for variant in variants.values():
        manifest = json.loads((variant.path / "slimbench.json").read_text())
        assert manifest["source"]["adapter"] == str(adapter.resolve())
        assert manifest["agreement_check"]["passed"]
    script = """
import sys
sys.modules["peft"] = None  # a deployment without peft
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from optimum.onnxruntime import ORTModelForSequenceClassification
def deploy(path, onnx, texts):
    tokenizer = AutoTokenizer.from_pretrained(path)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    model = (ORTModelForSequenceClassification if onnx else AutoModelForSequenceClassification).from_pretrained(path)
    with torch.inference_mode():
        return model(**enc).logits.tolist()
"""
    cases = {name: [str(v.path), name != "baseline", TEXTS] for name, v in variants.items()}
    outcomes = deploy_without_slimbench(script, cases, tmp_path)
    for name in cases:
        got = torch.tensor(deployed(outcomes[name]))
        assert torch.allclose(got, expected, atol=1e-4), (name, (got - expected).abs().max())


def test_a_base_that_has_the_head_needs_none_in_the_adapter(tmp_path):
    """A LoRA without a task type over a fine-tuned classifier: the head loads from the base."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = make_tiny_bert(tmp_path / "classifier")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = trained_lora(AutoModelForSequenceClassification.from_pretrained(base), None, ["query"])
    model.save_pretrained(tmp_path / "adapter")
    assert not [k for k in model.state_dict() if "modules_to_save" in k]
    checkpoint = Checkpoint.open(tmp_path / "adapter")
    assert checkpoint.task == "text-classification"
    assert checkpoint.load_config().id2label == dict(enumerate(LABELS))  # the base's labels
    with torch.inference_mode():
        expected = model(**encode(tokenizer, TEXTS, 64, padding="longest")).logits
    assert torch.allclose(logits_of(checkpoint), expected, atol=1e-5)


def tiny_bart(path: Path) -> Path:
    """A tiny random BART with the seq2seq tests' tokenizer."""
    from test_seq2seq import seq2seq_tokenizer
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = seq2seq_tokenizer(path)
    BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.bos_token_id, forced_eos_token_id=None,
    )).eval().save_pretrained(path)  # fmt: skip
    return path


@pytest.mark.parametrize("task", ["causal-lm", "seq2seq"])
def test_a_lora_language_model_generates_as_through_peft(task, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if task == "causal-lm":
        base, auto, peft_task, modules = make_tiny_llama(tmp_path / "llama"), AutoModelForCausalLM, "CAUSAL_LM", \
            ["q_proj", "v_proj", "gate_proj"]  # fmt: skip
    else:
        base, auto, peft_task, modules = tiny_bart(tmp_path / "bart"), AutoModelForSeq2SeqLM, "SEQ_2_SEQ_LM", \
            ["q_proj", "v_proj", "fc1"]  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = trained_lora(auto.from_pretrained(base), peft_task, modules)
    model.save_pretrained(tmp_path / "adapter")
    checkpoint = Checkpoint.open(tmp_path / "adapter")
    assert checkpoint.task == task
    prompt = dict(tokenizer(TEXTS[:2], return_tensors="pt", padding=True))
    forward = {**prompt, "decoder_input_ids": prompt["input_ids"][:, :4]} if task == "seq2seq" else prompt
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    merged = checkpoint.load_model()
    with torch.inference_mode():
        expected, got = model(**forward).logits, merged(**forward).logits
        assert not torch.allclose(
            auto.from_pretrained(base)(**forward).logits, expected, atol=1e-3
        )  # LoRA did something
        assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
        assert torch.equal(merged.generate(**prompt, **settings), model.generate(**prompt, **settings))


@pytest.mark.parametrize("task", ["token-classification", "question-answering"])
def test_the_head_an_adapter_carries_is_merged(task, bare_bert, tmp_path):
    """Token classifiers' and question answerers' heads, which peft saves with their adapters, as the classifier's."""
    from transformers import AutoTokenizer

    from slimbench.backends.base import scores

    auto, peft_task, labels = {"token-classification": (get_task(task).auto_class(), "TOKEN_CLS", 3),
                               "question-answering": (get_task(task).auto_class(), "QUESTION_ANS", 2)}[task]  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(bare_bert)
    model = trained_lora(auto.from_pretrained(bare_bert, num_labels=labels), peft_task, ["query", "value"])
    model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    checkpoint = Checkpoint.open(tmp_path / "adapter")
    assert checkpoint.task == task and checkpoint.load_config().num_labels == labels
    enc = encode(tokenizer, TEXTS, 64, padding="longest")
    with torch.inference_mode():
        expected, got = scores(model(**enc)), scores(checkpoint.load_model()(**enc))
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_a_sentence_encoder_adapter_keeps_its_base_pooling(tmp_path):
    """A LoRA over a sentence-transformers model: the merged model carries the base's modules and pooling, so its
    variants embed as the base pools and load with SentenceTransformer."""
    from test_feature_extraction import make_sentence_encoder
    from transformers import AutoModel

    from slimbench.tasks.feature_extraction import pooling_modes

    base = make_sentence_encoder(tmp_path / "encoder", pooling="cls")
    trained_lora(AutoModel.from_pretrained(base), "FEATURE_EXTRACTION", ["query", "value"]).save_pretrained(
        tmp_path / "adapter"
    )
    checkpoint = Checkpoint.open(tmp_path / "adapter")
    assert checkpoint.task == "feature-extraction"
    assert (checkpoint.path / "modules.json").is_file() and pooling_modes(checkpoint.path) == ("cls",)


def test_a_base_stored_in_bf16_is_merged_in_bf16(bare_bert, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModel

    base = tmp_path / "bf16"
    AutoModel.from_pretrained(bare_bert, dtype=torch.bfloat16).save_pretrained(base)
    for f in bare_bert.glob("*"):
        if f.suffix != ".safetensors" and f.name != "config.json":
            (base / f.name).write_bytes(f.read_bytes())
    adapter, _ = lora_classifier(base, tmp_path / "adapter")
    merged = Checkpoint.open(adapter).path
    with safe_open(str(merged / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


def _retarget(adapter: Path, **fields) -> Path:
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **fields}))
    return adapter


@pytest.mark.parametrize(
    "case", ["prompt tuning", "no head", "another model's", "no base", "no weights", "4-bit base"]
)
def test_adapters_that_cannot_be_served_right_are_refused(case, bare_bert, lora, tmp_path):
    import shutil

    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    adapter = tmp_path / "adapter"
    if case == "prompt tuning":
        model = AutoModelForSequenceClassification.from_pretrained(bare_bert)
        get_peft_model(model, PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4)).save_pretrained(
            adapter
        )
        message = "is a PROMPT_TUNING adapter: it adds virtual tokens at run time and cannot be merged"
    elif case == "no head":  # LoRA without task_type over a base without the head: nothing saves the head
        model = AutoModelForSequenceClassification.from_pretrained(bare_bert, num_labels=len(LABELS))
        get_peft_model(model, LoraConfig(r=4, target_modules=["query"])).save_pretrained(adapter)
        _retarget(adapter, task_type="SEQ_CLS")
        message = "carries no weights for the text-classification head (classifier.bias, classifier.weight)"
    elif (
        case == "another model's"
    ):  # made for a deeper BERT: peft alone would load its first layers and go on
        deeper = tmp_path / "deeper"
        shutil.copytree(bare_bert, deeper)
        config = json.loads((deeper / "config.json").read_text())
        (deeper / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 5}))
        model = AutoModelForSequenceClassification.from_pretrained(deeper, num_labels=len(LABELS))
        get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query"])).save_pretrained(
            adapter
        )
        _retarget(adapter, base_model_name_or_path=str(bare_bert))
        message = "does not fit its base: it has weights the base has no place for (4, the first: "
    elif case == "no base":
        shutil.copytree(lora[0], adapter)
        _retarget(adapter, base_model_name_or_path="org/missing-base")
        message = (
            "its base model 'org/missing-base' is neither a local directory nor a hub id in the local cache"
        )
    elif case == "no weights":
        shutil.copytree(lora[0], adapter)
        (adapter / "adapter_model.safetensors").unlink()
        message = "has no adapter_model.safetensors"
    else:  # QLoRA trained over a pre-quantized copy of the base, which the adapter names
        quantized = tmp_path / "bnb-4bit"
        shutil.copytree(bare_bert, quantized)
        config = json.loads((quantized / "config.json").read_text())
        config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
        (quantized / "config.json").write_text(json.dumps(config))
        shutil.copytree(lora[0], adapter)
        _retarget(adapter, base_model_name_or_path=str(quantized))
        message = (
            "is stored quantized (bitsandbytes), and merged into it the adapter's update would be rounded"
        )
    with pytest.raises(SlimbenchError, match=re.escape(message)):
        Checkpoint.open(adapter)


def test_a_decoder_classifier_adapter_gets_the_pad_token_its_training_set(tmp_path):
    """A LoRA over a Llama classifies by each text's last token, found with config.pad_token_id: set on the model
    in training (the base has none), not saved by peft; the merged model takes it from the saved tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = make_tiny_llama(tmp_path / "llama")
    config = json.loads((base / "config.json").read_text())
    del config["pad_token_id"]
    (base / "config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(LABELS))
    model.config.pad_token_id = tokenizer.pad_token_id  # as a training script does
    model = trained_lora(model, "SEQ_CLS", ["q_proj", "v_proj"])
    model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    checkpoint = Checkpoint.open(tmp_path / "adapter")
    assert checkpoint.load_config().pad_token_id == tokenizer.pad_token_id is not None
    with torch.inference_mode():
        expected = model(**encode(tokenizer, TEXTS, 64, padding="longest")).logits
    assert torch.allclose(logits_of(checkpoint), expected, atol=1e-5)
