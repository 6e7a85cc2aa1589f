"""The `hfkit` command: fast help, one-line errors with exit codes, recipes, an end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HFKIT = [sys.executable, "-m", "hfkit"]


def run(args, **kwargs):
    env = {**os.environ, **kwargs.pop("env", {})}
    return subprocess.run(HFKIT + args, capture_output=True, text=True, env=env, **kwargs)


def test_help_imports_neither_torch_nor_transformers():
    code = ("import sys, hfkit.cli\n"
            "from typer.testing import CliRunner\n"
            "r = CliRunner().invoke(hfkit.cli.app, ['pretrain', '--help'])\n"
            "assert r.exit_code == 0 and 'KEY=VALUE' in r.output, r.output\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_help_teaches():
    done = run(["--help"])
    assert done.returncode == 0
    for word in ("pretrain", "recipes", "KEY=VALUE"):
        assert word in done.stdout
    sub = run(["pretrain", "--help"])
    assert "hfkit pretrain bert-mlm-tiny data.train=corpus.txt" in sub.stdout and "--overwrite" in sub.stdout


@pytest.mark.parametrize("args, expected", [
    (["pretrain", "no-such-recipe.yaml"], "recipe 'no-such-recipe.yaml' not found"),
    (["pretrain", "bert-mlm-tiny", "train.lerning_rate=1"], "did you mean 'train.learning_rate'?"),
    (["pretrain", "bert-mlm-tiny", "train.batch_size=abc"], "train.batch_size: expected an integer, got 'abc'"),
    (["pretrain", "bert-mlm-tiny", "data.train=/no/such/file.txt"], "data.train: '/no/such/file.txt' does not exist"),
])
def test_user_errors_are_one_line_exit_2(args, expected, tmp_path):
    out = tmp_path / "out"
    done = run(args + [f"output_dir={out}"])
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()  # a run that fails before training leaves nothing behind


def test_debug_shows_the_traceback():
    done = run(["pretrain", "bert-mlm-tiny", "train.batch_size=abc"], env={"HFKIT_DEBUG": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_recipes_lists_and_shows():
    listing = run(["recipes"])
    assert listing.returncode == 0
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    assert "pretrain/bert-mlm-tiny" in names and "pretrain/gpt2-clm-tiny" in names
    shown = run(["recipes", "gpt2-clm-tiny"])
    assert shown.returncode == 0 and "objective: clm" in shown.stdout
    presets = run(["recipes", "--presets"])
    assert "llama-tiny" in presets.stdout and "bert-base" in presets.stdout
    assert run(["recipes", "nope"]).returncode == 2


def test_cli_pretrain_end_to_end(tmp_path, corpus_file):
    out = tmp_path / "cli-run"
    args = ["pretrain", "gpt2-clm-tiny", f"data.train={corpus_file}", f"output_dir={out}", "train.max_steps=5",
            "data.max_documents=100", "tokenizer.vocab_size=300", "data.block_size=32", "train.report_to=[]"]
    done = run(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "perplexity=" in done.stdout and str(out) in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 5
    (out / "marker").write_text("x")
    again = run(args, cwd=tmp_path)
    assert again.returncode == 2 and "is not empty" in again.stderr
    assert (out / "marker").read_text() == "x" and json.loads((out / "metrics.json").read_text()) == metrics
    overwritten = run(args + ["--overwrite"], cwd=tmp_path)
    assert overwritten.returncode == 0, overwritten.stderr[-2000:]


def test_cli_finetune_predict_evaluate(tmp_path, mlm_run):
    import pandas as pd

    rows = [("the cat sees the dog .", "animal"), ("the doctor helps the child .", "person")] * 40
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "clf"
    done = run(["finetune", "classification-lora", f"model.path={mlm_run.output_dir}",
                f"data.train={tmp_path / 'train.csv'}", f"output_dir={out}", "train.epochs=1", "train.report_to=[]"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "eval_accuracy=" in done.stdout and "trainable_params=" in done.stdout
    predicted = run(["predict", str(out), "the cat sees the dog .", "the doctor helps the child ."])
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("animal", "person") for line in lines)
    jsonl = tmp_path / "p.jsonl"
    assert run(["predict", str(out), "--file", str(tmp_path / "train.csv"), "--output", str(jsonl)]).returncode == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 80 and {"text", "label", "score", "scores"} <= set(records[0])
    to_stdout = run(["predict", str(out), "--file", str(tmp_path / "train.csv")])
    assert [json.loads(line)["label"] for line in to_stdout.stdout.splitlines()] == [r["label"] for r in records]
    evaluated = run(["evaluate", str(out), "--data", str(tmp_path / "train.csv")])
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["eval_samples"] == 80
    missing = run(["evaluate", str(out), "--data", str(tmp_path / "nope.csv")])
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bad_method = run(["finetune", "classification-lora", "method=lorra"])
    assert bad_method.returncode == 2 and "did you mean 'lora'" in bad_method.stderr
