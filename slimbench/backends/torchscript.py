"""PyTorch dynamic int8 (fbgemm/qnnpack Linear layers) saved as TorchScript, the only standard
format that keeps its packed int8 weights: `(input_ids, attention_mask) -> logits`, CPU only."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

from slimbench import SlimbenchError
from slimbench.backends.base import Backend, Loaded, LogitsOnly, artifact_call, artifact_inputs, placer
from slimbench.backends.device import Device

TORCHSCRIPT_FILE = "model.pt"


def traceable(model):
    """optimum's ONNX export patches, which make a transformers model traceable by TorchScript (decoders build
    their attention masks with vmap, which the tracer cannot follow), as a context; none where optimum has no
    ONNX config for the model type. The patches are the model type's: a task optimum does not export for it (a
    Llama token classifier, a GPT-2 question answerer) takes those of its text classifier, with the outputs of
    its own head (which the patched forward keeps: `logits`, or `start_logits` and `end_logits`)."""
    import optimum.exporters.onnx.model_configs  # noqa: F401 - registers the ONNX configs
    from optimum.exporters.tasks import TasksManager

    try:
        tasks = (TasksManager.infer_task_from_model(model), "text-classification")
    except (KeyError, ValueError):  # a model class optimum does not know
        tasks = ("text-classification",)
    for task in tasks:
        try:
            constructor = TasksManager.get_exporter_config_constructor(
                "onnx", model=model, task=task, library_name="transformers"
            )
        except (KeyError, ValueError):
            continue
        exporter = constructor(model.config, task=task)
        if task != tasks[0] and tasks[0] in exporter._TASK_TO_COMMON_OUTPUTS:
            exporter.task = tasks[0]
        return exporter.patch_model_for_export(model)
    return contextlib.nullcontext()


def to_torchscript(model, example) -> torch.jit.ScriptModule:
    from slimbench.core.model_files import quiet_transformers

    # the tracer's warnings about Python bools in HF code; transformers' notice of an unset loss_type, read by
    # the tracer as it walks the model's attributes
    with torch.no_grad(), warnings.catch_warnings(), quiet_transformers(), traceable(model):
        warnings.simplefilter("ignore")
        # No check_trace: it reruns the model eagerly under the patches, which only tracing takes (optimum's
        # traced attention has no grouped-query heads, which eager Llama hands it). The saved variant is checked
        # against its source on sample inputs of other shapes after saving.
        return torch.jit.trace(
            LogitsOnly(model).eval(), example_kwarg_inputs={k: example[k] for k in artifact_inputs(model, example)},
            strict=False, check_trace=False,
        )  # fmt: skip


class TorchScriptInt8(Backend):
    kind = "torch-int8"
    loader = "torch.jit.load"

    def unavailable(self, device: Device, manifest: dict | None = None) -> str | None:
        if device.is_cuda:
            return "PyTorch dynamic int8 (TorchScript, fbgemm/qnnpack kernels) runs on the CPU only"
        return None

    def save(self, model, path: Path, example_inputs=None) -> None:
        to_torchscript(model, example_inputs).save(str(path / TORCHSCRIPT_FILE))
        model.config.save_pretrained(path)

    def load(self, model_dir, manifest, task, tokenizer, config, device, num_threads=None) -> Loaded:
        if task.generates:
            raise SlimbenchError(f"{model_dir}: a TorchScript (torch-int8) variant cannot generate text")
        call = artifact_call(torch.jit.load(str(Path(model_dir) / TORCHSCRIPT_FILE)).eval(), manifest)

        def forward(batch):
            with torch.inference_mode():
                return call(batch)

        return Loaded(manifest, config, tokenizer, forward, "pt", placer(device))


BACKEND = TorchScriptInt8()
