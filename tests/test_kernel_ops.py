"""The fused kernels as torch.library custom ops: schema and fake (meta) implementations checked by
torch.library.opcheck, and a patched model compiled with torch.compile(fullgraph=True) - no graph
break at any kernel - giving the eager model's logits. In the Triton interpreter on the CPU."""

import pytest
import torch

from slimbench.kernels import ops


def cases():
    torch.manual_seed(0)
    x, r = torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    w, b = torch.randn(64), torch.randn(64)
    q, k, v = (torch.randn(1, 2, 7, 32) for _ in range(3))
    keep = torch.tensor([[True] * 5 + [False] * 2])
    from slimbench.kernels.quant_matmul import quantize_int4, quantize_int8

    lin = torch.randn(48, 128)
    q8, s8 = quantize_int8(lin)
    q4, s4 = quantize_int4(lin, 64)
    return {
        "add_layer_norm": (ops.add_layer_norm, (x, r, w, b, 1e-12)),
        "add_layer_norm-no-residual": (ops.add_layer_norm, (x, None, w, b, 1e-12)),
        "rms_norm": (ops.rms_norm, (x, w.abs(), 1e-6)),
        "bias_gelu": (ops.bias_gelu, (x, b, "tanh")),
        "swiglu": (ops.swiglu, (x, r)),
        "flash_attention": (ops.flash_attention, (q, k, v, keep, False, 0.17)),
        "flash_attention-causal": (ops.flash_attention, (q, k, v, None, True, 0.17)),
        "weight_only_matmul-int8": (ops.weight_only_matmul, (torch.randn(3, 128), q8, s8, None, 8, 128)),
        "weight_only_matmul-int4": (
            ops.weight_only_matmul,
            (torch.randn(3, 128), q4, s4, torch.randn(48), 4, 64),
        ),
    }


@pytest.mark.parametrize("name", sorted(cases()))
def test_custom_op_schema_and_fake_implementation(name):
    op, args = cases()[name]
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:  # shapes and dtypes from the fake impl
        fake = op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
    real = op(*args)
    assert fake.shape == real.shape and fake.dtype == real.dtype


def test_a_patched_model_compiles_whole_and_matches_eager(tiny_bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from slimbench.kernels.patch import apply_kernels

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, attn_implementation="eager").eval()
    apply_kernels(model, weight_only="int8", group_size=32)
    enc = AutoTokenizer.from_pretrained(tiny_bert)(["a short one", "and a somewhat longer sentence here"],
                                                   padding=True, return_tensors="pt")  # fmt: skip
    with torch.inference_mode():
        eager = model(**enc).logits
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, dynamic=False)(**enc).logits  # fails on a graph break
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
