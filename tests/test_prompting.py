"""Prompt-based classification: the scoring mechanics on models whose logits the test controls, then zero-shot and
PET on a tiny BERT pretrained by hfkit on a corpus where the cloze answer is learnable."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from typer.testing import CliRunner

import hfkit
from hfkit.cli import app
from hfkit.errors import ConfigError
from hfkit.prompting import Prompt, Template, Verbalizer, calibrate, label_scores, word_scores, word_token_ids

from conftest import REPO


# --------------------------------------------------------------------------------------------- mechanics
class FixedLM(torch.nn.Module):
    """logits[b, s] = table[s]: the test sets the distribution at every position."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask=None):
        b, s = input_ids.shape
        return type("Out", (), {"logits": self.table[:s].expand(b, -1, -1)})


class BigramLM(torch.nn.Module):
    """A causal LM whose next-token logits depend only on the current token: logits[b, s] = table[input_ids[b, s]]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.table[input_ids]})


def log_probs(*probs, vocab=8):
    """A logit row whose softmax puts probs on tokens 0.. and spreads the rest evenly."""
    rest = (1 - sum(probs)) / (vocab - len(probs))
    return torch.log(torch.tensor(list(probs) + [rest] * (vocab - len(probs))))


def prompt_of(kind, token_ids, labels=("pos", "neg")):
    verbalizer = Verbalizer(list(labels), [[str(t) for t in words] for words in token_ids], token_ids)
    return Prompt(kind, Template("{text} {mask}", [("field", "text"), ("text", " "), ("mask", "")]), verbalizer)


def batch(slot, length=6):
    return {"input_ids": torch.zeros(1, length, dtype=torch.long), "attention_mask": torch.ones(1, length, dtype=torch.long),
            "prompt_slot": torch.tensor([slot])}


def test_the_label_whose_word_scores_highest_wins():
    table = torch.zeros(6, 8)
    table[2] = log_probs(0.1, 0.2, 0.6)  # at the slot: token 2 most likely
    prompt = prompt_of("mlm", [[[1]], [[2]]])  # pos -> token 1, neg -> token 2
    scores = prompt.scores(FixedLM(table), batch(slot=2))
    assert scores.argmax(-1).item() == 1
    assert torch.allclose(scores, torch.log(torch.tensor([[0.2, 0.6]])), atol=1e-5)
    table[2] = log_probs(0.1, 0.6, 0.2)
    assert prompt.scores(FixedLM(table), batch(slot=2)).argmax(-1).item() == 0


def test_multi_token_words_score_the_mean_log_probability_of_their_tokens():
    table = torch.zeros(6, 8)
    table[2] = log_probs(0.0, 0.5, 0.3)  # first mask position: p(1) = .5, p(2) = .3
    table[3] = log_probs(0.0, 0.0, 0.0, 0.1)  # second mask position: p(3) = .1
    prompt = prompt_of("mlm", [[[1, 3]], [[2]]])  # pos = tokens 1,3 (two masks); neg = token 2
    scores = prompt.scores(FixedLM(table), batch(slot=2))
    expected_pos = (math.log(0.5) + math.log(0.1)) / 2  # geometric mean .2236 < .3: neg wins
    assert scores[0, 0].item() == pytest.approx(expected_pos, abs=1e-5)
    assert scores[0, 1].item() == pytest.approx(math.log(0.3), abs=1e-5)
    assert scores.argmax(-1).item() == 1


def test_a_label_with_several_words_scores_their_mean_probability():
    words = torch.log(torch.tensor([[0.4, 0.1, 0.3]]))  # pos: words 0 and 1, neg: word 2
    scores = label_scores(words, torch.tensor([0, 0, 1]), 2)
    assert scores[0, 0].item() == pytest.approx(math.log(0.25), abs=1e-6)
    assert scores.argmax(-1).item() == 1
    lengths = torch.tensor([2, 1])
    token_lp = torch.tensor([[[-1.0, -3.0], [-2.0, -100.0]]])  # word 1's padding position is ignored
    assert word_scores(token_lp, lengths).tolist() == [[-2.0, -2.0]]


def test_calibration_changes_decisions_as_its_formula_says():
    scores = torch.log(torch.tensor([[0.6, 0.4], [0.9, 0.1]]))
    content_free = torch.log(torch.tensor([0.8, 0.2]))  # the prompt alone favours label 0
    calibrated = calibrate(scores, content_free)
    # p(y|x) / p_cf(y): row 0: .75 vs 2.0 -> label 1 (flipped); row 1: 1.125 vs .5 -> label 0 (kept)
    assert scores.argmax(-1).tolist() == [0, 0]
    assert calibrated.argmax(-1).tolist() == [1, 0]
    assert torch.allclose(calibrated[0], torch.log(torch.tensor([0.75, 2.0])), atol=1e-5)


def test_causal_multi_token_words_are_teacher_forced_after_the_prefix():
    vocab = 8
    table = torch.randn(vocab, vocab)
    logp = torch.log_softmax(table, -1)
    prompt = prompt_of("clm", [[[3, 4]], [[5]]])
    ids = torch.tensor([[1, 2, 6, 0], [1, 7, 0, 0]])  # right-padded prefixes
    b = {"input_ids": ids, "attention_mask": (ids > 0).long(), "prompt_slot": torch.tensor([2, 1])}
    scores = prompt.scores(BigramLM(table), b)
    for row, last in enumerate([6, 7]):
        pos = (logp[last, 3] + logp[3, 4]) / 2  # p(3 | prefix) then p(4 | prefix + 3)
        neg = (logp[last, 5] + 0) / 1
        assert scores[row, 0].item() == pytest.approx(pos.item(), abs=1e-5)
        assert scores[row, 1].item() == pytest.approx(neg.item(), abs=1e-5)


def test_template_syntax():
    t = Template.parse("Review: {text} {{not a field}} It was {mask}.", aliases={"text": "sentence"})
    assert t.columns == ["sentence"]
    assert t.render({"sentence": "Fine."}, "[MASK]") == "Review: Fine. {not a field} It was [MASK]."
    assert t.render({"sentence": "Fine."}, "", prefix_only=True) == "Review: Fine. {not a field} It was"
    with pytest.raises(ConfigError, match="exactly one"):
        Template.parse("{text} {mask} {mask}")
    with pytest.raises(ConfigError, match="uses no data column"):
        Template.parse("It was {mask}.")
    with pytest.raises(ConfigError, match="data.text_pair_column is not set"):
        Template.parse("{text} ? {mask} , {text_pair}", aliases={"text": "text", "text_pair": None})


def test_truncation_cuts_the_data_never_the_template(mlm_run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mlm_run.output_dir)
    verbalizer = Verbalizer.build({"a": ["cat"], "b": ["dog"]}, tok)
    prompt = Prompt("mlm", Template.parse("{text} so the dog sees the {mask} ."), verbalizer, max_length=16)
    long_text = " ".join(["the happy farmer sees the cat ."] * 20)
    enc = prompt.encode({"text": long_text}, tok)
    assert len(enc["input_ids"]) <= 16
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[enc["prompt_slot"]] == tok.mask_token
    template = tok.tokenize(" so the dog sees the") + [tok.mask_token, ".", tok.sep_token]
    assert tokens[-len(template):] == template  # the template is whole
    assert tokens[1:4] == ["the", "happy", "farmer"]  # the text is cut from its end
    short = prompt.encode({"text": "the cat ."}, tok)
    assert tok.convert_ids_to_tokens(short["input_ids"])[1:3] == ["the", "cat"]


def test_label_words_get_the_word_boundary_however_typed(clm_run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(clm_run.output_dir)  # byte-level BPE
    ids = word_token_ids(tok, "cat")
    assert ids == word_token_ids(tok, "  cat ")
    assert tok.decode(ids) == " cat"  # the leading-space piece, as after "it is"
    assert ids == tok("the dog sees the cat", add_special_tokens=False)["input_ids"][-len(ids):]
    with pytest.raises(ConfigError, match="needs at least two labels"):
        Verbalizer.build({"a": ["cat"]}, tok)


# --------------------------------------------------------------------------------------------- on a pretrained model
POS, NEG = ["delicious", "lovely", "superb", "charming"], ["awful", "boring", "dreadful", "nasty"]
AMBIGUOUS_POS, AMBIGUOUS_NEG = ["fresh", "bright"], ["cold", "plain"]  # 50/50 with great/terrible in the corpus
THINGS = ["food", "film", "show", "meal", "book", "song", "trip", "game"]
TEMPLATE, VERBALIZER = "{text} it was {mask} .", {"positive": ["great"], "negative": ["terrible"]}


def sentiment_corpus(n: int, seed: int = 0) -> list[str]:
    """'the food was delicious . it was great .': the cloze answer follows the adjective 90% of the time, except
    for four adjectives seen as often with either answer (zero-shot cannot know them; labelled examples can)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        adj = rng.choice(POS + NEG + AMBIGUOUS_POS + AMBIGUOUS_NEG)
        good = adj in POS if adj in POS + NEG else rng.random() < 0.5
        if adj in POS + NEG and rng.random() < 0.1:
            good = not good
        lines.append(f"the {rng.choice(THINGS)} was {adj} . it was {'great' if good else 'terrible'} .")
    return lines


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        adj = rng.choice(POS + NEG + AMBIGUOUS_POS + AMBIGUOUS_NEG)
        label = "positive" if adj in POS + AMBIGUOUS_POS else "negative"
        rows.append({"text": f"the {rng.choice(THINGS)} was {adj} .", "label": label})
    return rows


@pytest.fixture(scope="module")
def cloze(tmp_path_factory):
    d = tmp_path_factory.mktemp("cloze")
    (d / "corpus.txt").write_text("\n".join(sentiment_corpus(6000)) + "\n")
    for name, n, seed in (("train", 400, 1), ("valid", 200, 2)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows(n, seed)))
    run = hfkit.pretrain(str(REPO / "recipes/pretrain/bert-mlm-tiny.yaml"), output_dir=str(d / "mlm"),
                         data={"train": str(d / "corpus.txt"), "block_size": 32},
                         tokenizer={"vocab_size": 200, "min_frequency": 1}, mlm={"probability": 0.25},
                         model={"overrides": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}},
                         train={"max_steps": 800, "learning_rate": 1e-3, "report_to": [], "save_steps": 400,
                                "eval_steps": 400})
    return {"dir": d, "model": run.output_dir}


def test_zero_shot_recipe_beats_chance_with_five_overrides(cloze):
    out = cloze["dir"] / "zero-shot"
    result = CliRunner().invoke(app, ["finetune", str(REPO / "recipes/finetune/zero-shot.yaml"),
                                      f"model.path={cloze['model']}", f"data.validation={cloze['dir'] / 'valid.jsonl'}",
                                      f"output_dir={out}", f"prompt.template={TEMPLATE}",
                                      "prompt.verbalizer={positive: [great], negative: [terrible]}"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 0 and metrics["trainable_params"] == 0
    # chance is 0.5; the 8 clear adjectives are learnable from the corpus, the 4 ambiguous ones are not
    assert 0.65 < metrics["eval_accuracy"] < 0.97, metrics["eval_accuracy"]
    assert not (out / "model.safetensors").exists()  # zero-shot writes no weights, only the prompt
    assert json.loads((out / "prompt.json").read_text())["base_model"] == str(cloze["model"])
    cloze["zero_shot_accuracy"] = metrics["eval_accuracy"]


def test_calibrated_zero_shot_through_evaluate(cloze):
    valid = str(cloze["dir"] / "valid.jsonl")
    prompt = {"template": TEMPLATE, "verbalizer": VERBALIZER}
    plain = hfkit.evaluate(cloze["model"], valid, prompt=prompt)
    calibrated = hfkit.evaluate(cloze["model"], valid, prompt={**prompt, "calibrate": True})
    assert plain["eval_accuracy"] > 0.65
    assert calibrated["eval_accuracy"] != plain["eval_accuracy"] or calibrated["eval_report"] != plain["eval_report"]


@pytest.mark.parametrize("tune", ["full", "lora"])
def test_pet_few_shot_beats_zero_shot_and_reloads(cloze, tune):
    # 16 shots per class so that the seed's draw holds every ambiguous adjective (the only thing the labels can
    # teach beyond zero-shot): 8 shots at seed 42 drew no 'bright', and full PET then ended level with zero-shot.
    from transformers import AutoModelForMaskedLM

    out = cloze["dir"] / f"pet-{tune}"
    result = hfkit.finetune(str(REPO / "recipes/finetune/classification-pet.yaml"), output_dir=str(out),
                            model={"path": str(cloze["model"])},
                            data={"train": str(cloze["dir"] / "train.jsonl"),
                                  "validation": str(cloze["dir"] / "valid.jsonl"), "shots_per_class": 16},
                            prompt={"template": TEMPLATE, "verbalizer": VERBALIZER, "tune": tune},
                            train={"epochs": 10, "batch_size": 8, "learning_rate": 1e-3 if tune == "full" else 5e-3,
                                   "report_to": [], "early_stopping_patience": None})
    zero_shot = hfkit.evaluate(cloze["model"], str(cloze["dir"] / "valid.jsonl"),
                               prompt={"template": TEMPLATE, "verbalizer": VERBALIZER})["eval_accuracy"]
    assert result.metrics["eval_accuracy"] > zero_shot + 0.05, (result.metrics["eval_accuracy"], zero_shot)
    assert result.metrics["global_step"] == 40  # 16 shots x 2 labels = 32 rows, batches of 8, 10 epochs
    # the run reloads and predicts the labels it was evaluated with
    rows = [json.loads(line) for line in (cloze["dir"] / "valid.jsonl").read_text().splitlines()]
    predicted = [p["label"] for p in hfkit.predict(out, [r["text"] for r in rows])]
    labels = ["positive", "negative"]
    matrix = [[sum(1 for r, p in zip(rows, predicted) if r["label"] == t and p == q) for q in labels] for t in labels]
    saved = result.metrics["eval_report"]["confusion_matrix"]
    assert saved["labels"] == labels and saved["rows_true_columns_predicted"] == matrix
    if tune == "full":  # a plain masked LM: loads with no hfkit import
        assert AutoModelForMaskedLM.from_pretrained(out).config.vocab_size > 0
    else:
        assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()


def test_causal_lm_prompting_zero_shot_and_soft_prompt_pet(clm_run, tmp_path):
    """GPT-2-style: words scored as the continuation; a soft prompt before the template (P-tuning as meant)."""
    rows = [{"text": f"the {a} {n} sees the dog .", "label": "animal" if n in ("cat", "bird") else "person"}
            for a in ("small", "big", "happy") for n in ("cat", "bird", "farmer", "teacher")] * 4
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompt = {"template": "{text} the {mask}", "verbalizer": {"animal": ["cat", "bird"], "person": ["farmer"]}}
    zero = hfkit.evaluate(clm_run.output_dir, str(tmp_path / "rows.jsonl"), prompt=prompt)
    assert 0.0 <= zero["eval_accuracy"] <= 1.0 and zero["eval_samples"] == len(rows)
    out = tmp_path / "pet-clm"
    result = hfkit.finetune(str(REPO / "recipes/finetune/classification-pet.yaml"), output_dir=str(out),
                            model={"path": str(clm_run.output_dir)},
                            data={"train": str(tmp_path / "rows.jsonl"), "validation": str(tmp_path / "rows.jsonl"),
                                  "shots_per_class": None},
                            prompt={**prompt, "tune": "p_tuning"}, soft_prompt={"num_virtual_tokens": 4},
                            train={"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "report_to": []})
    assert result.metrics["prompt_kind"] == "clm" and result.metrics["trainable_params"] < result.metrics["total_params"]
    saved = json.loads((out / "prompt.json").read_text())
    assert saved["kind"] == "clm" and saved["verbalizer"] == prompt["verbalizer"]
    reloaded = hfkit.evaluate(out, str(tmp_path / "rows.jsonl"))  # the saved adapter + prompt, loaded afresh
    assert reloaded["eval_report"]["confusion_matrix"] == result.metrics["eval_report"]["confusion_matrix"]
    assert reloaded["eval_accuracy"] == pytest.approx(result.metrics["eval_accuracy"])
