"""bitsandbytes LLM.int8 and strided inputs.

bitsandbytes' CUDA int8 quantizer reads its input through data_ptr() as contiguous rows, so a Linear fed a
strided fp16 view (BERT's pooler, `hidden_states[:, 0]`, on a batch of two or more) quantizes the wrong
rows on a GPU, while the CPU kernels (PyTorch ops) read it right. On an H100 that put the embedded default
at 17% accuracy; the CPU keeps 97.25%. These tests reproduce the GPU's reading on the CPU and check that
slimbench's bnb-int8 variant does not depend on it."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TEXTS
from slimbench.backends import Device
from slimbench.core.checkpoint import Checkpoint
from slimbench.optimize.context import StepContext
from slimbench.optimize.quantize import QuantizeConfig, quantize, strided_inputs

pytest.importorskip("bitsandbytes")


def read_as_contiguous_rows(monkeypatch):
    """Make bitsandbytes' int8 quantizer read its input the way its CUDA kernel does: the memory from
    the input's first element on, taken as contiguous rows, whatever the input's strides."""
    import bitsandbytes.functional as F

    quantize_rows = F.int8_vectorwise_quant

    def as_cuda_reads(A, threshold=0.0):
        if not A.is_contiguous():
            A = torch.as_strided(A, A.shape, (A.shape[-1], 1), A.storage_offset()).clone()
        return quantize_rows(A, threshold)

    monkeypatch.setattr(F, "int8_vectorwise_quant", as_cuda_reads)


@functools.cache
def tokenizer(path: str):
    return Checkpoint.open(path).load_tokenizer()


def logits(model, texts):
    enc = tokenizer(model.name_or_path)(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc.to(model.device)).logits.float().cpu()


@pytest.fixture(scope="module")
def int8_variant(tiny_bert, tmp_path_factory):
    """slimbench's bnb-int8 of the tiny BERT, saved, reloaded the standard way (no dtype given, so
    transformers runs the 8-bit model in fp16)."""
    from transformers import AutoModelForSequenceClassification

    checkpoint = Checkpoint.open(tiny_bert)
    ctx = StepContext(checkpoint, checkpoint.load_tokenizer(), tmp_path_factory.mktemp("work"), TEXTS)
    saved = tmp_path_factory.mktemp("bnb-int8")
    quantize(checkpoint.load_model(), QuantizeConfig(bits=8), ctx).save_pretrained(saved)
    ctx.tokenizer.save_pretrained(saved)
    device = str(Device.best())
    return ctx, AutoModelForSequenceClassification.from_pretrained(saved, device_map=device).eval(), saved


def test_linears_fed_strided_inputs_are_found(tiny_bert):
    checkpoint = Checkpoint.open(tiny_bert)
    batch = checkpoint.load_tokenizer()(TEXTS[:2], padding=True, return_tensors="pt")
    assert strided_inputs(checkpoint.load_model(), batch) == ["bert.pooler.dense"]


def test_a_decoder_has_no_linear_fed_a_strided_view(tiny_llama):
    """Llama's projections and head take contiguous rows: bnb-int8 quantizes every one of them."""
    checkpoint = Checkpoint.open(tiny_llama)
    llama_tokenizer = checkpoint.load_tokenizer()
    llama_tokenizer.pad_token = llama_tokenizer.pad_token or llama_tokenizer.eos_token
    batch = llama_tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    assert strided_inputs(checkpoint.load_model(), batch) == []


def test_int8_variant_keeps_the_pooler_unquantized_on_reload(int8_variant):
    ctx, model, _ = int8_variant
    assert "strided view" in ctx.notes["not_quantized"]["bert.pooler.dense"]
    assert "bert.pooler.dense" in model.config.quantization_config.llm_int8_skip_modules
    assert type(model.bert.pooler.dense) is torch.nn.Linear  # reloaded without slimbench
    assert type(model.bert.encoder.layer[0].intermediate.dense).__name__ == "Linear8bitLt"
    assert model.dtype == torch.float16


def test_the_gpu_reading_breaks_a_plain_int8_model_but_not_the_variant(tiny_bert, int8_variant, monkeypatch):
    """On the CPU, with the quantizer reading as the CUDA kernel does: transformers' own 8-bit model gives
    other logits for every sequence but the first, slimbench's variant the same ones."""
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    if Device.best().type != "cpu":
        pytest.skip("emulates the CUDA kernel's reading on the CPU kernels; on a GPU the next test runs it")
    plain = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="cpu"
    ).eval()
    _, variant, _ = int8_variant
    texts = TEXTS[:4]
    before = {"plain": logits(plain, texts), "variant": logits(variant, texts)}
    read_as_contiguous_rows(monkeypatch)
    after = {"plain": logits(plain, texts), "variant": logits(variant, texts)}
    assert torch.equal(after["plain"][0], before["plain"][0])  # the first row is read right
    assert (after["plain"][1:] - before["plain"][1:]).abs().max() > 1e-2
    assert torch.equal(after["variant"], before["variant"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: bitsandbytes' CUDA int8 kernels")
def test_int8_variant_gives_each_sequence_the_same_logits_alone_and_in_a_batch_on_a_gpu(int8_variant):
    _, variant, _ = int8_variant
    batched = logits(variant, TEXTS[:4])
    alone = torch.cat([logits(variant, [t]) for t in TEXTS[:4]])
    assert (batched - alone).abs().max() < 0.05


def test_the_probe_finds_the_misread_on_the_cpu_made_to_read_as_the_gpu(
    tiny_bert, eval_jsonl, int8_variant, tmp_path
):
    """docs/results/gpu/bnb_int8_probe.py runs in a GPU lease. Here, on bitsandbytes' CPU backend made to read
    inputs as the CUDA kernel does (--read-as-cuda), the only ops it finds wrong are those fed a strided
    input (all of them without the outlier path), the first wrong layer is the pooler, and every part is
    written."""
    probe = Path(__file__).parents[1] / "docs" / "results" / "gpu" / "bnb_int8_probe.py"
    out = tmp_path / "probe.json"
    done = subprocess.run([sys.executable, str(probe), str(tiny_bert), str(eval_jsonl), str(out), "--device", "cpu",
                           "--limit", "8", "--seq-len", "32", "--read-as-cuda", "--variant", str(int8_variant[2])],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    strided = [f"{o['op']} at {o['shape']}" for o in result["ops"] if "non-contiguous" in o["op"]]
    assert result["ops_wrong"] and set(result["ops_wrong"]) <= set(strided), result["ops"]
    assert {name for name in strided if "threshold 0," in name} <= set(result["ops_wrong"])  # no outlier path
    assert {"int8_linear_matmul", "int8_mm_dequant"} <= {o["op"] for o in result["ops"]}
    assert result["first_wrong_layer"]["layer"] == "bert.pooler.dense"
    assert result["first_wrong_layer"]["input_contiguous"] is False
    cases = ("fp32", "int8 saved and reloaded", "int8, pooler kept", f"saved variant {int8_variant[2].name}")
    assert all(isinstance(result[case], float) for case in cases), result
