"""Fused attention forward, flash-style: one pass over key blocks with an online softmax, never
materializing the (S_q, S_k) score matrix. Causal and key-padding masks; head dims 16/32/64/128;
fp16, bf16 and fp32. A query row whose keys are all masked gets zeros (a softmax over nothing).

What makes it fast on a GPU, each part checked against the reference on the CPU interpreter:
- the softmax runs in base 2 (`exp2`, the scale folded with log2(e) into one multiply);
- key blocks that no mask touches (left of a causal block's diagonal, inside the sequence) are
  processed without building a mask; only the diagonal and ragged blocks pay for one;
- short queries against long keys (decoding: one query per sequence against its KV cache) split
  the keys across programs when the heads alone would leave SMs idle (flash-decoding): each split
  writes its normalized partial output and log-sum-exp, and a second kernel combines them;
- grouped-query attention reads each K/V head in place; for decode-sized queries one program takes
  every query head of a group, so K and V are read once per group, not once per query head;
- block sizes, warps and pipeline depth are autotuned per shape on the GPU (kept in Triton's cache).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from slimbench.kernels._launch import autotuned, chosen_launch, f32_dot, splits_to_fill, use_triton

LOG2E = 1.4426950408889634


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a.to(b.dtype), b)


@triton.jit
def _attend(acc, l_i, m_i, q, k_ptrs, v_ptrs, keep_ptr, start, pos, offs_n, S_k, shift, qk_scale,
            MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_KEEP: tl.constexpr, IEEE: tl.constexpr,
            D: tl.constexpr):  # fmt: skip
    """One key block into the running (acc, l_i, m_i); MASKED: the block may reach past S_k or the diagonal."""
    cols = start + offs_n
    if MASKED:
        in_range = cols < S_k
        k = tl.load(k_ptrs + start * D, mask=in_range[:, None], other=0.0)
        v = tl.load(v_ptrs + start * D, mask=in_range[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs + start * D)
        v = tl.load(v_ptrs + start * D)
    s = _dot(q, tl.trans(k), IEEE) * qk_scale  # log2 units
    if MASKED:
        valid = in_range[None, :]
        if CAUSAL:
            valid = valid & (pos[:, None] + shift >= cols[None, :])
        s = tl.where(valid, s, float("-inf"))
    if HAS_KEEP:
        keep = tl.load(keep_ptr + cols, mask=cols < S_k, other=0)
        s = tl.where(keep[None, :] != 0, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing to attend to yet
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + _dot(p, v, IEEE)
    return acc, l_i, m_new


@triton.jit
def _attention_kernel(
    Q, K, V, Out, LSE, KEEP, qk_scale, H, H_KV, S_q, S_k, Q_BUCKET, K_BUCKET,
    HAS_KEEP: tl.constexpr, CAUSAL: tl.constexpr, IEEE: tl.constexpr, SPLITS: tl.constexpr,
    PACK_GQA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
):  # fmt: skip
    # Q_BUCKET and K_BUCKET only key the autotuner's choice (powers of two of S_q and S_k).
    # A program's rows are queries of one head (one program per query head), or, with PACK_GQA, the
    # queries of every head that shares one K/V head (one program per K/V head: K and V read once for
    # the group). Either way K/V head kv_h serves query heads kv_h * G .. kv_h * G + G - 1, G = H / H_KV.
    pid_m = tl.program_id(0)
    prog = tl.program_id(1).to(tl.int64)  # b * H + head, or b * H_KV + kv_h with PACK_GQA
    split = tl.program_id(2)
    group = H // H_KV
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    if PACK_GQA:
        b, kv_bh = prog // H_KV, prog
        head = (prog % H_KV) * group + offs_m // S_q
        pos = offs_m % S_q
        row_ok = offs_m < group * S_q
    else:
        b = prog // H
        kv_bh = b * H_KV + (prog % H) // group
        head = prog % H + 0 * offs_m
        pos = offs_m
        row_ok = offs_m < S_q
    q_row = (b * H + head) * S_q + pos  # the query's row in (B * H * S_q, D)
    q = tl.load(Q + q_row[:, None] * D + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    k_ptrs = K + kv_bh * S_k * D + offs_n[:, None] * D + offs_d[None, :]
    v_ptrs = V + kv_bh * S_k * D + offs_n[:, None] * D + offs_d[None, :]
    keep_ptr = KEEP + b * S_k
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    shift = S_k - S_q  # causal masks align the last query with the last key
    hi = S_k
    full = S_k // BLOCK_N * BLOCK_N  # blocks before `full` need no mask
    if CAUSAL:  # keys up to the last row's position; unmasked for all rows up to the first row's
        hi = tl.maximum(tl.minimum(S_k, tl.max(tl.where(row_ok, pos, 0)) + 1 + shift), 0)
        first = tl.min(tl.where(row_ok, pos, S_q))
        full = tl.minimum(full, tl.maximum(first + shift + 1, 0) // BLOCK_N * BLOCK_N)
    # this program's share of the keys, in whole blocks
    per_split = tl.cdiv(tl.cdiv(S_k, BLOCK_N), SPLITS) * BLOCK_N
    lo = split * per_split
    hi = tl.minimum(hi, lo + per_split)
    for start in range(lo, tl.minimum(full, hi), BLOCK_N):
        acc, l_i, m_i = _attend(acc, l_i, m_i, q, k_ptrs, v_ptrs, keep_ptr, start, pos, offs_n, S_k, shift,
                                qk_scale, False, CAUSAL, HAS_KEEP, IEEE, D)  # fmt: skip
    for start in range(tl.maximum(lo, full), hi, BLOCK_N):
        acc, l_i, m_i = _attend(acc, l_i, m_i, q, k_ptrs, v_ptrs, keep_ptr, start, pos, offs_n, S_k, shift,
                                qk_scale, True, CAUSAL, HAS_KEEP, IEEE, D)  # fmt: skip
    out = tl.where(l_i[:, None] > 0, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)
    if SPLITS == 1:
        tl.store(
            Out + q_row[:, None] * D + offs_d[None, :], out.to(Out.dtype.element_ty), mask=row_ok[:, None]
        )
    else:  # partial output and log2-sum-exp of this split, for _combine_kernel
        part = split * (tl.num_programs(1) * (group if PACK_GQA else 1)) * S_q + q_row
        tl.store(Out + part[:, None] * D + offs_d[None, :], out, mask=row_ok[:, None])
        lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("-inf"))
        tl.store(LSE + part, lse, mask=row_ok)


@triton.jit
def _combine_kernel(O_PART, LSE, Out, ROWS, SPLITS: tl.constexpr, D: tl.constexpr):
    """Out[row] = the splits' partial outputs weighted by their share of the softmax's total."""
    row = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, SPLITS)
    offs_d = tl.arange(0, D)
    lse = tl.load(LSE + offs_s * ROWS + row)
    m = tl.max(lse, axis=0)
    w = tl.exp2(lse - tl.where(m == float("-inf"), 0.0, m))  # 0 for a split with no keys
    parts = tl.load(O_PART + (offs_s[:, None] * ROWS + row) * D + offs_d[None, :])
    total = tl.sum(w, axis=0)
    out = tl.sum(parts * w[:, None], axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(Out + row * D + offs_d, out.to(Out.dtype.element_ty))


def _config(block_m, block_n, warps, stages):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


# (BLOCK_M, BLOCK_N, warps, stages): prefill tiles, and 16-row tiles for decode-sized queries
PREFILL = [
    _config(*c) for c in [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 4), (64, 32, 4, 4)]
]
DECODE = [_config(*c) for c in [(16, 64, 4, 3), (16, 128, 4, 3), (16, 128, 8, 2), (16, 64, 2, 4)]]


def candidate_configs(s_q: int, d: int) -> list[triton.Config]:
    """Configs worth timing: 16-row tiles where the queries are few; at head dim 128, no tile over
    128x64, none of 128 rows on 4 warps and none on 2 warps (they spill registers)."""
    if d <= 64:
        return DECODE if s_q <= 16 else PREFILL
    if s_q <= 16:
        return [c for c in DECODE if c.num_warps > 2]
    return [c for c in PREFILL if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 128 * 64
            and not (c.kwargs["BLOCK_M"] == 128 and c.num_warps == 4)]  # fmt: skip


def _prune(configs, named_args, **kwargs):
    return candidate_configs(named_args["S_q"], kwargs["D"])


_tuned_kernel = autotuned(
    _attention_kernel, PREFILL + DECODE, prune=_prune,
    key=["Q_BUCKET", "K_BUCKET", "H", "H_KV", "D", "CAUSAL", "HAS_KEEP", "SPLITS", "PACK_GQA"],
)  # fmt: skip


def tuned_launch() -> dict:
    """The launch the autotuner chose last; empty before its first launch."""
    return chosen_launch(_tuned_kernel)


def kv_splits_for(programs: int, s_q: int, s_k: int, device: torch.device) -> int:
    """Splits of the keys: only for decode-sized queries (<= 16) whose `programs` (one per head, or
    per K/V head when grouped heads are packed) leave SMs idle, each split keeping at least 256 keys."""
    if s_q > 16:
        return 1
    return splits_to_fill(programs, s_k, 256, device)


def flash_attention(q, k, v, key_padding_mask=None, causal: bool = False, sm_scale: float | None = None,
                    config=None):  # fmt: skip
    """softmax(q k^T * scale + masks) v for q (B, H, S_q, D), k and v (B, H_kv, S_k, D), H_kv dividing
    H (grouped-query attention: query head h reads K/V head h // (H / H_kv), nothing is copied).

    key_padding_mask: (B, S_k), nonzero/True where a key may be attended to. `config`
    ({"BLOCK_M", "BLOCK_N", "SPLITS", "PACK_GQA"}, optionally "num_warps"/"num_stages") fixes the launch
    instead of the autotuner's and kv_splits_for's choice: the tests use it to reach every path."""
    if q.shape[-1] not in (16, 32, 64, 128):
        raise ValueError(f"head dim must be 16, 32, 64 or 128, got {q.shape[-1]}")
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if not use_triton(q):
        return reference(q, k, v, key_padding_mask, causal, sm_scale)
    B, H, S_q, D = q.shape
    H_kv, S_k = k.shape[1], k.shape[2]
    if H % H_kv or v.shape[1] != H_kv:
        raise ValueError(f"{H} query heads cannot share {H_kv} key and {v.shape[1]} value heads")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    config = dict(config or {})
    group = H // H_kv
    pack = config.pop("PACK_GQA", group > 1 and S_q <= 16)  # decode-sized: one program per K/V head
    rows, programs = (group * S_q, B * H_kv) if pack else (S_q, B * H)
    splits = config.pop("SPLITS", None) or kv_splits_for(programs, S_q, S_k, q.device)
    if splits == 1:
        o = torch.empty_like(q)
        lse = o  # unused
    else:
        o = torch.empty(splits, B * H, S_q, D, dtype=torch.float32, device=q.device)
        lse = torch.empty(splits, B * H, S_q, dtype=torch.float32, device=q.device)
    keep = key_padding_mask.to(torch.int8).contiguous() if key_padding_mask is not None else q
    args = (q, k, v, o, lse, keep, sm_scale * LOG2E, H, H_kv, S_q, S_k,
            triton.next_power_of_2(S_q), triton.next_power_of_2(S_k))  # fmt: skip
    meta = dict(
        HAS_KEEP=key_padding_mask is not None,
        CAUSAL=causal,
        IEEE=f32_dot(q.dtype),
        SPLITS=splits,
        D=D,
        PACK_GQA=pack,
    )

    def grid(c):
        return triton.cdiv(rows, c["BLOCK_M"]), programs, splits

    if config:
        _attention_kernel[grid(config)](*args, **meta, **config)
    else:
        _tuned_kernel[grid](*args, **meta)
    if splits == 1:
        return o
    out = torch.empty_like(q)
    _combine_kernel[(B * H * S_q,)](o, lse, out, B * H * S_q, SPLITS=splits, D=D)
    return out


def reference(q, k, v, key_padding_mask=None, causal: bool = False, sm_scale: float | None = None):
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
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
