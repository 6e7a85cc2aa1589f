"""Sharded training for real, on 2 CPU processes, launched the way a cluster user launches it (`accelerate launch
--config_file recipes/accelerate/<config>.yaml`): DeepSpeed ZeRO-2, ZeRO-3 and FSDP2 (full shard). The sharded run
matches a one-process run with the same global batch, its gathered final save loads in plain transformers / peft,
and a run killed after its first checkpoint resumes (train.resume=auto) to the same weights as an uninterrupted one.

Accelerate 1.15 takes DeepSpeed on CPU only when ACCELERATE_USE_CPU is unset (its `not cpu` test in state.py), and
FSDP only on GPU-like devices; hfkit lets FSDP2 through on CPU processes (training.shard_cpu_processes_with_fsdp2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hfkit.config import recipes_dir

pytestmark = pytest.mark.distributed
SHARDED = ["deepspeed-zero2", "deepspeed-zero3", "fsdp"]

NO_DROPOUT = "model.overrides={resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}


def launch(config: str, *args) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(recipes_dir() / "accelerate" / f"{config}.yaml"), "--num_processes", "2", "-m", "hfkit", *args]


def clm_args(corpus, tokenizer_dir, out, batch_size, *extra):
    return ["pretrain", "gpt2-clm-tiny", f"data.train={corpus}", f"output_dir={out}", f"tokenizer.path={tokenizer_dir}",
            NO_DROPOUT, "data.block_size=32", "data.validation_split=0", f"train.batch_size={batch_size}",
            "train.max_steps=12", "train.save_steps=6", "train.logging_steps=1", "train.report_to=[]",
            "train.save_total_limit=null", *extra]


def run(cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, **kwargs)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def losses(out: Path) -> list[float]:
    state = json.loads((out / "log_history.json").read_text())
    return [e["loss"] for e in state if "loss" in e]


def weights(folder: Path, name="model.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / name))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, corpus_file, clm_run):
    out = tmp_path_factory.mktemp("ds") / "one"
    run([sys.executable, "-m", "hfkit", *clm_args(corpus_file, clm_run.output_dir, out, 8)])
    return out


def optimizer_shards(checkpoint: Path) -> list[str]:
    """One optimizer-state file per rank: DeepSpeed's own checkpoint, or FSDP's distributed checkpoint."""
    if (checkpoint / "optimizer_0").is_dir():
        return sorted(p.name for p in (checkpoint / "optimizer_0").glob("*.distcp"))
    return sorted(p.name for p in checkpoint.glob("global_step*/*optim_states.pt"))


@pytest.mark.parametrize("config", [pytest.param(c, marks=pytest.mark.slow) if c != "fsdp" else c for c in SHARDED])
def test_sharded_pretraining_matches_one_process_and_reloads(config, tmp_path, corpus_file, clm_run, one_process):
    from transformers import AutoModelForCausalLM

    out = tmp_path / config
    done = run(launch(config, *clm_args(corpus_file, clm_run.output_dir, out, 4)))
    assert done.stdout.count("run directory:") == 1
    assert len(optimizer_shards(out / "checkpoint-12")) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    a, b = losses(one_process), losses(out)
    assert len(a) == len(b) == 12
    for step, (x, y) in enumerate(zip(a, b), 1):
        assert abs(x - y) <= 0.01 * abs(x), (step, x, y)  # same global batch of 8: within 1% at every step
    ref, got = weights(one_process), weights(out)  # the gathered save holds every weight, whole
    assert ref.keys() == got.keys()
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        # fp32 all the way; only the order of the gradient sums differs (two ranks reduce, one process sums): measured
        # 2.4e-6 (ZeRO), 2.0e-6 (FSDP2) after 12 AdamW steps
        torch.testing.assert_close(got[name], ref[name], atol=1e-4, rtol=0, msg=name)
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no hfkit
    assert sum(p.numel() for p in model.parameters()) == metrics["total_params"]


def lora_args(model_dir, train_csv, out, batch_size, *extra):
    # 64 training rows: each epoch ends on a full global batch of 16. A short last batch would not compare: Accelerate
    # (even_batches) fills the second rank's with rows from the epoch's start, where one process trains on fewer.
    return ["finetune", "classification-lora", f"model.path={model_dir}", f"data.train={train_csv}", f"output_dir={out}",
            "model.overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}", "lora.dropout=0",
            "data.validation_split=0.2", f"train.batch_size={batch_size}", "train.max_steps=8", "train.logging_steps=1", "train.report_to=[]",
            "train.eval_before_training=false", "train.early_stopping_patience=null", "train.load_best=false",
            *extra]


@pytest.mark.slow  # ~80 s for the three
@pytest.mark.parametrize("config", SHARDED)
def test_sharded_lora_finetune_matches_one_process_and_loads_in_peft(config, tmp_path, mlm_run):
    import pandas as pd
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    rows = [("the cat sees the ball .", "animal"), ("the doctor helps the car .", "person")] * 40
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    run([sys.executable, "-m", "hfkit", *lora_args(mlm_run.output_dir, tmp_path / "train.csv", tmp_path / "one", 16)])
    out = tmp_path / config
    done = run(launch(config, *lora_args(mlm_run.output_dir, tmp_path / "train.csv", out, 8)))
    assert done.stdout.count("run directory:") == 1
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    a, b = losses(tmp_path / "one"), losses(out)
    assert len(a) == len(b) == 8
    for step, (x, y) in enumerate(zip(a, b), 1):
        assert abs(x - y) <= 0.01 * abs(x), (step, x, y)
    ref, got = weights(tmp_path / "one", "adapter_model.safetensors"), weights(out, "adapter_model.safetensors")
    assert ref.keys() == got.keys() and any("lora_A" in k for k in got)
    assert all(got[k].abs().max() > 0 for k in got if "lora_B" in k)  # trained: LoRA's B starts at zero
    for name in ref:
        # measured 6.2e-5 (ZeRO-3), 2.7e-5 (ZeRO-2, FSDP2): AdamW divides by sqrt(v), so where a gradient is near zero a
        # summation-order difference of 1e-7 moves an update by up to the learning rate (2e-3 here)
        torch.testing.assert_close(got[name], ref[name], atol=5e-4, rtol=0, msg=name)
    base = AutoModelForSequenceClassification.from_pretrained(mlm_run.output_dir, num_labels=2)
    model = PeftModel.from_pretrained(base, out)  # plain peft, no hfkit
    assert any("lora_A" in n for n, _ in model.named_parameters())


@pytest.mark.slow  # ~130 s for the three
@pytest.mark.parametrize("config", SHARDED)
def test_sharded_killed_run_resumes_to_the_uninterrupted_weights(config, tmp_path, corpus_file, clm_run):
    steps = ["train.max_steps=60", "train.save_steps=20"]
    straight = tmp_path / "straight"
    run(launch(config, *clm_args(corpus_file, clm_run.output_dir, straight, 4, *steps)))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(launch(config, *clm_args(corpus_file, clm_run.output_dir, killed, 4, *steps)), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while not (killed / "checkpoint-20" / "hfkit-manifest.json").exists():
            assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, as a lost node would
        proc.wait()
    assert not (killed / "model.safetensors").exists() and not (killed / "checkpoint-60").exists()
    resumed = run(launch(config, *clm_args(corpus_file, clm_run.output_dir, killed, 4, *steps, "train.resume=auto")))
    assert "resuming from" in resumed.stderr
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_deepspeed_with_cpu_flag_is_refused_not_silently_ddp(tmp_path, corpus_file):
    """--cpu (ACCELERATE_USE_CPU) makes Accelerate drop DeepSpeed for DDP; hfkit says so before anything is written."""
    out = tmp_path / "cpu-flag"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hfkit",
                           "pretrain", "gpt2-clm-tiny", f"data.train={corpus_file}", f"output_dir={out}",
                           "tokenizer.vocab_size=200", "train.max_steps=2", "train.report_to=[]"],
                          capture_output=True, text=True, timeout=300,
                          env={**ENV, "ACCELERATE_USE_CPU": "1", "ACCELERATE_USE_DEEPSPEED": "true"})
    assert done.returncode != 0  # each rank exits 2; torchrun reports 1
    assert "DeepSpeed was asked for (ACCELERATE_USE_DEEPSPEED), but so were CPU processes" in done.stderr
    assert not out.exists()
