"""Recovery: a short fine-tune after pruning, optionally distilled from the unpruned checkpoint
(KL on softened logits plus the label loss; a feature extractor learns the unpruned model's token
embeddings). Zeroed weights stay zero."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slimbench.backends.base import scores
from slimbench.core.data import LabelledText, encode_labelled
from slimbench.optimize.registry import register
from slimbench.optimize.training import TrainPlan, accuracy, embedding_error, train_classifier
from slimbench.tasks import TASKS


@dataclass(frozen=True)
class RecoverConfig:
    """Short fine-tune on the training data, optionally distilled from the unpruned model."""

    epochs: int = 1
    lr: float = 5e-5
    batch_size: int = 16
    max_len: int = 128
    distill: bool = True
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term
    max_steps: int | None = None  # stop after this many optimizer steps, if fewer than the epochs take
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be between 0 and 1, got {self.lr}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@register("recover", RecoverConfig, tasks=tuple(name for name, task in TASKS.items() if task.trainable))
def recover(model, config: RecoverConfig, ctx):
    """Short fine-tune after pruning, with optional distillation from the unpruned model."""
    if ctx.train_data is None:
        raise ValueError("recover needs training data: pass --train-data FILE (the task's labelled data)")
    if not ctx.task.trainable:
        raise ValueError(f"recover cannot fine-tune a {ctx.task.name} model yet")
    torch.manual_seed(config.seed)
    teacher = ctx.checkpoint.load_model() if config.distill else None
    # on the device steps work on (the first GPU where there is one); the model comes back to the CPU
    device = ctx.notes["recover_device"] = str(ctx.work_device())
    plan = TrainPlan(
        epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, max_len=config.max_len,
        seed=config.seed, temperature=config.temperature, alpha=config.alpha,
        max_steps=config.max_steps,
    )  # fmt: skip
    if ctx.task.generates and not ctx.task.encoder_decoder:
        return _recover_lm(model, config, ctx, teacher, device)
    # a model without a head learns its teacher's embeddings, whatever labels its data has
    data = ctx.train_data if ctx.task.head else LabelledText(ctx.train_data.texts)
    seconds = train_classifier(model, ctx.tokenizer, data, plan, teacher=teacher, masks=ctx.masks,
                               desc=f"recover ({device})", device=device)  # fmt: skip
    ctx.notes["recover_seconds"] = round(seconds, 1)
    sample = data.select(range(min(256, len(data))))
    # feature extraction: how far the embeddings still are from the unpruned model's
    if sample.labels is None:
        ctx.notes["recover_train_embedding_mse_sample"] = embedding_error(
            model, teacher, ctx.tokenizer, sample.texts, config.max_len
        )
    elif ctx.task.encoder_decoder:  # each source's target, its tokens under teacher forcing
        ctx.notes["recover_train_token_accuracy_sample"] = accuracy(
            model, ctx.tokenizer, sample, config.max_len
        )
    else:  # the measure accuracy-aware quantization keeps: accuracy of class ids or tags; Spearman, micro F1
        enc, targets = encode_labelled(ctx.tokenizer, sample, config.max_len, padding="longest")
        with torch.inference_mode():
            outputs = scores(model(**enc)).float().numpy()
        key = "label_score" if targets.is_floating_point() else "accuracy"
        ctx.notes[f"recover_train_{key}_sample"] = ctx.task.share_right(
            outputs, targets.numpy(), enc["attention_mask"].numpy(), ctx.checkpoint.path
        )
    return model


def _recover_lm(model, config: RecoverConfig, ctx, teacher, device: str):
    """Next-token recovery on the training text packed into blocks of max_len tokens."""
    from slimbench.optimize.training import LMPlan, train_causal_lm
    from slimbench.tasks.causal_lm import model_perplexity, pack

    blocks = torch.from_numpy(pack(ctx.tokenizer, ctx.train_data.texts, config.max_len))
    steps = config.epochs * -(-len(blocks) // config.batch_size)
    if config.max_steps:
        steps = min(steps, config.max_steps)
    plan = LMPlan(
        steps=steps, lr=config.lr, batch_size=config.batch_size, warmup_steps=max(1, steps // 10),
        weight_decay=0.0, seed=config.seed, temperature=config.temperature, alpha=config.alpha,
    )  # fmt: skip
    seconds = train_causal_lm(model, blocks, plan, teacher=teacher, masks=ctx.masks, desc=f"recover ({device})",
                              device=device)  # fmt: skip
    ctx.notes["recover_seconds"] = round(seconds, 1)
    ctx.notes["recover_steps"] = steps
    ctx.notes["recover_train_perplexity_sample"] = model_perplexity(model, blocks[:64].numpy())
    return model
