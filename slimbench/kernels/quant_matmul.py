"""Weight-only quantized matmul, dequantizing inside the kernel: W8A16 (int8, one scale per
output channel) and W4A16 (int4 packed two per byte along K, one scale per group of K).
`QuantLinear` replaces an nn.Linear with either."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import nn

from slimbench.kernels._launch import f32_dot, use_triton


@triton.jit
def _wq_matmul_kernel(
    X, W, S, BIAS, Y, M, N, K, GROUP,
    BITS: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        x = tl.load(X + rm[:, None].to(tl.int64) * K + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K),
                    other=0.0)  # fmt: skip
        wmask = (kk[:, None] < K) & (rn[None, :] < N)
        if BITS == 8:
            w = tl.load(W + rn[None, :].to(tl.int64) * K + kk[:, None], mask=wmask, other=0).to(tl.float32)
        else:
            packed = tl.load(W + rn[None, :].to(tl.int64) * (K // 2) + kk[:, None] // 2, mask=wmask, other=0)
            q = (packed >> ((kk[:, None] % 2) * 4)) & 0xF
            scale = tl.load(
                S + rn[None, :].to(tl.int64) * (K // GROUP) + kk[:, None] // GROUP, mask=wmask, other=0.0
            )
            w = (q.to(tl.float32) - 8.0) * scale.to(tl.float32)
        if IEEE:
            acc += tl.dot(x.to(tl.float32), w, input_precision="ieee")
        else:
            acc += tl.dot(x, w.to(x.dtype))
    if BITS == 8:
        acc = acc * tl.load(S + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rm[:, None].to(tl.int64) * N + rn[None, :], acc.to(Y.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))  # fmt: skip


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: weight ~ q * scale[:, None]."""
    scale = weight.float().abs().amax(dim=1).clamp(min=1e-8) / 127
    q = torch.round(weight.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4(weight: torch.Tensor, group_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric group-wise int4 stored with an offset of 8 in [0, 15], two per byte (even k in
    the low nibble); one scale per (output channel, group of K)."""
    n, k = weight.shape
    if k % group_size or group_size % 2:
        raise ValueError(f"in_features {k} must be a multiple of group_size {group_size}")
    groups = weight.float().reshape(n, k // group_size, group_size)
    scale = groups.abs().amax(dim=2).clamp(min=1e-8) / 7
    q = (torch.round(groups / scale[..., None]).clamp(-8, 7) + 8).to(torch.uint8).reshape(n, k)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous(), scale


def dequantize(qweight, scale, bits: int, group_size: int = 128) -> torch.Tensor:
    if bits == 8:
        return qweight.float() * scale[:, None]
    n = qweight.shape[0]
    q = torch.stack([qweight & 0xF, qweight >> 4], dim=-1).reshape(n, -1).float() - 8
    return (q.reshape(n, -1, group_size) * scale[..., None]).reshape(n, -1)


def weight_only_matmul(x, qweight, scale, bias=None, bits: int = 8, group_size: int = 128):
    """x @ dequantize(qweight, scale).T + bias, for x (..., K)."""
    if not use_triton(x):
        return reference(x, qweight, scale, bias, bits, group_size)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).contiguous()
    m, k = x2.shape
    n = qweight.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    bm = 16 if m <= 16 else 64
    grid = (triton.cdiv(m, bm), triton.cdiv(n, 64))
    _wq_matmul_kernel[grid](
        x2, qweight, scale, bias if bias is not None else scale, y, m, n, k, group_size,
        BITS=bits, HAS_BIAS=bias is not None, IEEE=f32_dot(x.dtype), BM=bm, BN=64, BK=32,
    )  # fmt: skip
    return y.reshape(*shape[:-1], n)


def reference(x, qweight, scale, bias=None, bits: int = 8, group_size: int = 128):
    w = dequantize(qweight, scale, bits, group_size)
    return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)


def _weight_only_matmul_op(x, qweight, scale, bias, bits: int, group_size: int):
    return weight_only_matmul(x, qweight, scale, bias, bits, group_size)


# torch.compile and CUDA graphs capture the custom op whole (see slimbench.kernels.ops)
weight_only_matmul_op = torch.library.custom_op(
    "slimbench::weight_only_matmul",
    _weight_only_matmul_op,
    mutates_args=(),
    schema="(Tensor x, Tensor qweight, Tensor scale, Tensor? bias, int bits, int group_size) -> Tensor",
)
weight_only_matmul_op.register_fake(reference)


class QuantLinear(nn.Module):
    """A Linear whose weight is int8 (per channel) or int4 (per group), dequantized in the kernel."""

    def __init__(self, linear: nn.Linear, bits: int = 8, group_size: int = 128):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {bits}")
        self.in_features, self.out_features, self.bits, self.group_size = (
            linear.in_features, linear.out_features, bits, group_size,
        )  # fmt: skip
        q, s = (
            quantize_int8(linear.weight.detach())
            if bits == 8
            else quantize_int4(linear.weight.detach(), group_size)
        )
        self.register_buffer("qweight", q)
        self.register_buffer("scale", s.to(linear.weight.dtype))
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        )

    def forward(self, x):
        return weight_only_matmul_op(x, self.qweight, self.scale, self.bias, self.bits, self.group_size)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group={self.group_size}"


def dequantized_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every QuantLinear written back as a plain `weight`, so that
    `from_pretrained` loads it; quantizing those weights again gives the same int8/int4 values."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            qweight, scale = state.pop(f"{name}.qweight"), state.pop(f"{name}.scale")
            state[f"{name}.weight"] = dequantize(qweight, scale.float(), module.bits, module.group_size).to(
                scale.dtype
            )
    return state
