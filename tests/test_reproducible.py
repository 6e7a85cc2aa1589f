"""The same from-scratch recipe twice gives the same model: identical tokenizer files and bit-identical weights in
fresh processes (each with an empty cache, so nothing is reused), and the same tokenizer under a 2-process launch.

WordPiece is the case that used to fail: tokenizers' own trainer orders its `##` pieces by hash-map iteration, so
two processes trained different vocabularies from 300 news articles (see hfkit/tokenizer.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest


def recipe_args(out) -> list[str]:
    return ["pretrain", "bert-mlm-tiny", "data.train=builtin:news-articles", "data.max_documents=300",
            f"output_dir={out}", "tokenizer.vocab_size=2000", "data.block_size=32", "data.validation_split=0.05",
            "train.max_steps=4", "train.save_steps=4", "train.eval_steps=4", "train.logging_steps=1",
            "train.report_to=[]"]


def launch(prefix: list[str], out, cache) -> None:
    env = {**os.environ, "HFKIT_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "datasets")}
    done = subprocess.run([*prefix, "-m", "hfkit", *recipe_args(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def tokenizer_files(run) -> dict[str, str]:
    names = [p for p in run.iterdir() if p.name.startswith(("tokenizer", "vocab", "special_tokens", "merges"))]
    assert any(p.name == "tokenizer.json" for p in names)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in names}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("same-recipe")
    for name in ("a", "b"):
        launch([sys.executable], root / name, root / f"cache-{name}")
    return root


def test_same_recipe_twice_gives_identical_tokenizer_and_weights(two_runs):
    a, b = two_runs / "a", two_runs / "b"
    assert tokenizer_files(a) == tokenizer_files(b)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


@pytest.mark.slow  # ~20 s
@pytest.mark.distributed
def test_two_process_launch_trains_the_same_tokenizer(two_runs, tmp_path):
    launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tmp_path / "ddp",
           tmp_path / "cache")
    assert tokenizer_files(tmp_path / "ddp") == tokenizer_files(two_runs / "a")
