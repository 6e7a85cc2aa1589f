"""Token classification: tag schemes, word alignment, windows, training with each method, prediction spans, and
runs that load without hfkit. Data: a small grammar whose entities need context (an adjective's tag depends on the
noun after it), written as CoNLL and JSONL files by the tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import hfkit
from hfkit.tasks.token_classification import (detect_scheme, encode_words, entities, owners, split_words, to_iob2,
                                              windows, word_predictions)

PEOPLE = ["farmer", "teacher", "child", "doctor"]
ANIMALS = ["cat", "dog", "bird", "horse"]
ADJECTIVES = ["small", "big", "happy", "quiet", "brown", "clever"]
VERBS = ["sees", "likes", "follows", "helps", "watches", "feeds"]


def ner_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """the ADJ NOUN VERB the NOUN . -> the adjective + noun is one entity, the second noun another."""
    def noun():
        return ("per", rng.choice(PEOPLE)) if rng.random() < 0.5 else ("ani", rng.choice(ANIMALS))

    (k1, n1), (k2, n2) = noun(), noun()
    words = ["the", rng.choice(ADJECTIVES), n1, rng.choice(VERBS), "the", n2, "."]
    tags = ["O", f"B-{k1}", f"I-{k1}", "O", "O", f"B-{k2}", "O"]
    return words, tags


def ner_rows(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    return [ner_sentence(rng) for _ in range(n)]


def write_conll(path: Path, rows, separator: str = "\t") -> Path:
    lines = ["-DOCSTART- -X- O O", ""]
    for words, tags in rows:
        lines += [f"{w}{separator}{t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ner(tmp_path_factory, mlm_run):
    """CoNLL train/dev files, and a 2-layer BERT with random weights over the pretraining run's tokenizer (the
    learning checks need inputs that stay apart; see test_finetune.random_bert_dir)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    d = tmp_path_factory.mktemp("ner")
    write_conll(d / "train.conll", ner_rows(240, 0))
    write_conll(d / "dev.txt", ner_rows(60, 1), separator=" ")
    tok = AutoTokenizer.from_pretrained(mlm_run.output_dir)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                               intermediate_size=512, pad_token_id=tok.pad_token_id)).save_pretrained(d / "bert")
    tok.save_pretrained(d / "bert")
    return {"dir": d, "model": d / "bert", "pretrained": mlm_run.output_dir}


def ner_cfg(ner, out, method, **extra) -> dict:
    cfg = {"task": "token_classification", "method": method, "output_dir": str(out),
           "model": {"path": str(ner["model"])},
           "data": {"train": str(ner["dir"] / "train.conll"), "validation": str(ner["dir"] / "dev.txt"),
                    "max_length": 32},
           "train": {"epochs": 6, "batch_size": 16, "learning_rate": 3e-3, "report_to": [], "logging_steps": 10}}
    for key, value in extra.items():
        section, _, name = key.partition(".")
        cfg.setdefault(section, {})[name] = value
    return cfg


# --------------------------------------------------------------------------------------------- schemes
def test_scheme_detection_and_conversion_to_iob2():
    iob1 = [["I-PER", "I-PER", "O", "I-LOC"], ["I-PER", "B-PER", "O"]]
    assert detect_scheme(iob1) == "iob1"
    assert [to_iob2(s, "iob1")[0] for s in iob1] == [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "B-PER", "O"]]
    assert all(not to_iob2(s, "iob1")[1] for s in iob1)  # IOB1's opening I- is converted, not an error
    bioes = [["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]]
    assert detect_scheme(bioes) == "bioes"
    assert to_iob2(bioes[0], "bioes") == (["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-LOC"], [])
    assert detect_scheme([["B-PER", "I-PER", "O"], ["O", "B-LOC"]]) == "iob2"
    assert detect_scheme([["NN", "VB", "DT"]]) == "none"
    tags, invalid = to_iob2(["O", "I-PER", "I-PER", "B-LOC", "I-PER"], "iob2")
    assert tags == ["O", "B-PER", "I-PER", "B-LOC", "B-PER"] and invalid == [1, 4]
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5)]


def test_invalid_tags_are_an_error_or_repaired_and_counted(ner, tmp_path):
    rows = ner_rows(40, 3)
    rows[5] = (rows[5][0], ["O", "O", "I-per"] + rows[5][1][3:])  # I- after O: invalid IOB2
    rows[9] = (rows[9][0], ["O", "O", "I-ani"] + rows[9][1][3:])
    bad = write_conll(tmp_path / "bad.conll", rows)
    # B- after O elsewhere makes this IOB2 (not IOB1), so the I- after O is an error...
    with pytest.raises(hfkit.DataError, match=r"row 6, word 3 \('.*'\): tag I-per follows O, which is invalid IOB2"):
        hfkit.finetune(ner_cfg(ner, tmp_path / "no", "full", **{"data.train": str(bad), "train.epochs": 1}))
    assert not (tmp_path / "no").exists()
    # ...or, asked for, repaired and counted.
    from hfkit.tasks.token_classification import load_tagged

    cfg = hfkit.load_config("finetune", ner_cfg(ner, tmp_path / "x", "full", **{"data.train": str(bad),
                                                                                "data.repair_tags": True}))
    splits, info = load_tagged(cfg)
    assert info.repaired == {"train": 2, "validation": 0}
    assert splits["train"][5]["tags"][2] == "B-per"


def test_integer_tags_without_names_are_a_plain_tag_set(ner, tmp_path):
    from hfkit.tasks.token_classification import load_tagged

    rows = [{"tokens": ["a", "b", "c"], "tags": [0, 1, 2]}, {"tokens": ["c", "a"], "tags": [2, 0]}] * 5
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = hfkit.load_config("finetune", ner_cfg(ner, tmp_path / "x", "full", **{"data.train": str(tmp_path / "t.jsonl"),
                                                                                "data.validation": None}))
    splits, info = load_tagged(cfg)
    assert info.scheme == "none" and info.names == ["0", "1", "2"] and info.metric_config == "tags"


# --------------------------------------------------------------------------------------------- alignment
def test_first_piece_carries_the_tag_or_all_pieces(ner):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ner["model"])
    words = ["the", "catdoghorse", "sees"]  # the middle word splits into several pieces
    pieces = tok(words, is_split_into_words=True)
    assert pieces.word_ids().count(1) > 1
    names = ["O", "B-ani", "I-ani"]
    rows, _ = encode_words([words], [[0, 1, 0]], tok, max_length=32, stride=4, train=True)
    labels = rows[0]["labels"]
    word_ids = pieces.word_ids()
    first = word_ids.index(1)
    assert labels[first] == 1 and all(labels[i] == -100 for i, w in enumerate(word_ids) if w == 1 and i != first)
    assert labels[0] == -100 and labels[-1] == -100  # [CLS], [SEP]
    inside = [0, 2, 2]  # B-ani -> I-ani on later pieces
    rows, _ = encode_words([words], [[0, 1, 0]], tok, max_length=32, stride=4, label_all=True, inside=inside,
                           train=True)
    assert [rows[0]["labels"][i] for i, w in enumerate(word_ids) if w == 1] == [1] + [2] * (word_ids.count(1) - 1)
    assert names[inside[1]] == "I-ani"


def test_byte_level_bpe_gets_a_prefix_space(tmp_path):
    """RoBERTa/GPT-2 tokenizers spell a word inside a sentence with its leading space; pre-split words must get the
    same pieces as the running text."""
    from transformers import AutoTokenizer

    from hfkit.tasks.token_classification import is_byte_level, word_tokenizer
    from hfkit.tokenizer import train_tokenizer

    from conftest import synthetic_documents

    trained = train_tokenizer(synthetic_documents(200), kind="mlm", family="roberta", algorithm="bpe", vocab_size=300,
                              show_progress=False)
    trained.save_pretrained(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert is_byte_level(tok)
    words = ["the", "happy", "farmer", "sees", "the", "dog", "."]
    prepared = word_tokenizer(tok)
    rows, _ = encode_words([words], [[0] * len(words)], prepared, max_length=64, stride=8)
    assert rows[0]["input_ids"] == tok(" " + " ".join(words))["input_ids"]
    assert rows[0]["input_ids"] != tok(words, is_split_into_words=True)["input_ids"] or \
        getattr(tok, "add_prefix_space", False)


# --------------------------------------------------------------------------------------------- windows
def test_windows_cover_every_word_once_and_keep_whole_words():
    counts = [1, 3, 2, 1, 1, 4, 1, 2, 2, 1] * 6
    spans = windows(counts, budget=10, stride=3)
    assert spans[0][0] == 0 and spans[-1][1] == len(counts)
    assert all(sum(counts[a:b]) <= 10 for a, b in spans)
    assert all(b2 > b1 and a2 > a1 for (a1, b1), (a2, b2) in zip(spans, spans[1:]))  # windows move forward
    assert all(a2 < b1 for (_, b1), (a2, _) in zip(spans, spans[1:]))  # and overlap
    owner = owners(spans, len(counts))
    assert all(spans[k][0] <= w < spans[k][1] for w, k in enumerate(owner))


def test_a_600_word_sentence_keeps_every_words_prediction(ner):
    """Windows of 32 tokens over a 600-word sentence: each word is labelled exactly once across the evaluation
    windows, and word_predictions gives every word its own logits back."""
    import numpy as np
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ner["model"])
    rng = random.Random(5)
    words = [w for _ in range(86) for w in ner_sentence(rng)[0]][:600]
    labels = [[i % 3 for i in range(600)]]
    rows, meta = encode_words([words], labels, tok, max_length=32, stride=8)
    assert len(rows) > 20 and all(len(r["input_ids"]) <= 32 for r in rows)
    assert sorted(w for owned in meta.owned for w in owned) == list(range(600))
    # fake logits: at each labelled position, a one-hot row naming the word itself
    width = max(len(r["input_ids"]) for r in rows)
    logits = np.zeros((len(rows), width, 600))
    marks = np.full((len(rows), width), -100)
    for r, row in enumerate(rows):
        positions = [i for i, label in enumerate(row["labels"]) if label != -100]
        assert len(positions) == len(meta.owned[r])
        for p, w in zip(positions, meta.owned[r]):
            logits[r, p, w] = 1.0
            marks[r, p] = row["labels"][p]
    predicted = word_predictions(logits, marks, meta, [600])
    assert [int(p.argmax()) for p in predicted[0]] == list(range(600))


# --------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def ner_runs(tmp_path_factory, ner):
    out = tmp_path_factory.mktemp("ner-runs")
    settings = {"full": {"train.learning_rate": 1e-3}, "lora": {"train.learning_rate": 3e-3},
                "frozen": {"train.learning_rate": 1e-2, "train.epochs": 30}}
    return {m: hfkit.finetune(ner_cfg(ner, out / m, m, **extra)) for m, extra in settings.items()}


@pytest.mark.parametrize("method, floor", [("full", 0.9), ("lora", 0.9), ("frozen", 0.5)])
def test_methods_learn_entities(ner_runs, method, floor):
    m = ner_runs[method].metrics
    assert m["eval_f1"] >= floor, m  # all-O scores F1 0
    assert m["eval_accuracy"] > 0.7
    assert set(m["eval_report"]) == {"ani", "per"} and m["eval_report"]["per"]["support"] > 0
    assert m["method"] == method and (m["features_cached"] is (method == "frozen"))
    saved = "classifier_head.json" if method == "frozen" else "config.json"
    config = json.loads((ner_runs[method].output_dir / saved).read_text())
    assert set(config["id2label"].values()) == {"O", "B-ani", "I-ani", "B-per", "I-per"}


def test_evaluate_gives_the_training_metrics_and_spans_map_back(ner_runs, ner):
    for method, result in ner_runs.items():
        again = hfkit.evaluate(result.output_dir, str(ner["dir"] / "dev.txt"))
        assert again["eval_f1"] == pytest.approx(result.metrics["eval_f1"], abs=1e-9), method
        assert again["eval_accuracy"] == pytest.approx(result.metrics["eval_accuracy"], abs=1e-9), method
    text = "  the  happy farmer   sees the dog ."
    found = hfkit.predict(ner_runs["full"].output_dir, [text])[0]["entities"]
    assert [(e["type"], e["text"]) for e in found] == [("per", "happy farmer"), ("ani", "dog")]
    assert all(text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in found)
    assert split_words("@bob's #tag http://x.y/z ok!") == [("@bob's", 0, 6), ("#tag", 7, 11), ("http://x.y/z", 12, 24),
                                                             ("ok", 25, 27), ("!", 27, 28)]


def test_full_run_loads_without_hfkit_and_agrees_with_predict(ner_runs):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    run = ner_runs["full"].output_dir
    text = "the quiet teacher feeds the big horse ."
    ours = hfkit.predict(run, [text])[0]["entities"]
    tagger = pipeline("token-classification", model=str(run), aggregation_strategy="first", device="cpu")
    theirs = [(e["entity_group"], e["start"], e["end"]) for e in tagger(text)]
    assert [(e["type"], e["start"], e["end"]) for e in ours] == theirs
    model = AutoModelForTokenClassification.from_pretrained(run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    words = text.split()
    enc = tok(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        best = model(**enc).logits[0].argmax(-1).tolist()
    firsts = [enc.word_ids().index(w) for w in range(len(words))]
    tags = [model.config.id2label[best[i]] for i in firsts]
    assert [(e["type"], e["text"]) for e in ours] == [(k, " ".join(words[a:b])) for k, a, b in entities(tags)]
    assert ours and ours[0]["text"] == "quiet teacher"


def test_adapter_loads_with_peft_and_agrees_with_predict(ner_runs):
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    run = ner_runs["lora"].output_dir
    base = AutoModelForTokenClassification.from_pretrained(PeftConfig.from_pretrained(str(run)).base_model_name_or_path,
                                                           config=AutoConfig.from_pretrained(run))
    model = PeftModel.from_pretrained(base, run).eval()
    tok = AutoTokenizer.from_pretrained(run)
    text = "the small cat helps the doctor ."
    words = text.split()
    enc = tok(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        best = model(**enc).logits[0].argmax(-1).tolist()
    tags = [base.config.id2label[best[enc.word_ids().index(w)]] for w in range(len(words))]
    ours = hfkit.predict(run, [text])[0]["entities"]
    assert [(e["type"], e["text"]) for e in ours] == [(k, " ".join(words[a:b])) for k, a, b in entities(tags)]


def test_jsonl_columns_and_long_sentences_in_training(ner, tmp_path):
    """Words/tags from JSONL columns the config names, and sentences longer than max_length trained and evaluated
    through windows."""
    rows = ner_rows(120, 7)
    long_rows = [(sum((r[0] for r in rows[i:i + 6]), []), sum((r[1] for r in rows[i:i + 6]), []))
                 for i in range(0, 120, 6)]  # 42 words, max_length 16
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps({"words": w, "ner": t}) for w, t in long_rows))
    result = hfkit.finetune(ner_cfg(ner, tmp_path / "run", "full", **{
        "data.train": str(tmp_path / "train.jsonl"), "data.validation": None, "data.validation_split": 0.2,
        "data.tokens_column": "words", "data.tags_column": "ner", "data.max_length": 16, "data.stride": 4,
        "train.learning_rate": 1e-3, "train.epochs": 8}))
    assert result.metrics["eval_f1"] > 0.5, result.metrics
    assert result.metrics["eval_samples"] > 4 * 3  # windows, not sentences


# --------------------------------------------------------------------------------------------- the lineage
def test_pretrained_run_to_token_classification_with_each_method(ner, tmp_path):
    """hfkit pretrain (the session's tiny BERT run) -> token classification on its run directory, every method the
    task allows here; each run reloads and evaluates to its own training metrics."""
    from hfkit.tasks.token_classification import TokenClassification

    from test_finetune import prefix_tuning_works_here

    methods = sorted(TokenClassification.methods - ({"prefix_tuning"} if not prefix_tuning_works_here() else set()))
    assert {"full", "frozen", "lora", "ia3"} <= set(methods)
    for method in methods:
        result = hfkit.finetune(ner_cfg(ner, tmp_path / method, method, **{"model.path": str(ner["pretrained"]),
                                                                           "train.epochs": 1}))
        again = hfkit.evaluate(result.output_dir, str(ner["dir"] / "dev.txt"))
        assert again["eval_f1"] == pytest.approx(result.metrics["eval_f1"], abs=1e-9), method
        assert result.metrics["trainable_params"] < result.metrics["total_params"] or method == "full"


def test_a_method_the_task_does_not_allow_is_refused(ner, tmp_path):
    with pytest.raises(hfkit.ConfigError, match="method: p_tuning is not available for task token_classification"):
        hfkit.finetune(ner_cfg(ner, tmp_path / "x", "p_tuning"))


def test_cli_prints_entities_and_writes_jsonl(ner_runs, ner, tmp_path):
    from typer.testing import CliRunner

    from hfkit.cli import app

    run = str(ner_runs["full"].output_dir)
    text = "the happy farmer sees the dog ."
    shown = CliRunner().invoke(app, ["predict", run, text])
    assert shown.exit_code == 0, shown.output
    expected = hfkit.predict(run, [text])[0]["entities"]
    lines = [line for line in shown.output.splitlines() if line.startswith("  ")]
    assert len(lines) == len(expected) and lines[0].split("\t")[2:] == [f"{expected[0]['start']}-{expected[0]['end']}",
                                                                       expected[0]["text"]]
    (tmp_path / "in.txt").write_text(text + "\nthe cat likes the child .\n")
    written = CliRunner().invoke(app, ["predict", run, "--file", str(tmp_path / "in.txt"), "--output",
                                       str(tmp_path / "out.jsonl")])
    assert written.exit_code == 0, written.output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [text, "the cat likes the child ."] and rows[0]["entities"] == expected
    scored = CliRunner().invoke(app, ["evaluate", run, "--data", str(ner["dir"] / "dev.txt")])
    assert scored.exit_code == 0 and json.loads(scored.stdout)["eval_f1"] == pytest.approx(
        ner_runs["full"].metrics["eval_f1"], abs=1e-9)
