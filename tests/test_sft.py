"""Task sft: which tokens train, EOS with pad == eos, packing that keeps examples apart, counted empty examples,
--preview, and the lineage pretrain -> sft full -> sft lora -> generate (equal to plain transformers / peft)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hfkit.chat import CHATML, encode, set_up_template
from hfkit.cli import app

THREE_TURNS = [
    {"role": "system", "content": "you answer briefly ."},
    {"role": "user", "content": "the cat sees the dog ?"},
    {"role": "assistant", "content": "the dog sees the cat ."},
    {"role": "user", "content": "the bird ?"},
    {"role": "assistant", "content": "the small bird ."},
    {"role": "user", "content": "and the horse ?"},
    {"role": "assistant", "content": "the big horse helps the farmer ."},
]


def chats(n: int, seed: int = 0) -> list[dict]:
    """Learnable conversations: the answer repeats the question's noun after a fixed phrase."""
    import random

    rng = random.Random(seed)
    nouns = ["cat", "dog", "bird", "horse", "farmer", "teacher", "child", "doctor"]
    rows = []
    for _ in range(n):
        turns = []
        for _ in range(rng.randint(1, 3)):
            noun = rng.choice(nouns)
            turns += [{"role": "user", "content": f"where is the {noun} ?"},
                      {"role": "assistant", "content": f"the {noun} is here ."}]
        rows.append({"messages": turns})
    return rows


@pytest.fixture(scope="module")
def tokenizer(clm_run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(clm_run.output_dir)
    assert set_up_template(tok, "chatml") == ["<|im_start|>", "<|im_end|>"]
    return tok


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chats") / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chats(240)))
    return path


def finetune(recipe, items: list[str]):
    """hfkit.finetune with CLI-style KEY=VALUE overrides."""
    import hfkit
    import yaml

    return hfkit.finetune(recipe, **{k: yaml.safe_load(v) for k, v in (i.split("=", 1) for i in items)})


def trained_texts(tokenizer, example) -> list[str]:
    return [tokenizer.decode(example.input_ids[a:b]) for a, b in example.spans]


def test_three_turn_chat_trains_exactly_the_assistant_tokens(tokenizer):
    example = encode(tokenizer, THREE_TURNS, max_length=None)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Each answer trains with its end-of-turn token, and nothing else does (system and user turns, role headers).
    assert trained_texts(tokenizer, example) == [t["content"] + "<|im_end|>" for t in THREE_TURNS
                                                 if t["role"] == "assistant"]
    for a, b in example.spans:
        assert example.input_ids[b - 1] == end and example.labels[b - 1] == end
        assert example.labels[a - 1] == -100 and (b == len(example.labels) or example.labels[b] == -100)
    # The same positions as transformers' own assistant mask from the template's {% generation %} markers.
    marked = tokenizer.apply_chat_template(THREE_TURNS, return_dict=True, return_assistant_tokens_mask=True)
    assert marked["input_ids"] == example.input_ids
    assert [i for i, m in enumerate(marked["assistant_masks"]) if m] == \
        [i for i, label in enumerate(example.labels) if label != -100]
    # A template without markers (like SmolLM2's) gives the same labels: hfkit reads the turns from the template.
    plain = re.sub(r"\{%-? ?(end)?generation ?-?%\}", "", CHATML)
    assert "{% generation %}" not in plain and "endgeneration" not in plain
    tokenizer_plain = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    set_up_template(tokenizer_plain, "chatml")
    tokenizer_plain.chat_template = plain
    assert encode(tokenizer_plain, THREE_TURNS, max_length=None).labels == example.labels
    # train_on_prompt: every token.
    assert encode(tokenizer, THREE_TURNS, max_length=None, train_on_prompt=True).labels == example.input_ids


def test_end_of_turn_trains_when_pad_is_eos(tokenizer):
    """The classic trap: pad = eos, and a collator that masks pad ids also masks every EOS, so the model never
    learns to stop. SFTTrainer's collator (what task sft uses) pads labels by position and keeps them."""
    import torch
    from transformers import DataCollatorForLanguageModeling as HFCollator
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    set_up_template(tok, "chatml")
    tok.pad_token = tok.eos_token = "<|im_end|>"
    end = tok.convert_tokens_to_ids("<|im_end|>")
    rows = [encode(tok, t, None) for t in (THREE_TURNS[1:3], THREE_TURNS)]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(
        [{"input_ids": r.input_ids, "labels": r.labels} for r in rows])
    short, last = len(rows[0].input_ids), rows[0].spans[-1][1] - 1
    assert rows[0].input_ids[last] == end and batch["labels"][0, last] == end  # the answer's end-of-turn trains
    assert (batch["labels"][0, short:] == -100).all() and (batch["input_ids"][0, short:] == end).all()
    assert int((batch["labels"] == end).sum()) == 1 + 3
    trap = HFCollator(tok, mlm=False)([{"input_ids": r.input_ids} for r in rows])
    assert not (trap["labels"] == end).any()  # what the trap does: no EOS ever trains
    assert torch.equal(batch["input_ids"], trap["input_ids"])


def test_packed_loss_equals_unpacked_loss(clm_run, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(clm_run.output_dir)
    model.resize_token_embeddings(len(tokenizer))
    model.eval()
    rows = [encode(tokenizer, r["messages"], None) for r in chats(6, seed=3)]
    assert len({len(r.input_ids) for r in rows}) > 1
    examples = [{"input_ids": r.input_ids, "labels": r.labels} for r in rows]
    padded = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)
    packed = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)(examples)
    assert packed["input_ids"].shape[0] == 1 and packed["input_ids"].shape[1] == sum(len(r.input_ids) for r in rows)
    assert (packed["position_ids"][0] == 0).sum() == len(rows)  # positions restart per example
    with torch.no_grad():
        loss_padded = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                            labels=padded["labels"]).loss
        loss_packed = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                            labels=packed["labels"]).loss
        # Control: the same packed row as one sequence (examples attending to each other) gives another loss.
        loss_leaky = model(input_ids=packed["input_ids"], labels=packed["labels"]).loss
    assert torch.allclose(loss_packed, loss_padded, atol=1e-5), (loss_packed, loss_padded)
    assert abs(loss_leaky - loss_padded) > 1e-3


def test_examples_without_a_trained_token_are_counted_then_refused(clm_run, chat_file, tmp_path):
    import hfkit
    from hfkit.errors import DataError

    long_prompt = {"messages": [{"role": "user", "content": "where is the cat ? " * 30},
                                {"role": "assistant", "content": "here ."}]}
    data = tmp_path / "some_long.jsonl"
    data.write_text(chat_file.read_text() + json.dumps(long_prompt) + "\n")
    base = {"task": "sft", "method": "full", "model": {"path": str(clm_run.output_dir)},
            "sft": {"chat_template": "chatml"},
            "data": {"train": str(data), "validation_split": 0.0, "max_length": 48},
            "train": {"max_steps": 2, "batch_size": 4, "report_to": [], "learning_rate": 1e-3}}
    result = finetune(base, [f"output_dir={tmp_path / 'run'}"])
    assert result.metrics["train_left_out"] == 1
    assert result.metrics["train_conversations"] == 241
    only_long = tmp_path / "only_long.jsonl"
    only_long.write_text(json.dumps(long_prompt) + "\n")
    with pytest.raises(DataError, match="none of its 1 conversations keeps a token to train on"):
        finetune(base, [f"data.train={only_long}", f"output_dir={tmp_path / 'run2'}"])


def test_preview_marks_the_trained_tokens_and_writes_nothing(clm_run, chat_file, tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["finetune", "sft-full", f"model.path={clm_run.output_dir}",
                                      f"data.train={chat_file}", "sft.chat_template=chatml", f"output_dir={out}",
                                      "--preview", "2"])
    assert result.exit_code == 0, result.output
    first = chats(240)[0]["messages"]
    text = result.output
    assert text.count("--- example ") == 2
    for turn in first:
        if turn["role"] == "assistant":
            assert f"[[{turn['content']}<|im_end|>]]" in text
        else:
            assert f"[[{turn['content']}" not in text and turn["content"] in text
    assert not out.exists()


@pytest.fixture(scope="module")
def sft_full_run(clm_run, chat_file, tmp_path_factory):
    import hfkit

    out = tmp_path_factory.mktemp("sft") / "full"
    cfg = {"task": "sft", "method": "full", "output_dir": str(out), "model": {"path": str(clm_run.output_dir)},
           "sft": {"packing": True},  # no template named: a pretrained GPT has none, so chatml is chosen
           "data": {"train": str(chat_file), "validation_split": 0.1, "max_length": 64},
           "train": {"epochs": 3, "batch_size": 4, "learning_rate": 3e-3, "report_to": [], "logging_steps": 5,
                     "eval_before_training": True}}
    return hfkit.finetune(cfg)


def last_line(output: str) -> str:
    """The reply: the last line of the output (stderr's progress bars, mixed in by CliRunner, end in a carriage
    return)."""
    return re.split(r"[\r\n]", output.strip())[-1]


def greedy(model, tokenizer, prompt: str, n: int = 24) -> str:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_lineage_pretrain_sft_full_generate(sft_full_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m, run = sft_full_run.metrics, sft_full_run.output_dir
    history = json.loads((run / "log_history.json").read_text())
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert evals[-1] < 0.5 * evals[0], evals  # the answers became predictable
    assert m["packing"] and m["train_padding_fraction"] == 0.0 and m["eval_perplexity"] < 3
    tokenizer = AutoTokenizer.from_pretrained(run)
    assert "<|im_start|>" in tokenizer.chat_template  # the template it trained with travels with the run
    model = AutoModelForCausalLM.from_pretrained(run)
    expected = greedy(model, tokenizer, "where is the horse ?")
    assert expected == "the horse is here ."
    result = CliRunner().invoke(app, ["generate", str(run), "where is the horse ?", "--max-new-tokens", "24"])
    assert result.exit_code == 0, result.output
    assert last_line(result.output) == expected
    chat = CliRunner().invoke(app, ["chat", str(run), "--max-new-tokens", "24"],
                              input="where is the dog ?\nwhere is the bird ?\n/exit\n")
    replies = [line for line in chat.output.splitlines() if line.startswith("assistant> ")]
    assert len(replies) == 2 and replies[0] == "assistant> the dog is here .", chat.output


def test_sft_lora_adapter_and_merged_model_generate_like_hfkit(sft_full_run, chat_file, tmp_path):
    import hfkit
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "lora"
    result = finetune("sft-lora", [
        f"model.path={sft_full_run.output_dir}", f"data.train={chat_file}", f"output_dir={out}", "data.max_length=64",
        "train.max_steps=6", "train.report_to=[]", "train.batch_size=4", "train.gradient_accumulation_steps=1"])
    assert result.metrics["trainable_fraction"] < 0.5
    tokenizer = AutoTokenizer.from_pretrained(out)
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_full_run.output_dir), out).eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    hfkit_text = CliRunner().invoke(app, ["generate", str(out), "where is the cat ?", "--max-new-tokens", "24"])
    assert hfkit_text.exit_code == 0, hfkit_text.output
    said = last_line(hfkit_text.output)
    assert greedy(adapter, tokenizer, "where is the cat ?") == said == greedy(merged, tokenizer, "where is the cat ?")
    evaluated = CliRunner().invoke(app, ["evaluate", str(out), "--data", str(chat_file)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.output[evaluated.output.index("{"):])
    assert metrics["conversations"] == 240 and 1.0 <= metrics["perplexity"] < 3


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_soft_prompt_sft_trains(method, sft_full_run, chat_file, tmp_path):
    result = finetune("sft-lora", [
        f"method={method}", "sft.packing=false", "lora.merge=false", f"model.path={sft_full_run.output_dir}",
        f"data.train={chat_file}", f"output_dir={tmp_path / 'pt'}", "data.max_length=64", "train.max_steps=4",
        "train.report_to=[]", "train.learning_rate=3e-2"])
    assert (tmp_path / "pt" / "adapter_config.json").is_file()
    assert result.metrics["train_loss"] > 0 and result.metrics["eval_perplexity"] > 1
    if method == "prompt_tuning":
        assert result.metrics["trainable_params"] == 20 * 128  # 20 virtual tokens x the model's width


def test_chat_prompt_holds_the_whole_conversation(tokenizer):
    """hfkit chat renders every earlier turn (its own replies included) plus the generation prompt."""
    from hfkit.generation import prompt_ids

    history = THREE_TURNS[:5] + [{"role": "user", "content": "and the horse ?"}]
    ids = prompt_ids(tokenizer, history)[0].tolist()
    text = tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n") and all(t["content"] in text for t in history)
    assert ids == tokenizer.apply_chat_template(history, add_generation_prompt=True, return_dict=True)["input_ids"]


def test_prompting_through_the_chat_template(sft_full_run):
    """prompt.chat: the cloze prompt becomes a user turn and the label word is scored where the answer starts."""
    from transformers import AutoTokenizer

    from hfkit.errors import ConfigError
    from hfkit.prompting import make_prompt, use_chat

    tokenizer = AutoTokenizer.from_pretrained(sft_full_run.output_dir)
    row = {"text": "where is the dog ?"}
    chat = make_prompt("{text} {mask}", {"yes": ["the"], "no": ["where"]}, tokenizer, "clm", 64,
                       extra={"chat": use_chat("auto", tokenizer, "clm")})
    plain = make_prompt("{text} {mask}", {"yes": ["the"], "no": ["where"]}, tokenizer, "clm", 64,
                        extra={"chat": use_chat("off", tokenizer, "clm")})
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "where is the dog ?"}],
                                             add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    encoded = chat.encode(row, tokenizer)
    assert encoded["input_ids"] == expected and encoded["prompt_slot"] == len(expected) - 1
    assert plain.encode(row, tokenizer)["input_ids"] == tokenizer("where is the dog ?")["input_ids"]
    assert not use_chat("auto", tokenizer, "mlm")
    with pytest.raises(ConfigError, match="prompt.chat: on needs a causal LM"):
        use_chat("on", tokenizer, "mlm")


def test_generate_file_batches_like_one_by_one_with_stop_strings_and_resume(sft_full_run, tmp_path):
    """`hfkit generate --file`: left-padded batches answer what one prompt at a time does, in input order; a stop
    string ends a reply before it; the output is refused when it exists and written once."""
    from hfkit.generation import generate, generate_file, load_causal_lm

    run = str(sft_full_run.output_dir)
    nouns = ["horse", "dog", "the small bird", "cat", "farmer", "big teacher", "child", "doctor", "dog", "cat"]
    prompts = [f"where is the {n} ?" for n in nouns]
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "question": p}) + "\n" for i, p in enumerate(prompts)))
    out = tmp_path / "answers.jsonl"
    summary = generate_file(run, str(source), str(out), column="question", max_new_tokens=24, batch_size=3,
                            chunk_rows=4, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    model, tokenizer = load_causal_lm(run)
    single = [generate(model, tokenizer, [{"role": "user", "content": p}], max_new_tokens=24) for p in prompts]
    assert summary["rows"] == 10 and [r["prompt"] for r in rows] == prompts
    assert [r["text"] for r in rows] == single and single[0] == "the horse is here ."
    stopped = tmp_path / "stopped.jsonl"
    result = CliRunner().invoke(app, ["generate", run, "--file", str(source), "--column", "question", "--output",
                                      str(stopped), "--stop", " is", "--max-new-tokens", "24"])
    assert result.exit_code == 0, result.output
    cut = [json.loads(line)["text"] for line in stopped.read_text().splitlines()]
    assert cut[0] == "the horse" and all(s.startswith(c) for s, c in zip(single, cut))
    again = CliRunner().invoke(app, ["generate", run, "--file", str(source), "--column", "question", "--output",
                                     str(stopped)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    missing = CliRunner().invoke(app, ["generate", run, "--file", str(source)])
    assert missing.exit_code == 2 and "no column 'prompt'" in missing.output


def test_a_model_without_a_template_gets_chatml_and_a_named_one_wins(clm_run, capsys):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(clm_run.output_dir)
    assert not getattr(plain, "chat_template", None)
    assert set_up_template(plain, None) == ["<|im_start|>", "<|im_end|>"]
    assert "<|im_start|>" in plain.chat_template and "using chatml" in capsys.readouterr().err
    own = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    plain.chat_template = own
    assert set_up_template(plain, None) == [] and plain.chat_template == own  # its own template is kept
