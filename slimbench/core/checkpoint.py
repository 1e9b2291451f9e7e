"""Checkpoints: a local Hugging Face model directory (or a hub id already in the local cache), or a peft
adapter merged into its base (core/adapters.py); its task and tokenizer. safetensors only and no remote code
unless the user opts in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from slimbench import SlimbenchError
from slimbench.core.adapters import is_adapter, merged_checkpoint
from slimbench.core.model_files import (
    TOKENIZER_FILES,
    from_local_hub_cache,
    has_tokenizer,
    sha256_files,
    weight_files,
)
from slimbench.tasks import TASKS, detect_task, get_task


def _check_head_loads(path: Path, config, task: str) -> None:
    """Refuse a checkpoint whose head is not the one transformers' Auto class of its task builds for its model
    type (XLNet's beam-search reader, which AutoModelForQuestionAnswering loads as the simple one): loading it
    would start that other head from random weights; and one whose model type that Auto class does not load at
    all (Whisper's speech-to-text, which ends as a text-to-text model's name does)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    names = getattr(getattr(get_task(task).auto_class(), "_model_mapping", None), "_model_mapping", {})
    loads = names.get(config.model_type)
    architecture = next(a for a in config.architectures if detect_task([a]) == task)
    if loads is None and config.model_type in CONFIG_MAPPING_NAMES:  # Whisper: speech, not text, to text
        raise SlimbenchError(
            f"checkpoint {str(path)!r} is a {architecture}, but transformers' {get_task(task).auto_class_name} "
            f"loads no {config.model_type} checkpoints; slimbench serves the models the Auto classes of its tasks "
            f"load ({task}: {get_task(task).auto_class_name})"
        )
    if loads is None:  # a model type transformers does not know (its own code): nothing to compare
        return
    loads = (loads,) if isinstance(loads, str) else tuple(loads)
    if architecture not in loads:
        raise SlimbenchError(
            f"checkpoint {str(path)!r} is a {architecture}, but transformers' {get_task(task).auto_class_name} "
            f"loads {config.model_type} checkpoints as {' or '.join(loads)}, whose head would start from random "
            "weights; slimbench serves the heads the Auto classes load"
        )


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    task: str
    trust_remote_code: bool = False
    allow_pickle: bool = False
    adapter: Path | None = None  # the peft adapter the user named, merged into its base at `path`

    @classmethod
    def open(
        cls, name_or_path: str | Path, task: str | None = None, trust_remote_code=False, allow_pickle=False
    ) -> Checkpoint:
        path = Path(name_or_path)
        if not path.is_dir():
            path = from_local_hub_cache(str(name_or_path))
        if task is not None and task not in TASKS:
            raise SlimbenchError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
        adapter = None
        if is_adapter(path):
            adapter, path = path.resolve(), merged_checkpoint(path, task, trust_remote_code, allow_pickle)
        if not (path / "config.json").is_file():
            raise SlimbenchError(
                f"checkpoint {str(path)!r} has no config.json: not a Hugging Face model directory"
            )
        if not weight_files(path, allow_pickle):
            hint = "" if allow_pickle else " (pickle .bin weights load only with --allow-pickle)"
            raise SlimbenchError(f"checkpoint {str(path)!r} has no .safetensors weights{hint}")
        for file in weight_files(path):  # the header of each: a truncated or foreign file fails here
            if file.suffix == ".safetensors":
                _check_safetensors(file)
        try:
            json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise SlimbenchError(f"{str(path / 'config.json')!r} is not valid JSON ({e})") from None
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise SlimbenchError(
                f"checkpoint {str(path)!r}: transformers cannot read its config: {e}"
            ) from None
        found = detect_task(config.architectures, bool(getattr(config, "is_encoder_decoder", False)))
        task = task or found
        if task not in TASKS:
            raise SlimbenchError(
                f"cannot tell the task of {str(path)!r} from its architectures {config.architectures}; "
                f"pass --task ({', '.join(TASKS)})"
            )
        if task == found:
            _check_head_loads(path, config, task)
        if not has_tokenizer(path):
            raise SlimbenchError(
                f"checkpoint {str(path)!r} has no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...): save the one it was "
                "fine-tuned with beside it (tokenizer.save_pretrained(dir); Trainer saves it when given "
                "processing_class=tokenizer)"
            )
        return cls(path.resolve(), task, trust_remote_code, allow_pickle, adapter)

    @property
    def weights_sha256(self) -> str:
        return sha256_files(weight_files(self.path, self.allow_pickle))

    def load_model(self):
        model = (
            get_task(self.task)
            .auto_class()
            .from_pretrained(
                self.path, use_safetensors=not self.allow_pickle, trust_remote_code=self.trust_remote_code
            )
        )
        return model.eval()

    def skeleton(self):
        """The model's modules without weights (on the meta device): what steps check before any load."""
        import torch

        with torch.device("meta"):
            return get_task(self.task).auto_class().from_config(self.load_config(),
                                                                trust_remote_code=self.trust_remote_code)  # fmt: skip

    def load_config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)

    def load_tokenizer(self):
        """The checkpoint's tokenizer, with the pad token its config names where the tokenizer has none (decoder
        classifiers find each text's last token by config.pad_token_id; a tokenizer saved before its pad token
        was set lacks it)."""
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise SlimbenchError(
                f"checkpoint {str(self.path)!r}: transformers cannot load its tokenizer ({e})"
            ) from None
        if tokenizer.pad_token is None and not get_task(self.task).generates:
            pad_id = getattr(self.load_config(), "pad_token_id", None)
            if pad_id is None:
                raise SlimbenchError(
                    f"checkpoint {str(self.path)!r}: its tokenizer has no pad token and its config.json no "
                    "pad_token_id, so texts of different lengths cannot be batched; set pad_token_id in config.json "
                    "(a decoder classifier commonly pads with its end-of-text token)"
                )
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
        return tokenizer


def _check_safetensors(file: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except Exception as e:
        raise SlimbenchError(f"weights file {str(file)!r} is not a readable safetensors file ({e})") from None
