"""The only place that knows Hugging Face module names: swaps the fused kernels into BERT-family,
Llama-family and GPT-2 models, per instance (other models in the process are untouched).

Weights are unchanged except with `weight_only`, which replaces Linear layers by QuantLinear.
A deployed model re-applies the same call after `from_pretrained`.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import nn

# the custom-op forms (torch.ops.slimbench.*): torch.compile and CUDA graphs capture them whole
from slimbench.kernels.ops import (
    add_layer_norm,
    bias_gelu,
    flash_attention,
    rms_norm,
    swiglu,
    weight_only_matmul,
)
from slimbench.kernels.quant_matmul import QuantLinear

ATTENTION_NAME = "slimbench_flash"
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)


def _bind(module: nn.Module, forward) -> None:
    module._slimbench_original_forward = module.forward
    module.forward = types.MethodType(forward, module)


# ----------------------------------------------------------------------------------------- BERT


def _bert_add_norm_forward(self, hidden_states, input_tensor):
    if self.training:  # dropout sits between dense and the residual add while training
        return self._slimbench_original_forward(hidden_states, input_tensor)
    ln = self.LayerNorm
    return add_layer_norm(self.dense(hidden_states), input_tensor, ln.weight, ln.bias, float(ln.eps))


def _bert_intermediate_forward(self, hidden_states):
    dense = self.dense  # the bias is added inside the GELU kernel, not by the matmul
    if isinstance(dense, QuantLinear):
        h = weight_only_matmul(hidden_states, dense.qweight, dense.scale, None, dense.bits, dense.group_size)
    else:
        h = F.linear(hidden_states, dense.weight)
    return bias_gelu(h, dense.bias)


def _bert_attention_forward(self, hidden_states, attention_mask=None, head_mask=None, encoder_hidden_states=None,
                            past_key_values=None, output_attentions=False, cache_position=None, **kwargs):  # fmt: skip
    if (
        self.training
        or head_mask is not None
        or encoder_hidden_states is not None
        or past_key_values is not None
    ):
        return self._slimbench_original_forward(
            hidden_states, attention_mask, head_mask, encoder_hidden_states, past_key_values, output_attentions,
            cache_position,
        )  # fmt: skip
    if output_attentions:
        raise ValueError("the fused attention kernel does not materialize attention weights")
    b, s, _ = hidden_states.shape
    heads, d = self.num_attention_heads, self.attention_head_size

    def split(x):
        return x.view(b, s, heads, d).transpose(1, 2)

    keep = None
    if attention_mask is not None:  # additive (B, 1, 1|S, S): 0 where a key may be attended to
        keep = attention_mask[:, 0, -1, :] == 0
    out = flash_attention(split(self.query(hidden_states)), split(self.key(hidden_states)),
                          split(self.value(hidden_states)), keep, causal=False, sm_scale=1 / math.sqrt(d))  # fmt: skip
    return out.transpose(1, 2).reshape(b, s, heads * d), None


# ---------------------------------------------------------------------------------------- Llama


def _rms_norm_forward(self, hidden_states):
    return rms_norm(hidden_states, self.weight, float(self.variance_epsilon))


def _swiglu_mlp_forward(self, x):
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def _decoder_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers AttentionInterface entry (Llama, GPT-2): query (B, H, S, D), key/value (B, H_kv, S_k, D)."""
    if kwargs.get("head_mask") is not None:
        raise ValueError("the fused attention kernel does not take a head_mask")
    if scaling is None:  # GPT-2 passes none: its attention module says how it scales
        scaling = 1 / math.sqrt(query.shape[-1]) if getattr(module, "scale_attn_weights", True) else 1.0
        if getattr(module, "scale_attn_by_inverse_layer_idx", False):
            scaling /= module.layer_idx + 1
    keep = None  # grouped-query attention: the kernel reads each K/V head for its query heads, no copies
    if attention_mask is not None:  # bool (B, 1, S_q, S_k), True = attend; its last row holds the padding
        mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        keep = mask[:, 0, -1, :]
    out = flash_attention(query, key, value, keep, causal=True, sm_scale=float(scaling))
    return out.transpose(1, 2).contiguous(), None


def _register_decoder_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _decoder_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)


# ---------------------------------------------------------------------------------------- GPT-2

GPT2_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}


def _layer_norm_forward(self, hidden_states):
    return add_layer_norm(hidden_states, None, self.weight, self.bias, float(self.eps))


def _gpt2_mlp_forward(self, hidden_states):
    c_fc = self.c_fc  # Conv1D: weight (in, out); the bias is added inside the GELU kernel
    if isinstance(c_fc, QuantLinear):
        h = weight_only_matmul(hidden_states, c_fc.qweight, c_fc.scale, None, c_fc.bits, c_fc.group_size)
    else:
        h = hidden_states @ c_fc.weight
    h = bias_gelu(h, c_fc.bias, GPT2_GELU[self._slimbench_gelu])
    return self.dropout(self.c_proj(h))


def _conv1d_as_linear(conv) -> nn.Linear:
    """GPT-2's Conv1D (y = x W + b, W of shape (in, out)) as the equivalent nn.Linear."""
    linear = nn.Linear(conv.weight.shape[0], conv.weight.shape[1], device=conv.weight.device)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    return linear


# ------------------------------------------------------------------------------------------ API


def model_family(model) -> str:
    model_type = getattr(model.config, "model_type", "")
    if model_type in ("bert", "roberta", "xlm-roberta", "electra", "camembert"):
        return "bert"
    if model_type in ("llama", "mistral", "qwen2"):
        return "llama"
    if model_type == "gpt2":
        return "gpt2"
    raise ValueError(
        "slimbench kernels support BERT-family, Llama-family and GPT-2 models, "
        f"not {model_type!r} ({type(model).__name__})"
    )


def apply_kernels(model, norm: bool = True, activation: bool = True, attention: bool = True,
                  weight_only: str | None = None, group_size: int = 128) -> list[str]:  # fmt: skip
    """Swap fused kernels into `model` in place; returns the names of what was replaced."""
    if weight_only not in (None, "int8", "int4"):
        raise ValueError(f"weight_only must be None, 'int8' or 'int4', got {weight_only!r}")
    family = model_family(model)
    act = getattr(model.config, "hidden_act", None) or getattr(model.config, "activation_function", None)
    if family == "gpt2" and attention and getattr(model.config, "add_cross_attention", False):
        raise ValueError("GPT-2 with cross-attention: the fused attention kernel is self-attention only")
    replaced = []
    for name, module in list(model.named_modules()):
        cls = type(module).__name__
        if family == "bert":
            if norm and cls.endswith(("SelfOutput", "Output")) and hasattr(module, "LayerNorm"):
                _bind(module, _bert_add_norm_forward)
                replaced.append(f"{name}: residual+LayerNorm")
            elif activation and cls.endswith("Intermediate") and act == "gelu":
                _bind(module, _bert_intermediate_forward)
                replaced.append(f"{name}: bias+GELU")
            elif (
                attention
                and cls.endswith("SelfAttention")
                and not getattr(module, "is_decoder", False)
                and module.attention_head_size in SUPPORTED_HEAD_DIMS  # others stay on PyTorch
            ):
                _bind(module, _bert_attention_forward)
                replaced.append(f"{name}: flash attention")
        elif family == "gpt2":
            if norm and isinstance(module, nn.LayerNorm):
                _bind(module, _layer_norm_forward)
                replaced.append(f"{name}: LayerNorm")
            elif activation and cls == "GPT2MLP" and act in GPT2_GELU:
                module._slimbench_gelu = act
                _bind(module, _gpt2_mlp_forward)
                replaced.append(f"{name}: bias+GELU")
        else:
            if norm and cls.endswith("RMSNorm"):
                _bind(module, _rms_norm_forward)
                replaced.append(f"{name}: RMSNorm")
            elif activation and cls.endswith("MLP") and act == "silu":
                _bind(module, _swiglu_mlp_forward)
                replaced.append(f"{name}: SwiGLU")
    head_dim = (
        getattr(model.config, "head_dim", None)
        or model.config.hidden_size // model.config.num_attention_heads
    )
    if family in ("llama", "gpt2") and attention and head_dim in SUPPORTED_HEAD_DIMS:
        _register_decoder_attention()
        model.config._attn_implementation = ATTENTION_NAME
        replaced.append("attention: flash attention (AttentionInterface)")
    if weight_only:
        bits = 8 if weight_only == "int8" else 4
        heads = ("classifier", "score", "lm_head", "qa_outputs", "pooler")
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                full = f"{name}.{child_name}" if name else child_name
                if type(child).__name__ == "Conv1D" and family == "gpt2":
                    child = _conv1d_as_linear(child)
                if (
                    isinstance(child, nn.Linear)
                    and not full.startswith(heads)
                    and child.in_features % group_size == 0
                ):
                    setattr(module, child_name, QuantLinear(child, bits=bits, group_size=group_size))
                    replaced.append(f"{full}: W{bits}A16")
    if not replaced:
        raise ValueError(f"nothing to replace in {type(model).__name__} with these options")
    return replaced
