"""Every bad input a user can give: one `error:` line naming the problem, exit code 2, no traceback, and the files
already in output_dir byte-identical afterwards (each case passes --overwrite, so only the failure protects them)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hfkit.cli import app


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, mlm_run, clm_run):
    d = tmp_path_factory.mktemp("bad-inputs")
    (d / "good.txt").write_text("the cat sees the dog .\n" * 50)
    (d / "short.txt").write_text("".join(f"the cat sees dog {i} .\n" for i in range(60)))
    (d / "blank.txt").write_text("\n   \n\t\n")
    (d / "bad.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": \n')
    pd.DataFrame({"body": ["a b c"] * 5}).to_csv(d / "body.csv", index=False)
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (d / "empty_folder").mkdir()
    (d / "a_file").write_text("x")
    (d / "bad.yaml").write_text("objective: mlm\nmodel: [unclosed\n")
    no_weights = d / "no_weights"
    no_weights.mkdir()
    shutil.copy(mlm_run.output_dir / "config.json", no_weights / "config.json")
    rows = [("the cat sees the dog .", "animal"), ("the doctor helps the child .", "person")] * 20
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(d / "train.csv", index=False)
    pd.DataFrame(rows + [("the robot sees the car .", "robot")], columns=["text", "label"]).to_csv(d / "dev.csv", index=False)
    pd.DataFrame([("", "animal")] + rows, columns=["text", "label"]).to_csv(d / "empty_text.csv", index=False)
    conll = "".join(f"the\tO\n{w}\tB-{k}\n.\tO\n\n" for w, k in [("cat", "ani"), ("doctor", "per")] * 10)
    (d / "ner.conll").write_text(conll)
    (d / "ner_dev.conll").write_text("the\tO\nrobot\tB-robot\n\n" + conll)
    (d / "not_conll.conll").write_text("the\tO\ncat\tB-ani\nthe-cat-sees-the-dog\n")
    (d / "ner_invalid.conll").write_text(conll + "the\tO\ncat\tI-ani\n\n")
    (d / "ner_lengths.jsonl").write_text('{"tokens": ["a", "b"], "tags": ["O", "O"]}\n'
                                         '{"tokens": ["a", "b", "c"], "tags": ["O", "B-x"]}\n')
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    (d / "chats.jsonl").write_text(json.dumps({"messages": chat}) + "\n" + json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}) + "\n")
    (d / "good_chats.jsonl").write_text((json.dumps({"messages": chat}) + "\n") * 4)
    (d / "order.jsonl").write_text(json.dumps({"messages": chat}) + "\n"
                                   + json.dumps({"messages": chat}) + "\n"
                                   + json.dumps({"messages": [chat[0], chat[0], chat[1]]}) + "\n")
    pd.DataFrame({"question": ["a"] * 3, "answer": ["b"] * 3}).to_csv(d / "qa.csv", index=False)
    return {"dir": d, "mlm": mlm_run.output_dir, "clm": clm_run.output_dir}


def pre(d):  # pretraining on the good corpus, overridable
    return ["pretrain", "bert-mlm-tiny", f"data.train={d / 'good.txt'}", "tokenizer.vocab_size=200"]


def ner(i, train="ner.conll"):
    return ["finetune", "ner-full", f"model.path={i['mlm']}", f"data.train={i['dir'] / train}"]


def sft(i, train="chats.jsonl", template=True, recipe="sft-full"):
    return (["finetune", recipe, f"model.path={i['clm']}", f"data.train={i['dir'] / train}", "data.max_length=64"]
            + (["sft.chat_template=chatml"] if template else []))


def fine(i):
    return ["finetune", "classification-full", f"model.path={i['mlm']}", f"data.train={i['dir'] / 'train.csv'}"]


CASES = {
    # name: (args builder, text the one error line must contain)
    "missing data file": (lambda i: pre(i["dir"])[:2] + ["data.train=/no/such/corpus.txt"], "data.train: '/no/such/corpus.txt' does not exist"),
    "glob matching nothing": (lambda i: pre(i["dir"])[:2] + [f"data.train={i['dir']}/*.parquet"], "matches no files"),
    "folder without data": (lambda i: pre(i["dir"])[:2] + [f"data.train={i['dir'] / 'empty_folder'}"], "holds no"),
    "empty corpus after cleaning": (lambda i: pre(i["dir"])[:2] + [f"data.train={i['dir'] / 'blank.txt'}"], "no text left after dropping empty documents"),
    "malformed JSONL line": (lambda i: pre(i["dir"])[:2] + [f"data.train={i['dir'] / 'bad.jsonl'}"], "bad.jsonl' line 3: not valid JSON"),
    "CSV without the column": (lambda i: pre(i["dir"])[:2] + [f"data.train={i['dir'] / 'body.csv'}"], "no column 'text' in the data; its columns are body"),
    "streaming without max_steps": (lambda i: pre(i["dir"]) + ["data.streaming=true", "train.max_steps=null"], "data.streaming: a stream has no known length; set train.max_steps"),
    "streaming an empty corpus": (lambda i: pre(i["dir"])[:2] + [f"data.train={i['dir'] / 'blank.txt'}", "data.streaming=true"], "data.train: no text left after dropping empty documents"),
    "streaming CSV without the column": (lambda i: pre(i["dir"])[:2] + [f"data.train={i['dir'] / 'body.csv'}", "data.streaming=true"], "no column 'text' in the data; its columns are body"),
    "non-UTF-8 text": (lambda i: pre(i["dir"])[:2] + [f"data.train={i['dir'] / 'latin1.txt'}"], "latin1.txt' line 1: not UTF-8"),
    "wrong type": (lambda i: pre(i["dir"]) + ["train.batch_size=abc"], "train.batch_size: expected an integer, got 'abc'"),
    "negative learning rate": (lambda i: pre(i["dir"]) + ["train.learning_rate=-0.1"], "train.learning_rate: -0.1 must be > 0"),
    "unknown key": (lambda i: pre(i["dir"]) + ["train.lerning_rate=0.1"], "did you mean 'train.learning_rate'?"),
    "bad override syntax": (lambda i: pre(i["dir"]) + ["train.max_steps"], "override 'train.max_steps' must look like section.key=value"),
    "missing recipe": (lambda i: ["pretrain", "no-such-recipe.yaml"], "recipe 'no-such-recipe.yaml' not found"),
    "invalid recipe YAML": (lambda i: ["pretrain", str(i["dir"] / "bad.yaml")], "bad.yaml' line 3 (in what opens on line 2): not valid YAML"),
    "block size beyond positions": (lambda i: pre(i["dir"]) + ["model.preset=null", f"model.path={i['mlm']}", "data.block_size=600"], "data.block_size: 600 exceeds the model's 512 positions"),
    "mlm on a causal-only model": (lambda i: pre(i["dir"]) + ["model.preset=null", f"model.path={i['clm']}"], "has no mask token"),
    "model dir without weights": (lambda i: fine(i)[:2] + [f"model.path={i['dir'] / 'no_weights'}", f"data.train={i['dir'] / 'train.csv'}"], "has config.json but no weights"),
    "model path missing": (lambda i: fine(i)[:2] + ["model.path=./no/such/model", f"data.train={i['dir'] / 'train.csv'}"], "model.path: './no/such/model' does not exist"),
    "output_dir is a file": (lambda i: pre(i["dir"]) + [f"output_dir={i['dir'] / 'a_file'}"], "is a file; choose a folder path"),
    "label column missing": (lambda i: fine(i) + ["data.label_column=sentiment"], "no column 'sentiment' in the data; its columns are text, label"),
    "label unseen in training": (lambda i: fine(i) + [f"data.validation={i['dir'] / 'dev.csv'}"], "label 'robot' (row 41) never appears in the training data"),
    "empty text": (lambda i: fine(i)[:3] + [f"data.train={i['dir'] / 'empty_text.csv'}"], "1 row(s) have an empty 'text' (first: row 1)"),
    "wrong pair column": (lambda i: fine(i) + ["data.text_pair_column=hypothesis"], "no column 'hypothesis'"),
    "LoRA target the model lacks": (lambda i: fine(i) + ["method=lora", "lora.target_modules=[q_proj]"], "lora.target_modules: q_proj not in this model; its linear layers are"),
    "unknown method": (lambda i: fine(i) + ["method=lorra"], "method: 'lorra' is not one of"),
    "PET without a template": (lambda i: fine(i) + ["method=pet"], "prompt.template: method pet needs a cloze template"),
    "template without a mask slot": (lambda i: fine(i) + ["method=pet", "prompt.template={text} is", "prompt.verbalizer={animal: [cat], person: [doctor]}"], "prompt.template: needs exactly one {mask} slot"),
    "label word not in the vocabulary": (lambda i: fine(i) + ["method=pet", "prompt.template={text} it is {mask} .", "prompt.verbalizer={animal: [zzz], person: [doctor]}"], "prompt.verbalizer.animal: 'zzz' is not in the tokenizer's vocabulary"),
    "data label missing from the verbalizer": (lambda i: fine(i) + ["method=pet", "prompt.template={text} it is {mask} .", "prompt.verbalizer={animal: [cat], robot: [dog]}"], "label 'person' (row 2) never appears in prompt.verbalizer; its labels: animal, robot"),
    "PET adapter on a model without an LM head": (lambda i: fine(i) + ["model.path=builtin:all-minilm-l6-v2", "method=pet", "prompt.tune=lora", "prompt.template={text} it is {mask} .", "prompt.verbalizer={animal: [cat], person: [doctor]}"], "prompt.tune: lora trains an adapter on a trained LM head, but this checkpoint has none"),
    "tags and words of different lengths": (lambda i: ner(i, "ner_lengths.jsonl"), "data.train: row 2 has 3 words but 2 tags"),
    "tag unseen in training": (lambda i: ner(i) + [f"data.validation={i['dir'] / 'ner_dev.conll'}"], "data.validation: tag 'B-robot' (row 1) never appears in the training data"),
    "file that is not CoNLL": (lambda i: ner(i, "not_conll.conll"), "not_conll.conll' line 3 is not CoNLL"),
    "invalid IOB2 sequence": (lambda i: ner(i, "ner_invalid.conll"), "tag I-ani follows O, which is invalid IOB2"),
    "method the task does not allow": (lambda i: ner(i) + ["method=p_tuning"], "method: p_tuning is not available for task token_classification"),
    "incompatible label options": (lambda i: fine(i) + ["multi_label=true", "regression=true"], "multi_label and regression: choose one"),
    "learning rate neither a number nor auto": (lambda i: fine(i) + ["train.learning_rate=fast"], "train.learning_rate: expected a number or 'auto' or null, got 'fast'"),
    "class weights on regression": (lambda i: fine(i) + ["regression=true", "train.class_weights=balanced"], "train.class_weights: balanced weights single-label classification"),
    "layer-wise decay out of range": (lambda i: fine(i) + ["train.layer_lr_decay=1.5"], "train.layer_lr_decay: 1.5 must be in (0, 1]"),
    "unfreezing schedule for an adapter": (lambda i: fine(i) + ["method=lora", "frozen.unfreeze_schedule=gradual"], "frozen.unfreeze_schedule: unfreezes layers of method full or frozen, not lora"),
    "ELECTRA generator wider than the discriminator": (lambda i: pre(i["dir"]) + ["objective=electra", "electra.generator_size=1.5"], "electra.generator_size: 1.5 makes the generator wider than the discriminator"),
    "ELECTRA on a ModernBERT preset": (lambda i: pre(i["dir"]) + ["objective=electra", "model.preset=modernbert-tiny"], "model.preset: objective electra builds ELECTRA's own BERT-block generator"),
    "unknown objective": (lambda i: pre(i["dir"]) + ["objective=electro"], "objective: 'electro' is not one of mlm, clm, electra, nsp, sop, contrastive (did you mean 'electra'?)"),
    "corpus overlapping data.exclude": (lambda i: pre(i["dir"]) + [f"data.exclude={i['dir'] / 'good.txt'}"], "data.train: 50 document(s) also appear in data.exclude"),
    "NSP on one-sentence documents": (lambda i: pre(i["dir"]) + ["objective=nsp", f"data.train={i['dir'] / 'short.txt'}"], "objective nsp needs documents of 2 or more sentences, and none of the"),
    "contrastive with batch size 1": (lambda i: pre(i["dir"]) + ["objective=contrastive", "train.batch_size=1"], "train.batch_size: 1 leaves no in-batch negatives for objective contrastive"),
    "contrastive crops longer than a block": (lambda i: pre(i["dir"]) + ["objective=contrastive", "contrastive.views=crop", "contrastive.crop_tokens=64", "data.block_size=32"], "contrastive.crop_tokens: 64 must be between 1 and data.block_size - 2 (30)"),
    "chat turn with an unknown role": (lambda i: sft(i), "data.train row 2: turn 2 has role 'bot', which is not one of system, user, assistant"),
    "chat turns that do not alternate": (lambda i: sft(i, "order.jsonl"), "data.train row 3: turns must alternate user, assistant, user, ...; turn 2 is 'user' after 'user'"),
    "conversation format not detectable": (lambda i: sft(i, "qa.csv"), "data.train: cannot tell the conversation format from the columns (question, answer)"),
    "LoRA on a model without a chat template": (lambda i: sft(i, "good_chats.jsonl", template=False, recipe="sft-lora"), "the chat template added <|im_start|>, <|im_end|> to the tokenizer"),
    "L-BFGS for an MLP head": (lambda i: fine(i) + ["method=frozen", "frozen.head=mlp", "frozen.solver=lbfgs"], "frozen.solver: lbfgs solves a linear head on cached features"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2_outputs_untouched(name, inputs, tmp_path):
    build, expected = CASES[name]
    out = tmp_path / "existing-run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (out / "notes.txt").write_text("precious")
    before = snapshot(out)
    args = build(inputs)
    if not any(a.startswith("output_dir=") for a in args):
        args = args + [f"output_dir={out}"]
    result = CliRunner().invoke(app, args + ["--overwrite"] if args[1] not in ("no-such-recipe.yaml",) and
                                not args[1].endswith("bad.yaml") else args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, (name, result.exit_code, result.output[-1500:], result.exception)
    assert len(errors) == 1 and expected in errors[0], (name, errors, result.output[-1500:])
    assert "Traceback" not in result.output
    assert snapshot(out) == before


def test_case_count():
    assert len(CASES) == 54
