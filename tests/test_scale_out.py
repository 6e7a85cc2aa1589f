"""Scale-out configuration: the shipped accelerate configs load in Accelerate's own loader, and
train.global_batch_size derives the accumulation steps from the world size."""

from __future__ import annotations

import pytest

from hfkit.config import TrainConfig, recipes_dir
from hfkit.errors import ConfigError
from hfkit.training import derive_accumulation


def load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(recipes_dir() / "accelerate" / name))


def test_every_accelerate_config_loads():
    found = sorted(p.name for p in (recipes_dir() / "accelerate").glob("*.yaml"))
    assert len(found) == 8, found
    for name in found:
        load(name)


def test_accelerate_configs_say_what_they_claim():
    assert load("single-gpu.yaml").distributed_type == "NO"
    ddp = load("multi-gpu-ddp.yaml")
    assert ddp.distributed_type == "MULTI_GPU" and ddp.num_machines == 1 and ddp.num_processes > 1
    fsdp = load("fsdp.yaml")
    assert fsdp.distributed_type == "FSDP"
    assert fsdp.fsdp_config["fsdp_version"] == 2 and fsdp.fsdp_config["fsdp_reshard_after_forward"] is True
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    for name, stage, offload in [("deepspeed-zero2.yaml", 2, "none"), ("deepspeed-zero2-offload.yaml", 2, "cpu"),
                                 ("deepspeed-zero3.yaml", 3, "none"), ("deepspeed-zero3-offload.yaml", 3, "cpu")]:
        ds = load(name)
        assert ds.distributed_type == "DEEPSPEED"
        assert ds.deepspeed_config["zero_stage"] == stage
        assert ds.deepspeed_config["offload_optimizer_device"] == offload
        assert ds.deepspeed_config["offload_param_device"] == (offload if stage == 3 else "none")
    multi = load("multi-node.yaml")
    assert multi.num_machines == 2 and multi.num_processes == 16 and multi.main_process_ip and multi.main_process_port


@pytest.mark.parametrize("world, expected", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_global_batch_size_derives_accumulation(world, expected):
    t = TrainConfig(batch_size=4, global_batch_size=32)
    derive_accumulation(t, world)
    assert t.gradient_accumulation_steps == expected
    assert t.batch_size * world * t.gradient_accumulation_steps == 32


def test_global_batch_size_must_divide():
    with pytest.raises(ConfigError, match=r"train.global_batch_size: 30 is not a multiple of train.batch_size \(4\) x 2"):
        derive_accumulation(TrainConfig(batch_size=4, global_batch_size=30), 2)


def test_global_batch_size_recorded_in_the_run(tmp_path, corpus_file):
    import yaml

    import hfkit
    from conftest import tiny_overrides

    result = hfkit.pretrain(tiny_overrides("clm", corpus_file, tmp_path / "g", **{
        "train.max_steps": 2, "train.batch_size": 4, "train.global_batch_size": 12, "train.eval_before_training": False}))
    saved = yaml.safe_load((result.output_dir / "hfkit.yaml").read_text())
    assert saved["train"]["gradient_accumulation_steps"] == 3 and saved["train"]["global_batch_size"] == 12


@pytest.mark.distributed
def test_fsdp1_on_cpu_processes_is_refused_not_silently_ddp(tmp_path, corpus_file):
    """FSDP1 cannot shard CPU processes (FSDP2 does: test_sharded.py); hfkit says so before anything is written."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}
    out = tmp_path / "fsdp-cpu"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hfkit",
                             "pretrain", "gpt2-clm-tiny", f"data.train={corpus_file}", f"output_dir={out}",
                             "tokenizer.vocab_size=200", "train.max_steps=2", "train.report_to=[]"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "FSDP version 1 cannot shard CPU processes" in result.stderr + result.stdout
    assert not out.exists()
