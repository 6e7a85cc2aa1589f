"""Pictures of runs, drawn with matplotlib when it is installed (`pip install hfkit[plots]`); skipped with a note
otherwise. Each PNG records what it shows in its metadata (Description), so tests and scripts can check it."""

from __future__ import annotations

import json
from pathlib import Path

from .console import log


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("note: matplotlib is not installed, so no plots are drawn (pip install 'hfkit[plots]')")
        return None
    return plt


def write_log_history(output_dir: str | Path, history: list[dict]) -> None:
    """The Trainer's log history (losses, learning rate, eval metrics per step) as log_history.json."""
    Path(output_dir, "log_history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")


def loss_plot(output_dir: str | Path, history: list[dict], metric: str | None = None) -> Path | None:
    """loss.png: training and evaluation loss per step, and `metric` (e.g. eval_accuracy) on a second axis."""
    plt = _pyplot()
    if plt is None:
        return None
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    scores = [(h["step"], h[metric]) for h in history if metric and metric in h and "step" in h]
    steps = [s for s, _ in train + evals + scores]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if scores:
        twin = ax.twinx()
        twin.plot(*zip(*scores), "s--", color="tab:green", label=metric)
        twin.set_ylabel(metric)
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:  # below the axes, clear of both curves
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    span = f"steps {min(steps)}-{max(steps)}" if steps else "no logged steps"
    ax.set_title(f"{Path(output_dir).name}: {span}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(output_dir) / "loss.png"
    fig.savefig(path, metadata={"Description": span})
    plt.close(fig)
    return path


def comparison_plot(path: str | Path, rows: list[dict], metric: str) -> Path | None:
    """Quality against trainable parameters (log scale); marker area grows with wall time; rows with a spread over
    seeds (`<metric>_sd`) get error bars."""
    plt = _pyplot()
    if plt is None:
        return None
    done = [r for r in rows if r.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    longest = max((r["wall_seconds"] for r in done), default=1.0) or 1.0
    models = list(dict.fromkeys((r["model"], r["random_init"]) for r in done))  # one colour per model
    methods = list(dict.fromkeys(r["method"] for r in done))  # one marker per method
    markers = "osD^vP*Xh<>"
    for r in done:
        x = max(r["trainable_params"], 1)
        colour = plt.cm.tab10(models.index((r["model"], r["random_init"])) % 10)
        ax.scatter([x], [r[metric]], s=40 + 600 * r["wall_seconds"] / longest, alpha=0.6, color=colour,
                   marker=markers[methods.index(r["method"]) % len(markers)])
        if r.get(f"{metric}_sd") is not None:  # a cell run with several seeds: mean, +- one standard deviation
            ax.errorbar([x], [r[metric]], yerr=[r[f"{metric}_sd"]], color=colour, capsize=4, lw=1)
        ax.annotate(r["run"], (x, r[metric]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against trainable parameters (marker size: wall time, longest {longest:.0f}s)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Description": f"{len(done)} runs"})
    plt.close(fig)
    return Path(path)
