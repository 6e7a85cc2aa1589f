"""Shared fixtures: offline environment, a learnable synthetic corpus, tiny pretraining runs reused across tests."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent

NOUNS = ["cat", "dog", "bird", "horse", "farmer", "teacher", "child", "doctor"]
VERBS = ["sees", "likes", "follows", "helps", "watches", "feeds"]
ADJECTIVES = ["small", "big", "happy", "quiet", "brown", "clever"]


def synthetic_documents(n: int, seed: int = 0) -> list[str]:
    """Documents from a tiny grammar: a model quickly learns what follows 'the' and where verbs go."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(2, 5)):
            sentences.append(f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} "
                             f"the {rng.choice(NOUNS)} .")
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="session", autouse=True)
def _session_caches(tmp_path_factory):
    """Session- and module-scoped fixtures (tiny runs) start before the per-test fixture below: keep them out of
    the user's ~/.cache too (tokenized corpora, the measured peak)."""
    os.environ["HFKIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "hfkit-cache")
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.getbasetemp() / "hf-datasets")


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hfkit-cache"
    monkeypatch.setenv("HFKIT_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-datasets"))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(synthetic_documents(400)) + "\n", encoding="utf-8")
    return path


def tiny_overrides(objective: str, corpus: Path, output_dir: Path, **extra) -> dict:
    """A 2-layer model on the synthetic corpus: a few seconds on 2 CPU cores."""
    preset = "bert-tiny" if objective == "mlm" else "gpt2-tiny"
    cfg = {
        "objective": objective,
        "output_dir": str(output_dir),
        "model": {"preset": preset},
        "tokenizer": {"vocab_size": 200, "min_frequency": 1},
        "data": {"train": str(corpus), "validation_split": 0.1, "block_size": 32},
        "train": {"max_steps": 120, "batch_size": 16, "learning_rate": 3e-3, "logging_steps": 10, "save_steps": 60,
                  "eval_steps": 60, "report_to": [], "eval_before_training": True},
    }
    return with_dotted(cfg, extra)


def with_dotted(cfg: dict, extra: dict) -> dict:
    """Apply {"train.max_steps": 5, ...} to a nested config dict."""
    for dotted, value in extra.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


@pytest.fixture(scope="session")
def mlm_run(tmp_path_factory, corpus_file):
    import hfkit

    out = tmp_path_factory.mktemp("runs") / "mlm"
    return hfkit.pretrain(tiny_overrides("mlm", corpus_file, out))


@pytest.fixture(scope="session")
def clm_run(tmp_path_factory, corpus_file):
    import hfkit

    out = tmp_path_factory.mktemp("runs") / "clm"
    return hfkit.pretrain(tiny_overrides("clm", corpus_file, out))


def signal_once_training(args: list[str], sig) -> tuple[int, str]:
    """Run `hfkit ARGS`, send `sig` once training has started (its first logged loss: the handler is installed),
    and return (exit code, everything it printed)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "hfkit", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "'loss'" in line:
            proc.send_signal(sig)
            break
    lines.append(proc.communicate(timeout=120)[0])
    return proc.returncode, "".join(lines)
