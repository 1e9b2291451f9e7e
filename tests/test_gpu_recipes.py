"""Recipes for newer GPUs: fp8 (torchao float8, compute capability 8.9+) and 2:4 sparsity on cuSPARSELt
(8.0+). On a machine without such a GPU: fp8 is refused in one line, the 2:4 variant is built (stored
dense) and is "not run" wherever its sparse kernels cannot run. On such a GPU the same module checks the
real kernels."""

import pytest
import torch

from conftest import TEXTS, make_tiny_bert
from slimbench import SlimbenchError
from slimbench.backends import Device, cannot_run, load
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText
from slimbench.core.manifest import read_manifest
from slimbench.optimize.prune import is_two_of_four
from slimbench.optimize.recipes import builtin_recipes
from slimbench.pipeline import optimize

HERE = Device.best().compute_capability() or (0, 0)
NO_FP8 = "needs a CUDA GPU of compute capability 8.9+ (Ada, Hopper); " + (
    f"this one is {HERE[0]}.{HERE[1]}" if Device.best().is_cuda else "this machine has none"
)
NO_SPARSE = "needs a CUDA GPU of compute capability 8.0+ for 2:4 sparse kernels; " + (
    f"this one is {HERE[0]}.{HERE[1]}" if Device.best().is_cuda else "this machine has none"
)


@pytest.fixture(scope="module")
def wide_bert(tmp_path_factory):
    """A tiny BERT whose Linear layers have the shapes the semi-structured kernels take (64 wide)."""
    return Checkpoint.open(make_tiny_bert(tmp_path_factory.mktemp("wide-bert"), hidden_size=64))


def build(checkpoint, name, out):
    train = LabelledText(TEXTS * 2, [i % 5 for i in range(len(TEXTS) * 2)])
    return optimize(checkpoint, builtin_recipes()[name], out, sample_texts=TEXTS, train_data=train,
                    allow_degraded=True, log=lambda *_: None, progress=False)  # fmt: skip


def test_recipes_name_the_gpu_their_variants_need():
    recipes = builtin_recipes()
    assert recipes["fp8"].min_compute_capability == (8, 9)
    assert recipes["sparse-2of4-bf16"].min_compute_capability == (8, 0)
    assert recipes["bf16-compiled"].min_compute_capability is None
    assert recipes["sparse-2of4"].min_compute_capability is None  # dense 2:4 runs anywhere
    assert recipes["kernels-bf16"].min_compute_capability == (8, 0)  # Triton's NVIDIA backend


def test_the_fp8_setting_survives_config_json():
    """What from_pretrained reads back from a saved fp8 variant's config.json is the same torchao setting."""
    import json

    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow
    from transformers import TorchAoConfig

    from slimbench.optimize.quantize import QuantizeConfig

    saved = QuantizeConfig(backend="torchao", scheme="float8-dynamic").transformers_config(["classifier"])
    again = TorchAoConfig.from_dict(json.loads(json.dumps(saved.to_dict(), default=str)))
    assert isinstance(again.quant_type, Float8DynamicActivationFloat8WeightConfig)
    assert again.quant_type.granularity == [PerRow(), PerRow()]
    assert again.modules_to_not_convert == ["classifier"]


@pytest.mark.skipif(HERE >= (8, 9), reason="this machine has an fp8 GPU: test_fp8_on_the_gpu checks it")
def test_fp8_is_refused_in_one_line_without_an_fp8_gpu(wide_bert, tmp_path):
    with pytest.raises(
        SlimbenchError, match=r"float8-dynamic needs a CUDA GPU of compute capability 8\.9"
    ) as e:
        build(wide_bert, "fp8", tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "fp8").exists()


@pytest.mark.skipif(HERE >= (8, 9), reason="this machine has an fp8 GPU: test_fp8_on_the_gpu checks it")
def test_the_fp8_variant_saves_and_reloads_with_from_pretrained(wide_bert, tmp_path, monkeypatch):
    """The fp8 recipe's step, save and reload, taken through on the CPU: torchao quantizes to float8 and
    computes with it there too once its hardware check (and slimbench's refusal) is lifted, where torch
    multiplies float8 with per-row scales on the CPU (2.13 does, 2.11 does not), so what the GPU would
    build is checked here, up to the speed of its kernels."""
    import torchao.quantization.quant_api as quant_api
    from torchao.quantization import Float8Tensor
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from slimbench.optimize import quantize

    fp8 = torch.ones(16, 32).to(torch.float8_e4m3fn)
    try:  # what torchao's per-row float8 Linear calls
        torch._scaled_mm(
            fp8, fp8.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.bfloat16
        )
    except RuntimeError as e:
        pytest.skip(f"torch {torch.__version__} cannot multiply float8 with per-row scales on the CPU (torch 2.13 "
                    f"can): {str(e).splitlines()[0][:120]}")  # fmt: skip
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda *_: None)
    monkeypatch.setattr(quantize, "MIN_CAPABILITY", {})
    variant = build(wide_bert, "fp8", tmp_path)
    manifest = read_manifest(variant.path)
    assert manifest["dtype"] == "float8-dynamic" and manifest["agreement_check"]["checked"]
    assert manifest["agreement_check"]["agreement"] == 1.0
    deployed = AutoModelForSequenceClassification.from_pretrained(variant.path, dtype="auto").eval()
    linears = [m for m in deployed.bert.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m.weight, Float8Tensor) for m in linears)
    assert deployed.classifier.weight.dtype == torch.bfloat16  # the head is left out
    source = AutoModelForSequenceClassification.from_pretrained(wide_bert.path, dtype=torch.bfloat16).eval()
    batch = AutoTokenizer.from_pretrained(wide_bert.path)(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        torch.testing.assert_close(deployed(**batch).logits.float(), source(**batch).logits.float(),
                                   atol=0.05, rtol=0.05)  # fmt: skip


def test_the_2of4_variant_is_built_anywhere_and_names_the_gpu_it_needs(wide_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    variant = build(wide_bert, "sparse-2of4-bf16", tmp_path)
    manifest = read_manifest(variant.path)
    layers = manifest["notes"]["semi_structured_layers"]
    assert manifest["dtype"] == "bfloat16" and manifest["notes"]["min_compute_capability"] == [8, 0]
    assert len(layers) == 3 * 6 + 1  # q, k, v, attention output, FFN in and out of 3 layers; the pooler
    stored = AutoModelForSequenceClassification.from_pretrained(variant.path)  # dense, 2:4 zeros
    assert all(is_two_of_four(stored.get_submodule(name).weight) for name in layers)
    if HERE < (8, 0):
        assert (
            cannot_run(manifest, "cpu")
            == "2:4 sparse kernels need a CUDA GPU of compute capability 8.0 or newer"
        )


@pytest.mark.skipif(HERE >= (8, 0), reason="this machine runs 2:4 kernels: test_2of4_on_the_gpu checks them")
def test_the_2of4_variant_is_a_not_run_record_where_its_kernels_cannot_run(wide_bert, eval_jsonl, tmp_path):
    from slimbench.bench.runner import read_results
    from slimbench.cli import main

    variant = build(wide_bert, "sparse-2of4-bf16", tmp_path / "models")
    results = tmp_path / "r.jsonl"
    rc = main(["bench", str(variant.path), "--eval-data", str(eval_jsonl), "--results", str(results),
               "--batch-sizes", "1", "--seq-lens", "16", "--min-reps", "2", "--min-seconds", "0"])  # fmt: skip
    assert rc == 0
    (record,) = read_results(results)
    assert record["status"] == "not run"
    assert record["reason"] == "2:4 sparse kernels need a CUDA GPU of compute capability 8.0 or newer"


@pytest.mark.skipif(HERE < (8, 0), reason=NO_SPARSE)
def test_2of4_on_the_gpu(wide_bert, tmp_path):
    from torch.sparse import SparseSemiStructuredTensor
    from transformers import AutoModelForSequenceClassification

    from slimbench.backends.eager import to_semi_structured

    variant = build(wide_bert, "sparse-2of4-bf16", tmp_path)
    manifest = read_manifest(variant.path)
    assert manifest["agreement_check"]["checked"] and manifest["agreement_check"]["device"].startswith("cuda")
    layers = manifest["notes"]["semi_structured_layers"]
    dense = AutoModelForSequenceClassification.from_pretrained(variant.path, dtype="auto").cuda().eval()
    loaded = load(variant.path, "cuda")  # what the bench measures: the 2:4 layers on the sparse kernels
    batch = loaded.to_device(loaded.encode(TEXTS * 8, 64))
    with torch.inference_mode():
        expected = dense(**batch).logits.float()
        to_semi_structured(dense, layers)
        assert all(isinstance(dense.get_submodule(n).weight, SparseSemiStructuredTensor) for n in layers)
        sparse = dense(**batch).logits.float()
    torch.testing.assert_close(sparse, expected, atol=0.05, rtol=0.05)
    torch.testing.assert_close(loaded.forward(batch).float(), sparse, atol=1e-3, rtol=1e-3)


@pytest.mark.skipif(HERE < (8, 9), reason=NO_FP8)
def test_fp8_on_the_gpu(wide_bert, tmp_path):
    variant = build(wide_bert, "fp8", tmp_path)
    manifest = read_manifest(variant.path)
    assert manifest["agreement_check"]["checked"] and manifest["agreement_check"]["device"].startswith("cuda")
    assert manifest["dtype"] == "float8-dynamic" and manifest["notes"]["min_compute_capability"] == [8, 9]


def test_the_kernels_recipes_build_bf16_variants_that_replay_on_the_gpu(tmp_path):
    """kernels-bf16 and kernels-int4-bf16 (the GPU demo's): built here in the interpreter, recorded as
    bf16 torch-kernels variants whose logits replay as CUDA graphs; on a machine without a GPU they
    are "not run" with the reason."""
    checkpoint = Checkpoint.open(make_tiny_bert(tmp_path / "bert128", hidden_size=128))  # int4 groups of 128
    manifests = {name: read_manifest(build(checkpoint, name, tmp_path / "models").path)
                 for name in ("kernels-bf16", "kernels-int4-bf16")}  # fmt: skip
    for manifest in manifests.values():
        assert manifest["kind"] == "torch-kernels" and manifest["dtype"] in ("bfloat16", "int4-weight-only")
        assert manifest["notes"]["cuda_graphs"] is True
        assert manifest["notes"]["min_compute_capability"] == [8, 0]
    assert manifests["kernels-int4-bf16"]["notes"]["kernels"]["weight_only"] == "int4"
    # the int4 recipe replaces the Linear layers too
    assert (
        manifests["kernels-int4-bf16"]["notes"]["kernels_replaced"]
        > manifests["kernels-bf16"]["notes"]["kernels_replaced"]
    )
    if not Device.best().is_cuda:
        assert (
            cannot_run(manifests["kernels-bf16"], "cpu")
            == "Triton kernels are measured on a CUDA GPU only (--device cuda)"
        )
