"""A LoRA run's frozen base in the dtype it computes in (model.dtype auto) against fp32 storage: memory, held-out
loss, and `hfkit plan`'s figure for the same run.

SmolLM2-135M-Instruct, LoRA (the sft-lora recipe), LLaMA-Factory's Alpaca demo rows, train.precision=bf16 on both
sides; the only difference is model.dtype: float32 (the base stored in fp32, autocast computing in bf16) or auto
(the base stored in bf16). Each side is a fresh process running `hfkit.finetune`, so its peak RSS is its own
(ru_maxrss; the parent stays small). The weights' bytes are metrics.json's weights_mb; the answer-only validation
loss is the run's own eval_loss after the same steps on the same rows.

bf16 matmuls are slow on a CPU without bf16 units (AVX2 only): this runs a few steps on short rows, enough for the
memory and the loss, not a full fine-tuning.

    python benchmarks/frozen_base_dtype.py [--steps 2] [--train-rows 40] [--validation-rows 8] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from predict_scale import child  # a fresh process's wall time, peak RSS and output

CHILD = """
import json, sys
import hfkit
cfg = json.loads(sys.argv[1])
result = hfkit.finetune("sft-lora", **cfg)
m = result.metrics
print(json.dumps({"eval_loss": m.get("eval_loss"), "peak_memory_mb": m.get("peak_memory_mb"),
                  "weights_mb": m.get("weights_mb"), "base_dtype": m.get("base_dtype"),
                  "wall": m.get("train_wall_seconds")}))
"""


def split(folder: Path, train_rows: int, validation_rows: int) -> tuple[str, str]:
    code = ("import sys; from hfkit.data import BUILTIN_CORPORA; ds = BUILTIN_CORPORA['alpaca-en-demo']().shuffle(seed=0);"
            f"ds.select(range({validation_rows})).to_json(sys.argv[1]);"
            f"ds.select(range({validation_rows}, {validation_rows + train_rows})).to_json(sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(folder / "validation.jsonl"), str(folder / "train.jsonl")],
                   check=True, capture_output=True)
    return str(folder / "train.jsonl"), str(folder / "validation.jsonl")


def planned(overrides: dict) -> tuple[float, float]:
    """(weights GB, total GB) that hfkit plan gives this run on one GPU (DDP)."""
    code = ("import json, sys; from hfkit.config import resolve; from hfkit.plan import memory, model_shape;"
            "cfg = resolve('finetune', 'sft-lora', json.loads(sys.argv[1])); shape, _ = model_shape(cfg, 'finetune');"
            "m = memory(shape, 'DDP', 1, cfg.train.gradient_checkpointing); print(json.dumps([m[0], sum(m[:4])]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(overrides)], check=True, capture_output=True,
                         text=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--train-rows", type=int, default=40)
    parser.add_argument("--validation-rows", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, validation = split(tmp, args.train_rows, args.validation_rows)
        for dtype in ("float32", "auto"):
            cfg = {"output_dir": str(tmp / dtype), "model.dtype": dtype, "data.train": train,
                   "data.validation": validation, "data.max_length": args.max_length, "train.max_steps": args.steps,
                   "train.batch_size": 1, "train.gradient_accumulation_steps": 1, "train.precision": "bf16",
                   "train.report_to": [], "lora.merge": False, "sft.packing": False, "train.save_steps": 10_000}
            _, rss, out = child([sys.executable, "-c", CHILD, json.dumps(cfg)])
            got = json.loads(out.strip().splitlines()[-1])
            plan_weights, plan_total = planned({k: v for k, v in cfg.items() if k != "output_dir"})
            rows.append((dtype, got, rss, plan_weights, plan_total))
            print(f"model.dtype={dtype}: {got}, peak RSS {rss:,.0f} MB", flush=True)
    print(f"\nSmolLM2-135M LoRA (r 16), train.precision=bf16, {args.steps} steps x 1 row of <= {args.max_length} "
          f"tokens, {args.validation_rows} held-out rows\n")
    print("| model.dtype | base stored in | weights in memory MB | peak RSS MB | plan: weights GB | plan: total GB "
          "(1 GPU) | held-out answer loss | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype, got, rss, plan_weights, plan_total in rows:
        print(f"| {dtype} | {got['base_dtype']} | {got['weights_mb']:,.0f} | {rss:,.0f} | "
              f"{plan_weights:.3f} | {plan_total:.3f} | {got['eval_loss']:.4f} | {got['wall']:.0f} |")


if __name__ == "__main__":
    main()
