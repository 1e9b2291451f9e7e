"""Sequence-to-sequence generation (encoder-decoder models: summarizers, translators, T5-style text-to-text):
JSONL or CSV rows with `source` (what the model reads) and `target` (what it should write). A variant writes
each source's output greedily (the checkpoint's other generation settings kept, up to a few tokens beyond the
longest target), scored by ROUGE-L F1 against the target (Google's rouge-score, on lower-cased Unicode words, so
that a translation into any language written with spaces is scored). The bench's agreement with the baseline is
the share of outputs a variant writes word for word as the baseline does; the agreement check after optimize,
the share of next tokens it keeps along the source model's own output. The latency workload is a source of seq_len tokens, then
NEW_TOKENS greedy tokens (slimbench.tasks.base.Generating); its time to first token is the encoder's and one
decoder step's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from slimbench import SlimbenchError
from slimbench.core.data import LabelledText
from slimbench.tasks.base import Generating

COLUMNS = ("source", "target")
TARGET_MARGIN = 8  # tokens an eval output may run beyond the longest target before it is cut
# decoder positions compared with the source model after optimize (along its own greedy output)
COMPARED_TOKENS = 16
EVAL_BATCH = 16


class UnicodeWords:
    """rouge-score's tokenizer interface over lower-cased Unicode words (its default keeps a-z and 0-9 only,
    which scores every non-Latin output 0)."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


def rouge_l(predictions: list[str], targets: list[str]) -> list[float]:
    """ROUGE-L F1 of each prediction against its target."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], tokenizer=UnicodeWords())
    return [scorer.score(t, p)["rougeL"].fmeasure for p, t in zip(predictions, targets, strict=True)]


def decoder_mask(ids, eos_token_id) -> np.ndarray:
    """Which positions of generated decoder ids [batch, tokens] (the start token first) are the output: up
    to and including each row's first end-of-sequence token after the start."""
    ids = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids)
    eos = np.isin(ids, np.atleast_1d(eos_token_id if eos_token_id is not None else []))
    eos[:, 0] = False
    ended_before = np.cumsum(eos, axis=1) - eos  # end-of-sequence tokens strictly before each position
    return ended_before == 0


class Seq2Seq(Generating):
    name = "seq2seq"
    auto_class_name = "AutoModelForSeq2SeqLM"
    ort_class_name = "ORTModelForSeq2SeqLM"
    export_task = "text2text-generation-with-past"
    architecture_suffixes = ("ForConditionalGeneration", "MTModel", "EncoderDecoderModel")
    encoder_decoder = True
    trainable = True  # recovery: each source's target under teacher forcing
    metric_name = "rougeL"
    agreement_measure = "of the next tokens kept, along the source model's own output"
    # encoder, decoder, decoder with its KV cache: what ONNX Runtime's optimizer and quantizer each take
    onnx_files = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")

    @staticmethod
    def read(path: Path) -> tuple[list[str], list[str]]:
        from slimbench.core.data import read_frame

        df = read_frame(path, set(COLUMNS))
        for i, row in enumerate(df.itertuples(index=False), start=1):
            if not isinstance(row.source, str) or not row.source.strip() or not isinstance(row.target, str):
                raise SlimbenchError(f"data file {str(path)!r} row {i}: 'source' must be a non-empty text and "
                                     "'target' a text")  # fmt: skip
        return df["source"].tolist(), df["target"].tolist()

    def check_data(self, path: Path, config) -> int:
        return len(self.read(path)[0])

    def read_train(self, path: Path, config) -> LabelledText:
        """The sources with their targets as labels: what recovery trains to write (calibration and parity checks
        read the sources)."""
        return LabelledText(*self.read(path))

    def latency_texts(self, path: Path) -> list:
        return self.read(path)[0]

    def write(self, loaded, sources: list[str], seq_len: int, max_new_tokens: int) -> list[str]:
        """Each source's output, greedy, at most `max_new_tokens` tokens."""
        out = []
        for i in range(0, len(sources), EVAL_BATCH):
            batch = loaded.encode(sources[i : i + EVAL_BATCH], seq_len)
            ids = loaded.generate(batch, max_new_tokens, exact=False)
            out.extend(loaded.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return [text.strip() for text in out]

    def score(self, loaded, path: Path, seq_len: int) -> dict:
        """ROUGE-L F1 against the targets, averaged (predictions: the outputs)."""
        sources, targets = self.read(path)
        longest = max(len(ids) for ids in loaded.tokenizer(targets, verbose=False)["input_ids"])
        predicted = self.write(loaded, sources, seq_len, longest + TARGET_MARGIN)
        return {"metric_name": self.metric_name, "metric": float(np.mean(rouge_l(predicted, targets))),
                "predictions": predicted}  # fmt: skip

    def compared_inputs(self, model, batch: dict):
        """The sources with the source model's own greedy output (COMPARED_TOKENS tokens) as decoder inputs, and
        which decoder positions are the output: a variant is compared with its source on the logits the source
        model writes by."""
        import torch

        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            ids = model.generate(**batch, max_new_tokens=COMPARED_TOKENS, do_sample=False, num_beams=1)
        mask = decoder_mask(ids, model.generation_config.eos_token_id)
        return {**batch, "decoder_input_ids": ids}, mask


TASK = Seq2Seq()
