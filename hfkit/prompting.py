"""Prompt-based classification: phrase the task as the model's own pretraining task (a cloze).

    row -> template -> "the movie was dull . It was [MASK] ."  -> LM -> log p(word) at the slot -> label scores

* `Template`: text over the data's columns with one `{mask}` slot, e.g. "{text} All in all, it was {mask}.";
  `{text}` / `{text_pair}` stand for data.text_column / data.text_pair_column, any other `{name}` is a column.
  `{{` and `}}` are literal braces. When a row is too long, the data fields are cut, never the template.
* `Verbalizer`: label -> words. A word is tokenized as it appears after the prompt (the tokenizer's word-boundary
  convention: a leading space for byte-level BPE) whatever way it was typed; a word the vocabulary cannot spell
  (any [UNK] piece) is an error.
* Scoring. Masked LM: the slot holds K mask tokens (K = the longest word's length in tokens) and a word scores the
  mean log-probability of its tokens at the first len(word) mask positions. Causal LM: the prompt up to `{mask}` is
  the prefix (the template's text after the slot is not used) and a word scores the mean log-probability of its
  tokens as the prefix's continuation. A label with several words scores log(mean of exp(word score)): the
  probability that the model says "one of its words". The label scores are the classifier's logits.
* Contextual calibration (Zhao et al., 2021): the label probabilities for content-free inputs ("N/A", "")
  are averaged to p_cf, and logits become log softmax(scores) - log p_cf, so labels the prompt alone favours lose
  their head start. Meant for zero-shot.
* Training (`method: pet`): cross-entropy over the label scores, through the model's own LM head; with
  prompt.tune = full, lora, prompt_tuning or p_tuning deciding which weights learn. The cloze is a head of the
  classification task (tasks/classification.py: Cloze); this module only turns rows into prompts and LM outputs
  into label scores.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, DataError, ModelError

PROMPT_FILE = "prompt.json"
CONTENT_FREE = ("N/A", "")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(\w*)\}|[{}]")


# --------------------------------------------------------------------------------------------- template
@dataclass
class Template:
    """A parsed template: pieces are ("text", literal) | ("field", column) | ("mask", "")."""

    source: str
    pieces: list[tuple[str, str]]

    @classmethod
    def parse(cls, source: str, aliases: dict[str, str | None] | None = None, key: str = "prompt.template") -> "Template":
        aliases = aliases or {}
        pieces: list[tuple[str, str]] = []
        literal, last = [], 0
        for match in _PLACEHOLDER.finditer(source):
            literal.append(source[last:match.start()])
            last = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            name = match.group(1)
            if not name:
                raise ConfigError(f"{key}: stray '{token}' at character {match.start() + 1} of {source!r}; "
                                  "placeholders look like {text} and {mask}, literal braces are {{ and }}")
            if literal:
                pieces.append(("text", "".join(literal)))
                literal = []
            if name == "mask":
                pieces.append(("mask", ""))
                continue
            if name in aliases:
                if aliases[name] is None:
                    raise ConfigError(f"{key}: uses {{{name}}} but data.{name}_column is not set")
                name = aliases[name]
            pieces.append(("field", name))
        literal.append(source[last:])
        if "".join(literal):
            pieces.append(("text", "".join(literal)))
        masks = sum(kind == "mask" for kind, _ in pieces)
        if masks != 1:
            raise ConfigError(f"{key}: needs exactly one {{mask}} slot, found {masks} in {source!r}; "
                              "e.g. \"{text} All in all, it was {mask}.\"")
        if not any(kind == "field" for kind, _ in pieces):
            raise ConfigError(f"{key}: uses no data column; put {{text}} (or a column name in braces) in {source!r}")
        return cls(source, pieces)

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(value for kind, value in self.pieces if kind == "field"))

    def render(self, row: dict, mask: str, prefix_only: bool = False) -> str:
        """The prompt text; `mask` fills the slot. prefix_only: stop at the slot (causal LMs)."""
        out = []
        for kind, value in self.pieces:
            if kind == "mask":
                if prefix_only:
                    return "".join(out).rstrip()
                out.append(mask)
            else:
                out.append(value if kind == "text" else str(row[value]))
        return "".join(out)


# --------------------------------------------------------------------------------------------- verbalizer
def word_token_ids(tokenizer, word: str, answer_start: bool = False) -> list[int]:
    """The ids `word` gets when it follows other words: tokenize 'It was WORD' and keep what WORD added,
    so byte-level BPE gets its leading-space pieces and WordPiece/SentencePiece their word-start pieces.
    answer_start: the word opens a chat answer (prompt.chat), where it has no leading space."""
    word = word.strip()
    if answer_start:
        return tokenizer(word, add_special_tokens=False)["input_ids"]
    context = "It was"
    base = tokenizer(context, add_special_tokens=False)["input_ids"]
    full = tokenizer(f"{context} {word}", add_special_tokens=False)["input_ids"]
    if full[:len(base)] == base and len(full) > len(base):
        return full[len(base):]
    return tokenizer(f" {word}", add_special_tokens=False)["input_ids"]


@dataclass
class Verbalizer:
    labels: list[str]
    words: list[list[str]]
    token_ids: list[list[list[int]]]  # label -> word -> token ids

    @classmethod
    def build(cls, mapping: dict, tokenizer, key: str = "prompt.verbalizer", answer_start: bool = False) -> "Verbalizer":
        if not isinstance(mapping, dict) or not mapping:
            raise ConfigError(f"{key}: give a mapping label -> words, e.g. {{positive: [great, good], negative: [terrible]}}")
        labels, words, ids = [], [], []
        unk = tokenizer.unk_token_id
        for label, value in mapping.items():
            label = str(label).strip().lower() if isinstance(label, bool) else str(label).strip()
            items = [value] if isinstance(value, str) else list(value or [])
            items = [str(w).strip() for w in items]
            if not items or any(not w for w in items):
                raise ConfigError(f"{key}.{label}: give at least one non-empty word")
            token_lists = []
            for w in items:
                t = word_token_ids(tokenizer, w, answer_start)
                if not t or (unk is not None and unk in t):
                    raise ConfigError(f"{key}.{label}: '{w}' is not in the tokenizer's vocabulary (it becomes "
                                      f"{tokenizer.unk_token or 'nothing'}); choose another word")
                token_lists.append(t)
            labels.append(label)
            words.append(items)
            ids.append(token_lists)
        if len(labels) < 2:
            raise ConfigError(f"{key}: needs at least two labels")
        return cls(labels, words, ids)

    @property
    def max_tokens(self) -> int:
        return max(len(t) for per_label in self.token_ids for t in per_label)

    def tables(self):
        """(word_ids [W, K] padded with 0, word_lengths [W], word_labels [W]) as tensors."""
        import torch

        flat = [(li, t) for li, per_label in enumerate(self.token_ids) for t in per_label]
        k = self.max_tokens
        ids = torch.zeros(len(flat), k, dtype=torch.long)
        for w, (_, t) in enumerate(flat):
            ids[w, :len(t)] = torch.tensor(t)
        lengths = torch.tensor([len(t) for _, t in flat])
        labels = torch.tensor([li for li, _ in flat])
        return ids, lengths, labels


# --------------------------------------------------------------------------------------------- scoring (pure)
def word_scores(token_logprobs, word_lengths):
    """[B, W, K] log-probabilities of each word's k-th token -> [B, W] mean over the word's real tokens."""
    import torch

    k = token_logprobs.shape[-1]
    mask = (torch.arange(k, device=token_logprobs.device)[None, :] < word_lengths[:, None].to(token_logprobs.device))
    kept = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs))  # padding may be -inf
    return kept.sum(-1) / mask.sum(-1).to(token_logprobs.dtype)


def label_scores(words, word_labels, num_labels: int):
    """[B, W] word scores -> [B, L]: log of the mean probability of each label's words."""
    import torch

    out = []
    for label in range(num_labels):
        chosen = words[:, word_labels.to(words.device) == label]
        out.append(torch.logsumexp(chosen, dim=-1) - math.log(chosen.shape[-1]))
    return torch.stack(out, dim=-1)


def calibrate(scores, content_free_log_probs):
    """Contextual calibration: log softmax(scores) - log p_cf (argmax of p(y|x) / p_cf(y))."""
    import torch

    return torch.log_softmax(scores.float(), -1) - content_free_log_probs.to(scores.device)


# --------------------------------------------------------------------------------------------- the prompt
@dataclass
class Prompt:
    """Everything needed to turn rows into inputs and LM outputs into label scores; saved as prompt.json."""

    kind: str  # mlm | clm
    template: Template
    verbalizer: Verbalizer
    max_length: int = 128
    calibration: list[float] | None = None  # log p_cf per label
    extra: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return self.verbalizer.labels

    # ---- encoding
    def encode(self, row: dict, tokenizer) -> dict:
        """input_ids / attention_mask / prompt_slot for one row; fields cut from the end until it fits."""
        k = self.verbalizer.max_tokens if self.kind == "mlm" else 1
        mask_text = (tokenizer.mask_token or "") * k
        fields = {c: _clean_field(row[c], tokenizer) for c in self.template.columns}
        chat = self.kind == "clm" and self.extra.get("chat")
        for _ in range(8):
            text = self.template.render(fields, mask_text, prefix_only=self.kind == "clm")
            if chat:  # the prompt is the user's turn; the label word starts the assistant's answer
                text = tokenizer.apply_chat_template([{"role": "user", "content": text.strip()}], tokenize=False,
                                                     add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=not chat)["input_ids"]
            over = len(ids) - self.max_length
            if over <= 0:
                break
            fields = _cut_longest(fields, over, tokenizer)
            if fields is None:
                raise DataError(f"prompt.template: the template alone is longer than data.max_length "
                                f"({self.max_length} tokens); shorten the template or raise data.max_length")
        else:
            raise DataError("prompt.template: could not fit a row into data.max_length; raise data.max_length")
        if self.kind == "mlm":
            slot = ids.index(tokenizer.mask_token_id)
        else:
            slot = len(ids) - 1
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "prompt_slot": slot}

    # ---- scoring
    def scores(self, model, batch: dict, tables=None, calibrated: bool = True):
        """[B, L] label scores for a padded batch (right padding) with `prompt_slot`."""
        import torch

        word_ids, lengths, word_labels = tables or self.verbalizer.tables()
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        slots = batch["prompt_slot"]
        device = input_ids.device
        word_ids, lengths = word_ids.to(device), lengths.to(device)
        k = word_ids.shape[1]
        rows = torch.arange(input_ids.shape[0], device=device)
        if self.kind == "mlm" or k == 1:
            logits = model(input_ids=input_ids, attention_mask=attention).logits
            shift = logits.shape[1] - input_ids.shape[1]  # soft prompts prepend virtual tokens
            positions = (slots + shift)[:, None] + torch.arange(k, device=device)[None, :]  # [B, K]
            positions = positions.clamp(max=logits.shape[1] - 1)
            logp = torch.log_softmax(logits[rows[:, None], positions].float(), -1)  # [B, K, V]
            index = word_ids.t()[None].expand(logp.shape[0], -1, -1)  # [B, K, W]
            token_lp = logp.gather(2, index).transpose(1, 2)  # [B, W, K]
        else:
            token_lp = self._causal_multi_token(model, input_ids, attention, slots, word_ids, lengths)
        scores = label_scores(word_scores(token_lp, lengths), word_labels, len(self.labels))
        if calibrated and self.calibration is not None:
            scores = calibrate(scores, torch.tensor(self.calibration))
        return scores

    def _causal_multi_token(self, model, input_ids, attention, slots, word_ids, lengths):
        """Causal LM, words of several tokens: one sequence per (row, word) = prefix + word, teacher-forced."""
        import torch

        b, w, k = input_ids.shape[0], word_ids.shape[0], word_ids.shape[1]
        n = int(attention.sum(1).max())
        ids = torch.full((b, w, n + k), 0, dtype=input_ids.dtype, device=input_ids.device)
        mask = torch.zeros_like(ids)
        for r in range(b):
            length = int(slots[r]) + 1
            ids[r, :, :length] = input_ids[r, :length]
            mask[r, :, :length] = 1
            for j in range(w):
                ids[r, j, length:length + k] = word_ids[j]
                mask[r, j, length:length + int(lengths[j])] = 1
        logits = model(input_ids=ids.view(b * w, -1), attention_mask=mask.view(b * w, -1)).logits
        shift = logits.shape[1] - ids.shape[2]
        logits = logits.view(b, w, logits.shape[1], -1)
        positions = (slots + shift)[:, None] + torch.arange(k, device=ids.device)[None, :]  # [B, K]
        picked = logits[torch.arange(b)[:, None, None], torch.arange(w)[None, :, None], positions[:, None, :]]
        logp = torch.log_softmax(picked.float(), -1)  # [B, W, K, V]
        return logp.gather(3, word_ids[None, :, :, None].expand(b, -1, -1, 1)).squeeze(-1)

    def content_free_log_probs(self, model, tokenizer) -> list[float]:
        """log of the mean label distribution over the content-free inputs (for calibration)."""
        import torch

        rows = [{c: filler for c in self.template.columns} for filler in CONTENT_FREE]
        with torch.no_grad():
            probs = torch.softmax(self.scores(model, self.collate([self.encode(r, tokenizer) for r in rows], tokenizer),
                                              calibrated=False), -1)
        return torch.log(probs.mean(0)).tolist()

    @staticmethod
    def collate(features: list[dict], tokenizer) -> dict:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return {"input_ids": torch.tensor([f["input_ids"] + [pad] * (n - len(f["input_ids"])) for f in features]),
                "attention_mask": torch.tensor([f["attention_mask"] + [0] * (n - len(f["attention_mask"]))
                                                for f in features]),
                "prompt_slot": torch.tensor([f["prompt_slot"] for f in features]),
                **({"labels": torch.tensor([f["labels"] for f in features])} if "labels" in features[0] else {})}

    # ---- saving
    def to_json(self) -> dict:
        return {"kind": self.kind, "template": self.template.source, "pieces": self.template.pieces,
                "verbalizer": dict(zip(self.verbalizer.labels, self.verbalizer.words)), "labels": self.labels,
                "max_length": self.max_length, "calibration": self.calibration, **self.extra}

    def save(self, directory: str | Path) -> None:
        (Path(directory) / PROMPT_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, tokenizer) -> "Prompt":
        data = json.loads((Path(directory) / PROMPT_FILE).read_text(encoding="utf-8"))
        template = Template(data["template"], [tuple(p) for p in data["pieces"]])
        extra = {k: v for k, v in data.items() if k not in ("kind", "template", "pieces", "verbalizer", "labels",
                                                             "max_length", "calibration")}
        verbalizer = Verbalizer.build(data["verbalizer"], tokenizer, answer_start=bool(data.get("chat")))
        return cls(data["kind"], template, verbalizer, data["max_length"], data.get("calibration"), extra)


def _clean_field(value, tokenizer) -> str:
    text = "" if value is None else str(value)
    if tokenizer.mask_token:
        text = text.replace(tokenizer.mask_token, " ")  # a literal mask string in the data must not become a slot
    return text


def _cut_longest(fields: dict, over: int, tokenizer) -> dict | None:
    """Shorten the longest field by `over` tokens (at a token boundary of the field's own tokenization)."""
    lengths = {c: tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for c, t in fields.items()}
    column = max(lengths, key=lambda c: len(lengths[c]["input_ids"]))
    n = len(lengths[column]["input_ids"])
    if n == 0:
        return None
    keep = max(0, n - over)
    offsets = lengths[column]["offset_mapping"]
    cut = offsets[keep - 1][1] if keep > 0 else 0
    return {**fields, column: fields[column][:cut]}


# --------------------------------------------------------------------------------------------- building blocks
def detect_kind(model_path: str, tokenizer, requested: str = "auto", **config_kwargs) -> str:
    """mlm when the architecture has a masked-LM head class and the tokenizer a mask token; else clm."""
    if requested != "auto":
        if requested == "mlm" and tokenizer.mask_token is None:
            raise ConfigError("prompt.kind: mlm needs a tokenizer with a mask token; this one has none (use clm)")
        return requested
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    model_type = AutoConfig.from_pretrained(model_path, **config_kwargs).model_type
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and tokenizer.mask_token is not None:
        return "mlm"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "clm"
    raise ModelError(f"'{model_path}' ({model_type}) has neither a masked-LM nor a causal-LM head class; "
                     "prompting needs a language model")


def load_lm(model_path: str, kind: str, **kwargs):
    """(model, missing): the LM with its head; `missing` lists head modules the checkpoint lacked (initialised
    at random here: MiniLM-style sentence encoders ship without an MLM head)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from .models import load_pretrained

    cls = AutoModelForMaskedLM if kind == "mlm" else AutoModelForCausalLM
    model, loading = load_pretrained(cls, model_path, output_loading_info=True, **kwargs)
    missing = sorted({k.rsplit(".", 1)[0] for k in loading.get("missing_keys", [])})
    return model, missing


def use_chat(setting: str, tokenizer, kind: str) -> bool:
    """prompt.chat resolved: a causal LM's prompt goes through the chat template (auto: when the tokenizer has one)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if setting == "on" and (kind != "clm" or not has_template):
        raise ConfigError("prompt.chat: on needs a causal LM whose tokenizer has a chat template; this "
                          + ("model is scored as a masked LM" if kind != "clm" else "tokenizer has none")
                          + " (use prompt.chat=auto or off)")
    return kind == "clm" and has_template and setting != "off"


def make_prompt(template: str, verbalizer: dict, tokenizer, kind: str, max_length: int,
                aliases: dict[str, str | None] | None = None, extra: dict | None = None) -> Prompt:
    answer_start = kind == "clm" and bool((extra or {}).get("chat"))  # the label word opens the assistant's answer
    prompt = Prompt(kind, Template.parse(template, aliases),
                    Verbalizer.build(verbalizer, tokenizer, answer_start=answer_start), max_length, extra=extra or {})
    if kind == "mlm" and tokenizer.mask_token is None:
        raise ConfigError("prompt.kind: mlm needs a tokenizer with a mask token; this one has none")
    return prompt


def predict_scores(prompt: Prompt, model, tokenizer, rows: list[dict], batch_size: int = 32, desc: str | None = None):
    """[N, L] label scores in row order (batches sorted by length)."""
    import torch
    from tqdm.auto import tqdm

    encoded = [prompt.encode(r, tokenizer) for r in rows]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    out = torch.empty(len(encoded), len(prompt.labels))
    tables = prompt.verbalizer.tables()
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        starts = range(0, len(order), batch_size)
        for start in (tqdm(starts, desc=desc) if desc and len(order) > batch_size * 4 else starts):
            idx = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in prompt.collate([encoded[i] for i in idx], tokenizer).items()}
            out[idx] = prompt.scores(model, batch, tables).float().cpu()
    return out


# --------------------------------------------------------------------------------------------- training (PET)
def prompt_trainer_class():
    from transformers import Trainer

    class PromptTrainer(Trainer):
        """Trainer whose loss is cross-entropy over the prompt's label scores; the model stays a plain LM
        (or PEFT model), so checkpoints, resume and the final save are the Trainer's own."""

        prompt: Prompt

        def __init__(self, *args, prompt: Prompt, **kwargs):
            super().__init__(*args, **kwargs)
            self.prompt = prompt
            self.tables = prompt.verbalizer.tables()
            self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: let Trainer scale it

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            labels = inputs.pop("labels")
            scores = self.prompt.scores(model, inputs, self.tables)
            loss = torch.nn.functional.cross_entropy(scores, labels)
            return (loss, {"logits": scores}) if return_outputs else loss

    return PromptTrainer
