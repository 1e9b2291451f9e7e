"""RMSNorm (Llama family), optionally fused with the residual add that precedes it, forward.

With a residual, returns (normed, x + residual): the sum is the next layer's residual.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from slimbench.kernels._launch import row_launch, use_triton


@triton.jit
def _rms_norm_kernel(X, R, W, Y, S, N, eps, HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    # arithmetic in fp32, rounded to the input dtype where PyTorch rounds (as a bf16 op does)
    xf = tl.load(X + row * N + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        xf = (xf + tl.load(R + row * N + cols, mask=mask, other=0.0).to(tl.float32)).to(X.dtype.element_ty)
        tl.store(S + row * N + cols, xf, mask=mask)
        xf = xf.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    # as LlamaRMSNorm: normalize in fp32, cast to the input dtype, then scale by the weight
    y = w * (xf * rstd).to(X.dtype.element_ty).to(tl.float32)
    tl.store(Y + row * N + cols, y.to(Y.dtype.element_ty), mask=mask)


def rms_norm(x, weight, eps: float = 1e-6, residual=None):
    if not use_triton(x):
        return reference(x, weight, eps, residual)
    shape, n = x.shape, x.shape[-1]
    x2 = x.reshape(-1, n).contiguous()
    r2 = residual.reshape(-1, n).contiguous() if residual is not None else x2
    y = torch.empty(x2.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    s = torch.empty_like(x2) if residual is not None else x2
    _rms_norm_kernel[(x2.shape[0],)](
        x2, r2, weight, y, s, n, eps, HAS_RESIDUAL=residual is not None, **row_launch(n)
    )
    y = y.reshape(shape)
    return (y, s.reshape(shape)) if residual is not None else y


def reference(x, weight, eps: float = 1e-6, residual=None):
    if residual is not None:
        x = x + residual
    xf = x.float()
    y = weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return (y, x) if residual is not None else y
