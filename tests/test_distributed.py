"""Two CPU processes under torchrun (gloo): every rank trains, rank 0 alone writes, ranks stay in sync, and the
losses match a one-process run with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.distributed

NO_DROPOUT = "model.overrides={resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"


def args(corpus, tokenizer_dir, out, batch_size):
    return ["pretrain", "gpt2-clm-tiny", f"data.train={corpus}", f"output_dir={out}", f"tokenizer.path={tokenizer_dir}",
            NO_DROPOUT, "data.block_size=32", "data.validation_split=0", f"train.batch_size={batch_size}",
            "train.max_steps=12", "train.save_steps=12", "train.logging_steps=1", "train.report_to=[]"]


def losses(out) -> list[float]:
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    return [e["loss"] for e in state["log_history"] if "loss" in e]


@pytest.mark.slow  # ~19 s; tests/test_resume.py launches 2 processes with torchrun in the default run
def test_torchrun_two_processes_match_one_process(tmp_path, corpus_file, clm_run):
    one = subprocess.run([sys.executable, "-m", "hfkit", *args(corpus_file, clm_run.output_dir, tmp_path / "one", 8)],
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hfkit",
                          *args(corpus_file, clm_run.output_dir, tmp_path / "two", 4)], capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True  # bit-identical parameters on both ranks
    assert two.stdout.count("run directory:") == 1 and two.stderr.count("[hfkit] done:") == 1  # rank 0 alone
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 12
    for step, (x, y) in enumerate(zip(a, b), 1):
        assert abs(x - y) <= 0.01 * abs(x), (step, x, y)  # same global batch of 8: within 1% at every step


@pytest.mark.slow  # ~11 s
def test_torchrun_lora_finetune_keeps_adapters_identical(tmp_path, mlm_run):
    import pandas as pd

    rows = [("the cat sees the ball .", "animal"), ("the doctor helps the car .", "person")] * 40
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "lora"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hfkit",
                           "finetune", "classification-lora", f"model.path={mlm_run.output_dir}",
                           f"data.train={tmp_path / 'train.csv'}", f"output_dir={out}", "train.epochs=1",
                           "train.batch_size=8", "train.report_to=[]"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True  # adapters (and head) identical
    assert (out / "adapter_model.safetensors").is_file() and done.stdout.count("run directory:") == 1
