"""The one training loop: fine-tuning the embedded default and recovering a pruned model.

Plain PyTorch: AdamW, linear warm-up and decay, gradient clipping, seeded order. With a
teacher, the loss mixes KL divergence on temperature-softened logits with the label loss
(Hinton et al.); a model without a head (feature extraction) learns the teacher's token
embeddings (their mean squared error; sentence-transformers distils pooled embeddings so). Zero
masks, when given, are re-applied after every step so pruned weights stay pruned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from slimbench.backends.base import scores
from slimbench.core.data import NO_TARGET, LabelledText, encode, encode_labelled


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of token embeddings at real tokens, relative to the teacher's mean square (1: as far
    off as all zeros), so that one scale serves every model width."""
    keep = mask.bool()
    target = teacher[keep].float()
    return F.mse_loss(student[keep].float(), target) / target.pow(2).mean().clamp(min=1e-12)


def in_batch_contrastive(tokens: torch.Tensor, mask: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """How well each text's mean-pooled embedding tells it from the other texts of the batch: cross-entropy of
    its scaled cosine similarities picking itself (sentence-transformers' MultipleNegativesRankingLoss with
    every text its own positive). Unlike a distance to the unpruned model, it has a gradient there."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    pooled = F.normalize((tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9), dim=-1)
    return F.cross_entropy(scale * pooled @ pooled.T, torch.arange(len(pooled), device=pooled.device))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Over every target: one per text, or one per token (NO_TARGET: none)."""
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=NO_TARGET)


def one_score(logits: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether `targets` are a number per row for a head with one output (a reranker, a regression head)."""
    return logits.shape[-1] == 1 and targets.is_floating_point() and targets.shape == logits.shape[:-1]


def head_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss transformers trains each head with: cross-entropy of class ids (NO_TARGET: none), the mean
    squared error of a one-score head's number per row, binary cross-entropy of a multi-label head's 0/1 (or
    probability) per class."""
    if not targets.is_floating_point():
        return cross_entropy(logits, targets)
    if one_score(logits, targets):
        return F.mse_loss(logits[..., 0].float(), targets.float())
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def _with_distillation(
    loss,
    logits,
    teacher,
    batch: dict,
    plan,
    labels: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher || student) on logits softened by T, plus (1 - alpha) * `loss`;
    averaged over every prediction (a row of a classifier, a position of a language model, a real
    token of a token classifier, the positions `keep` marks: a seq2seq model's target tokens). A one-score head
    matches the teacher's scores (mean squared error), a multi-label head its per-class probabilities softened by
    T (binary cross-entropy); `labels` (None: next tokens) tell which head it is."""
    with torch.no_grad():
        soft = scores(teacher(**batch)) / plan.temperature
    if labels is not None and one_score(logits, labels):
        return (
            plan.alpha * F.mse_loss(logits.float(), soft.float() * plan.temperature) + (1 - plan.alpha) * loss
        )
    if labels is not None and labels.is_floating_point():
        kd = F.binary_cross_entropy_with_logits(
            logits.float() / plan.temperature, torch.sigmoid(soft.float())
        )
        return plan.alpha * kd * plan.temperature**2 + (1 - plan.alpha) * loss
    # a prediction per token (not a question-answering head's two rows over the tokens): none at padding
    mask = batch.get("attention_mask")
    if keep is None and logits.dim() == 3 and mask is not None and logits.shape[:2] == mask.shape:
        keep = mask.bool()
    if keep is not None:
        logits, soft = logits[keep], soft[keep]
    width = soft.shape[-1]
    kd = F.kl_div(
        F.log_softmax(logits.reshape(-1, width) / plan.temperature, -1),
        F.log_softmax(soft.reshape(-1, width), -1), log_target=True, reduction="batchmean",
    ) * plan.temperature**2  # fmt: skip
    return plan.alpha * kd + (1 - plan.alpha) * loss


def _to_device(device: str, model, teacher, masks: dict | None) -> dict:
    """Put the model and teacher on `device` for training; the masks there, as returned."""
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    return {name: mask.to(device) for name, mask in (masks or {}).items()}


def _back_to_cpu(model, teacher) -> None:
    model.eval().to("cpu")
    if teacher is not None:
        teacher.to("cpu")


def _step(loss, model, optimizer, schedule, params: dict, masks: dict | None) -> None:
    """Backward, clip to norm 1, optimizer and schedule step; pruned weights set back to zero."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    if masks:
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)


@dataclass(frozen=True)
class TrainPlan:
    epochs: int = 1
    lr: float = 5e-5
    batch_size: int = 16
    max_len: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term when a teacher is given
    max_steps: int | None = None  # stop early, if the epochs take more steps than this


def train_classifier(
    model,
    tokenizer,
    data: LabelledText,
    plan: TrainPlan,
    *,
    teacher=None,
    masks: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
    desc: str = "train",
    device: str = "cpu",
) -> float:
    """Train `model` in place on `data` (on `device`; the model is back on the CPU afterwards): a
    label per text, a tag per word for a token classifier, a target text per source for an encoder-decoder
    (teacher forcing: its own loss over the target tokens), or for texts without labels the teacher's
    token embeddings; returns the seconds spent. The batch order is seeded by `plan.seed`; dropout
    draws from the global generator, which the caller seeds."""
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    if seq2seq:
        enc, labels = encode_seq2seq(tokenizer, data, plan.max_len, decoder_start(model))
        labels = labels.to(device)
    elif data.labels is None:
        if teacher is None:
            raise ValueError("texts without labels train on a teacher's embeddings: distill must be true")
        enc, labels = dict(encode(tokenizer, data.texts, plan.max_len)), None
    else:
        enc, labels = encode_labelled(tokenizer, data, plan.max_len)
        labels = labels.to(device)
    enc = {k: v.to(device) for k, v in enc.items()}
    masks = _to_device(device, model, teacher, masks)
    steps_per_epoch = -(-len(data) // plan.batch_size)
    total = steps_per_epoch * plan.epochs
    if plan.max_steps:
        total = min(total, plan.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(plan.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(plan.seed)
    params = dict(model.named_parameters())
    if teacher is not None:
        teacher.eval()
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress)
    for epoch in range(plan.epochs):
        order = torch.randperm(len(data), generator=generator)
        for i in range(steps_per_epoch):
            if epoch * steps_per_epoch + i >= total:
                break
            idx = order[i * plan.batch_size : (i + 1) * plan.batch_size].to(device)
            batch = {k: v[idx] for k, v in enc.items()}
            if seq2seq:
                batch["labels"] = labels[idx]
                out = model(**batch)
                loss = out.loss
                if teacher is not None:
                    loss = _with_distillation(
                        loss, out.logits, teacher, batch, plan, keep=labels[idx] != NO_TARGET
                    )
            elif labels is None:
                out = scores(model(**batch))
                with torch.no_grad():
                    target = scores(teacher(**batch))
                loss = embedding_mse(out, target, batch["attention_mask"])
            else:
                out = scores(model(**batch))
                loss = head_loss(out, labels[idx])
                if teacher is not None:
                    loss = _with_distillation(loss, out, teacher, batch, plan, labels[idx])
            _step(loss, model, optimizer, schedule, params, masks)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            bar.update()
    bar.close()
    _back_to_cpu(model, teacher)
    return time.perf_counter() - start


def encode_seq2seq(tokenizer, data: LabelledText, max_len: int, decoder_start: int | None = None):
    """Sources (`data.texts`) encoded, and their targets (`data.labels`) as the token ids to predict, padding
    NO_TARGET, as transformers' seq2seq examples encode them; where every target begins with the token the
    decoder starts from (a BERT tokenizer's [CLS], for a model whose decoder starts from [CLS]), without it: the
    model is given that token, it does not predict it."""
    enc = dict(encode(tokenizer, data.texts, max_len, padding="longest"))
    targets = tokenizer(text_target=data.labels, truncation=True, max_length=max_len, padding="longest",
                        return_tensors="pt")  # fmt: skip
    labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, NO_TARGET)
    if decoder_start is not None and labels.shape[1] > 1 and bool((labels[:, 0] == decoder_start).all()):
        labels = labels[:, 1:].contiguous()  # the model's loss views them flat
    return enc, labels


def decoder_start(model) -> int | None:
    """The token an encoder-decoder's decoder starts from (its generation config's, else its config's)."""
    start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
    return start if start is not None else getattr(model.config, "decoder_start_token_id", None)


def embedding_error(model, teacher, tokenizer, texts: list[str], max_len: int, batch_size: int = 32) -> float:
    """`embedding_mse` of `model`'s token embeddings against `teacher`'s, averaged over batches of `texts`."""
    total = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = dict(encode(tokenizer, texts[i : i + batch_size], max_len, padding="longest"))
            total.append(
                float(embedding_mse(scores(model(**enc)), scores(teacher(**enc)), enc["attention_mask"]))
            )
    return sum(total) / len(total)


def accuracy(model, tokenizer, data: LabelledText, max_len: int, batch_size: int = 32) -> float:
    """The share of labels predicted: one per text, one per word of a token classifier's data, or one per target
    token of an encoder-decoder's (each given the target tokens before it)."""
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    correct = total = 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            batch = data.select(range(i, min(i + batch_size, len(data))))
            enc, labels = (
                encode_seq2seq(tokenizer, batch, max_len, decoder_start(model))
                if seq2seq
                else encode_labelled(tokenizer, batch, max_len)
            )
            scored = labels != NO_TARGET
            logits = model(**enc, labels=labels).logits if seq2seq else model(**enc).logits
            correct += int((logits.argmax(-1) == labels)[scored].sum())
            total += int(scored.sum())
    return correct / total


@dataclass(frozen=True)
class LMPlan:
    steps: int = 500
    lr: float = 1e-3
    batch_size: int = 16
    warmup_steps: int = 30
    weight_decay: float = 0.1
    seed: int = 0
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term when a teacher is given


def train_causal_lm(
    model,
    blocks: torch.Tensor,
    plan: LMPlan,
    *,
    teacher=None,
    masks: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
    desc: str = "train",
    device: str = "cpu",
) -> float:
    """Next-token training on packed token blocks [n, block]: AdamW (0.9, 0.95), cosine decay after a
    linear warm-up, gradient clipping, seeded block order (reshuffled each pass). With a teacher, the
    loss mixes token-level KL on softened logits with the next-token loss; masks and `device` as in
    `train_classifier`. Returns seconds."""
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    masks = _to_device(device, model, teacher, masks)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": plan.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=plan.lr,
        betas=(0.9, 0.95),
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, plan.warmup_steps, plan.steps)
    generator = torch.Generator().manual_seed(plan.seed)
    order = torch.randperm(len(blocks), generator=generator)
    cursor = 0
    params = dict(model.named_parameters())
    if teacher is not None:
        teacher.eval()
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=plan.steps, desc=desc, unit="step", disable=not progress)
    for _ in range(plan.steps):
        if cursor + plan.batch_size > len(order):
            order, cursor = torch.randperm(len(blocks), generator=generator), 0
        ids = blocks[order[cursor : cursor + plan.batch_size]].to(device)
        cursor += plan.batch_size
        out = model(input_ids=ids, labels=ids)
        loss = out.loss
        if teacher is not None:
            loss = _with_distillation(loss, out.logits, teacher, {"input_ids": ids}, plan)
        _step(loss, model, optimizer, schedule, params, masks)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update()
    bar.close()
    _back_to_cpu(model, teacher)
    return time.perf_counter() - start
