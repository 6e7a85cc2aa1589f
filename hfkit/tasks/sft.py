"""Supervised fine-tuning of a causal LM on conversations (task sft): instructions, chats, prompt/completion pairs.

hfkit reads the data (any of three formats, `chat.py`), renders it through the chat template and decides which
tokens train (the assistant turns with their end-of-turn token, `chat.encode`), counting the examples that keep
none. TRL's `SFTTrainer` does the rest: best-fit-decreasing packing into padding-free rows whose position ids
restart per example, the collator, and the loss normalised over the trained tokens of the whole accumulated batch.
hfkit hands TRL token ids and labels rather than raw chats because TRL stops with an error at the first example
without an assistant token and drops examples that truncation left without one silently; both are counted here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError
from ..pretrain import perplexity
from . import Task


@dataclass
class SftInfo:
    format: str = "messages"
    added_tokens: list[str] = field(default_factory=list)
    conversations: dict[str, int] = field(default_factory=dict)  # split -> rows read
    dropped: dict[str, int] = field(default_factory=dict)  # split -> examples with no trained token
    truncated: dict[str, int] = field(default_factory=dict)
    trained_tokens: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)


class SupervisedFineTuning(Task):
    name = "sft"
    title = "supervised fine-tuning (causal LM)"
    methods = frozenset({"full", "lora", "prompt_tuning", "p_tuning"})
    default_metric = "loss"
    loss_only = True  # evaluation reports the loss (and perplexity) over trained tokens; no logits are gathered

    def __init__(self):
        self.info: SftInfo | None = None  # what encoding found, for metrics.json (run_facts gets no info)

    def validate(self, cfg) -> list[str]:
        problems = []
        if cfg.sft.packing and cfg.method in ("prompt_tuning", "p_tuning"):
            problems.append(f"sft.packing: a soft prompt ({cfg.method}) is one prefix per row, and a packed row holds "
                            "several examples; set sft.packing=false")
        if cfg.multi_label or cfg.regression:
            problems.append("task sft: multi_label and regression are classification settings; unset them")
        if cfg.lora.load_in_4bit:
            import importlib.util

            if cfg.method != "lora":
                problems.append(f"lora.load_in_4bit: QLoRA trains LoRA adapters on a 4-bit base; method is {cfg.method}")
            elif importlib.util.find_spec("bitsandbytes") is None:
                problems.append("lora.load_in_4bit: needs the bitsandbytes package and a CUDA GPU "
                                "(pip install bitsandbytes)")
            if cfg.lora.merge:
                problems.append("lora.load_in_4bit: a 4-bit base cannot take the merged adapter; set lora.merge=false "
                                "and merge into the unquantised base after the run")
        if cfg.model.random_init:
            problems.append("model.random_init: task sft fine-tunes a trained causal LM; pretrain one with `hfkit "
                            "pretrain gpt2-clm-tiny` and point model.path at its run directory")
        return problems

    def metric_for_best(self, cfg) -> str:
        return "loss"

    def select_metric(self, cfg, info) -> tuple[str, str]:
        return "loss", "the loss on the answers of the validation conversations"

    # ---- data
    def load_data(self, cfg, tokenizer):
        from datasets import Dataset, DatasetDict

        from ..chat import set_up_template

        d, s = cfg.data, cfg.sft
        info = SftInfo(added_tokens=set_up_template(tokenizer, s.chat_template))
        # Conversations are cut at data.max_length here, not by the tokenizer: no "longer than" warning per row.
        tokenizer.model_max_length = max(tokenizer.model_max_length or 0, 10**9)

        splits = {}
        if d.train is not None:
            splits["train"], info.format = read_conversations(d.train, "data.train", cfg, "train", d.dataset_config)
        if d.validation is not None:
            splits["validation"], _ = read_conversations(d.validation, "data.validation", cfg, "validation",
                                                         d.dataset_config)
        elif d.validation_split > 0 and "train" in splits:
            rows = list(splits["train"])
            random.Random(cfg.train.seed).shuffle(rows)
            n = max(1, round(len(rows) * d.validation_split))
            if len(rows) - n < 1:
                raise DataError(f"data.train: {len(rows)} conversation(s) leave none to train on after holding out "
                                f"data.validation_split={d.validation_split}; add rows or set data.validation")
            splits["validation"], splits["train"] = rows[:n], rows[n:]
        if d.test is not None:
            splits["test"], _ = read_conversations(d.test, "data.test", cfg, "test", d.dataset_config)
        if "train" in splits and d.max_train_samples is not None and len(splits["train"]) > d.max_train_samples:
            rows = list(splits["train"])
            random.Random(cfg.train.seed).shuffle(rows)
            splits["train"] = rows[:d.max_train_samples]
        return DatasetDict({k: Dataset.from_dict({"messages": v}) for k, v in splits.items()}), info

    def describe(self, splits, info) -> str:
        turns = sum(sum(t["role"] == "assistant" for t in m) for m in splits["train"]["messages"]) \
            if "train" in splits else 0
        parts = [f"{len(ds):,} {name}" for name, ds in splits.items()]
        line = "data: conversations: " + ", ".join(parts) + f" ({info.format}; {turns:,} assistant turns train)"
        if info.added_tokens:
            line += f"; the chat template added {', '.join(info.added_tokens)} to the tokenizer"
        for split, n in info.tokens.items():
            line += f"; {split}: {n:,} tokens, {info.trained_tokens[split]:,} trained"
        for split, n in info.dropped.items():
            if n:
                line += (f"; {n:,} {split} conversation(s) had no answer token left within data.max_length and were "
                         "left out")
        return line

    def encode(self, splits, tokenizer, cfg, info):
        from datasets import Dataset, DatasetDict

        from ..chat import encode
        from ..training import log

        out = {}
        for name, ds in splits.items():
            rows = [encode(tokenizer, turns, cfg.data.max_length, cfg.sft.train_on_prompt) for turns in ds["messages"]]
            kept = [r for r in rows if r.trained]
            self.info, info.conversations[name] = info, len(rows)
            info.dropped[name] = len(rows) - len(kept)
            info.truncated[name] = sum(r.truncated for r in rows)
            info.tokens[name] = sum(len(r.input_ids) for r in kept)
            info.trained_tokens[name] = sum(r.trained for r in kept)
            if not kept:
                raise DataError(f"data.{name}: none of its {len(rows):,} conversations keeps a token to train on: each "
                                f"answer starts after data.max_length={cfg.data.max_length} tokens; raise "
                                "data.max_length (or shorten the prompts)")
            if info.dropped[name]:
                log(f"data.{name}: {info.dropped[name]:,} of {len(rows):,} conversations have no answer token within "
                    f"data.max_length={cfg.data.max_length} and are left out (counted in metrics.json)")
            out[name] = Dataset.from_dict({"input_ids": [r.input_ids for r in kept], "labels": [r.labels for r in kept]})
        return DatasetDict(out)

    def collator(self, tokenizer, cfg, info):
        return None  # SFTTrainer's: padding-free rows when packing, padded batches (labels padded with -100) if not

    def preview(self, splits, tokenizer, cfg, info, n: int) -> str:
        """The first n training conversations as encoded, trained tokens between [[ ]]."""
        from ..chat import encode, show

        split = "train" if "train" in splits else next(iter(splits))
        shown = [show(tokenizer, encode(tokenizer, turns, cfg.data.max_length, cfg.sft.train_on_prompt), i)
                 for i, turns in enumerate(splits[split]["messages"][:n], 1)]
        legend = (f"{len(shown)} {split} example(s) through the chat template; the tokens between [[ and ]] train "
                  f"(sft.train_on_prompt={str(cfg.sft.train_on_prompt).lower()}). Nothing was trained or written.")
        return "\n".join([legend] + shown)

    # ---- training
    def trainer_class(self, cfg, info):
        from trl import SFTTrainer

        return SFTTrainer

    def training_arguments(self, cfg, info) -> tuple[type, dict]:
        """(the TrainingArguments class, its extra settings): TRL's SFTConfig with packing and the row length."""
        from trl import SFTConfig

        if cfg.sft.packing:
            cfg.train.group_by_length = False  # packed rows are all about data.max_length long: nothing to group
        extra = dict(max_length=cfg.data.max_length, packing=cfg.sft.packing, packing_strategy="bfd",
                     prediction_loss_only=True, dataset_num_proc=cfg.data.num_proc)
        return SFTConfig, extra

    def peft_task_type(self, cfg, info) -> str:
        return "CAUSAL_LM"

    def build_model(self, cfg, tokenizer, info):
        from transformers import AutoModelForCausalLM

        from ..chat import end_of_turn_ids
        from ..models import dtype_kwargs, load_pretrained, max_positions, resolve_model_path

        m = cfg.model
        if info.added_tokens and cfg.method != "full":
            raise ConfigError(f"method {cfg.method}: the chat template added {', '.join(info.added_tokens)} to the "
                              "tokenizer, and their new embeddings must train with every other weight; use method "
                              "full here, or a model whose tokenizer has them")
        quantized = {}
        if cfg.lora.load_in_4bit:  # QLoRA (Dettmers et al. 2023): NF4 weights, double quantisation, bf16 compute
            import torch
            from transformers import BitsAndBytesConfig

            if not torch.cuda.is_available():
                raise ConfigError("lora.load_in_4bit: 4-bit loading (bitsandbytes) needs a CUDA GPU; none is visible")
            quantized = dict(quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16), dtype=torch.bfloat16)
        model = load_pretrained(AutoModelForCausalLM, resolve_model_path(m.path), revision=m.revision,
                                trust_remote_code=m.trust_remote_code, attn_implementation=m.attn_implementation,
                                **(quantized or dtype_kwargs(cfg)), **m.overrides)
        if quantized:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.train.gradient_checkpointing)
        positions = max_positions(model.config)
        if positions is not None and cfg.data.max_length > positions:
            raise ConfigError(f"data.max_length: {cfg.data.max_length} tokens, but the model has {positions} positions; "
                              f"set data.max_length={positions} or less")
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        stop = end_of_turn_ids(tokenizer, model.generation_config.eos_token_id)
        model.generation_config.eos_token_id = stop[0] if len(stop) == 1 else stop
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, []

    # ---- evaluation and output
    def compute_metrics(self, cfg, info, split):
        return None

    def report(self, cfg, info, metrics: dict, split: str) -> dict:
        prefix = "eval" if split == "validation" else split
        out = {"trained_tokens": info.trained_tokens.get(split), "dropped": info.dropped.get(split, 0)}
        ppl = perplexity(metrics.get(f"{prefix}_loss"))
        if ppl is not None:
            out["perplexity"] = ppl
        return out

    def run_facts(self, cfg) -> dict:
        facts = {"packing": cfg.sft.packing, "train_on_prompt": cfg.sft.train_on_prompt}
        info = self.info
        if info is not None and "train" in info.tokens:
            facts.update(train_conversations=info.conversations["train"], train_left_out=info.dropped.get("train", 0),
                         train_truncated=info.truncated.get("train", 0),
                         train_answer_tokens=info.trained_tokens["train"], train_conversation_tokens=info.tokens["train"])
        return facts

    def card(self, cfg, info, output_dir: str):
        from ..methods import METHODS
        from ..models import resolve_model_path

        lines = [f"method: {cfg.method}", f"base model: {cfg.model.path}", f"data: {cfg.data.train} ({info.format})",
                 "loss: " + ("every token" if cfg.sft.train_on_prompt else "assistant turns only"),
                 f"chat template: {cfg.sft.chat_template or 'the base model tokenizer'}, saved with this tokenizer"]
        load = (f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
                f"'{resolve_model_path(cfg.model.path)}'), '{output_dir}')"
                if METHODS[cfg.method].peft else f"model = AutoModelForCausalLM.from_pretrained('{output_dir}')")
        snippet = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                   + ("from peft import PeftModel\n" if METHODS[cfg.method].peft else "")
                   + f"tokenizer = AutoTokenizer.from_pretrained('{output_dir}')\n{load}\n"
                   "ids = tokenizer.apply_chat_template([{'role': 'user', 'content': 'Hello!'}], "
                   "add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
                   "out = model.generate(**ids, max_new_tokens=64, do_sample=False)\n"
                   "print(tokenizer.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True))\n"
                   f"# or: hfkit generate {output_dir} 'Hello!'   |   hfkit chat {output_dir}")
        return f"{Path(output_dir).name}: {self.title} ({cfg.method})", lines, snippet

    # ---- a loaded run (inference.LoadedRun)
    def predict(self, run, texts: list[str], pairs: list[str] | None, batch_size: int) -> list[dict]:
        raise ConfigError("predict: an sft run answers in text; use `hfkit generate RUN \"a prompt\"` or `hfkit chat RUN`")

    def evaluate(self, run, data, batch_size: int) -> dict:
        """Loss over the answer tokens (as trained: sft.train_on_prompt of the run) and its perplexity."""
        from ..chat import encode

        cfg = run.config
        turns, _ = read_conversations(data, "--data", cfg)
        rows = [encode(run.tokenizer, t, cfg.data.max_length, cfg.sft.train_on_prompt) for t in turns]
        kept = [r for r in rows if r.trained]
        if not kept:
            raise DataError(f"--data: no conversation keeps an answer token within data.max_length={cfg.data.max_length}")
        total, count = answer_loss(run.model, kept, batch_size, run.tokenizer.pad_token_id)
        loss = total / count
        return {"loss": loss, "perplexity": perplexity(loss), "conversations": len(rows),
                "left_out": len(rows) - len(kept), "trained_tokens": count}


def read_conversations(spec, key: str, cfg, split: str = "train",
                       dataset_config: str | None = None) -> tuple[list[list[dict]], str]:
    """(checked turns of every row, the data format) from files, folders, globs, builtin:NAME or a hub id; errors
    name `key` and the row."""
    from ..chat import conversations, detect_format
    from ..data import concatenate, load_table

    ds = concatenate(load_table(spec, key=key, dataset_config=dataset_config, hub_split=split), key)
    if len(ds) == 0:
        raise DataError(f"{key}: no rows")
    fmt = detect_format(ds.column_names, key, cfg.sft.format)
    return conversations(ds, fmt, key, cfg.sft.system_prompt), fmt


def answer_loss(model, rows, batch_size: int, pad_id: int) -> tuple[float, int]:
    """(summed next-token cross-entropy over the labelled tokens, their number) of encoded rows, in batches."""
    import torch

    total, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        width = max(len(r.input_ids) for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, r in enumerate(batch):
            n = len(r.input_ids)
            ids[j, :n], labels[j, :n], mask[j, :n] = torch.tensor(r.input_ids), torch.tensor(r.labels), 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        target = labels[:, 1:].to(device)
        total += torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100,
                                                   reduction="sum").item()
        count += int((target != -100).sum())
    return total, count
