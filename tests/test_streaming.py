"""Streaming pretraining (data.streaming): the corpus is never materialised, each rank reads its own share, every
block is used at most once per epoch, and a run killed (SIGTERM) and resumed trains on exactly the blocks an
uninterrupted run does.

Blocks are counted through document tags: every document starts with its own word (d0, d1, ...) and a word-level
tokenizer gives each tag one token, so a tag's count in the trained blocks is how often its document was used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from conftest import synthetic_documents

N_DOCS = 120


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """Four text files of tagged documents and a word-level tokenizer: {"files", "tokenizer", "tags"}."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tagged")
    docs = [f"d{i} {text}" for i, text in enumerate(synthetic_documents(N_DOCS, seed=3))]
    files = []
    for part in range(4):
        path = root / f"part{part}.txt"
        path.write_text("\n".join(docs[part::4]) + "\n", encoding="utf-8")
        files.append(str(path))
    words = sorted({w for d in docs for w in d.split()})
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                        unk_token="<unk>", model_max_length=32)
    tokenizer.save_pretrained(root / "tokenizer")
    tags = {vocab[f"d{i}"]: i for i in range(N_DOCS)}
    return {"files": files, "tokenizer": str(root / "tokenizer"), "tags": tags}


def tag_sequence(blocks, tags) -> list[int]:
    return [tags[t] for ids in blocks for t in ids if t in tags]


def test_ranks_partition_the_stream_and_each_epoch_uses_every_document_once(tagged):
    from transformers import AutoTokenizer

    from hfkit.config import DataConfig
    from hfkit.streaming import PackedStream, open_text_stream

    tokenizer = AutoTokenizer.from_pretrained(tagged["tokenizer"])
    d = DataConfig(train=tagged["files"], streaming=True, shuffle_buffer=50)
    per_rank = []
    for rank in range(2):
        stream = PackedStream(open_text_stream(d, seed=7, rank=rank, world_size=2), tokenizer, objective="clm",
                              block_size=16, whole_word=False, seed=7, chunk_documents=8, rank=rank, world_size=2)
        blocks, epoch_end = [], None
        for block in stream:  # endless: read 30 blocks into the second epoch
            blocks.append(block["input_ids"])
            if epoch_end is None and stream.marks[-1][1] == 1:
                epoch_end = stream.marks[-1][0]  # index of the second epoch's first block
            if epoch_end is not None and len(blocks) == epoch_end + 30:
                break
        first, second = tag_sequence(blocks[:epoch_end], tagged["tags"]), tag_sequence(blocks[epoch_end:], tagged["tags"])
        assert len(first) == len(set(first))  # no document twice in an epoch
        assert set(second) <= set(first) and len(second) == len(set(second))
        per_rank.append(set(first))
    assert not per_rank[0] & per_rank[1]  # the ranks' shares are disjoint ...
    assert per_rank[0] | per_rank[1] == set(range(N_DOCS))  # ... and together cover the corpus


def test_position_resumes_exactly_where_blocks_were_consumed(tagged):
    from transformers import AutoTokenizer

    from hfkit.config import DataConfig
    from hfkit.streaming import PackedStream, open_text_stream

    tokenizer = AutoTokenizer.from_pretrained(tagged["tokenizer"])
    d = DataConfig(train=tagged["files"], streaming=True, shuffle_buffer=50)

    def stream(start=None):
        return PackedStream(open_text_stream(d, seed=1), tokenizer, objective="clm", block_size=16, whole_word=False,
                            seed=1, chunk_documents=8, start=start)

    reference = stream()
    it = iter(reference)
    blocks = [next(it)["input_ids"] for _ in range(700)]  # more than two epochs
    epochs = {m[1] for m in reference.marks}
    assert {0, 1, 2} <= epochs
    for consumed in (0, 1, 37, 301, 555):
        position = reference.position(consumed)
        if consumed >= 301:
            assert position["documents"] > 0 or position["epoch"] > 0  # raw documents are skipped, not re-tokenized
        resumed = iter(stream(position))
        assert [next(resumed)["input_ids"] for _ in range(50)] == blocks[consumed:consumed + 50], consumed
        # A checkpoint without the position file: counted from the start, re-tokenizing (slower, same blocks).
        counted = iter(stream({"epoch": 0, "documents": 0, "first_block": 0, "blocks_consumed": consumed}))
        assert [next(counted)["input_ids"] for _ in range(5)] == blocks[consumed:consumed + 5]


def test_saved_positions_are_checked_against_the_checkpoint(tmp_path):
    from hfkit.errors import ConfigError
    from hfkit.streaming import load_position

    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 10}))
    assert load_position(tmp_path, 0, 2, 8) == {"epoch": 0, "documents": 0, "first_block": 0, "blocks_consumed": 80}
    saved = {"epoch": 1, "documents": 300, "first_block": 77, "blocks_consumed": 80, "world_size": 2, "blocks_per_step": 8}
    (tmp_path / "stream_state-rank1.json").write_text(json.dumps(saved))
    assert load_position(tmp_path, 1, 2, 8)["documents"] == 300
    with pytest.raises(ConfigError, match="same"):  # resumed with 4 processes: the shares would differ
        load_position(tmp_path, 1, 4, 8)


def cfg(tagged, out, **train):
    return {"objective": "clm", "output_dir": str(out), "model": {"preset": "gpt2-tiny",
            "overrides": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}},
            "tokenizer": {"path": tagged["tokenizer"]},
            "data": {"train": tagged["files"], "streaming": True, "block_size": 16, "shuffle_buffer": 50},
            "train": {"max_steps": 80, "batch_size": 4, "learning_rate": 1e-3, "logging_steps": 5, "save_steps": 20,
                      "report_to": [], "seed": 5, **train}}


def test_killed_and_resumed_streaming_run_sees_each_block_at_most_once_per_epoch(tagged, tmp_path, monkeypatch):
    import torch
    from transformers import Trainer, TrainerCallback

    import importlib

    import hfkit
    import hfkit.streaming
    from hfkit.errors import Interrupted

    monkeypatch.setattr(hfkit.streaming, "CHUNK_DOCUMENTS", 8)  # many chunks: resuming skips raw documents
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setenv("HFKIT_CACHE", str(tmp_path / "hfkit-cache"))
    trained: list[list[list[int]]] = []  # the blocks of every optimizer micro-step, in order
    original_step = Trainer.training_step

    def recording_step(self, model, inputs, *args, **kwargs):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        trained[-1].extend(row[m.bool()].tolist() for row, m in zip(ids, mask))
        return original_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", recording_step)

    class KillAt(TrainerCallback):  # what a cluster's preemption does: SIGTERM to the training process
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 62:
                os.kill(os.getpid(), signal.SIGTERM)

    recipe = importlib.import_module("hfkit.pretrain")  # the module (hfkit.pretrain is also the API function)
    original_build = recipe.build_trainer

    def build_with_kill(*args, **kwargs):
        trainer = original_build(*args, **kwargs)
        trainer.add_callback(KillAt())
        return trainer

    trained.append([])
    whole = hfkit.pretrain(cfg(tagged, tmp_path / "whole"))
    monkeypatch.setattr(recipe, "build_trainer", build_with_kill)
    trained.append([])
    with pytest.raises(Interrupted):
        hfkit.pretrain(cfg(tagged, tmp_path / "killed"))
    monkeypatch.setattr(recipe, "build_trainer", original_build)
    assert json.loads((tmp_path / "killed" / "checkpoint-62" / "stream_state-rank0.json").read_text())["epoch"] == 1
    trained.append([])
    resumed = hfkit.pretrain(cfg(tagged, tmp_path / "killed", resume="auto"))

    uninterrupted, interrupted = trained[0], trained[1] + trained[2]
    assert len(uninterrupted) == 80 * 4 and len(trained[1]) == 62 * 4
    assert interrupted == uninterrupted  # the resumed run trained on exactly the blocks, in the same order
    tags = tag_sequence(uninterrupted, tagged["tags"])
    assert len(tags) > N_DOCS  # the run went past the end of the data into a second epoch
    first, second = tags[:N_DOCS], tags[N_DOCS:]
    assert sorted(first) == list(range(N_DOCS))  # epoch 1: every document exactly once
    assert max(Counter(second).values()) == 1  # epoch 2 so far: none twice
    assert resumed.metrics["global_step"] == 80
    a = torch.load(whole.output_dir / "checkpoint-80" / "optimizer.pt", weights_only=True)
    b = torch.load(resumed.output_dir / "checkpoint-80" / "optimizer.pt", weights_only=True)
    assert all(torch.equal(x["exp_avg"], y["exp_avg"]) for x, y in zip(a["state"].values(), b["state"].values()))
    # Nothing was materialised: no Arrow copy of the text, no tokenized cache.
    assert not list((tmp_path / "hf-datasets").rglob("*.arrow"))
    assert not (tmp_path / "hfkit-cache" / "tokenized").exists()


@pytest.mark.slow  # ~11 s
@pytest.mark.distributed
def test_accelerate_launch_streaming_two_ranks(tagged, tmp_path):
    out = tmp_path / "two"
    done = subprocess.run(  # --multi_gpu with Trainer's use_cpu: DDP over gloo (`--cpu` would start one process)
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hfkit", "pretrain",
         "gpt2-clm-tiny", f"data.train={tagged['files']}", "data.streaming=true", f"tokenizer.path={tagged['tokenizer']}",
         f"output_dir={out}", "data.block_size=16", "train.max_steps=10", "train.save_steps=10", "train.batch_size=4",
         "train.report_to=[]"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    states = [json.loads((out / "checkpoint-10" / f"stream_state-rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["blocks_consumed"] for s in states] == [40, 40] and all(s["world_size"] == 2 for s in states)
    assert done.stderr.count("[hfkit] done:") == 1 and "2 of its 4 shards to each of 2 processes" in done.stderr


def test_streaming_mlm_trains_its_tokenizer_from_the_stream_and_learns(tmp_path, corpus_file):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    import hfkit
    from conftest import tiny_overrides

    validation = tmp_path / "validation.txt"
    validation.write_text("\n".join(synthetic_documents(40, seed=9)) + "\n", encoding="utf-8")
    run = hfkit.pretrain(tiny_overrides("mlm", corpus_file, tmp_path / "mlm", **{
        "data.streaming": True, "data.validation": str(validation), "mlm.whole_word": True,
        "tokenizer.max_documents": 200}))
    m = run.metrics
    assert m["global_step"] == 120 and "train_blocks" not in m  # a stream has no known size
    assert m["perplexity"] < 0.5 * m["perplexity_before"]  # it learned the grammar
    assert len(AutoTokenizer.from_pretrained(run.output_dir)) > 100  # trained on the stream's first 200 documents
    AutoModelForMaskedLM.from_pretrained(run.output_dir)  # plain transformers loads it


def _rank_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun started (Linux /proc)."""
    from pathlib import Path

    ranks = {}
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        env = dict(item.split("=", 1) for item in Path(f"/proc/{child}/environ").read_bytes().decode(
            errors="replace").split("\0") if "=" in item)
        if "RANK" in env:
            ranks[int(env["RANK"])] = int(child)
    return ranks


@pytest.mark.distributed
@pytest.mark.slow  # ~25 s
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_sigterm_to_one_rank_stops_both_at_one_step_and_the_stream_resumes(tagged, tmp_path):
    """Preemption rarely reaches every rank in the same step: SIGTERM to rank 1 alone must stop both ranks at the
    same step with one complete checkpoint (no hang), and a resumed 2-process stream must finish in sync."""
    import time

    out = tmp_path / "preempted"
    common = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hfkit", "pretrain",
              "gpt2-clm-tiny", f"data.train={tagged['files']}", "data.streaming=true",
              f"tokenizer.path={tagged['tokenizer']}", f"output_dir={out}", "data.block_size=16", "train.batch_size=4",
              "train.save_steps=100000", "train.report_to=[]"]
    proc = subprocess.Popen([*common, "train.max_steps=100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 120
        while not (out / "hfkit.yaml").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(3)  # training is under way
        os.kill(_rank_pids(proc.pid)[1], signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "stopped by SIGTERM at step" in stderr  # rank 1
    assert "stopped by a signal to another process of the run at step" in stderr  # rank 0, same step below
    steps = {int(line.split(" at step ")[1].split(";")[0]) for line in stderr.splitlines() if "stopped by" in line}
    assert len(steps) == 1
    step = steps.pop()
    checkpoint = out / f"checkpoint-{step}"
    assert (checkpoint / "trainer_state.json").is_file()
    assert all((checkpoint / f"stream_state-rank{r}.json").is_file() for r in (0, 1))

    done = subprocess.run([*common, f"train.max_steps={step + 10}", "train.resume=auto"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == step + 10 and metrics["ranks_in_sync"] is True
