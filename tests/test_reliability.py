"""Reliability: exact resume after SIGKILL, SIGTERM checkpoints, crash-safe final save, NaN guard, and one clear
line (right exit code, no traceback, existing outputs untouched) for every bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hfkit
from hfkit.errors import DiskFull, TrainingFailed

from conftest import signal_once_training, tiny_overrides

GPT_NO_DROPOUT = "model.overrides={resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0}"


def clm_args(corpus, tokenizer_dir, out, *extra):
    return ["pretrain", "gpt2-clm-tiny", f"data.train={corpus}", f"output_dir={out}", f"tokenizer.path={tokenizer_dir}",
            GPT_NO_DROPOUT, "data.block_size=32", "data.validation_split=0", "train.batch_size=8",
            "train.logging_steps=1", "train.report_to=[]", "train.save_total_limit=null", *extra]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def tokenizer_dir(clm_run):
    return clm_run.output_dir  # a fixed tokenizer: trained tokenizers differ from process to process


def test_sigterm_saves_a_resumable_checkpoint(tmp_path, corpus_file, tokenizer_dir):
    out = tmp_path / "term"
    code, rest = signal_once_training(clm_args(corpus_file, tokenizer_dir, out, "train.max_steps=100000",
                                               "train.save_steps=100000"), signal.SIGTERM)
    assert code == 130, rest
    assert "stopped by SIGTERM" in rest and "train.resume=auto" in rest and "Traceback" not in rest
    saved = [p for p in out.iterdir() if p.name.startswith("checkpoint-")]
    assert len(saved) == 1 and (saved[0] / "trainer_state.json").is_file()
    step = json.loads((saved[0] / "trainer_state.json").read_text())["global_step"]
    assert 0 < step < 100000 and not (out / "config.json").exists()
    done = subprocess.run([sys.executable, "-m", "hfkit", *clm_args(corpus_file, tokenizer_dir, out,
                                                                     f"train.max_steps={step + 3}", "train.resume=auto")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["global_step"] == step + 3


def test_crash_during_final_save_leaves_nothing_loadable(tmp_path, corpus_file, monkeypatch):
    from transformers import AutoModelForMaskedLM, PreTrainedModel

    from hfkit.training import FINAL_TMP

    original = PreTrainedModel.save_pretrained

    def broken_save(self, save_directory, *args, **kwargs):
        if Path(save_directory).name != FINAL_TMP:  # checkpoints save normally; only the final save fails
            return original(self, save_directory, *args, **kwargs)
        Path(save_directory, "model.safetensors").write_bytes(b"\x00" * 100)  # half a file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", broken_save)
    out = tmp_path / "crash"
    with pytest.raises(DiskFull, match="no space left on the device writing"):
        hfkit.pretrain(tiny_overrides("mlm", corpus_file, out, **{"train.max_steps": 4, "train.save_steps": 2}))
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    with pytest.raises((OSError, ValueError)):  # transformers: no config.json -> not a model folder
        AutoModelForMaskedLM.from_pretrained(out)
    assert (out / "checkpoint-4" / "trainer_state.json").is_file()  # the checkpoints are intact
    AutoModelForMaskedLM.from_pretrained(out / "checkpoint-4")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus_file, monkeypatch):
    from transformers import GPT2LMHeadModel

    forward = GPT2LMHeadModel.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls["n"] += 1 if self.training else 0
        if self.training and calls["n"] > 7 and out.loss is not None:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(GPT2LMHeadModel, "forward", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingFailed, match=r"the training loss became nan at step 8; stopped, the last good checkpoint is .*checkpoint-5"):
        hfkit.pretrain(tiny_overrides("clm", corpus_file, out, **{"train.max_steps": 50, "train.save_steps": 5,
                                                                   "train.logging_steps": 1,
                                                                   "train.eval_before_training": False}))
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-5"]
    assert not (out / "config.json").exists()


def test_resume_auto_picks_the_newest_checkpoint_that_verifies(tmp_path, capsys):
    from hfkit.checkpoints import write_manifest
    from hfkit.errors import OutputDirError
    from hfkit.training import check_output_dir

    for step, state in ((5, "whole"), (10, "whole"), (15, "corrupt"), (20, "truncated"), (25, "unfinished")):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4)
        (folder / "trainer_state.json").write_text("{}")
        if state != "unfinished":  # killed while being written: files, but no manifest yet
            write_manifest(folder, step=step)
        if state == "corrupt":
            data = bytearray((folder / "model.safetensors").read_bytes())
            data[100] ^= 0xFF
            (folder / "model.safetensors").write_bytes(bytes(data))
        if state == "truncated":
            (folder / "model.safetensors").write_bytes(bytes(range(256)))
    assert check_output_dir(tmp_path, overwrite=False, resume="auto") == str(tmp_path / "checkpoint-10")
    said = capsys.readouterr().err
    assert "skipping checkpoint-25: no manifest (its save did not finish)" in said
    assert "skipping checkpoint-20: model.safetensors has 256 bytes where 1,024 were written" in said
    assert "skipping checkpoint-15: model.safetensors does not match its checksum (corrupted)" in said
    with pytest.raises(OutputDirError, match="checkpoint-15' is damaged: model.safetensors does not match"):
        check_output_dir(tmp_path, overwrite=False, resume=str(tmp_path / "checkpoint-15"))
    with pytest.raises(OutputDirError, match="is not empty"):
        check_output_dir(tmp_path, overwrite=False, resume=None)
