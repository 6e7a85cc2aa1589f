"""Exact resume after SIGKILL, for every pretraining objective and fine-tuning task, with dropout on.

For each row: one uninterrupted run; one run of the same command SIGKILLed (its whole process group) once its first
checkpoint is complete, then the same command again with train.resume=auto. The table gives max |diff| over every
tensor of the final weights (every .safetensors file under the run directory's root: the model, an adapter, ELECTRA's
generator), and the step the killed run resumed from. 2-layer models, 60 optimizer steps, a checkpoint every 20.

    python benchmarks/resume_exact.py                 # every row, 1 and 2 processes (~25 min on 2 cores)
    python benchmarks/resume_exact.py --rows mlm,clm --procs 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS, SAVE = 60, 20
COMMON = ["train.report_to=[]", "train.save_total_limit=null", f"train.max_steps={STEPS}", f"train.save_steps={SAVE}",
          "train.logging_steps=5", "train.eval_before_training=false", "train.batch_size=8"]


def pretrain_rows(tok_mlm: Path, tok_clm: Path) -> dict[str, list[str]]:
    news = ["data.train=builtin:news-articles", "data.max_documents=300", "data.block_size=32",
            "data.validation_split=0"]
    mlm = ["pretrain", "bert-mlm-tiny", f"tokenizer.path={tok_mlm}", *news]
    return {
        "mlm": mlm,
        "mlm whole-word": [*mlm, "mlm.whole_word=true"],
        "electra": ["pretrain", "electra-tiny", f"tokenizer.path={tok_mlm}", *news],
        "nsp": [*mlm, "objective=nsp", "data.block_size=64"],
        "sop": [*mlm, "objective=sop", "data.block_size=64"],
        "contrastive (dropout views)": [*mlm, "objective=contrastive"],
        "contrastive (crop views)": [*mlm, "objective=contrastive", "contrastive.views=crop", "contrastive.crop_tokens=16"],
        "clm": ["pretrain", "gpt2-clm-tiny", f"tokenizer.path={tok_clm}", *news],
        "mlm streaming": [*mlm, "data.streaming=true", "data.shuffle_buffer=100"],
    }


def finetune_rows(bert: Path, gpt: Path) -> dict[str, list[str]]:
    movies = [f"model.path={bert}", "data.train=builtin:movie-reviews", "data.max_train_samples=600",
              "data.validation_split=0", "data.max_length=48"]
    return {
        "classification full": ["finetune", "classification-full", *movies],
        "classification lora": ["finetune", "classification-lora", *movies],
        "classification frozen cached (mlp head)": ["finetune", "classification-frozen", *movies,
                                                    "frozen.head=mlp"],
        "classification pet": ["finetune", "classification-pet", *movies],
        "token classification": ["finetune", "ner-full", f"model.path={bert}", "data.train=builtin:wnut16",
                                 "data.max_train_samples=600", "data.validation_split=0"],
        "sft packed": ["finetune", "sft-full", f"model.path={gpt}", "data.train=builtin:chatterbot",
                       "data.validation_split=0", "data.max_length=64", "train.gradient_accumulation_steps=1", "sft.chat_template=chatml",
                       "train.batch_size=2"],
    }


def launch(args: list[str], procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "hfkit", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "-m", "hfkit", *args]


def env(procs: int) -> dict:
    e = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1")
    if procs > 1:
        e["ACCELERATE_USE_CPU"] = "1"
        e["OMP_NUM_THREADS"] = "1"
    return e


def run(args: list[str], procs: int, timeout: float = 900) -> None:
    done = subprocess.run(launch(args, procs), capture_output=True, text=True, env=env(procs), timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it at once, as a lost node would (torchrun's workers do not all
    stay in its process group)."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def killed_then_resumed(args: list[str], out: Path, procs: int) -> int:
    """Start the run, SIGKILL its process group once checkpoint-SAVE is complete, resume; the resumed-from step."""
    proc = subprocess.Popen(launch(args, procs), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env(procs), start_new_session=True)
    marker = out / f"checkpoint-{SAVE}" / "hfkit-manifest.json"  # the checkpoint is complete
    deadline = time.time() + 900
    while not marker.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            kill_tree(proc.pid)
            raise RuntimeError("no checkpoint in 900 s")
        time.sleep(0.01)
    kill_tree(proc.pid)
    proc.wait()
    if (out / "metrics.json").exists():
        raise RuntimeError("the run finished before it could be killed; raise STEPS")
    resumed = subprocess.run(launch([*args, "train.resume=auto"], procs), capture_output=True, text=True,
                             env=env(procs), timeout=900)
    if resumed.returncode != 0:
        raise RuntimeError(f"resume failed:\n{resumed.stderr[-3000:]}")
    line = next((ln for ln in resumed.stderr.splitlines() if "resuming from" in ln), "")
    return int(line.rsplit("-", 1)[-1]) if line else -1


def max_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors") if "checkpoint-" not in str(p.relative_to(a)))
    if not files:
        raise RuntimeError(f"no weights in {a}")
    worst = 0.0
    for rel in files:
        x, y = load_file(str(a / rel)), load_file(str(b / rel))
        if x.keys() != y.keys():
            raise RuntimeError(f"{rel}: different tensors")
        for k in x:
            worst = max(worst, (x[k].double() - y[k].double()).abs().max().item())
    return worst


def base_models(root: Path) -> tuple[Path, Path]:
    """A tiny BERT and a tiny GPT (fixed tokenizers; model.path for the fine-tuning rows)."""
    bert, gpt = root / "base-bert", root / "base-gpt"
    for recipe, out in (("bert-mlm-tiny", bert), ("gpt2-clm-tiny", gpt)):
        if not (out / "config.json").exists():
            run(["pretrain", recipe, "data.train=builtin:news-articles", "data.max_documents=300", "data.block_size=64",
                 "train.max_steps=30", "train.report_to=[]", f"output_dir={out}", "--overwrite"], 1)
    return bert, gpt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    root = Path(a.workdir or tempfile.mkdtemp(prefix="resume-exact-"))
    os.environ.setdefault("HFKIT_CACHE", str(root / "cache"))
    bert, gpt = base_models(root)
    rows = {**pretrain_rows(bert, gpt), **finetune_rows(bert, gpt)}
    wanted = [r.strip() for r in a.rows.split(",") if r.strip()] or list(rows)
    print("| row | processes | resumed from | max abs diff of final weights | wall (s) |")
    print("|---|---|---|---|---|")
    for procs in [int(p) for p in a.procs.split(",")]:
        for name in wanted:
            start = time.perf_counter()
            slug = name.replace(" ", "-").replace("(", "").replace(")", "")
            a_dir, b_dir = root / f"{slug}-{procs}p-straight", root / f"{slug}-{procs}p-killed"
            for d in (a_dir, b_dir):
                shutil.rmtree(d, ignore_errors=True)
            try:
                run([*rows[name], *COMMON, f"output_dir={a_dir}", "--overwrite"], procs)
                step = killed_then_resumed([*rows[name], *COMMON, f"output_dir={b_dir}", "--overwrite"], b_dir, procs)
                result = f"{max_diff(a_dir, b_dir):.3g}"
            except Exception as e:  # a row that fails is reported, not hidden
                step, result = -1, f"FAILED: {str(e).strip().splitlines()[-1][:120]}"
            print(f"| {name} | {procs} | {step} | {result} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
