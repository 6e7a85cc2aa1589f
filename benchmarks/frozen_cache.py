"""Frozen feature extraction for N epochs: features cached once vs. the frozen backbone run every epoch.

Same model (MiniLM), data, head, batch and seed on both sides; each side runs `--repeats` times, alternating,
and the table shows median wall time of the whole `hfkit.finetune` call and the accuracy reached.

    python benchmarks/frozen_cache.py [--epochs 10] [--train-rows 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import hfkit

from finetune_methods import split_data


def run(work: Path, train: Path, evaluation: Path, epochs: int, cached: bool, tag: str) -> tuple[float, float]:
    out = work / tag
    start = time.perf_counter()
    result = hfkit.finetune("classification-frozen", output_dir=str(out), model={"path": "builtin:all-minilm-l6-v2"},
                            data={"train": str(train), "validation": str(evaluation), "max_length": 64},
                            frozen={"cache_features": cached, "solver": "sgd"},  # epochs, not the solve
                            train={"epochs": epochs, "report_to": [], "early_stopping_patience": None,
                                   "save_total_limit": 1})
    wall = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return wall, result.metrics["eval_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfkit-frozen-"))
    train, evaluation, _ = split_data(work, args.train_rows, args.eval_rows)
    sides = {f"cached, {args.epochs} epochs": (args.epochs, True), f"uncached, {args.epochs} epochs": (args.epochs, False),
             "cached, 1 epoch": (1, True)}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for i in range(args.repeats):
        for name, (epochs, cached) in sides.items():
            results[name].append(run(work, train, evaluation, epochs, cached, f"{i}-{epochs}-{cached}"))
            print(f"[bench] {name}: {results[name][-1][0]:.1f}s", flush=True)
    print(f"\nMiniLM frozen + linear head, {args.train_rows} train / {args.eval_rows} validation rows, max_length 64\n")
    print("| setting | median wall s | accuracy |\n|---|---|---|")
    medians = {}
    for name, values in results.items():
        medians[name] = statistics.median(v[0] for v in values)
        print(f"| {name} | {medians[name]:.1f} | {values[-1][1]:.3f} |")
    cached10, uncached10, cached1 = medians.values()
    print(f"\nuncached / cached over {args.epochs} epochs: {uncached10 / cached10:.1f}x;  "
          f"cached {args.epochs} epochs / cached 1 epoch: {cached10 / cached1:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
