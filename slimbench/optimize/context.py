"""What a step may use besides the model: the source checkpoint, its tokenizer, real text, scratch space."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimbench.backends.device import Device
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText, Text, encode
from slimbench.tasks import Task, get_task


@dataclass
class StepContext:
    checkpoint: Checkpoint
    tokenizer: Any
    workdir: Path  # scratch space for this recipe; removed when the variant is saved
    sample_texts: list[Text]  # real inputs (texts or sentence pairs): parity checks, tracing, calibration
    train_data: LabelledText | None = None  # for recovery and calibration
    eval_data: LabelledText | None = None  # held-out labelled data, for accuracy-aware steps
    notes: dict[str, Any] = field(default_factory=dict)  # facts a step records for the manifest
    masks: dict[str, Any] = field(default_factory=dict)  # parameter name -> bool mask of kept weights
    # where steps work (recovery, compiling for "auto"); None: the best device here
    device: Device | None = None

    def work_device(self) -> Device:
        """Where steps that choose a device work: the one the caller named (a search: where it measures), else
        the first GPU where there is one, else the CPU."""
        return self.device or Device.best()

    def needs_capability(self, need: tuple[int, int]) -> None:
        """Record that the variant needs a CUDA GPU of at least this compute capability (the highest
        any step asks for is kept)."""
        have = tuple(self.notes.get("min_compute_capability", (0, 0)))
        self.notes["min_compute_capability"] = list(max(have, tuple(need)))

    @property
    def task(self) -> Task:
        return get_task(self.checkpoint.task)

    def sample_batch(self, batch_size: int = 4, seq_len: int = 64):

        # vary lengths so padded rows are part of every parity check and trace
        def cut(text: str, i: int) -> str:
            return text[: max(8, len(text) * (i + 1) // batch_size)]

        texts = [cut(t, i) if isinstance(t, str) else (t[0], cut(t[1], i))
                 for i, t in enumerate((self.sample_texts * batch_size)[:batch_size])]  # fmt: skip
        return encode(self.tokenizer, texts, seq_len, padding="longest")
