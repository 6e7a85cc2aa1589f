"""Prediction over files a chunk at a time: input order, resume after a kill with every row written once, several
processes writing the one file a single process writes, parquet output, and the refusals that protect outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NOUNS, VERBS


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, mlm_run):
    """A 2-layer classifier fine-tuned from the session's tiny masked-LM run, and 1,200 varied input rows."""
    import random

    import pandas as pd

    import hfkit

    tmp = tmp_path_factory.mktemp("batch")
    rows = [("the cat sees the dog .", "animal"), ("the doctor helps the child .", "person")] * 40
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp / "train.csv", index=False)
    run = hfkit.finetune("classification-full", **{"model.path": str(mlm_run.output_dir), "data.train": str(tmp / "train.csv"),
                                                   "output_dir": str(tmp / "clf"), "train.epochs": 1,
                                                   "train.report_to": []})
    rng = random.Random(0)
    texts = [" ".join(["the", rng.choice(NOUNS)] + [rng.choice(VERBS), "the", rng.choice(NOUNS)] * rng.randint(1, 6))
             for _ in range(1200)]
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(tmp / "big.csv", index=False)
    return {"run": str(run.output_dir), "input": tmp / "big.csv", "texts": texts, "tmp": tmp}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def hfkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hfkit", *args]


def test_file_prediction_is_in_input_order_and_matches_predict(classifier, tmp_path):
    import pandas as pd

    import hfkit
    from hfkit.inference import predict_file

    out = tmp_path / "p.jsonl"
    summary = predict_file(classifier["run"], str(classifier["input"]), str(out), chunk_rows=100, progress=False)
    records = read_jsonl(out)
    assert summary["rows"] == summary["predicted"] == 1200 and len(records) == 1200
    assert [r["text"] for r in records] == classifier["texts"]
    direct = hfkit.predict(classifier["run"], classifier["texts"][:50])
    for got, want in zip(records, direct):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-5)
    assert not out.with_name("p.jsonl.parts").exists()
    parquet = tmp_path / "p.parquet"
    predict_file(classifier["run"], str(out), str(parquet), chunk_rows=333, progress=False)  # jsonl input
    frame = pd.read_parquet(parquet)
    assert frame["text"].tolist() == classifier["texts"] and frame["label"].tolist() == [r["label"] for r in records]


def test_killed_job_resumes_with_every_row_written_once(classifier, tmp_path):
    """SIGKILL while parts are being written, then --resume: the output equals an uninterrupted run's."""
    from typer.testing import CliRunner

    from hfkit.cli import app

    whole = tmp_path / "whole.jsonl"
    args = ["predict", classifier["run"], "--file", str(classifier["input"]), "--chunk-rows", "20", "--batch-size", "4"]
    assert CliRunner().invoke(app, [*args, "--output", str(whole)]).exit_code == 0
    out = tmp_path / "cut.jsonl"
    parts = tmp_path / "cut.jsonl.parts"
    proc = subprocess.Popen(hfkit_cmd(*args, "--output", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("chunk-*.jsonl"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("chunk-*.jsonl")))
    assert 5 <= done_before < 60 and not out.exists()
    (parts / "chunk-00000059.jsonl.tmp999").write_text('{"text": "half a li')  # a part killed mid-write
    again = CliRunner().invoke(app, [*args, "--output", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = subprocess.run(hfkit_cmd(*args, "--output", str(out), "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert out.read_bytes() == whole.read_bytes() and not parts.exists()
    assert [r["text"] for r in read_jsonl(out)] == classifier["texts"]


@pytest.mark.slow  # ~14 s: two CPU processes under torchrun
def test_two_processes_write_what_one_writes(classifier, tmp_path):
    one = tmp_path / "one.jsonl"
    two = tmp_path / "two.jsonl"
    args = ["predict", classifier["run"], "--file", str(classifier["input"]), "--chunk-rows", "150"]
    assert subprocess.run(hfkit_cmd(*args, "--output", str(one)), capture_output=True).returncode == 0
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hfkit", *args,
                           "--output", str(two)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("predictions written") == 1
    a, b = read_jsonl(one), read_jsonl(two)
    assert [r["text"] for r in b] == classifier["texts"] and [r["label"] for r in a] == [r["label"] for r in b]
    for x, y in zip(a, b):
        assert x["score"] == pytest.approx(y["score"], abs=1e-5)  # another thread count: last digits may move


def test_file_prediction_refusals_keep_outputs_whole(classifier, tmp_path):
    from typer.testing import CliRunner

    from hfkit.cli import app

    out = tmp_path / "p.jsonl"
    out.write_text("precious\n")
    base = ["predict", classifier["run"], "--file", str(classifier["input"])]
    exists = CliRunner().invoke(app, [*base, "--output", str(out)])
    assert exists.exit_code == 2 and "--overwrite" in exists.output and out.read_text() == "precious\n"
    bad = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "p.txt")])
    assert bad.exit_code == 2 and ".jsonl or .parquet" in bad.output
    (tmp_path / "in.csv").write_text("id,words\n1,the cat\n")
    column = CliRunner().invoke(app, ["predict", classifier["run"], "--file", str(tmp_path / "in.csv")])
    assert column.exit_code == 2 and "no column 'text'" in column.output

    from hfkit.errors import OutputDirError
    from hfkit.inference import predict_file

    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"text": t}) + "\n" for t in classifier["texts"][:30]))
    cut = tmp_path / "cut.jsonl"
    cut.with_name("cut.jsonl.parts").mkdir()
    (cut.with_name("cut.jsonl.parts") / "job.json").write_text(json.dumps({"input": "elsewhere"}))
    with pytest.raises(OutputDirError, match="differs in input"):
        predict_file(classifier["run"], str(small), str(cut), resume=True, progress=False)
    predict_file(classifier["run"], str(small), str(cut), overwrite=True, progress=False)
    assert len(read_jsonl(cut)) == 30
    with pytest.raises(OutputDirError, match="complete already"):
        predict_file(classifier["run"], str(small), str(cut), resume=True, progress=False)
