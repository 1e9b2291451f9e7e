"""The shape every format answers: can it run on a device (and if not, why, in one line), how it is
saved, how it is loaded and placed as a deployment would load it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimbench.backends.device import Device


@dataclass
class Loaded:
    """A variant loaded for measuring: its manifest and config, the tokenizer, and calls."""

    manifest: dict
    config: Any  # transformers PretrainedConfig (labels, positions)
    tokenizer: Any
    forward: Callable[[dict], Any]  # encoded batch -> logits
    return_tensors: str  # what the tokenizer should produce: "pt" or "np"
    to_device: Callable[[dict], dict]
    # generating tasks: (prompts, new tokens[, exact=False: stop at the end-of-sequence token]) -> ids
    generate: Callable[..., Any] | None = None
    path: Path | None = None  # the variant's directory (set by slimbench.backends.load)

    def encode(self, texts: list[str], seq_len: int) -> dict:
        from slimbench.core.data import encode

        return self.to_device(dict(encode(self.tokenizer, texts, seq_len, self.return_tensors)))

    def logits(self, batch: dict) -> np.ndarray:
        out = self.forward(batch)
        return (
            out.detach().float().cpu().numpy()
            if hasattr(out, "detach")
            else np.asarray(out, dtype=np.float32)
        )


def scores(out):
    """What a model's outputs are read for: its head's `logits`; for an extractive question-answering head its
    start and end logits as two rows over the positions, [batch, 2, tokens] (a choice of position each, as
    the model is trained); or where it has no head (a bare encoder, feature extraction) its token embeddings
    (`last_hidden_state`)."""
    if "start_logits" in out:
        start, end = out["start_logits"], out["end_logits"]
        return torch.stack((start, end), 1) if hasattr(start, "detach") else np.stack((start, end), 1)
    return out["logits"] if "logits" in out else out["last_hidden_state"]


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what traced and compiled artifacts take
OLD_INPUTS = ["input_ids", "attention_mask"]  # artifacts whose manifest lists none took these, positionally


def artifact_inputs(model, batch) -> list[str]:
    """The tokenizer outputs a traced or compiled artifact of `model` takes by name: input_ids,
    attention_mask and, where the tokenizer makes them and the model reads them, token_type_ids (which
    sentence of a pair each token is in, what a cross-encoder reads)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return [name for name in MODEL_INPUTS if name in batch and name in accepted]


def artifact_call(fn, manifest: dict) -> Callable[[dict], Any]:
    """batch -> fn's logits: fn takes the inputs the manifest's `notes.inputs` names, by name; one saved
    before they were recorded takes input_ids and attention_mask, positionally."""
    names = manifest.get("notes", {}).get("inputs")
    if names is None:
        return lambda batch: fn(*(batch[name] for name in OLD_INPUTS))
    return lambda batch: fn(**{name: batch[name] for name in names})


class LogitsOnly(torch.nn.Module):
    """`(input_ids, attention_mask[, token_type_ids]) -> logits` (`scores`): the signature the traced
    (TorchScript) and compiled (AOTInductor) artifacts expose, called by name with the tokenizer's outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return scores(
            self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **segments)
        )


class Backend:
    kind: str  # the manifest's "kind"
    loader: str  # the standard loader a deployment uses, for people

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        """None where this format can run on `device`; otherwise the one-line reason."""
        return device.unavailable()

    def save(self, model, path: Path, example_inputs=None) -> None:
        raise NotImplementedError

    def load(self, model_dir: Path, manifest: dict, task, tokenizer, config, device: Device,
             num_threads: int | None = None) -> Loaded:  # fmt: skip
        raise NotImplementedError


def torch_logits(model) -> Callable[[dict], Any]:
    import torch

    def forward(batch):
        with torch.inference_mode():
            return scores(model(**batch))

    return forward


def greedy_generate(model, tokenizer) -> Callable[..., Any]:
    """Greedy decoding of exactly `new_tokens` tokens (the workload's length, whatever is sampled), or with
    `exact=False` of at most that many (an output for scoring, ended where the model ends it)."""
    import torch

    def generate(batch, new_tokens: int, exact: bool = True):
        with torch.inference_mode():
            return model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens if exact else None,
                                  do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id)  # fmt: skip

    return generate


def placer(device: Device) -> Callable[[dict], dict]:
    return lambda batch: {k: v.to(str(device)) for k, v in batch.items()}
