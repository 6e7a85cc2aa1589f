"""A restart on another number of processes (2 -> 1 and 1 -> 2, the global batch kept by accumulation), under DDP,
FSDP2 and DeepSpeed ZeRO-2 / ZeRO-3, and a streamed corpus under DDP, against the uninterrupted run.

For each row: a 60-step run (bert-mlm-tiny or gpt2-clm-tiny, checkpoints every 20) on the first process count, and a run
on the other count resumed from its checkpoint-20 (train.resume=<that folder>; resume_exact.py shows that where a
run was cut does not matter). The table gives the largest relative difference of the logged training loss over
steps 25-60 and max |diff| over the final weights, with BERT's dropout on and off. With dropout off only
arithmetic differs (a sum over 8 examples reduced in another order); with dropout on, the dropout masks differ too,
since each process draws from its own generator (one process draws for 8 examples, two draw for 4 each). A stream
is split by process, so it resumes on another count only with train.resume_changed=true, from about the same place
in the data (streaming.py: _respread): its rows measure how far that is from the uninterrupted run.

    python benchmarks/resume_world.py                     # every row (~15 min on 2 cores)
    python benchmarks/resume_world.py --rows ddp --dropout on
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from resume_exact import base_models, env, max_diff  # noqa: E402

STEPS, SAVE, PER_PROCESS = 60, 20, 4
RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "accelerate"
STREAM = ["data.streaming=true", "data.shuffle_buffer=100"]
# row: (accelerate config, objective). FSDP2 rows train GPT-2: BERT's masked-LM head registers its bias twice, which
# accelerate's FSDP2 cannot shard (training.check_output_bias refuses it).
# On CPU a one-process launch is never sharded (accelerate drops FSDP there), so FSDP2 goes 3 -> 2 and 2 -> 3, with a
# global batch of 24 (4 per process, accumulated 2 or 3 times).
ROWS = {"ddp": (None, "mlm"), "ddp streaming": (None, "mlm"), "fsdp2": ("fsdp", "clm"),
        "zero2": ("deepspeed-zero2", "mlm"), "zero3": ("deepspeed-zero3", "mlm")}
DIRECTIONS = {"fsdp2": ["3-2", "2-3"]}
GLOBAL = {"fsdp2": 24}
NO_DROPOUT = {"mlm": "model.overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
              "clm": "model.overrides={resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"}


def launch(args: list[str], procs: int, strategy: str) -> tuple[list[str], dict]:
    config = ROWS[strategy][0]
    if config is None:
        if procs == 1:
            return [sys.executable, "-m", "hfkit", *args], env(1)
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "-m", "hfkit",
                *args], env(procs)
    accumulation = GLOBAL.get(strategy, 8) // (PER_PROCESS * procs)
    e = {k: v for k, v in env(procs).items() if not k.startswith("ACCELERATE_")}  # DeepSpeed needs USE_CPU unset
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(RECIPES / f"{config}.yaml"),
           "--num_processes", str(procs)]
    if config.startswith("deepspeed"):
        cmd += ["--gradient_accumulation_steps", str(accumulation)]
    return [*cmd, "-m", "hfkit", *args], e


def run(args: list[str], procs: int, strategy: str) -> str:
    cmd, e = launch(args, procs, strategy)
    done = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=1200)
    if done.returncode != 0:
        lines = done.stderr.replace("\r", "\n").splitlines()
        said = next((ln[ln.index("error: "):] for ln in lines if "error: " in ln), lines[-1] if lines else "")
        raise RuntimeError(f"{procs} process(es): {said}")
    return done.stderr


def losses(out: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--directions", default="2-1,1-2", help="(FSDP2: 3-2,2-3)")
    ap.add_argument("--dropout", default="on,off")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    root = Path(a.workdir or tempfile.mkdtemp(prefix="resume-world-"))
    os.environ.setdefault("HFKIT_CACHE", str(root / "cache"))
    bert, gpt = base_models(root)
    recipes = {"mlm": ["pretrain", "bert-mlm-tiny", f"tokenizer.path={bert}"],
               "clm": ["pretrain", "gpt2-clm-tiny", f"tokenizer.path={gpt}"]}
    base = ["data.train=builtin:news-articles",
            "data.max_documents=300", "data.block_size=32", "data.validation_split=0", "train.report_to=[]",
            "train.save_total_limit=null", f"train.max_steps={STEPS}", f"train.save_steps={SAVE}",
            "train.logging_steps=5", "train.eval_before_training=false", f"train.batch_size={PER_PROCESS}"]
    print("| strategy | objective | processes | dropout | max relative loss difference, steps 25-60 | max abs diff of final "
          "weights | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for strategy in a.rows.split(","):
        for direction in DIRECTIONS.get(strategy, a.directions.split(",")):
            before, after = (int(p) for p in direction.split("-"))
            for dropout in a.dropout.split(","):
                start = time.perf_counter()
                objective = ROWS[strategy][1]
                extra = [*recipes[objective], f"train.global_batch_size={GLOBAL.get(strategy, 8)}",
                         *(STREAM if "streaming" in strategy else []),
                         *([] if dropout == "on" else [NO_DROPOUT[objective]])]
                # A stream's split depends on the process count: it goes on from about the same place, if asked.
                again = ["train.resume_changed=true"] if "streaming" in strategy else []
                slug = f"{strategy.replace(' ', '-')}-{before}to{after}-dropout-{dropout}"
                straight, resumed = root / f"{slug}-straight", root / f"{slug}-resumed"
                for d in (straight, resumed):
                    shutil.rmtree(d, ignore_errors=True)
                try:
                    run([*extra, *base, f"output_dir={straight}"], before, strategy)
                    shutil.copytree(straight / f"checkpoint-{SAVE}", resumed / f"checkpoint-{SAVE}")
                    log = run([*extra, *base, *again, f"output_dir={resumed}", "train.resume=auto"], after, strategy)
                    if f"resuming from {resumed / f'checkpoint-{SAVE}'}" not in log:
                        raise RuntimeError("did not resume from the copied checkpoint")
                    x, y = losses(straight), losses(resumed)
                    steps = [s for s in x if s > SAVE]
                    if not steps or any(s not in y for s in steps):
                        raise RuntimeError(f"logged steps differ: {sorted(x)} vs {sorted(y)}")
                    loss = max(abs(y[s] - x[s]) / abs(x[s]) for s in steps)
                    cells = f"{loss:.3%} | {max_diff(straight, resumed):.3g}"
                except Exception as e:  # a row that fails is reported, not hidden
                    cells = f"FAILED: {str(e).strip().splitlines()[-1][:400]} | -"
                print(f"| {strategy} | {objective} | {before} -> {after} | {dropout} | {cells} | {time.perf_counter() - start:.0f} |",
                      flush=True)

    # Two uninterrupted streamed runs on 1 and 2 processes read different batches: how far apart their losses are
    # is the scale a streamed restart on another count (other batches too) is measured against.
    for dropout in a.dropout.split(","):
        two, one = (root / f"ddp-streaming-{d}-dropout-{dropout}-straight" for d in ("2to1", "1to2"))
        if (two / "log_history.json").is_file() and (one / "log_history.json").is_file():
            x, y = losses(two), losses(one)
            steps = [s for s in x if s > SAVE and s in y]
            gap = max(abs(y[s] - x[s]) / abs(x[s]) for s in steps)
            print(f"streaming, dropout {dropout}: two uninterrupted runs on 2 and 1 processes differ by up to {gap:.3%} "
                  f"per logged loss over steps 25-60 (mean {sum(x[s] for s in steps) / len(steps):.4f} and "
                  f"{sum(y[s] for s in steps) / len(steps):.4f})")


if __name__ == "__main__":
    main()
