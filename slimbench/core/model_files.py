"""What a Hugging Face model directory holds, read without loading a model: its weight files and their hash,
its tokenizer's files, the local hub cache a hub id resolves to; and transformers' warnings held back where
slimbench expects them."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

from slimbench import SlimbenchError

# the files a tokenizer is saved as (fast, WordPiece, BPE, SentencePiece, Marian's): one of them, or no tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model", "source.spm")  # fmt: skip


def has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def weight_files(path: Path, allow_pickle: bool = False) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files and allow_pickle:
        files = sorted(path.glob("*.bin"))
    return files


def sha256_files(files: list[Path], with_names: bool = True) -> str:
    """One sha256 over the files' contents (and names, unless `with_names` is False)."""
    h = hashlib.sha256()
    for f in files:
        if with_names:
            h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@contextmanager
def quiet_transformers():
    """transformers' warnings held back where slimbench expects them (a classifier head initialized for
    fine-tuning, SDPA attention falling back to eager for a head mask); its errors still print."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def from_local_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        raise SlimbenchError(
            f"checkpoint {repo_id!r} is neither a local directory nor a hub id in the local cache "
            "(slimbench never downloads at run time)"
        ) from None
