"""Pruning. `magnitude`: unstructured, smallest |w| zeroed (torch.nn.utils.prune), global or per
layer. `2:4`: two of every four weights along the input dimension zeroed. `structured`: attention
heads, FFN neurons and whole layers physically removed from BERT-family and DistilBERT encoders, so
the saved model is smaller and loads with plain `from_pretrained` (config.pruned_heads, the FFN width
and the layer count in the config). Magnitude and 2:4 take nn.Linear and GPT-2's Conv1D layers.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from slimbench.backends.base import scores
from slimbench.core.data import NO_TARGET, LabelledText, encode, encode_labelled
from slimbench.core.model_files import quiet_transformers
from slimbench.optimize.registry import register
from slimbench.optimize.training import embedding_mse, head_loss, in_batch_contrastive

HEAD_NAMES = ("classifier", "score", "lm_head", "qa_outputs")  # task heads are never pruned


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude, 2:4 or structured (heads, FFN neurons, layers) pruning."""

    method: Literal["magnitude", "2:4", "structured"] = "magnitude"
    sparsity: float = 0.5  # magnitude: fraction of weights zeroed
    scope: Literal["global", "per-layer"] = "global"  # magnitude
    # 2:4: the variant runs on torch's sparse semi-structured kernels (cuSPARSELt; CUDA GPUs of compute
    # capability 8.0+): stored dense, its loader converts the 2:4 layers when it places them on the GPU
    semi_structured: bool = False
    heads: float = 0.0  # structured: fraction of attention heads removed in every layer
    ffn: float = 0.0  # structured: fraction of FFN neurons removed in every layer
    layers: int = 0  # structured: whole layers removed (the least important by ablation)
    score: Literal["taylor", "weight-norm"] = "taylor"  # structured: importance of heads and neurons
    calibration_batches: int = 8  # structured: batches of 16 texts used for scores

    def __post_init__(self):
        if not 0 < self.sparsity < 1:
            raise ValueError(f"sparsity must be between 0 and 1 (exclusive), got {self.sparsity}")
        for name in ("heads", "ffn"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.layers < 0:
            raise ValueError(f"layers must be >= 0, got {self.layers}")
        if self.calibration_batches < 1:
            raise ValueError(f"calibration_batches must be >= 1, got {self.calibration_batches}")
        if self.method == "structured" and not (self.heads or self.ffn or self.layers):
            raise ValueError("structured pruning needs at least one of heads, ffn or layers")
        if self.semi_structured and self.method != "2:4":
            raise ValueError(f"semi_structured applies to method '2:4', not {self.method!r}")
        if self.method != "structured" and (self.heads or self.ffn or self.layers):
            raise ValueError(f"heads, ffn and layers apply to method 'structured', not {self.method!r}")

    def refuses(self, checkpoint) -> str | None:
        """Why this pruning cannot apply to the checkpoint's architecture, or None (asked before any load)."""
        if self.method != "structured":
            return None
        try:
            encoder_layers(checkpoint.skeleton())
        except ValueError as e:
            return str(e)
        return None

    def min_compute_capability(self) -> tuple[int, int] | None:
        """The CUDA compute capability the variant needs (this step itself runs anywhere)."""
        return (8, 0) if self.semi_structured else None


@register("prune", PruneConfig)
def prune(model, config: PruneConfig, ctx):
    """Magnitude, 2:4 or structured pruning (heads, FFN neurons, layers physically removed)."""
    if config.method == "structured":
        return prune_structured(model, config, ctx)
    targets = prunable_linears(model)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no Linear layers outside its task head to prune")
    if config.method == "magnitude":
        import torch.nn.utils.prune as tprune

        if config.scope == "global":
            params = [(m, "weight") for m in targets.values()]
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=config.sparsity)
        else:
            for module in targets.values():
                tprune.l1_unstructured(module, "weight", amount=config.sparsity)
        for module in targets.values():
            tprune.remove(module, "weight")  # bake the mask into the weight
    else:
        with torch.no_grad():
            for name, module in targets.items():
                weight = out_by_in(module)
                if weight.shape[1] % 4:
                    raise ValueError(f"2:4 needs in_features divisible by 4; {name} has {weight.shape[1]}")
                weight.mul_(two_of_four_mask(weight))
        if config.semi_structured:
            ctx.notes["semi_structured"] = True
            # torch's 2:4 kernels serve Linear layers, not GPT-2's Conv1D
            kernels = [
                n for n, m in targets.items() if isinstance(m, nn.Linear) and semi_structured_shape(m.weight)
            ]
            ctx.notes["semi_structured_layers"] = kernels
            ctx.needs_capability(config.min_compute_capability())
    ctx.masks.update({f"{name}.weight": (m.weight != 0) for name, m in targets.items()})
    zeros = sum(int((m.weight == 0).sum()) for m in targets.values())
    total = sum(m.weight.numel() for m in targets.values())
    ctx.notes["sparsity"] = zeros / total
    ctx.notes["pruned_linear_layers"] = len(targets)
    return model


def prunable_linears(model) -> dict[str, nn.Module]:
    """The Linear layers outside the task head: nn.Linear and transformers' Conv1D (GPT-2's, a Linear whose
    weight is stored transposed)."""
    from transformers.pytorch_utils import Conv1D

    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, Conv1D)) and name.split(".")[0] not in HEAD_NAMES
    }


def out_by_in(module: nn.Module) -> torch.Tensor:
    """The layer's weight as (out_features, in_features), a view of it: 2:4 groups run along the input."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.T


def two_of_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the two largest |w| of every group of four along the input dimension."""
    groups = weight.detach().abs().reshape(weight.shape[0], -1, 4)
    keep = groups.topk(2, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True).reshape(weight.shape)


def is_two_of_four(weight: torch.Tensor) -> bool:
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def semi_structured_shape(weight: torch.Tensor) -> bool:
    """Whether torch's semi-structured kernels take this weight in half precision (rows a multiple of 32,
    columns of 64); the others stay dense."""
    rows, cols = weight.shape
    return rows % 32 == 0 and cols % 64 == 0


# ----------------------------------------------------------------------------------------------
# structured pruning, BERT and DistilBERT families


@dataclass(frozen=True)
class EncoderLayout:
    """Where structured pruning finds what it scores and cuts in one family of encoders (module paths
    relative to a layer; the stack is the base model's attribute whose `.layer` lists the layers)."""

    stack: str
    attention: str  # the self-attention module: query/key/value projections, head count and size
    qkv: tuple[str, str, str]
    heads: str  # the attention module's attribute holding its number of heads
    attention_out: str
    ffn_in: str
    ffn_act: str  # the module whose output is the FFN's activation (Taylor scores of the neurons)
    ffn_out: str
    ffn_size: str  # the config field of the FFN width

    def stack_of(self, model) -> nn.Module:
        return getattr(model.base_model, self.stack)

    def heads_of(self, layer: nn.Module) -> int:
        return getattr(layer.get_submodule(self.attention), self.heads)


LAYOUTS = (
    EncoderLayout("encoder", "attention.self", ("query", "key", "value"), "num_attention_heads",
                  "attention.output.dense", "intermediate.dense", "intermediate", "output.dense", "intermediate_size"),
    EncoderLayout("transformer", "attention", ("q_lin", "k_lin", "v_lin"), "n_heads",
                  "attention.out_lin", "ffn.lin1", "ffn.activation", "ffn.lin2", "hidden_dim"),
)  # fmt: skip


def _fits(layout: EncoderLayout, layer: nn.Module) -> bool:
    try:
        attention = layer.get_submodule(layout.attention)
        for path in (layout.attention_out, layout.ffn_in, layout.ffn_act, layout.ffn_out):
            layer.get_submodule(path)
    except AttributeError:
        return False
    return all(hasattr(attention, name) for name in (*layout.qkv, layout.heads, "attention_head_size"))


def encoder_layout(model) -> EncoderLayout:
    """The layout of the model's encoder where its layers have BERT's or DistilBERT's shape and the model
    takes a head mask (what the Taylor scores and `prune_heads` need); DeBERTa, for one, has
    encoder.layer[i].attention but neither."""
    if "head_mask" in inspect.signature(model.forward).parameters:
        for layout in LAYOUTS:
            layers = getattr(getattr(model.base_model, layout.stack, None), "layer", None)
            if isinstance(layers, nn.ModuleList) and len(layers) and all(_fits(layout, m) for m in layers):
                return layout
    raise ValueError(
        f"structured pruning supports BERT-family encoders (BERT, RoBERTa, MiniLM, DistilBERT, ...), "
        f"not {type(model).__name__}"
    )


def encoder_layers(model) -> nn.ModuleList:
    return encoder_layout(model).stack_of(model).layer


def _replace(layer: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, name, module)


def _calibration(model, ctx, n_batches: int, batch_size: int = 16):
    """Batches of real text with targets: the training labels (a tag per word for a token classifier),
    else the model's own predictions (its classes; for a multi-label head the classes it decides, for a
    one-score head its scores), or for a model without a head its own token embeddings."""
    data = ctx.train_data if ctx.train_data is not None else LabelledText(ctx.sample_texts)
    n = min(len(data), n_batches * batch_size)
    picked = list(range(0, len(data), max(1, len(data) // n)))[:n]
    batches = []
    for i in range(0, len(picked), batch_size):
        chunk = data.select(picked[i : i + batch_size])
        if chunk.labels is not None and ctx.task.head:
            batches.append(encode_labelled(ctx.tokenizer, chunk, 128, padding="longest"))
            continue
        enc = dict(encode(ctx.tokenizer, chunk.texts, 128, padding="longest"))
        with torch.inference_mode():
            out = scores(model(**enc))
        if not ctx.task.head or out.shape[-1] == 1:
            batches.append((enc, out.clone()))
            continue
        if getattr(model.config, "problem_type", None) == "multi_label_classification":
            batches.append((enc, (out > 0).float()))
            continue
        predicted = out.argmax(-1)
        if predicted.shape == enc["attention_mask"].shape:  # a prediction per token: none at padding
            predicted = predicted.masked_fill(enc["attention_mask"] == 0, NO_TARGET)
        batches.append((enc, predicted))
    return batches


def _objective(model, enc: dict, targets: torch.Tensor, taylor: bool = False, **kwargs) -> torch.Tensor:
    """The loss pruning scores against: the head's loss on the targets (labels, tags or predictions: `head_loss`);
    where they are the unpruned model's own outputs, their error (token embeddings: relative MSE; a one-score
    head's scores: MSE), or for the Taylor scores, whose gradient that error lacks at the unpruned model, how
    well the batch's inputs stay told apart (embeddings: the in-batch contrastive loss; scores: their spread)."""
    out = scores(model(**enc, **kwargs))
    if out.dim() == 3 and targets.is_floating_point():  # token embeddings
        mask = enc["attention_mask"]
        return in_batch_contrastive(out, mask) if taylor else embedding_mse(out, targets, mask)
    if targets.shape == out.shape and out.shape[-1] == 1:  # the scores of a one-score head
        return -out.float().var(correction=0) if taylor else (out.float() - targets.float()).pow(2).mean()
    return head_loss(out, targets)


def _loss(model, batches, **kwargs) -> float:
    with torch.inference_mode():
        return sum(float(_objective(model, enc, y, **kwargs)) for enc, y in batches) / len(batches)


def layer_importance(model, layout: EncoderLayout, batches) -> list[float]:
    """Loss increase when each layer alone is skipped."""
    encoder = layout.stack_of(model)
    layers = encoder.layer
    base = _loss(model, batches)
    scores = []
    for i in range(len(layers)):
        encoder.layer = nn.ModuleList([m for j, m in enumerate(layers) if j != i])
        try:
            scores.append(_loss(model, batches) - base)
        finally:
            encoder.layer = layers
    return scores


def taylor_scores(model, layout: EncoderLayout, batches) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """First-order Taylor importance: |dL/d mask| per head (Michel et al., 2019) and
    |sum(a * dL/da)| per FFN neuron, accumulated over the calibration batches."""
    layers = layout.stack_of(model).layer
    n_heads = layout.heads_of(layers[0])
    head_mask = torch.ones(len(layers), n_heads, requires_grad=True)
    acts: list[torch.Tensor] = []

    def keep(module, inputs, output):  # a hook that returns None leaves the output as it is
        output.retain_grad()
        acts.append(output)

    hooks = [layer.get_submodule(layout.ffn_act).register_forward_hook(keep) for layer in layers]
    head_scores = torch.zeros(len(layers), n_heads)
    ffn_scores = [torch.zeros(layer.get_submodule(layout.ffn_in).out_features) for layer in layers]
    try:
        with torch.enable_grad(), quiet_transformers():  # SDPA falls back to eager for the head mask
            for enc, labels in batches:
                acts.clear()
                loss = _objective(model, enc, labels, taylor=True, head_mask=head_mask)
                loss.backward()
                head_scores += head_mask.grad.abs()
                head_mask.grad = None
                for i, a in enumerate(acts):
                    ffn_scores[i] += (a * a.grad).sum(dim=(0, 1)).abs().detach()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    return head_scores, ffn_scores


@torch.no_grad()
def weight_norm_scores(model, layout: EncoderLayout) -> tuple[torch.Tensor, list[torch.Tensor]]:
    head_scores, ffn_scores = [], []
    for layer in layout.stack_of(model).layer:
        attn = layer.get_submodule(layout.attention)
        d = attn.attention_head_size
        qkv = [getattr(attn, name).weight for name in layout.qkv]
        out = layer.get_submodule(layout.attention_out).weight
        per_head = []
        for h in range(layout.heads_of(layer)):
            rows = slice(h * d, (h + 1) * d)
            per_head.append(sum(float(w[rows].norm()) for w in qkv) + float(out[:, rows].norm()))
        head_scores.append(torch.tensor(per_head))
        ffn_in, ffn_out = layer.get_submodule(layout.ffn_in), layer.get_submodule(layout.ffn_out)
        ffn_scores.append(ffn_in.weight.norm(dim=1) * ffn_out.weight.norm(dim=0))
    return torch.stack(head_scores), [s.detach() for s in ffn_scores]


def prune_structured(model, config: PruneConfig, ctx):
    from transformers.pytorch_utils import prune_linear_layer

    layout = encoder_layout(model)
    stack = layout.stack_of(model)
    layers = stack.layer
    if model.config.pruned_heads:
        raise ValueError(
            "the checkpoint already has pruned heads; structured pruning starts from an unpruned one"
        )
    model.eval()
    batches = _calibration(model, ctx, config.calibration_batches)
    notes = {"score": config.score}
    if config.layers:
        if config.layers >= len(layers):
            raise ValueError(f"layers={config.layers} would remove all {len(layers)} layers")
        importance = layer_importance(model, layout, batches)
        keep = sorted(sorted(range(len(layers)), key=lambda i: -importance[i])[: len(layers) - config.layers])
        stack.layer = nn.ModuleList([layers[i] for i in keep])
        model.config.num_hidden_layers = len(keep)
        notes["layers_kept"] = keep
        layers = stack.layer
    if config.heads or config.ffn:
        head_scores, ffn_scores = (
            taylor_scores(model, layout, batches)
            if config.score == "taylor"
            else weight_norm_scores(model, layout)
        )
        if config.heads:
            n_heads = layout.heads_of(layers[0])
            n_drop = round(config.heads * n_heads)
            if not 0 < n_drop < n_heads:
                raise ValueError(f"heads={config.heads} removes {n_drop} of {n_heads} heads per layer")
            to_prune = {i: head_scores[i].argsort()[:n_drop].tolist() for i in range(len(layers))}
            model.prune_heads(to_prune)
            notes["heads_removed_per_layer"] = n_drop
        if config.ffn:
            size = layers[0].get_submodule(layout.ffn_in).out_features
            keep_n = size - round(config.ffn * size)
            for i, layer in enumerate(layers):
                keep = ffn_scores[i].argsort(descending=True)[:keep_n].sort().values
                _replace(
                    layer, layout.ffn_in, prune_linear_layer(layer.get_submodule(layout.ffn_in), keep, dim=0)
                )
                _replace(
                    layer,
                    layout.ffn_out,
                    prune_linear_layer(layer.get_submodule(layout.ffn_out), keep, dim=1),
                )
            setattr(model.config, layout.ffn_size, keep_n)
            notes["intermediate_size"] = keep_n
    notes["parameters"] = sum(p.numel() for p in model.parameters())
    ctx.notes["structured"] = notes
    return model
