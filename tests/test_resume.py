"""Random choices keyed by (seed, epoch, example index): the same masks whatever the batch size, the process count
or the resume point, and a masked-LM run that is SIGKILLed and resumed ends bit-identical, dropout on."""

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

from conftest import REPO


def mask_config(corpus: Path, tokenizer_dir: Path, out: Path, batch_size: int, **extra) -> dict:
    return {"objective": "mlm", "output_dir": str(out), "model": {"preset": "bert-tiny"},
            "tokenizer": {"path": str(tokenizer_dir)},
            "data": {"train": str(corpus), "validation_split": 0, "block_size": 32},
            "mlm": extra.get("mlm", {}), "train": {"batch_size": batch_size, "report_to": [], "max_steps": 10}}


def dump_masks(tmp_path: Path, config: dict, procs: int) -> dict:
    path = tmp_path / f"config-{procs}-{config['train']['batch_size']}.json"
    path.write_text(json.dumps(config))
    prefix = tmp_path / f"masks-{procs}-{config['train']['batch_size']}"
    script = str(REPO / "tests" / "mask_dump.py")
    if procs == 1:
        command = [sys.executable, script, str(path), str(prefix)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), script, str(path),
                   str(prefix)]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    masks: dict = {}
    for rank in range(procs):
        part = json.loads(Path(f"{prefix}-{rank}.json").read_text())
        both = set(part) & set(masks)  # Accelerate repeats a few examples to give every process full batches
        assert len(both) <= 8 * procs, f"{len(both)} examples went to two processes: the data was not sharded"
        assert all(part[k] == masks[k] for k in both)
        masks.update(part)
    return masks


@pytest.mark.distributed
@pytest.mark.parametrize("whole_word", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["token", "whole-word"])
def test_masks_depend_on_the_example_not_the_batch_or_the_process_count(tmp_path, corpus_file, mlm_run, whole_word):
    settings = {"mlm": {"whole_word": whole_word}}
    one_by_4 = dump_masks(tmp_path, mask_config(corpus_file, mlm_run.output_dir, tmp_path / "a", 4, **settings), 1)
    one_by_8 = dump_masks(tmp_path, mask_config(corpus_file, mlm_run.output_dir, tmp_path / "b", 8, **settings), 1)
    two_by_4 = dump_masks(tmp_path, mask_config(corpus_file, mlm_run.output_dir, tmp_path / "c", 4, **settings), 2)
    epochs = {key.split("/")[0] for key in one_by_4}
    assert epochs == {"0", "1"} and len(one_by_4) > 100
    assert one_by_4 == one_by_8  # every example of both epochs: the same masked positions and labels
    common = set(two_by_4) & set(one_by_4)
    assert len(common) >= len(one_by_4) - 16  # 2 processes may drop or repeat a few to even out the shards
    assert all(two_by_4[k] == one_by_4[k] for k in common)
    # ... and the mask does change from one epoch to the next
    indices = {key.split("/")[1] for key in one_by_4}
    changed = sum(one_by_4[f"0/{i}"] != one_by_4[f"1/{i}"] for i in indices if f"1/{i}" in one_by_4)
    assert changed > 0.9 * len(indices)
    selected = [t != -100 for labels in one_by_4.values() for t in labels]
    assert 0.08 < sum(selected) / len(selected) < 0.2  # ~15% of the (non-special) tokens


def test_collator_draws_nothing_from_the_global_generator(mlm_run):
    from transformers import AutoTokenizer

    from hfkit.collators import MaskedLMCollator
    from hfkit.randomness import KEY

    tok = AutoTokenizer.from_pretrained(mlm_run.output_dir)
    collator = MaskedLMCollator(tok, seed=3)
    rows = [{"input_ids": tok("the small cat sees the dog .")["input_ids"], KEY: [0, i]} for i in range(4)]
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = collator(rows)
    assert torch.equal(torch.get_rng_state(), before)
    again = collator(list(reversed(rows)))  # the same examples in another order and batch position
    assert torch.equal(again["labels"].flip(0), first["labels"])
    assert not torch.equal(MaskedLMCollator(tok, seed=4)(rows)["labels"], first["labels"])  # the run seed matters


def weights_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow  # ~28 s; tests/test_faults.py resumes masked-LM with dropout bit-identically in the default run
def test_masked_lm_sigkill_then_resume_is_bit_identical_with_dropout(tmp_path, corpus_file, mlm_run):
    args = ["pretrain", "bert-mlm-tiny", f"data.train={corpus_file}", f"tokenizer.path={mlm_run.output_dir}",
            "data.block_size=32", "data.validation_split=0", "train.batch_size=8", "train.max_steps=60",
            "train.save_steps=20", "train.report_to=[]", "train.save_total_limit=null", "train.logging_steps=5",
            "train.eval_before_training=false"]  # bert-tiny keeps BERT's dropout 0.1
    straight = subprocess.run([sys.executable, "-m", "hfkit", *args, f"output_dir={tmp_path / 'a'}"],
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "hfkit", *args, f"output_dir={out}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint-20" / "hfkit-manifest.json").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()
    resumed = subprocess.run([sys.executable, "-m", "hfkit", *args, f"output_dir={out}", "train.resume=auto"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    a, b = weights_of(tmp_path / "a"), weights_of(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
