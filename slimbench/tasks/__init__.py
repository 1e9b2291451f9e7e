"""The tasks slimbench serves, one file each with the same shape (slimbench.tasks.base.Task):
text classification, token classification, extractive question answering, sequence-to-sequence generation
(summarizers, translators), causal LM and feature extraction (sentence embeddings).
Everything that differs between tasks (data, workload, metric, loader classes, generation) is asked
of the task, never tested by name."""

from __future__ import annotations

from slimbench import SlimbenchError
from slimbench.tasks import (
    causal_lm,
    classification,
    feature_extraction,
    question_answering,
    seq2seq,
    token_classification,
)
from slimbench.tasks.base import BUDGET, Task

DATA_FORMATS = (
    "JSONL/CSV with 'text' and 'label', or 'sentence1', 'sentence2' and 'label' for a classifier of sentence pairs "
    "(a causal LM: 'text' alone; token classification: JSONL with 'tokens' and 'tags'; question answering: "
    "'question', 'context' and 'answers'; seq2seq: 'source' and 'target'; feature extraction: "
    "'text' and 'label', or 'sentence1', 'sentence2' and 'score')"
)
# feature extraction last: its architectures (BertModel) end as those of causal LMs (GPT2LMHeadModel) and of
# translators (MarianMTModel) do
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        classification.TASK,
        token_classification.TASK,
        question_answering.TASK,
        seq2seq.TASK,
        causal_lm.TASK,
        feature_extraction.TASK,
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise SlimbenchError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


def detect_task(architectures: list[str] | None, encoder_decoder: bool | None = None) -> str | None:
    """The task a config's `architectures` names (e.g. BertForSequenceClassification), if any; with
    `encoder_decoder` (the config's is_encoder_decoder), a task for encoder-decoder models claims only those
    (a vision-language LlavaForConditionalGeneration is no summarizer)."""
    for arch in architectures or []:
        for task in TASKS.values():
            if encoder_decoder is not None and task.encoder_decoder and not encoder_decoder:
                continue
            if arch.endswith(task.architecture_suffixes):
                return task.name
    return None


__all__ = ["BUDGET", "DATA_FORMATS", "TASKS", "Task", "detect_task", "get_task"]
