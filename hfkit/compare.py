"""`hfkit compare`: one task, data and budget through several methods (and models), side by side.

Each run is an ordinary `hfkit finetune` in its own process (so its peak memory is its own, and any launcher,
e.g. torchrun, can start it) writing an ordinary run directory under the comparison's output_dir. The table is
read back from the runs' own metrics.json, never recomputed:

    output_dir/comparison.json   the rows, each with the run's metrics.json (reports left out)
    output_dir/comparison.md     the table
    output_dir/comparison.png    quality against trainable parameters, marker size = wall time
    output_dir/<run>/            each run's directory (model, metrics.json, loss.png, ...)

Every method trains with its own default learning rate (DEFAULT_LEARNING_RATES) unless train.learning_rate is
given. An override may be aimed at some runs with a selector: `full:train.learning_rate=1e-3` (a method) or
`minilm:train.epochs=2` (a model's label).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, OutputDirError, TrainingFailed
from .training import log

RANDOM_PREFIX = "random:"


@dataclass
class Run:
    name: str
    model_label: str
    model_path: str
    random_init: bool
    method: str
    overrides: list[str]
    cell: str = ""  # the (model, method) this run belongs to; runs of one cell differ only in train.seed
    seed: int | None = None


def parse_models(models: list[str] | None) -> list[tuple[str, str, bool]]:
    """[(label, path, random_init)] from 'path', 'label=path' or 'label=random:path' items."""
    out = []
    for item in models or []:
        label, _, path = item.partition("=") if "=" in item else ("", "", item)
        random_init = path.startswith(RANDOM_PREFIX)
        path = path[len(RANDOM_PREFIX):] if random_init else path
        if not path:
            raise ConfigError(f"--models: '{item}' names no model; use PATH, LABEL=PATH or LABEL=random:PATH")
        label = label or (("random-" if random_init else "") + Path(path.rstrip("/")).name.replace(":", "-"))
        out.append((label, path, random_init))
    labels = [label for label, _, _ in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--models: labels must differ ({', '.join(labels)}); write LABEL=PATH")
    return out


def split_overrides(overrides: list[str], selectors: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Common overrides, and {selector: [KEY=VALUE]} for `selector:KEY=VALUE` items."""
    common, aimed = [], {}
    for item in overrides:
        key, eq, value = item.partition("=")
        if eq and ":" in key:
            selector, _, key = key.partition(":")
            if selector not in selectors:
                raise ConfigError(f"override '{item}': '{selector}' is neither a method nor a model label here "
                                  f"({', '.join(sorted(selectors))})")
            aimed.setdefault(selector, []).append(f"{key}={value}")
        else:
            common.append(item)
    return common, aimed


def plan(recipe: str, methods: list[str], models: list[str] | None, overrides: list[str], output_dir: str | None,
         skip: list[str] | None = None, seeds: int = 1):
    """(output_dir, runs): every run's overrides, each validated now, before anything trains. `skip` names
    (model, method) runs to leave out of the cross product, e.g. 'scratch-lora'. `seeds` > 1 runs each cell that
    many times, with train.seed = the recipe's seed, +1, +2, ... (runs named CELL-seedS)."""
    if seeds < 1:
        raise ConfigError(f"--seeds: {seeds} must be >= 1")
    from .config import resolve

    base = resolve("finetune", recipe, overrides=[o for o in overrides if ":" not in o.partition("=")[0]])
    out = Path(output_dir or base.output_dir)
    model_list = parse_models(models) or [("", base.model.path, base.model.random_init)]
    if not methods:
        raise ConfigError("--methods: name at least one method, e.g. --methods full,lora")
    common, aimed = split_overrides(overrides, set(methods) | {label for label, _, _ in model_list if label})
    user_lr = any(o.partition("=")[0] == "train.learning_rate" for o in common)
    runs, skip = [], set(skip or [])
    names = {f"{label}-{method}" if label else method for label, _, _ in model_list for method in methods}
    unknown = sorted(skip - names)
    if unknown:
        raise ConfigError(f"--skip: no run named {', '.join(unknown)}; the runs are {', '.join(sorted(names))}")
    for label, path, random_init in model_list:
        for method in methods:
            name = f"{label}-{method}" if label else method
            if name in skip:
                continue
            extra = [f"method={method}", f"output_dir={out / name}"]
            if label:
                extra += [f"model.path={path}", f"model.random_init={'true' if random_init else 'false'}"]
            targeted = aimed.get(method, []) + aimed.get(label, [])
            if not user_lr and not any(o.startswith("train.learning_rate=") for o in targeted):
                extra.append("train.learning_rate=null")  # the method's own default
            items = common + extra + targeted
            cfg = resolve("finetune", recipe, overrides=items)  # a bad value fails here, before any run starts
            if seeds == 1:
                runs.append(Run(name, label, path, random_init, method, items, cell=name))
                continue
            for seed in range(cfg.train.seed, cfg.train.seed + seeds):
                seeded = [o for o in items if not o.startswith("output_dir=")] + [
                    f"output_dir={out / f'{name}-seed{seed}'}", f"train.seed={seed}"]
                runs.append(Run(f"{name}-seed{seed}", label, path, random_init, method, seeded, cell=name, seed=seed))
    return out, runs


def table_rows(out: Path, runs: list[Run], metric: str) -> list[dict]:
    rows = []
    for run in runs:
        path = out / run.name / "metrics.json"
        metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        row = {"run": run.name, "model": run.model_path, "random_init": run.random_init, "method": run.method,
               "output_dir": str(out / run.name), "status": "ok" if metrics else "failed"}
        if metrics:
            m = {k: v for k, v in metrics.items() if not k.endswith("_report")}
            row.update({metric: m.get(f"eval_{metric}"), "f1": m.get("eval_f1"),
                        "trainable_params": m.get("trainable_params"), "total_params": m.get("total_params"),
                        "wall_seconds": m.get("train_wall_seconds"), "peak_memory_mb": m.get("peak_memory_mb"),
                        "tokens_per_second": m.get("train_tokens_per_second"), "metrics": m})
        rows.append(row)
    return rows


def cell_rows(rows: list[dict], runs: list[Run], metric: str) -> list[dict]:
    """One row per (model, method) over its seeds: mean and sample standard deviation of `metric` and macro F1,
    the per-seed values, and the means of the cost columns."""
    import statistics

    cells: dict[str, list[tuple[Run, dict]]] = {}
    for run, row in zip(runs, rows):
        cells.setdefault(run.cell, []).append((run, row))
    out = []
    for cell, members in cells.items():
        run, first = members[0]
        ok = [row for _, row in members if row["status"] == "ok"]
        summary = {"run": cell, "model": first["model"], "random_init": first["random_init"], "method": run.method,
                   "seeds": [r.seed for r, _ in members], "runs": [row["run"] for _, row in members],
                   "status": "ok" if ok else "failed", "failed": len(members) - len(ok)}
        for key in (metric, "f1"):
            values = [row[key] for row in ok if row.get(key) is not None]
            summary[f"{key}_per_seed"] = values
            summary[key] = statistics.mean(values) if values else None
            summary[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        for key in ("trainable_params", "total_params"):  # the same in every seed
            summary[key] = ok[0][key] if ok else None
        for key in ("wall_seconds", "peak_memory_mb", "tokens_per_second"):
            values = [row[key] for row in ok if row.get(key) is not None]
            summary[key] = statistics.mean(values) if values else None
        out.append(summary)
    return out


def markdown(rows: list[dict], metric: str) -> str:
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    def score(r, key):
        if "seeds" not in r:
            return fmt(r[key], ".3f")
        spread = f" ± {r[f'{key}_sd']:.3f}" if r.get(f"{key}_sd") is not None else ""
        return f"{fmt(r[key], '.3f')}{spread} ({len(r[f'{key}_per_seed'])})"

    seeded = any("seeds" in r for r in rows)
    lines = [f"| run | model | method | {metric}{' (mean ± sd, seeds)' if seeded else ''} | macro F1 | trainable params | "
             "% trained | train s | peak MB | tokens/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['run']} | {r['model']} | {r['method']} | failed | | | | | | |")
            continue
        share = 100 * r["trainable_params"] / r["total_params"] if r.get("total_params") else None
        model = ("random init: " if r["random_init"] else "") + r["model"]
        lines.append(f"| {r['run']} | {model} | {r['method']} | {score(r, metric)} | {score(r, 'f1')} | "
                     f"{r['trainable_params']:,} | {fmt(share, '.2f')} | {fmt(r['wall_seconds'], '.0f')} | "
                     f"{fmt(r['peak_memory_mb'], '.0f')} | {fmt(r['tokens_per_second'], ',.0f')} |")
    return "\n".join(lines) + "\n"


def compare(recipe: str, methods: list[str], models: list[str] | None = None, overrides: list[str] | None = None,
            output_dir: str | None = None, launcher: str | None = None, overwrite: bool = False,
            skip: list[str] | None = None, seeds: int = 1) -> list[dict]:
    """Run each (model, method) as its own `hfkit finetune` process (`seeds` times, with different train.seed) and
    tabulate their metrics.json; with seeds, the table, JSON and plot show each cell's mean and spread."""
    from .config import resolve
    from .plots import comparison_plot

    overrides = list(overrides or [])
    out, runs = plan(recipe, methods, models, overrides, output_dir, skip, seeds)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputDirError(f"output_dir '{out}' is not empty; pass --overwrite to replace the comparison there")
    metric = resolve("finetune", recipe, overrides=runs[0].overrides).train.metric_for_best or "accuracy"
    out.mkdir(parents=True, exist_ok=True)
    prefix = shlex.split(launcher) if launcher else [sys.executable]
    failed = []
    for i, run in enumerate(runs, 1):
        log(f"compare [{i}/{len(runs)}] {run.name}: hfkit finetune {recipe} " + " ".join(run.overrides))
        command = prefix + ["-m", "hfkit", "finetune", str(recipe), *run.overrides, "--overwrite"]
        start = time.perf_counter()
        code = subprocess.call(command, env=os.environ.copy())
        log(f"compare [{i}/{len(runs)}] {run.name}: {'done' if code == 0 else f'FAILED (exit {code})'} "
            f"in {time.perf_counter() - start:.0f}s")
        if code != 0:
            failed.append(run.name)
    rows = table_rows(out, runs, metric)
    summary = {"recipe": str(recipe), "metric": metric, "overrides": overrides, "seeds": seeds, "rows": rows}
    shown = rows
    if seeds > 1:
        shown = summary["cells"] = cell_rows(rows, runs, metric)
    (out / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    text = markdown(shown, metric)
    (out / "comparison.md").write_text(text, encoding="utf-8")
    comparison_plot(out / "comparison.png", [r for r in shown if r["status"] == "ok"], metric)
    print("\n" + text, flush=True)
    log(f"comparison written to {out}/comparison.{{json,md,png}}")
    if failed:
        raise TrainingFailed(f"{len(failed)} of {len(runs)} runs failed ({', '.join(failed)}); the table marks them")
    return rows
