"""Packed vs padded supervised fine-tuning: real (non-padding) tokens per second on the same conversations, side
by side in one run. SmolLM2-135M-Instruct with LoRA (recipes/finetune/sft-lora.yaml) on the first N rows of
LLaMA-Factory's Alpaca demo set (lengths from ~30 to over 500 tokens), one epoch each; the arms alternate so that
machine noise falls on both.

    packed   sft.packing=true: best-fit-decreasing rows of data.max_length tokens, padding-free, one row per step
    packed-4-rows  the same, 4 rows per step: padding-free flattens them into one sequence whose position ids
             restart per conversation; without FlashAttention its attention is quadratic in that length
    padded   sft.packing=false: batches of train.batch_size conversations padded to their longest
    grouped  padded, with train.group_by_length=true (batches of similar length)

    python benchmarks/sft_packing.py [--rows 96] [--max-length 512] [--repeats 2]

Appends rows to benchmarks/results/sft_packing.jsonl and prints the table of all rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "sft_packing.jsonl"
ARMS = {
    "packed": {"sft.packing": True, "train.batch_size": 1},
    "packed-4-rows": {"sft.packing": True, "train.batch_size": 4},
    "padded": {"sft.packing": False, "train.batch_size": 4, "train.group_by_length": False},
    "grouped": {"sft.packing": False, "train.batch_size": 4, "train.group_by_length": True},
}


def run(arm: str, rows: int, max_length: int, repeat: int) -> dict:
    import hfkit

    start = time.perf_counter()
    result = hfkit.finetune("sft-lora", **{
        "output_dir": f"runs/bench-sft-{arm}", "data.max_train_samples": rows, "data.max_length": max_length,
        "data.validation_split": 0.0, "lora.merge": False, "train.epochs": 1, "train.report_to": [],
        "train.overwrite": True, "train.save_steps": 10**6, "train.load_best": False,
        "train.gradient_accumulation_steps": 1, **ARMS[arm]})
    m = result.metrics
    return {"arm": arm, "rows": rows, "max_length": max_length, "repeat": repeat, "steps": m["global_step"],
            "real_tokens": m["train_tokens"], "tokens_per_second": m["train_tokens_per_second"],
            "train_seconds": m["train_wall_seconds"], "padding_fraction": m["train_padding_fraction"],
            "train_loss": m["train_loss"], "wall": time.perf_counter() - start}


def table() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    print("| arm | conversations | max length | steps | real tokens | tokens/s (each repeat) | mean tokens/s | vs padded | padding |")
    print("|---|---|---|---|---|---|---|---|---|")
    mean = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if mine:
            mean[arm] = sum(r["tokens_per_second"] for r in mine) / len(mine)
    for arm, value in mean.items():
        mine = [r for r in rows if r["arm"] == arm]
        ratio = f"{value / mean['padded']:.2f}x" if "padded" in mean else ""
        print(f"| {arm} | {mine[0]['rows']} | {mine[0]['max_length']} | {mine[0]['steps']} | {mine[0]['real_tokens']:,} | "
              + ", ".join(f"{r['tokens_per_second']:.0f}" for r in mine)
              + f" | {value:.0f} | {ratio} | {mine[0]['padding_fraction']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--table", action="store_true", help="only print the saved rows")
    args = parser.parse_args()
    if not args.table:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("")  # one run's rows: the ratios compare arms measured side by side
        for repeat in range(args.repeats):
            for arm in args.arms.split(","):
                row = run(arm, args.rows, args.max_length, repeat)
                with open(RESULTS, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    table()


if __name__ == "__main__":
    main()
