"""Causal language modelling on plain text: packing documents into fixed-length token blocks,
perplexity from logits (the same arithmetic for PyTorch and ONNX Runtime models), and the task:
a prompt of seq_len tokens then NEW_TOKENS greedy tokens as the workload, perplexity as the metric,
next-token agreement with the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimbench.tasks.base import Generating

EVAL_BLOCKS = 128  # blocks of the eval text scored for perplexity (128 x 128 = 16k tokens)


def pack(tokenizer, texts: list[str], block: int) -> np.ndarray:
    """Every document as BOS + tokens + EOS, concatenated and cut into rows of `block` tokens
    (the remainder is dropped). Returns int64 [n_blocks, block]."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        stream.extend(([bos] if bos is not None else []) + ids + ([eos] if eos is not None else []))
    n = len(stream) // block
    return np.asarray(stream[: n * block], dtype=np.int64).reshape(n, block)


def token_nll(logits: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Negative log-likelihood of each next token, and the argmax prediction at each position.
    logits [b, t, vocab], ids [b, t] -> ([b, t-1], [b, t-1])."""
    logits = np.asarray(logits, dtype=np.float64)[:, :-1]
    target = ids[:, 1:]
    peak = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - peak).sum(-1)) + peak[..., 0]
    picked = np.take_along_axis(logits, target[..., None], -1)[..., 0]
    return log_z - picked, logits.argmax(-1)


def perplexity(logits_of, blocks: np.ndarray, batch_size: int = 16) -> tuple[float, list[int]]:
    """exp(mean next-token NLL) over `blocks`, and the flat list of argmax predictions.
    `logits_of(ids [b, t] int64 ndarray) -> logits` may return a torch tensor or an ndarray."""
    total, count, predictions = 0.0, 0, []
    for i in range(0, len(blocks), batch_size):
        ids = blocks[i : i + batch_size]
        out = logits_of(ids)
        if hasattr(out, "detach"):
            out = out.detach().float().cpu().numpy()
        nll, pred = token_nll(out, ids)
        total += float(nll.sum())
        count += nll.size
        predictions.extend(pred.reshape(-1).tolist())
    return float(np.exp(total / count)), predictions


def model_perplexity(model, blocks: np.ndarray, batch_size: int = 16) -> float:
    """`perplexity` of a PyTorch causal LM on CPU token blocks."""
    import torch

    def logits_of(ids):
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(ids)).logits

    return perplexity(logits_of, blocks, batch_size)[0]


class CausalLM(Generating):
    name = "causal-lm"
    auto_class_name = "AutoModelForCausalLM"
    ort_class_name = "ORTModelForCausalLM"
    export_task = "text-generation-with-past"
    architecture_suffixes = ("ForCausalLM", "LMHeadModel")
    metric_name = "perplexity"
    lower_is_better = True
    trainable = True

    def prepare_tokenizer(self, tokenizer) -> None:
        tokenizer.padding_side = "left"  # prompts end where generation starts
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    def check_data(self, path: Path, config) -> int:
        return len(self.latency_texts(path))

    def read_train(self, path: Path, config):
        """The `text` column alone: next-token training needs no labels."""
        from slimbench.core.data import LabelledText

        return LabelledText(self.latency_texts(path))

    def score(self, loaded, path: Path, seq_len: int) -> dict:
        """Perplexity on the first EVAL_BLOCKS blocks of the packed eval text; predictions are the
        argmax next token at every position, for agreement with the baseline."""
        blocks = pack(loaded.tokenizer, self.latency_texts(path), seq_len)[:EVAL_BLOCKS]

        def logits_of(ids):
            batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if loaded.return_tensors == "pt":
                import torch

                batch = {k: torch.from_numpy(v) for k, v in batch.items()}
            return loaded.logits(loaded.to_device(batch))

        ppl, predictions = perplexity(logits_of, blocks)
        return {"metric_name": self.metric_name, "metric": ppl, "predictions": predictions}


TASK = CausalLM()
