"""Pretraining end to end on 2-layer models: learning, run directory, reload without hfkit, resume, refusals."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

import hfkit
from hfkit.errors import ConfigError, OutputDirError

from conftest import tiny_overrides


@pytest.mark.parametrize("fixture", ["mlm_run", "clm_run"])
def test_loss_goes_down_on_a_learnable_corpus(fixture, request):
    result = request.getfixturevalue(fixture)
    m = result.metrics
    assert m["eval_loss_before"] - m["eval_loss"] > 1.5, m  # from ~ln(vocab) = 5.3 towards the grammar's entropy
    assert math.isfinite(m["perplexity"]) and m["perplexity"] < m["perplexity_before"] / 4
    assert m["global_step"] == 120


@pytest.mark.parametrize("fixture", ["mlm_run", "clm_run"])
def test_run_directory_contract(fixture, request):
    result = request.getfixturevalue(fixture)
    out = result.output_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "hfkit.yaml",
                 "metrics.json", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "checkpoint-120" / "trainer_state.json").is_file()
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(result.metrics)
    metrics = result.metrics
    assert metrics["total_params"] >= metrics["trainable_params"] > 0
    rerun = hfkit.load_config("pretrain", str(out / "hfkit.yaml"))
    assert rerun == result.config


MLM_CHECK = """
import sys
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
model = AutoModelForMaskedLM.from_pretrained(sys.argv[1]); tok = AutoTokenizer.from_pretrained(sys.argv[1])
fill = pipeline("fill-mask", model=model, tokenizer=tok)
out = fill(f"the clever doctor {tok.mask_token} the horse .")
assert "hfkit" not in sys.modules
print(" ".join(o["token_str"] for o in out))
"""

CLM_CHECK = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]); tok = AutoTokenizer.from_pretrained(sys.argv[1])
gen = pipeline("text-generation", model=model, tokenizer=tok)
out = gen("the clever", max_new_tokens=6, do_sample=False)
assert "hfkit" not in sys.modules
print(out[0]["generated_text"])
"""


def test_mlm_run_loads_in_plain_transformers(mlm_run, corpus_file):
    done = subprocess.run([sys.executable, "-c", MLM_CHECK, str(mlm_run.output_dir)], capture_output=True, text=True,
                          cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    candidates = done.stdout.strip().splitlines()[-1].split()
    corpus = corpus_file.read_text()
    # Real text from the corpus (a word or a ##piece of one), never a special or unknown token.
    assert len(candidates) == 5 and all(c.removeprefix("##") in corpus for c in candidates), candidates


def test_clm_run_loads_in_plain_transformers(clm_run):
    done = subprocess.run([sys.executable, "-c", CLM_CHECK, str(clm_run.output_dir)], capture_output=True, text=True,
                          cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout.strip().splitlines()[-1]
    assert text.startswith("the clever") and len(text.split()) > 3, text


def test_existing_output_dir_is_refused_and_left_alone(tmp_path, corpus_file):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match="is not empty; pass --overwrite"):
        hfkit.pretrain(tiny_overrides("mlm", corpus_file, out))
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"


def test_block_size_beyond_a_loaded_models_positions(tmp_path, mlm_run, corpus_file):
    cfg = tiny_overrides("mlm", corpus_file, tmp_path / "cont", **{"data.block_size": 600})
    cfg["model"] = {"path": str(mlm_run.output_dir)}
    with pytest.raises(ConfigError, match="data.block_size: 600 exceeds the model's 512 positions"):
        hfkit.pretrain(cfg)


def test_continued_pretraining_from_a_run_directory(tmp_path, mlm_run, corpus_file):
    cfg = tiny_overrides("mlm", corpus_file, tmp_path / "cont", **{"train.max_steps": 10})
    cfg["model"] = {"path": str(mlm_run.output_dir)}
    result = hfkit.pretrain(cfg)
    # It starts from the trained model, not from scratch: already near the first run's final loss.
    assert result.metrics["eval_loss_before"] < mlm_run.metrics["eval_loss_before"] - 1.0
    assert result.metrics["total_params"] == mlm_run.metrics["total_params"]


def test_resume_continues_from_the_checkpoint_step(tmp_path, corpus_file, capfd):
    out = tmp_path / "resume"
    first = hfkit.pretrain(tiny_overrides("clm", corpus_file, out, **{"train.max_steps": 6, "train.save_steps": 3,
                                                                      "train.logging_steps": 1}))
    assert first.metrics["global_step"] == 6
    capfd.readouterr()
    second = hfkit.pretrain(tiny_overrides("clm", corpus_file, out, **{"train.max_steps": 10, "train.save_steps": 3,
                                                                       "train.logging_steps": 1, "train.resume": "auto"}))
    assert "resuming from" in capfd.readouterr().err
    state = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())
    logged_steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert logged_steps == list(range(1, 11))  # steps 1-6 from the first run, 7-10 resumed: none repeated
    assert second.metrics["global_step"] == 10
    saved = yaml.safe_load((out / "hfkit.yaml").read_text())
    assert saved["train"]["resume"] == "auto"


def test_python_api_in_process_returns_without_exiting(tmp_path, corpus_file):
    result = hfkit.pretrain(tiny_overrides("mlm", corpus_file, tmp_path / "api"), train={"max_steps": 3},
                            **{"train.eval_before_training": False})
    assert result.output_dir == tmp_path / "api" and result.metrics["global_step"] == 3
    assert "perplexity_before" not in result.metrics and result.metrics["perplexity"] > 0


def test_whole_word_masking_run(tmp_path, corpus_file):
    result = hfkit.pretrain(tiny_overrides("mlm", corpus_file, tmp_path / "wwm", **{"mlm.whole_word": True,
                                                                                    "train.max_steps": 30}))
    assert result.metrics["eval_loss"] < result.metrics["eval_loss_before"] - 1.0


MODERNBERT_CHECK = """
import sys
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoModelForTokenClassification
from transformers import AutoTokenizer, pipeline
path = sys.argv[1]
model = AutoModelForMaskedLM.from_pretrained(path); tok = AutoTokenizer.from_pretrained(path)
out = pipeline("fill-mask", model=model, tokenizer=tok)(f"the clever doctor {tok.mask_token} the horse .")
names = [type(model).__name__] + [type(cls.from_pretrained(path, num_labels=2)).__name__
                                  for cls in (AutoModelForSequenceClassification, AutoModelForTokenClassification)]
assert "hfkit" not in sys.modules
print(" ".join(names), model.config.sparse_prediction, model.config.classifier_pooling)
print(" ".join(o["token_str"] for o in out))
"""


def test_modernbert_preset_learns_loads_and_fine_tunes(tmp_path, corpus_file):
    """The pre-LN, rotary-position preset: masked-LM loss falls with logits only at masked positions (the model's
    own sparse_prediction), the run loads in plain transformers (fill-mask scores every position when no labels are
    given), and a classifier fine-tuned on it learns."""
    import pandas as pd

    result = hfkit.pretrain(tiny_overrides("mlm", corpus_file, tmp_path / "mb", **{"model.preset": "modernbert-tiny"}))
    m = result.metrics
    assert m["eval_loss_before"] - m["eval_loss"] > 1.5, m
    done = subprocess.run([sys.executable, "-c", MODERNBERT_CHECK, str(result.output_dir)], capture_output=True,
                          text=True, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    classes, words = done.stdout.strip().splitlines()[-2:]
    assert classes.split() == ["ModernBertForMaskedLM", "ModernBertForSequenceClassification",
                               "ModernBertForTokenClassification", "True", "mean"], classes
    assert len(words.split()) == 5 and all(w.removeprefix("##") in corpus_file.read_text() for w in words.split())
    full = hfkit.pretrain(tiny_overrides("mlm", corpus_file, tmp_path / "mb-full", **{
        "model.preset": "modernbert-tiny", "mlm.head_on_masked_only": False, "train.max_steps": 4}))
    assert json.loads((full.output_dir / "config.json").read_text())["sparse_prediction"] is False
    assert math.isfinite(full.metrics["eval_loss"])
    rows = [("the cat sees the dog .", "animal"), ("the doctor helps the child .", "person")] * 30
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    tuned = hfkit.finetune("classification-full", output_dir=str(tmp_path / "ft"), model={"path": str(result.output_dir)},
                           data={"train": str(tmp_path / "train.csv")}, train={"epochs": 3, "learning_rate": 1e-3,
                                                                                 "report_to": []})
    assert tuned.metrics["eval_accuracy"] == 1.0
