"""PEFT adapters: a directory that peft saved (adapter_config.json and the adapter's weights: LoRA, DoRA or another
method that merges into the weights) is served as its base model with the adapter merged in. The merged model is
written once into slimbench's cache as a plain Hugging Face directory, so every step, export and variant works on
an ordinary model, and every variant deploys without peft."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from slimbench import SlimbenchError
from slimbench.core.model_files import from_local_hub_cache, has_tokenizer, quiet_transformers, weight_files

ADAPTER_CONFIG = "adapter_config.json"
PROVENANCE = "slimbench-adapter.json"  # in a merged directory: which adapter and base it was made from
MERGE_FORMAT = 1  # part of the cache key: a change to how merged directories are written makes new ones
# peft's task_type -> slimbench's task
PEFT_TASKS = {
    "SEQ_CLS": "text-classification",
    "TOKEN_CLS": "token-classification",
    "QUESTION_ANS": "question-answering",
    "FEATURE_EXTRACTION": "feature-extraction",
    "CAUSAL_LM": "causal-lm",
    "SEQ_2_SEQ_LM": "seq2seq",
}


def is_adapter(path: Path) -> bool:
    """A directory peft saved: its adapter_config.json and no full model weights beside it."""
    if not (path / ADAPTER_CONFIG).is_file():
        return False
    return all(f.name.startswith("adapter_model") for f in weight_files(path, allow_pickle=True))


def merged_checkpoint(adapter: Path, task: str | None, trust_remote_code=False, allow_pickle=False) -> Path:
    """The directory of `adapter` merged into its base model (made on first use, then read from the cache)."""
    config = _read_json(adapter / ADAPTER_CONFIG)
    if not list(adapter.glob("adapter_model*.safetensors")):
        raise SlimbenchError(f"adapter {str(adapter)!r} has no adapter_model.safetensors (peft writes one unless "
                             "saved with safe_serialization=False)")  # fmt: skip
    base = _base_dir(adapter, config.get("base_model_name_or_path"))
    # QLoRA's 4-bit base (a pre-quantized copy): merged there, the adapter's update is rounded away
    quantized = (_read_json(base / "config.json").get("quantization_config") or {}).get("quant_method")
    if quantized:
        raise SlimbenchError(
            f"adapter {str(adapter)!r}: its base {str(base)!r} is stored quantized ({quantized}), and merged into it "
            "the adapter's update would be rounded to the base's few bits; set base_model_name_or_path in its "
            "adapter_config.json to the unquantized model that base was made from"
        )
    task = task or PEFT_TASKS.get(config.get("task_type") or "") or _base_task(base)
    if task is None:
        raise SlimbenchError(
            f"adapter {str(adapter)!r}: its adapter_config.json names no task_type peft knows "
            f"({config.get('task_type')!r}) and its base {str(base)!r} names no task; pass --task"
        )
    from slimbench.defaults.corpus import cache_root

    out = cache_root() / "merged" / f"{adapter.resolve().name}-{_key(adapter, base, task)[:16]}"
    if (out / PROVENANCE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".merging-", dir=out.parent) as work:
        staged = Path(work) / "model"
        _merge(adapter, base, task, staged, trust_remote_code, allow_pickle)
        (staged / PROVENANCE).write_text(json.dumps({"adapter": str(adapter.resolve()), "base": str(base),
                                                     "peft_type": config.get("peft_type"), "task": task}, indent=2))  # fmt: skip
        try:
            os.replace(staged, out)
        except OSError:  # made meanwhile by another process: theirs is the same model
            if not (out / PROVENANCE).is_file():
                raise
    _drop_earlier_merges(out, adapter, task)
    return out


def _drop_earlier_merges(out: Path, adapter: Path, task: str) -> None:
    """Remove the cache's merges of the same adapter directory for the same task made before it changed: a merge is
    the size of its base, and an adapter retrained in place would otherwise leave one per version."""
    for other in out.parent.iterdir():
        if other == out or not (other / PROVENANCE).is_file():
            continue
        try:
            made = json.loads((other / PROVENANCE).read_text())
        except ValueError:
            continue
        if made.get("adapter") == str(adapter.resolve()) and made.get("task") == task:
            shutil.rmtree(other, ignore_errors=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SlimbenchError(f"{str(path)!r} is not valid JSON ({e})") from None


def _base_dir(adapter: Path, name: str | None) -> Path:
    """The base model's directory: base_model_name_or_path as a path (as given, or next to the adapter), else a hub
    id in the local cache."""
    if not name:
        raise SlimbenchError(
            f"adapter {str(adapter)!r}: its adapter_config.json names no base_model_name_or_path"
        )
    for candidate in (Path(name), adapter / name):
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    try:
        return from_local_hub_cache(name)
    except SlimbenchError:
        raise SlimbenchError(
            f"adapter {str(adapter)!r}: its base model {name!r} is neither a local directory nor a hub id in the "
            "local cache (slimbench never downloads at run time); set base_model_name_or_path in its "
            "adapter_config.json to the base model's directory"
        ) from None


def _base_task(base: Path) -> str | None:
    from slimbench.tasks import TASKS, detect_task

    config = _read_json(base / "config.json")
    found = detect_task(config.get("architectures") or [], bool(config.get("is_encoder_decoder")))
    return found if found in TASKS else None


def _key(adapter: Path, base: Path, task: str) -> str:
    """The adapter's directory and files by content, the base's files by name, size and modification time (a base
    is read-only in practice, and hashing a multi-GB base on every open would cost more than the merge it saves).
    Each adapter directory has merges of its own, so that one retrained in place replaces only its own."""
    h = hashlib.sha256(f"{MERGE_FORMAT}\0{task}\0{base}\0{adapter.resolve()}\0".encode())
    for f in sorted(p for p in adapter.iterdir() if p.is_file() and p.name != "README.md"):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    for f in sorted(p for p in base.iterdir() if p.is_file()):
        stat = f.stat()
        h.update(f"{f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _label_count(adapter: Path, base: Path, task, config) -> int | None:
    """The number of labels of the head the adapter carries (peft saves a task head that is in modules_to_save):
    read from the weights whose shape depends on the label count, found by building the model twice on the meta
    device. None where the task's model has no such weights (a language model)."""
    import torch

    shapes = []
    for n in (1, 2):
        sized = copy.deepcopy(config)
        sized.num_labels = n
        with torch.device("meta"):
            model = task.auto_class().from_config(sized)
        shapes.append({name: tuple(p.shape) for name, p in model.named_parameters()})
    depends = sorted(name for name in shapes[0] if shapes[0][name] != shapes[1].get(name))
    if not depends:
        return None
    saved = {key.removeprefix("base_model.model."): shape for key, shape in _weight_shapes(adapter).items()}
    found = [saved[name] for name in depends if name in saved]
    if not found and set(depends) <= set(_weight_shapes(base)):
        return None  # the base is a model with this head already: it loads from the base's weights
    if not found:
        raise SlimbenchError(
            f"adapter {str(adapter)!r} carries no weights for the {task.name} head ({', '.join(depends)}): its head "
            "would start from random weights. peft saves a head that is in modules_to_save (task_type SEQ_CLS, "
            "TOKEN_CLS and QUESTION_ANS put it there)"
        )
    return int(found[0][0])


def _check_fits(adapter: Path, model) -> None:
    """Refuse an adapter made for another model: peft loads what matches and only warns about the rest (an
    adapter for a deeper model loads into its first layers)."""
    from peft import get_peft_model_state_dict

    saved = set(_weight_shapes(adapter))
    places = set(get_peft_model_state_dict(model))
    for names, what in ((saved - places, "weights the base has no place for"),
                        (places - saved, "no weights for places peft made in the base")):  # fmt: skip
        if names:
            raise SlimbenchError(
                f"adapter {str(adapter)!r} does not fit its base: it has {what} ({len(names)}, the first: "
                f"{sorted(names)[0]}); was it trained on another model?"
            )


def _weight_shapes(model_dir: Path) -> dict[str, list[int]]:
    """The shape of every tensor in the directory's safetensors files, read from their headers."""
    from safetensors import safe_open

    shapes = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            shapes.update({key: f.get_slice(key).get_shape() for key in f.keys()})
    return shapes


def _merge(adapter: Path, base: Path, task_name: str, out: Path, trust_remote_code: bool, allow_pickle: bool):
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, AutoTokenizer

    from slimbench.tasks import get_task

    task = get_task(task_name)
    try:
        peft_config = PeftConfig.from_pretrained(adapter)
    except Exception as e:
        raise SlimbenchError(
            f"adapter {str(adapter)!r}: peft cannot read its adapter_config.json ({e})"
        ) from None
    if peft_config.is_prompt_learning:
        raise SlimbenchError(
            f"adapter {str(adapter)!r} is a {peft_config.peft_type.value} adapter: it adds virtual tokens at run "
            "time and cannot be merged into the weights; slimbench serves merged adapters (LoRA, DoRA, IA3, ...)"
        )
    if not has_tokenizer(adapter) and not has_tokenizer(base):
        raise SlimbenchError(f"adapter {str(adapter)!r} and its base {str(base)!r} have no tokenizer: save the one "
                             "the adapter was fine-tuned with beside it (tokenizer.save_pretrained(dir))")  # fmt: skip
    # the fine-tuned model's config where it was saved beside the adapter (labels, pad token), else the base's
    source = adapter if (adapter / "config.json").is_file() else base
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    stored_dtype = getattr(config, "dtype", None)
    stored_dtype = getattr(torch, stored_dtype) if isinstance(stored_dtype, str) else stored_dtype
    labels = _label_count(adapter, base, task, config)
    if labels is not None and labels != config.num_labels:
        config.num_labels = labels  # LABEL_0 ... : data then names labels by their index
    tokenizer = AutoTokenizer.from_pretrained(
        adapter if has_tokenizer(adapter) else base, trust_remote_code=trust_remote_code
    )
    # set on the model in training, not saved by peft; a decoder classifier finds each text's last token by it
    if getattr(config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    print(f"merging the {peft_config.peft_type.value} adapter {str(adapter)!r} into its base {str(base)!r} (once; "
          f"kept in {out.parent.parent})", file=sys.stderr)  # fmt: skip
    with quiet_transformers():  # the head is newly initialized here, then replaced by the adapter's
        model = task.auto_class().from_pretrained(
            base, config=config, use_safetensors=not allow_pickle, trust_remote_code=trust_remote_code
        )
    try:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
        _check_fits(adapter, model)
        model = model.merge_and_unload()
    except SlimbenchError:
        raise
    except Exception as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        detail = next((line for line in lines if "mismatch" in line), lines[0])
        raise SlimbenchError(
            f"adapter {str(adapter)!r} does not fit its base {str(base)!r} ({type(e).__name__}: {detail})"
        ) from None
    if stored_dtype in (torch.float16, torch.bfloat16):  # the size the base is stored at
        model = model.to(stored_dtype)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    task.save_files(base, out)
    if (adapter / "generation_config.json").is_file():  # the fine-tuned generation settings, where saved
        shutil.copy2(adapter / "generation_config.json", out / "generation_config.json")
