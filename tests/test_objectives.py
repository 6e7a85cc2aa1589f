"""Pretraining objectives behind one seam: ELECTRA end to end on a 2-layer model (learning, the run directory,
reloading without hfkit, fine-tuning on it), its shared embeddings stored once, and task-adaptive pretraining on a
labelled file with the evaluation file excluded."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import hfkit
from hfkit.errors import DataError

from conftest import tiny_overrides


@pytest.fixture(scope="module")
def electra_run(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("runs") / "electra"
    return hfkit.pretrain(dict(tiny_overrides("mlm", corpus_file, out), objective="electra"))


def test_electra_loss_falls(electra_run):
    m = electra_run.metrics
    assert m["eval_loss_before"] - m["eval_loss"] > 10.0, m  # 50 x the detection loss + the generator's MLM loss
    # The generator learns the grammar (perplexity ~200 untrained); in 120 steps the discriminator gets as far as
    # the base rate of replacements (answering "original" everywhere, ~89% here), and no further.
    assert m["generator_perplexity"] < 30 and m.get("perplexity") is None  # a mixed loss has no perplexity
    assert m["rtd_accuracy"] >= m["rtd_accuracy_all_original"] - 0.005, m


ELECTRA_CHECK = """
import sys, torch
from transformers import (AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoModelForSequenceClassification,
                          AutoModelForTokenClassification, AutoTokenizer)
root = sys.argv[1]
tok = AutoTokenizer.from_pretrained(root)
batch = tok(["the clever doctor sees the horse ."], return_tensors="pt")
discriminator = AutoModelForPreTraining.from_pretrained(root)
encoder = AutoModel.from_pretrained(root)
with torch.no_grad():
    assert torch.equal(discriminator.electra(**batch).last_hidden_state, encoder(**batch).last_hidden_state)
AutoModelForSequenceClassification.from_pretrained(root, num_labels=2)
AutoModelForTokenClassification.from_pretrained(root, num_labels=3)
generator = AutoModelForMaskedLM.from_pretrained(root + "/generator")
same = torch.equal(generator.electra.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)
in_checkpoint = AutoModel.from_pretrained(root + "/checkpoint-120/discriminator")
assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), in_checkpoint.state_dict().values()))
assert "hfkit" not in sys.modules
print(type(discriminator).__name__, type(generator).__name__, generator.config.hidden_size, same)
"""


def test_electra_run_loads_in_plain_transformers(electra_run):
    out = subprocess.run([sys.executable, "-c", ELECTRA_CHECK, str(electra_run.output_dir)], capture_output=True,
                         text=True, check=True).stdout.split()
    # The generator is a quarter as wide (32 of 128) and shares the discriminator's embeddings.
    assert out == ["ElectraForPreTraining", "ElectraForMaskedLM", "32", "True"], out


@pytest.fixture(scope="module")
def electra_finetuned(electra_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("electra-ft")
    rows = [("the cat sees the dog .", "animal"), ("the doctor helps the child .", "person")] * 30
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(d / "train.csv", index=False)
    return hfkit.finetune("classification-full", output_dir=str(d / "ft"), model={"path": str(electra_run.output_dir)},
                          data={"train": str(d / "train.csv")}, train={"epochs": 3, "learning_rate": 1e-3, "report_to": []})


def test_fine_tuning_an_electra_discriminator_runs(electra_finetuned):
    config = json.loads((electra_finetuned.output_dir / "config.json").read_text())
    assert config["architectures"] == ["ElectraForSequenceClassification"] and electra_finetuned.metrics["global_step"] > 0


@pytest.mark.xfail(strict=True, reason="known: the discriminator sits at the constant guess (here after 120 steps; in "
                   "benchmarks/pretrain_payoff.py up to 30M tokens) and its features no longer separate the classes, "
                   "so fine-tuning stays at chance where the random-init twin learns")
def test_fine_tuning_an_electra_discriminator_learns(electra_finetuned):
    assert electra_finetuned.metrics["eval_accuracy"] == 1.0, electra_finetuned.metrics


def test_shared_parameters_are_stored_once_and_restored(electra_run):
    import torch

    from hfkit.config import PretrainConfig
    from hfkit.objectives import get_objective
    from hfkit.tokenizer import load_tokenizer

    cfg = PretrainConfig(objective="electra")
    cfg.model.preset = "bert-tiny"
    tokenizer = load_tokenizer(str(electra_run.output_dir))
    objective = get_objective("electra")
    trained, fresh = objective.build_model(cfg, tokenizer), objective.build_model(cfg, tokenizer)
    state = trained.state_dict()
    assert not any(k.startswith(("generator.electra.embeddings.", "generator.generator_lm_head.weight")) for k in state)
    fresh.load_state_dict(state, strict=True)
    words = fresh.discriminator.electra.embeddings.word_embeddings.weight
    assert fresh.generator.generator_lm_head.weight is words and fresh.generator.electra.embeddings.word_embeddings.weight is words
    assert torch.equal(words, trained.discriminator.electra.embeddings.word_embeddings.weight)


def test_task_adaptive_pretraining_on_a_labelled_file(tmp_path, corpus_file):
    texts = corpus_file.read_text().splitlines()
    pd.DataFrame({"text": texts[:300], "label": ["x"] * 300}).to_csv(tmp_path / "task.csv", index=False)
    pd.DataFrame({"text": texts[300:320], "label": ["x"] * 20}).to_csv(tmp_path / "test.csv", index=False)
    overrides = tiny_overrides("mlm", tmp_path / "task.csv", tmp_path / "tapt", **{"train.max_steps": 10,
                                                                                  "data.exclude": str(tmp_path / "test.csv")})
    assert hfkit.pretrain(overrides).metrics["global_step"] == 10  # labels ignored, the excluded rows absent
    leaked = tiny_overrides("mlm", tmp_path / "task.csv", tmp_path / "leak", **{"data.exclude": str(tmp_path / "task.csv")})
    with pytest.raises(DataError, match=r"300 document\(s\) also appear in data.exclude"):
        hfkit.pretrain(leaked)
    assert not (tmp_path / "leak").exists()


PAIR_CHECK = """
import sys, torch
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification, AutoTokenizer
root = sys.argv[1]
tok = AutoTokenizer.from_pretrained(root)
model = AutoModelForPreTraining.from_pretrained(root)
batch = tok("the clever doctor sees the horse .", "the old cat helps the child .", return_tensors="pt")
with torch.no_grad():
    out = model(**batch)
AutoModelForSequenceClassification.from_pretrained(root, num_labels=2)
assert "hfkit" not in sys.modules
second = len(tok("the old cat helps the child .", add_special_tokens=False)["input_ids"]) + 1  # with its [SEP]
print(type(model).__name__, tuple(out.seq_relationship_logits.shape), int(batch["token_type_ids"].sum()) == second)
"""


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_sentence_pair_objectives(objective, tmp_path, corpus_file):
    result = hfkit.pretrain(dict(tiny_overrides("mlm", corpus_file, tmp_path / objective, **{"train.max_steps": 60}),
                                 objective=objective))
    m = result.metrics
    assert m["eval_loss_before"] - m["eval_loss"] > 1.0, m  # masked-LM + the pair task
    assert m["mlm_perplexity"] < 60 and 0.0 <= m[f"{objective}_accuracy"] <= 1.0, m
    out = subprocess.run([sys.executable, "-c", PAIR_CHECK, str(result.output_dir)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["BertForPreTraining", "(1,", "2)", "True"], out  # segment B and its [SEP] are token type 1
    if objective == "sop":
        return  # the same model class as nsp: one fine-tune shows it
    rows = [("the cat sees the dog .", "animal"), ("the doctor helps the child .", "person")] * 30
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    tuned = hfkit.finetune("classification-full", output_dir=str(tmp_path / "ft"), model={"path": str(result.output_dir)},
                           data={"train": str(tmp_path / "train.csv")}, train={"epochs": 3, "learning_rate": 1e-3, "report_to": []})
    assert tuned.metrics["eval_accuracy"] == 1.0


def test_sentence_pairs_cut_at_sentence_boundaries():
    import random

    from hfkit.objectives.sentence_pairs import make_pairs, split_sentences

    assert split_sentences('He left. "Why?" she asked!\nNext line') == ["He left.", '"Why?"', "she asked!", "Next line"]
    docs = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9]], [[10, 11, 12]]]
    for task in ("nsp", "sop"):
        pairs = make_pairs(docs, max_tokens=100, task=task, rng=random.Random(0))
        assert len(pairs) == 2  # the one-sentence document gives none
        for a, b, label in pairs:
            whole = a + b
            if task == "sop":  # the same tokens, in order or swapped
                assert sorted(whole) in ([1, 2, 3, 4, 5, 6], [7, 8, 9]) and (whole == sorted(whole)) == (label == 0)
            elif label == 0:
                assert whole in ([1, 2, 3, 4, 5, 6], [7, 8, 9])


def test_contrastive_simcse(tmp_path, corpus_file):
    pd.DataFrame({"text1": ["the cat sees the dog .", "the old doctor helps the child .", "the cat sees the dog ."],
                  "text2": ["the cat sees the horse .", "the cat sees the dog .", "the young doctor helps the child ."],
                  "score": [0.9, 0.1, 0.2]}).to_csv(tmp_path / "sim.csv", index=False)
    result = hfkit.pretrain(dict(tiny_overrides("mlm", corpus_file, tmp_path / "simcse",
                                                **{"train.max_steps": 40, "contrastive.similarity": str(tmp_path / "sim.csv")}),
                                 objective="contrastive"))
    m = result.metrics
    assert m["eval_loss_before"] - m["eval_loss"] > 0.5, m  # ln(16) = 2.8 for a batch of 16 at chance
    assert -1.0 <= m["similarity_spearman"] <= 1.0 and m["similarity_pairs"] == 3 and "similarity_spearman_before" in m
    out = result.output_dir
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    from transformers import AutoModel

    assert type(AutoModel.from_pretrained(out)).__name__ == "BertModel"


def test_contrastive_crop_views_are_spans_of_one_document(tmp_path, corpus_file):
    import torch
    from transformers import AutoTokenizer

    from hfkit.models import resolve_model_path
    from hfkit.objectives.contrastive import CropCollator

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("builtin:all-minilm-l6-v2"))
    collate = CropCollator(tokenizer, crop_tokens=4)
    docs = [list(range(1000, 1020)), list(range(2000, 2003))]
    torch.manual_seed(0)
    batch = collate([{"input_ids": d} for d in docs])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for view in ("input_ids", "pair_input_ids"):
        mask = batch[view.replace("input_ids", "attention_mask")]
        for row, m, doc in zip(batch[view].tolist(), mask.tolist(), docs):
            row = row[:sum(m)]
            assert row[0] == cls and row[-1] == sep
            inner = row[1:-1]
            assert len(inner) == min(4, len(doc)) and inner[0] in doc and inner == list(range(inner[0], inner[0] + len(inner)))
    differ = any(not torch.equal(a, b) for a, b in zip(batch["input_ids"], batch["pair_input_ids"]))
    assert differ  # drawn independently (a 20-token document has 17 spans of 4)

    result = hfkit.pretrain(dict(tiny_overrides("mlm", corpus_file, tmp_path / "crops",
                                                **{"train.max_steps": 40, "contrastive.views": "crop",
                                                   "contrastive.crop_tokens": 12}), objective="contrastive"))
    m = result.metrics
    assert m["eval_loss_before"] - m["eval_loss"] > 0.5, m  # which document a span came from, out of 16
    # tokens/s counts the spans read (every document here has >= 14 tokens: 12 + [CLS] + [SEP]), not the documents
    assert m["train_tokens"] == 40 * 16 * 14, m


def test_spearman_with_ties():
    from hfkit.objectives.contrastive import rank, spearman

    assert rank([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
