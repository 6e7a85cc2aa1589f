"""Defaults by measurement: the solved frozen head, the learning-rate range test, class weights, layer-wise rates,
gradual unfreezing, model selection on unbalanced data, and compare with seeds."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from conftest import with_dotted
from test_finetune import finetune_cfg, labelled, random_bert_dir  # noqa: F401 (fixtures)
from typer.testing import CliRunner

import hfkit
from hfkit.cli import app
from hfkit.optim import build_optimizer, parameter_depths, range_test, suggest_rate, weighted_loss
from hfkit.solver import L2_GRID, class_weights, solve_linear_head


# --------------------------------------------------------------------------------------------- the solved head
def test_lbfgs_head_reaches_the_optimum_of_a_separable_problem():
    """Two separable classes in 6-D with a large offset and uneven scales (what pooled features look like): the
    solver's head classifies every row, its objective's gradient vanishes, and a long Adam run on the same convex
    objective ends at the same logits."""
    g = torch.Generator().manual_seed(0)
    n, d = 200, 6
    y = torch.arange(n) % 2
    x = torch.randn(n, d, generator=g) * torch.tensor([1.0, 5.0, 0.2, 1.0, 3.0, 0.5]) + 10.0
    x[:, 0] += torch.where(y == 1, 3.0, -3.0)  # a margin along the first axis
    solution = solve_linear_head(x, y, 2, "single_label_classification")
    logits = x @ solution.weight.T + solution.bias
    assert (logits.argmax(-1) == y).all()
    assert solution.l2 == pytest.approx(1 / n)

    # The same objective (standardised features, mean cross-entropy + l2/2 |W|^2), minimised by Adam for long.
    mean, std = x.double().mean(0), x.double().std(0)
    xs = (x.double() - mean) / std
    w = torch.zeros(2, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(4000):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w.T + b, y) + 0.5 * solution.l2 * w.pow(2).sum()
        loss.backward()
        opt.step()
    adam_logits = (xs @ w.detach().T + b.detach()).float()
    margin = lambda z: z[:, 1] - z[:, 0]  # noqa: E731 (softmax is blind to a shift shared by the classes)
    assert (margin(logits) - margin(adam_logits)).abs().max() < 2e-2
    assert solution.train_loss <= float(torch.nn.functional.cross_entropy(adam_logits.double(), y)) + 1e-4

    # gradient of the objective at the solver's point, in the standardised space
    ws = (solution.weight.double() * std).requires_grad_(True)
    bs = (solution.bias.double() + solution.weight.double() @ mean).requires_grad_(True)
    objective = torch.nn.functional.cross_entropy(xs @ ws.T + bs, y) + 0.5 * solution.l2 * ws.pow(2).sum()
    objective.backward()
    assert ws.grad.abs().max() < 1e-4 and bs.grad.abs().max() < 1e-4


def test_lbfgs_head_picks_l2_by_validation_loss_and_balanced_weights_help_the_small_class():
    g = torch.Generator().manual_seed(1)

    def sample(n, share):
        y = (torch.rand(n, generator=g) < share).long()
        x = torch.randn(n, 20, generator=g)
        x[:, 0] += y * 1.5
        return x, y

    x, y = sample(400, 0.1)
    vx, vy = sample(400, 0.1)
    plain = solve_linear_head(x, y, 2, "single_label_classification", val_x=vx, val_y=vy)
    tried = list(plain.scores)
    assert tried == list(L2_GRID[:len(tried)]) and plain.scores[plain.l2] == min(plain.scores.values())
    assert len(tried) < len(L2_GRID)  # the path stopped once the validation loss kept rising
    assert plain.l2 > L2_GRID[-1]  # 19 noise features: a real amount of regularisation wins

    def recall_of_1(solution):
        predicted = (vx @ solution.weight.T + solution.bias).argmax(-1)
        return float(((predicted == 1) & (vy == 1)).sum() / (vy == 1).sum())

    balanced = solve_linear_head(x, y, 2, "single_label_classification", val_x=vx, val_y=vy, balanced=True)
    assert recall_of_1(balanced) > recall_of_1(plain) + 0.2  # the small class is found far more often


def test_frozen_run_solves_its_head_and_ignores_epochs(tmp_path, random_bert_dir, labelled):
    results = [hfkit.finetune(finetune_cfg(random_bert_dir, labelled, tmp_path / f"e{e}", "frozen",
                                           **{"train.epochs": e}))
               for e in (1, 7)]
    a, b = (r.metrics for r in results)
    assert a["frozen_l2"] in L2_GRID and a["solver_iterations"] > 0 and a["global_step"] == 0
    assert a["eval_accuracy"] == b["eval_accuracy"] >= 0.9 and a["frozen_l2"] == b["frozen_l2"]
    sgd = hfkit.finetune(finetune_cfg(random_bert_dir, labelled, tmp_path / "sgd", "frozen",
                                      **{"frozen.solver": "sgd", "train.epochs": 1}))
    assert "frozen_l2" not in sgd.metrics and sgd.metrics["global_step"] > 0


# --------------------------------------------------------------------------------------------- class weights
def test_class_weighted_loss_matches_the_formula():
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.0], [0.0, 3.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    weights = torch.tensor([1.0, 3.0])
    per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    loss = weighted_loss(weights)({"logits": logits}, labels)
    assert loss == pytest.approx(float((weights[labels] * per_row).sum() / 4))
    # uniform weights give the model's usual mean cross-entropy; the Trainer's count (accumulation) divides instead
    assert weighted_loss(torch.ones(2))({"logits": logits}, labels) == pytest.approx(float(per_row.mean()))
    assert weighted_loss(weights)({"logits": logits}, labels, num_items_in_batch=8) == pytest.approx(float(loss) / 2)
    # balanced: n / (classes x count); a class with no rows weighs 1
    assert class_weights(torch.tensor([0, 0, 0, 1]), 3).tolist() == pytest.approx([4 / 9, 4 / 3, 1.0])


def test_balanced_class_weights_in_a_run(tmp_path, random_bert_dir, labelled, capsys):
    rows = pd.read_csv(labelled / "train.csv")
    unbalanced = pd.concat([rows[rows.label == "animal"], rows[rows.label == "person"].head(30)])
    unbalanced.to_csv(tmp_path / "train.csv", index=False)
    cfg = finetune_cfg(random_bert_dir, labelled, tmp_path / "run", "full",
                       **{"data.train": str(tmp_path / "train.csv"), "train.class_weights": "balanced",
                          "train.epochs": 1, "train.learning_rate": 1e-3})
    result = hfkit.finetune(cfg)
    out = capsys.readouterr().err
    assert "class weights (balanced" in out
    assert "best eval f1 is kept (classes are unbalanced" in out and result.metrics["metric_for_best"] == "f1"
    with pytest.raises(hfkit.ConfigError, match="train.class_weights: balanced weights single-label"):
        hfkit.finetune(with_dotted(cfg, {"regression": True}))


# --------------------------------------------------------------------------------------------- range test
def test_suggested_rate_lies_on_the_falling_part_of_the_curve():
    """A least-squares toy model under a real Trainer: the loss falls with the rate, then diverges; the suggestion
    is below the minimum's rate, where the smoothed loss is already lower than at the start."""
    from transformers import Trainer, TrainingArguments

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 1)

        def forward(self, x, labels=None):
            prediction = self.linear(x).squeeze(-1)
            return {"loss": ((prediction - labels) ** 2).mean(), "logits": prediction}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    target = x @ torch.randn(8, generator=g) + 0.1 * torch.randn(512, generator=g)
    rows = [{"x": x[i], "labels": target[i]} for i in range(512)]
    torch.manual_seed(0)
    model = Toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model=model, args=TrainingArguments(output_dir="unused", per_device_train_batch_size=32,
                                                          report_to="none", use_cpu=True), train_dataset=rows)
    result = range_test(trainer, lambda rate: build_optimizer(trainer, rate), steps=100, end=10.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights restored
    assert result.suggestion is not None and result.suggestion < result.minimum
    index = min(range(len(result.rates)), key=lambda i: abs(math.log(result.rates[i] / result.suggestion)))
    assert result.losses[index] < result.losses[0] and result.losses[index] < max(result.losses[:index])
    assert result.losses[index + 5] < 0.9 * result.losses[index]  # and falling fast there
    assert result.losses[index] > min(result.losses) * 1.5  # well short of the bottom


def test_suggest_rate_rules():
    rates = [10 ** (-6 + k / 10) for k in range(50)]
    # a smooth fall centred on 1e-3, then a jump (divergence) past 5e-2
    losses = [1.0 / (1 + math.exp((math.log10(r) + 3) * 4)) + (0.5 if r > 5e-2 else 0.0) for r in rates]
    suggestion, minimum, steepest = suggest_rate(rates, losses)
    assert minimum == max(r for r in rates if r <= 5e-2)  # the last rate before the jump
    assert suggestion == pytest.approx(minimum / 10) and steepest == pytest.approx(1e-3, rel=0.3)
    assert suggest_rate(rates[:3], losses[:3]) == (None, None, None)


def test_a_flat_range_test_falls_back_to_the_default_rate(tmp_path, random_bert_dir, labelled):
    """Labels that no text predicts: the loss cannot fall, so the curve says nothing and the default is used."""
    rows = pd.read_csv(labelled / "train.csv")
    rows["label"] = ["animal", "person"] * (len(rows) // 2)
    rows.to_csv(tmp_path / "noise.csv", index=False)
    cfg = finetune_cfg(random_bert_dir, labelled, tmp_path / "flat", "frozen",
                       **{"data.train": str(tmp_path / "noise.csv"), "frozen.solver": "sgd",
                          "train.learning_rate": "auto", "train.lr_find_steps": 30, "train.epochs": 1})
    cfg["train"]["learning_rate"] = "auto"
    result = hfkit.finetune(cfg, find_lr=True)
    assert result.metrics == {"learning_rate_found": 1e-3, "lr_find_inconclusive": True}  # frozen's default


def test_learning_rate_auto_and_find_lr(tmp_path, random_bert_dir, labelled):
    import yaml

    cfg = finetune_cfg(random_bert_dir, labelled, tmp_path / "auto", "lora",
                       **{"train.learning_rate": "auto", "train.lr_find_steps": 40, "train.epochs": 1})
    result = hfkit.finetune(cfg)
    found = result.metrics["learning_rate_found"]
    assert 1e-7 < found < 1
    saved = yaml.safe_load((tmp_path / "auto" / "hfkit.yaml").read_text())
    assert saved["train"]["learning_rate"] == found
    assert (tmp_path / "auto" / "lr_find.png").is_file()
    curve = json.loads((tmp_path / "auto" / "lr_find.json").read_text())
    assert curve["suggestion"] == found and len(curve["rates"]) == len(curve["losses"]) <= 40

    out = tmp_path / "find"
    args = ["finetune", "classification-lora", f"model.path={random_bert_dir}", f"data.train={labelled / 'train.csv'}",
            f"output_dir={out}", "train.lr_find_steps=30", "train.report_to=[]", "--find-lr"]
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 0, cli.output
    assert "suggested learning rate:" in cli.output and (out / "lr_find.png").is_file()
    assert not (out / "hfkit.yaml").exists() and not (out / "adapter_model.safetensors").exists()  # nothing trained
    bad = CliRunner().invoke(app, ["finetune", "classification-frozen", f"model.path={random_bert_dir}",
                                   f"data.train={labelled / 'train.csv'}", f"output_dir={tmp_path / 'f'}", "--find-lr"])
    assert bad.exit_code == 2 and "is solved" in bad.output


def test_find_lr_for_pretraining(tmp_path, corpus_file):
    from conftest import tiny_overrides

    result = hfkit.pretrain(tiny_overrides("mlm", corpus_file, tmp_path / "p", **{"train.lr_find_steps": 30}),
                            find_lr=True)
    assert 1e-7 < result.metrics["learning_rate_found"] < 1 and (tmp_path / "p" / "lr_find.png").is_file()
    assert not (tmp_path / "p" / "model.safetensors").exists()


# --------------------------------------------------------------------------------------------- ULMFiT's tricks
def test_layer_lr_decay_gives_each_depth_its_rate(random_bert_dir):
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    model = AutoModelForSequenceClassification.from_pretrained(random_bert_dir, num_labels=2)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir="unused", report_to="none", use_cpu=True))
    depths, blocks = parameter_depths(model)
    assert blocks == 2
    assert depths["classifier.weight"] == 0 and depths["bert.encoder.layer.1.attention.self.query.weight"] == 1
    assert depths["bert.encoder.layer.0.output.dense.weight"] == 2 and depths["bert.embeddings.word_embeddings.weight"] == 3
    optimizer = build_optimizer(trainer, 1e-3, decay=0.5)
    rate_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert rate_of[id(p)] == pytest.approx(1e-3 * 0.5 ** depths[name])
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay_of[id(model.bert.encoder.layer[0].output.LayerNorm.weight)] == 0.0


def test_gradual_unfreezing_reaches_one_more_layer_each_epoch(tmp_path, random_bert_dir, labelled, capsys):
    from safetensors.torch import load_file

    cfg = finetune_cfg(random_bert_dir, labelled, tmp_path / "g", "full",
                       **{"frozen.unfreeze_schedule": "gradual", "train.epochs": 2, "train.layer_lr_decay": 0.8,
                          "train.early_stopping_patience": None, "train.load_best": False})
    hfkit.finetune(cfg)
    err = capsys.readouterr().err
    assert "epoch 1: head\n" in err and "epoch 2: head + top 1 of 2 layers" in err
    start, end = load_file(str(random_bert_dir / "model.safetensors")), load_file(str(tmp_path / "g" / "model.safetensors"))

    def moved(prefix):
        return any(not torch.equal(v, end[k]) for k, v in start.items() if k.startswith(prefix) and k in end)

    # after 2 epochs: head (epoch 1) + top layer (epoch 2); the lower layer and the embeddings never trained
    assert moved("bert.encoder.layer.1.")
    assert not moved("bert.encoder.layer.0.") and not moved("bert.embeddings.")


# --------------------------------------------------------------------------------------------- compare --seeds
@pytest.mark.slow  # ~18 s
def test_compare_with_seeds_reports_mean_and_spread(tmp_path, random_bert_dir, labelled):
    import statistics

    out = tmp_path / "cmp"
    rows = hfkit.compare("classification-full", methods="full", output_dir=str(out), seeds=2,
                         model={"path": str(random_bert_dir)},
                         data={"train": str(labelled / "train.csv"), "max_length": 32},
                         train={"epochs": 1, "batch_size": 16, "report_to": [], "learning_rate": 1e-3})
    assert [r["run"] for r in rows] == ["full-seed42", "full-seed43"]
    saved = json.loads((out / "comparison.json").read_text())
    (cell,) = saved["cells"]
    values = [r["accuracy"] for r in saved["rows"]]
    assert cell["seeds"] == [42, 43] and cell["accuracy_per_seed"] == values
    assert cell["accuracy"] == pytest.approx(statistics.mean(values))
    assert cell["accuracy_sd"] == pytest.approx(statistics.stdev(values))
    for seed in (42, 43):
        assert json.loads((out / f"full-seed{seed}" / "metrics.json").read_text())
        assert f"seed: {seed}" in (out / f"full-seed{seed}" / "hfkit.yaml").read_text()
    table = (out / "comparison.md").read_text()
    assert f"{cell['accuracy']:.3f} ± {cell['accuracy_sd']:.3f} (2)" in table


# --------------------------------------------------------------------------------------------- the benchmark's sets
def test_builtin_sms_spam_and_trec():
    from collections import Counter

    from hfkit.data import BUILTIN_CORPORA

    sms = BUILTIN_CORPORA["sms-spam"]()
    assert Counter(sms["label"]) == {"ham": 4827, "spam": 747}  # the UCI collection's counts
    assert not any("\t" in t or "\n" in t or not t for t in sms["text"])  # the swallowed rows are split back out
    trec = BUILTIN_CORPORA["trec"]()
    counts = Counter(trec["label"])
    assert set(counts) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"} and sum(counts.values()) == len(trec) == 5382
    assert all(f.startswith(c + ":") for c, f in zip(trec["label"], trec["fine_label"]))
