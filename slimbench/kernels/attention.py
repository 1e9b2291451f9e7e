"""Fused attention forward, flash-style: one pass over key blocks with an online softmax, never
materializing the (S_q, S_k) score matrix. Causal and key-padding masks; head dims 32/64/128;
fp16, bf16 and fp32. A query row whose keys are all masked gets zeros (a softmax over nothing)."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from slimbench.kernels._launch import f32_dot, use_triton


@triton.jit
def _attention_kernel(
    Q, K, V, Out, KEEP, sm_scale, H, S_q, S_k,
    HAS_KEEP: tl.constexpr, CAUSAL: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    q = tl.load(
        Q + bh * S_q * D + offs_m[:, None] * D + offs_d[None, :], mask=offs_m[:, None] < S_q, other=0.0
    )
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    shift = S_k - S_q  # causal masks align the last query with the last key
    hi = S_k
    if CAUSAL:
        hi = tl.minimum(S_k, (pid_m + 1) * BLOCK_M + shift)
    for start in range(0, hi, BLOCK_N):
        cols = start + offs_n
        in_range = cols < S_k
        k = tl.load(K + bh * S_k * D + cols[None, :] * D + offs_d[:, None], mask=in_range[None, :], other=0.0)
        if IEEE:
            s = tl.dot(q.to(tl.float32), k.to(tl.float32), input_precision="ieee") * sm_scale
        else:
            s = tl.dot(q, k) * sm_scale
        valid = in_range[None, :] & (offs_m[:, None] < S_q)
        if HAS_KEEP:
            keep = tl.load(KEEP + b * S_k + cols, mask=in_range, other=0)
            valid = valid & (keep[None, :] != 0)
        if CAUSAL:
            valid = valid & (offs_m[:, None] + shift >= cols[None, :])
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing to attend to yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + bh * S_k * D + cols[:, None] * D + offs_d[None, :], mask=in_range[:, None], other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = tl.where(l_i[:, None] > 0, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)
    tl.store(Out + bh * S_q * D + offs_m[:, None] * D + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=offs_m[:, None] < S_q)  # fmt: skip


def flash_attention(q, k, v, key_padding_mask=None, causal: bool = False, sm_scale: float | None = None):
    """softmax(q k^T * scale + masks) v for q (B, H, S_q, D), k and v (B, H, S_k, D).

    key_padding_mask: (B, S_k), nonzero/True where a key may be attended to."""
    if q.shape[-1] not in (16, 32, 64, 128):
        raise ValueError(f"head dim must be 16, 32, 64 or 128, got {q.shape[-1]}")
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if not use_triton(q):
        return reference(q, k, v, key_padding_mask, causal, sm_scale)
    B, H, S_q, D = q.shape
    S_k = k.shape[2]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = torch.empty_like(q)
    keep = key_padding_mask.to(torch.int8).contiguous() if key_padding_mask is not None else q
    block_m, block_n = (64, 64) if D <= 64 else (64, 32)
    grid = (triton.cdiv(S_q, block_m), B * H)
    _attention_kernel[grid](
        q, k, v, o, keep, sm_scale, H, S_q, S_k,
        HAS_KEEP=key_padding_mask is not None, CAUSAL=causal, IEEE=f32_dot(q.dtype),
        BLOCK_M=block_m, BLOCK_N=block_n, D=D,
    )  # fmt: skip
    return o


def reference(q, k, v, key_padding_mask=None, causal: bool = False, sm_scale: float | None = None):
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    s = (q.float() @ k.float().transpose(-1, -2)) * sm_scale
    S_q, S_k = q.shape[2], k.shape[2]
    valid = torch.ones(S_q, S_k, dtype=torch.bool, device=q.device)
    if causal:
        valid = torch.ones(S_q, S_k, dtype=torch.bool, device=q.device).tril(S_k - S_q)
    valid = valid[None, None]
    if key_padding_mask is not None:
        valid = valid & key_padding_mask.bool()[:, None, None, :]
    p = torch.softmax(s.masked_fill(~valid, float("-inf")), dim=-1).nan_to_num(0.0)
    return (p @ v.float()).to(q.dtype)
