"""Fine-tuning: every method on tiny pretrained BERT and GPT-2 runs (the lineage), parameter counts, frozen
weights untouched, reload without hfkit, label kinds, and clear errors for bad labelled data."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pandas as pd
import pytest
import torch

import hfkit
from hfkit.errors import ConfigError, DataError

from conftest import ADJECTIVES, NOUNS, VERBS, with_dotted

ANIMALS = {"cat", "dog", "bird", "horse"}
THINGS = ["ball", "tree", "house", "car"]


def labelled_rows(n: int, seed: int) -> list[dict]:
    """Label = whether the subject is an animal or a person; the object is a thing, so one word decides."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        subject = rng.choice(NOUNS)
        text = f"the {rng.choice(ADJECTIVES)} {subject} {rng.choice(VERBS)} the {rng.choice(THINGS)} ."
        rows.append({"text": text, "label": "animal" if subject in ANIMALS else "person", "subject": subject})
    return rows


@pytest.fixture(scope="session")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    pd.DataFrame(labelled_rows(320, 1)).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(labelled_rows(80, 2)).to_csv(folder / "dev.csv", index=False)
    return folder


def finetune_cfg(model_dir, labelled, out, method, **extra) -> dict:
    cfg = {"method": method, "output_dir": str(out), "model": {"path": str(model_dir)},
           "data": {"train": str(labelled / "train.csv"), "validation": str(labelled / "dev.csv"), "max_length": 32},
           "train": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3, "report_to": [], "logging_steps": 10}}
    return with_dotted(cfg, extra)


def prefix_tuning_works_here() -> bool:
    from transformers import BertForSequenceClassification, BertModel

    from hfkit.methods import prefix_tuning_problem

    return prefix_tuning_problem(BertForSequenceClassification, BertModel) is None


# prefix_tuning is refused (test_prefix_tuning_trains_or_is_refused_in_one_line) where PEFT cannot apply it.
METHODS = ["full", "frozen", "lora", "prompt_tuning", *(["prefix_tuning"] if prefix_tuning_works_here() else []),
           "p_tuning", "ia3"]


@pytest.fixture(scope="session")
def bert_runs(tmp_path_factory, mlm_run, labelled):
    out = tmp_path_factory.mktemp("ft-bert")
    lrs = {"full": 1e-3, "frozen": 1e-2}
    return {m: hfkit.finetune(finetune_cfg(mlm_run.output_dir, labelled, out / m, m, **{"train.learning_rate": lrs.get(m, 3e-3)}))
            for m in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_a_pretrained_bert_run(bert_runs, method):
    m = bert_runs[method].metrics
    assert 0.0 <= m["eval_accuracy"] <= 1.0 and "eval_f1" in m and "eval_precision" in m and "eval_recall" in m
    report = m["eval_report"]
    assert set(report["per_class"]) == {"animal", "person"}
    matrix = report["confusion_matrix"]["rows_true_columns_predicted"]
    assert sum(map(sum, matrix)) == 80
    assert sum(matrix[i][i] for i in range(2)) / 80 == pytest.approx(m["eval_accuracy"])
    out = bert_runs[method].output_dir
    assert json.loads((out / "metrics.json").read_text())["eval_accuracy"] == m["eval_accuracy"]
    predictions = hfkit.predict(out, ["the happy cat sees the tree .", "the quiet doctor helps the car ."])
    assert all(p["label"] in ("animal", "person") and 0.5 <= p["score"] <= 1.0 for p in predictions)


@pytest.fixture(scope="session")
def random_bert_dir(tmp_path_factory, mlm_run):
    """A 2-layer BERT with random weights saved as a plain local HF folder.

    The learning checks use it rather than the 120-step pretrained fixture: that short run has collapsed to
    unigram predictions (hidden states of different sentences differ by ~0.05), so nothing fine-tuned on it can
    beat chance. Random weights keep the inputs apart.
    """
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("random-bert")
    tok = AutoTokenizer.from_pretrained(mlm_run.output_dir)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                               intermediate_size=512, pad_token_id=tok.pad_token_id)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method, lr, floor", [("full", 1e-3, 0.95), ("lora", 3e-3, 0.95), ("frozen", 1e-2, 0.8)])
def test_methods_learn_the_task(tmp_path, random_bert_dir, labelled, method, lr, floor):
    result = hfkit.finetune(finetune_cfg(random_bert_dir, labelled, tmp_path / method, method,
                                         **{"train.learning_rate": lr, "train.epochs": 6}))
    assert result.metrics["eval_accuracy"] >= floor  # majority class: 0.5 +- 0.06


def tiny_classifier(family: str):
    from transformers import AutoModelForSequenceClassification

    from hfkit.models import preset_config

    class Vocab:  # what preset_config reads from a tokenizer
        pad_token_id, bos_token_id, eos_token_id, cls_token_id, sep_token_id = 0, 1, 2, 1, 2

        def __len__(self):
            return 100

    config = preset_config(f"{family}-tiny", Vocab())
    config.num_labels = 2
    return AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "llama"])
@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "p_tuning"])
def test_soft_prompt_support_check_agrees_with_peft(family, method):
    """hfkit's verdict, asked before anything runs, against what the installed PEFT really does with each
    architecture the presets build: train a step when hfkit allows the method, fail when it refuses."""
    from peft import get_peft_model

    from hfkit.methods import METHODS as APPLY
    from hfkit.methods import prefix_tuning_problem

    torch.manual_seed(0)
    model = tiny_classifier(family)
    backbone = getattr(model, model.base_model_prefix)
    problem = prefix_tuning_problem(type(model), type(backbone)) if method == "prefix_tuning" else None
    cfg = hfkit.load_config("finetune", {"method": method, "model": {"path": "unused"}, "data": {"train": "unused.csv"}})
    peft_model = APPLY[method].apply(model, cfg, "SEQ_CLS", [])
    batch = {"input_ids": torch.randint(3, 100, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long),
             "labels": torch.tensor([0, 1])}
    if problem is None:
        loss = peft_model(**batch).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in peft_model.named_parameters()
                   if "prompt_encoder" in n)
    else:
        assert type(model).__name__ in problem and "transformers" in problem and "prompt_tuning" in problem
        with pytest.raises(ValueError, match="past key values"):
            peft_model(**batch)


def test_prefix_tuning_trains_or_is_refused_in_one_line(tmp_path, random_bert_dir, labelled):
    done = subprocess.run([sys.executable, "-m", "hfkit", "finetune", "classification-prefix_tuning",
                           f"model.path={random_bert_dir}", f"data.train={labelled / 'train.csv'}",
                           f"output_dir={tmp_path / 'prefix'}", "train.epochs=1", "train.report_to=[]"],
                          capture_output=True, text=True, timeout=600)
    if prefix_tuning_works_here():
        assert done.returncode == 0, done.stderr[-2000:]
        from peft import PeftConfig

        assert PeftConfig.from_pretrained(str(tmp_path / "prefix")).peft_type == "PREFIX_TUNING"
    else:
        assert done.returncode == 2, done.stderr[-2000:]
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "prefix_tuning" in errors[0] and "Traceback" not in done.stderr
        assert not (tmp_path / "prefix").exists()  # refused before anything was written


def test_trainable_parameter_counts(bert_runs, mlm_run):
    full = bert_runs["full"].metrics
    assert full["trainable_params"] == full["total_params"]
    frozen = bert_runs["frozen"].metrics
    assert frozen["trainable_params"] == 128 * 2 + 2  # the linear head on 128-wide pooled features, 2 labels
    for method in set(METHODS) - {"full", "frozen"}:
        m = bert_runs[method].metrics
        assert 0 < m["trainable_params"] < 0.2 * m["total_params"], (method, m["trainable_params"], m["total_params"])
    assert bert_runs["ia3"].metrics["trainable_params"] < bert_runs["lora"].metrics["trainable_params"]


def test_frozen_backbone_weights_are_bit_identical(bert_runs, mlm_run):
    from transformers import AutoModel

    from safetensors.torch import load_file

    # The source checkpoint's own tensors (a masked-LM run: `bert.*`, no pooler) against the saved backbone.
    source = {k.removeprefix("bert."): v for k, v in load_file(str(mlm_run.output_dir / "model.safetensors")).items()
              if k.startswith("bert.")}
    after = AutoModel.from_pretrained(bert_runs["frozen"].output_dir).state_dict()
    assert len(source) > 20 and set(source) <= set(after)
    for name, tensor in source.items():
        assert torch.equal(tensor, after[name]), name
    assert bert_runs["frozen"].metrics["features_cached"] is True


def test_gradual_unfreezing_trains_only_the_top_layer(tmp_path, mlm_run, labelled):
    from transformers import AutoModel

    result = hfkit.finetune(finetune_cfg(mlm_run.output_dir, labelled, tmp_path / "unfreeze", "frozen",
                                         **{"frozen.unfreeze_last": 1, "frozen.head": "mlp", "train.epochs": 1}))
    assert result.metrics["features_cached"] is False
    before = AutoModel.from_pretrained(mlm_run.output_dir).state_dict()
    after = AutoModel.from_pretrained(result.output_dir).state_dict()
    assert torch.equal(before["encoder.layer.0.attention.self.query.weight"], after["encoder.layer.0.attention.self.query.weight"])
    assert not torch.equal(before["encoder.layer.1.attention.self.query.weight"], after["encoder.layer.1.attention.self.query.weight"])
    layer = sum(p.numel() for n, p in before.items() if n.startswith("encoder.layer.1."))
    assert result.metrics["trainable_params"] == layer + (128 * 256 + 256) + (256 * 2 + 2)


RELOAD_CHECK = """
import json, sys, torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
run, kind = sys.argv[1], sys.argv[2]
texts = ["the happy cat sees the tree .", "the quiet doctor helps the car ."]
tok = AutoTokenizer.from_pretrained(run)
if kind == "adapter":
    from peft import PeftModel
    config = AutoConfig.from_pretrained(run)
    base_path = json.load(open(run + "/adapter_config.json"))["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base_path, config=config), run)
else:
    model = AutoModelForSequenceClassification.from_pretrained(run)
model.eval()
with torch.no_grad():
    probs = torch.softmax(model(**tok(texts, padding=True, return_tensors="pt")).logits, -1)
assert "hfkit" not in sys.modules
print(json.dumps(probs.tolist()))
"""


@pytest.mark.parametrize("method, kind, sub", [("full", "full", ""), ("lora", "adapter", ""),
                                               ("prompt_tuning", "adapter", ""), ("lora-merged", "full", "merged")])
def test_outputs_reload_without_hfkit_and_match_predict(tmp_path, bert_runs, mlm_run, labelled, method, kind, sub):
    if method == "lora-merged":
        run = hfkit.finetune(finetune_cfg(mlm_run.output_dir, labelled, tmp_path / "merge", "lora",
                                          **{"lora.merge": True, "train.epochs": 1})).output_dir
        target = run / "merged"
    else:
        run = bert_runs[method].output_dir
        target = run
    done = subprocess.run([sys.executable, "-c", RELOAD_CHECK, str(target), kind], capture_output=True, text=True,
                          cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    outside = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    inside = hfkit.predict(run, ["the happy cat sees the tree .", "the quiet doctor helps the car ."])
    names = ["animal", "person"]
    inside = torch.tensor([[p["scores"][n] for n in names] for p in inside])
    assert torch.allclose(outside, inside, atol=1e-5), (outside, inside)


@pytest.mark.parametrize("method", ["full", "frozen", "lora", "prompt_tuning"])
def test_gpt_style_backbone(tmp_path, clm_run, labelled, method):
    result = hfkit.finetune(finetune_cfg(clm_run.output_dir, labelled, tmp_path / method, method,
                                         **{"train.epochs": 1}))
    assert result.metrics["eval_accuracy"] >= 0.0 and result.metrics["total_params"] > 0
    predictions = hfkit.predict(result.output_dir, ["the happy cat sees the child .", "a dog"])  # batch with padding
    assert [p["label"] in ("animal", "person") for p in predictions] == [True, True]


def test_multi_label_regression_and_pairs(tmp_path, mlm_run):
    rows = labelled_rows(200, 3)
    multi = [{"text": r["text"], "tags": [r["label"]] + (["domestic"] if r["subject"] in ("cat", "dog") else [])}
             for r in rows]
    (tmp_path / "multi.jsonl").write_text("\n".join(json.dumps(r) for r in multi))
    result = hfkit.finetune({"method": "full", "multi_label": True, "output_dir": str(tmp_path / "multi"),
                             "model": {"path": str(mlm_run.output_dir)},
                             "data": {"train": str(tmp_path / "multi.jsonl"), "label_column": "tags"},
                             "train": {"epochs": 1, "report_to": [], "learning_rate": 1e-3}})
    assert {"eval_f1_micro", "eval_f1_macro", "eval_accuracy"} <= set(result.metrics)
    assert set(result.metrics["eval_report"]["per_class"]) == {"animal", "domestic", "person"}
    assert "labels" in hfkit.predict(result.output_dir, ["the cat sees the dog ."])[0]

    scores = pd.DataFrame({"text": [r["text"] for r in rows], "score": [len(r["subject"]) / 2 for r in rows]})
    scores.to_csv(tmp_path / "scores.csv", index=False)
    result = hfkit.finetune({"method": "lora", "regression": True, "output_dir": str(tmp_path / "reg"),
                             "model": {"path": str(mlm_run.output_dir)},
                             "data": {"train": str(tmp_path / "scores.csv"), "label_column": "score"},
                             "train": {"epochs": 1, "report_to": []}})
    assert {"eval_mse", "eval_mae", "eval_pearson"} <= set(result.metrics)
    assert isinstance(hfkit.predict(result.output_dir, ["the cat sees the dog ."])[0]["score"], float)

    pairs = pd.DataFrame({"premise": [r["text"] for r in rows], "hypothesis": [r["subject"] for r in rows],
                          "label": [r["label"] for r in rows]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    result = hfkit.finetune({"method": "full", "output_dir": str(tmp_path / "pairs"),
                             "model": {"path": str(mlm_run.output_dir)},
                             "data": {"train": str(tmp_path / "pairs.csv"), "text_column": "premise",
                                      "text_pair_column": "hypothesis"},
                             "train": {"epochs": 1, "report_to": []}})
    assert hfkit.predict(result.output_dir, ["the cat sees the dog ."], pairs=["cat"])[0]["label"] in ("animal", "person")
    metrics = hfkit.evaluate(result.output_dir, str(tmp_path / "pairs.csv"))
    assert metrics["eval_samples"] == 200 and 0 <= metrics["eval_accuracy"] <= 1


def test_bad_labelled_data_gives_clear_errors(tmp_path, mlm_run, labelled):
    def run(**extra):
        with pytest.raises((DataError, ConfigError)) as info:
            hfkit.finetune(finetune_cfg(mlm_run.output_dir, labelled, tmp_path / "bad", "full", **extra))
        assert not (tmp_path / "bad").exists()  # nothing written for a run that could not start
        return str(info.value)

    assert "no column 'sentiment' in the data; its columns are text, label, subject; set data.label_column" in run(
        **{"data.label_column": "sentiment"})
    assert "no column 'hypothesis'" in run(**{"data.text_pair_column": "hypothesis"})
    dev = pd.read_csv(labelled / "dev.csv")
    dev.loc[3, "label"] = "robot"
    dev.to_csv(tmp_path / "dev-unseen.csv", index=False)
    assert "data.validation: label 'robot' (row 4) never appears in the training data; its labels: animal, person" in run(
        **{"data.validation": str(tmp_path / "dev-unseen.csv")})
    train = pd.read_csv(labelled / "train.csv")
    train.loc[5, "text"] = "   "
    train.to_csv(tmp_path / "train-empty.csv", index=False)
    assert "data.train: 1 row(s) have an empty 'text' (first: row 6)" in run(**{"data.train": str(tmp_path / "train-empty.csv")})
    assert "lora.target_modules: nonexistent not in this model; its linear layers are" in str(
        pytest.raises(ConfigError, hfkit.finetune, finetune_cfg(mlm_run.output_dir, labelled, tmp_path / "bad", "lora",
                                                               **{"lora.target_modules": ["nonexistent"]})).value)


def test_metric_module_matches_hand_computation():
    from hfkit.metrics import classification_metric

    single = classification_metric("single_label").compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2], num_labels=3)
    assert single["accuracy"] == 0.75
    assert single["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)  # per class F1: 1, 2/3, 2/3
    multi = classification_metric("multi_label").compute(predictions=[[1, 0, 1], [0, 1, 0]],
                                                          references=[[1, 0, 0], [0, 1, 1]])
    assert multi["f1_micro"] == pytest.approx(2 / 3) and multi["accuracy"] == 0.0
    reg = classification_metric("regression").compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 2.0, 4.0])
    assert reg["mse"] == pytest.approx(1 / 3) and reg["mae"] == pytest.approx(1 / 3)


def test_evaluate_splits_labels_like_the_run_did(tmp_path, mlm_run):
    rows = labelled_rows(120, 4)
    tags = [r["label"] + (",domestic" if r["subject"] in ("cat", "dog") else "") for r in rows]
    pd.DataFrame({"text": [r["text"] for r in rows], "tags": tags}).to_csv(tmp_path / "tags.csv", index=False)
    result = hfkit.finetune({"method": "full", "multi_label": True, "output_dir": str(tmp_path / "sep"),
                             "model": {"path": str(mlm_run.output_dir)},
                             "data": {"train": str(tmp_path / "tags.csv"), "label_column": "tags", "label_separator": ","},
                             "train": {"epochs": 1, "report_to": []}})
    metrics = hfkit.evaluate(result.output_dir, str(tmp_path / "tags.csv"))
    assert metrics["eval_samples"] == 120 and set(metrics["eval_report"]["per_class"]) == {"animal", "domestic", "person"}


def test_frozen_base_in_16_bits_trains_in_fp32(tmp_path, random_bert_dir, labelled, monkeypatch):
    """model.dtype auto with train.precision=bf16 and LoRA: the base is loaded in bf16, what trains (adapters, the
    new head) is float32 and so is the saved adapter; the run reloads for prediction. 16-bit weights that would
    train, or 16-bit weights under fp32 compute, are refused."""
    from safetensors.torch import load_file

    import hfkit.finetune as recipe
    from hfkit.config import resolve
    from hfkit.errors import ConfigError

    seen = {}
    original = recipe.upcast_trainable

    def spy(model, cfg):
        model = original(model, cfg)
        seen["frozen"] = {p.dtype for p in model.parameters() if not p.requires_grad}
        seen["trained"] = {p.dtype for p in model.parameters() if p.requires_grad}
        return model

    monkeypatch.setattr(recipe, "upcast_trainable", spy)
    result = hfkit.finetune(finetune_cfg(random_bert_dir, labelled, tmp_path / "lora16", "lora",
                                         **{"train.precision": "bf16", "train.max_steps": 4, "train.epochs": 1}))
    assert seen == {"frozen": {torch.bfloat16}, "trained": {torch.float32}}
    adapter = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert {t.dtype for t in adapter.values()} == {torch.float32}
    assert hfkit.predict(result.output_dir, ["the happy cat sees the tree ."])[0]["label"] in ("animal", "person")
    for overrides, message in ((["method=full", "model.dtype=bfloat16"], "full fine-tuning needs float32"),
                               (["method=lora", "model.dtype=bfloat16", "train.precision=fp32"],
                                "needs train.precision=bf16")):
        with pytest.raises(ConfigError, match=message):
            resolve("finetune", "classification-lora", overrides)
