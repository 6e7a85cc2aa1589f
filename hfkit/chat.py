"""Conversations for supervised fine-tuning (task sft) and for talking to the result.

Three data formats become one: a list of `{role, content}` turns.

    messages             [{"role": "system"|"user"|"assistant", "content": ...}, ...]
    prompt / completion  -> [user: prompt, assistant: completion]
    Alpaca               instruction (+ input) / output -> [user: instruction\\n\\ninput, assistant: output]

The chat template turns the turns into text: the tokenizer's own, or a named one written into the tokenizer (so the
saved run renders the same text at inference as in training). Which tokens train is read from the template itself:
an assistant turn is the text the template adds after the conversation so far plus its generation prompt, which
works for any prefix-preserving template, with or without `{% generation %}` markers (see `answer_spans`).

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DataError, ModelError

ROLES = ("system", "user", "assistant")

# ChatML (the format of OpenAI's chat markup, used by Qwen and SmolLM2). The {% generation %} markers let
# transformers' `return_assistant_tokens_mask` (and TRL) find the assistant's tokens too; hfkit does not need them.
CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' }}"
    "{%- endif %}"
    "{{- '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

# name -> (template, the special tokens it needs); the end-of-turn token is read from the template (end_of_turn_ids)
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatml": (CHATML, ("<|im_start|>", "<|im_end|>")),
}
DEFAULT_TEMPLATE = "chatml"  # for a tokenizer without a template: the format SmolLM2, Qwen and TRL's setup_chat_format use

FORMATS = ("messages", "prompt_completion", "alpaca")
FORMAT_COLUMNS = {"messages": ("messages",), "prompt_completion": ("prompt", "completion"),
                  "alpaca": ("instruction", "output")}


# --------------------------------------------------------------------------------------------- data formats
def detect_format(columns: list[str], key: str, wanted: str = "auto") -> str:
    """The data format from the columns (or `wanted`, checked against them)."""
    if wanted != "auto":
        missing = [c for c in FORMAT_COLUMNS[wanted] if c not in columns]
        if missing:
            raise DataError(f"{key}: sft.format is {wanted}, which needs the column(s) {', '.join(missing)}; the data "
                            f"has {', '.join(columns)}")
        return wanted
    for name in FORMATS:
        if all(c in columns for c in FORMAT_COLUMNS[name]):
            return name
    raise DataError(f"{key}: cannot tell the conversation format from the columns ({', '.join(columns)}); give "
                    "`messages` (a list of {role, content} turns), `prompt` + `completion`, or `instruction` + `output` "
                    "(+ optional `input`, Alpaca), or set sft.format to messages, prompt_completion or alpaca after "
                    "renaming the columns")


def to_messages(row: dict, fmt: str, system_prompt: str | None = None) -> list[dict]:
    """One row of any format as a list of turns (not yet checked)."""
    if fmt == "messages":
        turns = row["messages"]
    elif fmt == "prompt_completion":
        turns = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    else:
        prompt = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
    if system_prompt and turns and isinstance(turns[0], dict) and turns[0].get("role") != "system":
        turns = [{"role": "system", "content": system_prompt}] + list(turns)
    return turns


def check_conversation(turns, where: str) -> list[dict]:
    """The turns as plain dicts, or a DataError naming the row: known roles, an optional system turn first, then
    user and assistant alternating, ending with an assistant turn (the one that trains last)."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: `messages` must be a non-empty list of {{role, content}} turns")
    clean = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise DataError(f"{where}: turn {i} is not a {{role, content}} object")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise DataError(f"{where}: turn {i} has role '{role}', which is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: turn {i} ({role}) has content of type {type(content).__name__}; give the "
                            "text as a string")
        clean.append({"role": role, "content": content})
    body = clean[1:] if clean[0]["role"] == "system" else clean
    for i, turn in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn["role"] != expected:
            number = i + 1 + (len(clean) - len(body))
            after = f" after '{body[i - 1]['role']}'" if i else " first (after an optional system turn)"
            raise DataError(f"{where}: turns must alternate user, assistant, user, ...; turn {number} is "
                            f"'{turn['role']}'{after}")
    if not body or body[-1]["role"] != "assistant":
        raise DataError(f"{where}: the conversation must end with an assistant turn (the answer to train on)")
    return clean


def conversations(ds, fmt: str, key: str, system_prompt: str | None = None) -> list[list[dict]]:
    """Every row of a datasets.Dataset as checked turns; errors name the row (counting from 1)."""
    return [check_conversation(to_messages(row, fmt, system_prompt), f"{key} row {i}")
            for i, row in enumerate(ds, 1)]


# --------------------------------------------------------------------------------------------- templates
def set_up_template(tokenizer, name: str | None) -> list[str]:
    """Give the tokenizer the chat template to train with: `name` (a TEMPLATES name or a .jinja file) replaces its
    own; None keeps its own, and gives a tokenizer without one (a model from `hfkit pretrain`) ChatML, logged.
    Returns the special tokens added (the model's embeddings must grow by as many)."""
    from pathlib import Path

    if name is None:
        if getattr(tokenizer, "chat_template", None):
            return []
        from .console import log

        name = DEFAULT_TEMPLATE
        log(f"sft.chat_template: the tokenizer has no chat template; using {name} (name another, or a .jinja "
            "file, with sft.chat_template)")
    if name in TEMPLATES:
        template, specials = TEMPLATES[name]
    else:
        path = Path(name)
        if path.suffix != ".jinja" or not path.is_file():
            raise ModelError(f"sft.chat_template: '{name}' is neither a known template ({', '.join(TEMPLATES)}) nor a "
                             ".jinja file")
        template, specials = path.read_text(encoding="utf-8"), ()
    vocab = tokenizer.get_vocab()
    added = [t for t in specials if t not in vocab]
    if added:
        tokenizer.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)
    tokenizer.chat_template = template
    return added


def end_of_turn_ids(tokenizer, known=None) -> list[int]:
    """Token ids that end an assistant turn, for generation: the last token of an answer as the template renders
    it (when it is a special token, e.g. <|im_end|>), then `known` (the model's own, an int or list) and eos."""
    ids = []
    probe = encode(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], None)
    last = probe.input_ids[probe.spans[-1][1] - 1] if probe.spans else None
    if last in tokenizer.all_special_ids:
        ids.append(last)
    ids += [known] if isinstance(known, int) else list(known or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def render(tokenizer, turns: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=add_generation_prompt)


def answer_spans(tokenizer, turns: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, the character span of each assistant turn).

    An assistant turn i is what the template adds between rendering turns[:i] with the generation prompt and
    rendering turns[:i + 1]: its content and end-of-turn token (whitespace the template puts after the end-of-turn
    token separates turns and does not train). This needs only that the template is prefix-preserving, which is
    checked; SmolLM2's template, for one, has no {% generation %} markers and TRL 1.16 has no training version of
    it, so marker-based masks would leave nothing to train.
    """
    text = render(tokenizer, turns)
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = render(tokenizer, turns[:i], add_generation_prompt=True)
        upto = render(tokenizer, turns[:i + 1])
        if not (upto.startswith(before) and text.startswith(upto)):
            raise ModelError("the chat template renders a conversation differently from its beginning plus the "
                             "generation prompt (it is not prefix-preserving), so the answers cannot be located; use "
                             "sft.chat_template=chatml or sft.train_on_prompt=true")
        end = len(upto)
        while end > len(before) and upto[end - 1].isspace():
            end -= 1
        spans.append((len(before), end))
    return text, spans


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    spans: list[tuple[int, int]] = field(default_factory=list)  # trained token ranges, for --preview

    @property
    def trained(self) -> int:
        return sum(label != -100 for label in self.labels)


def encode(tokenizer, turns: list[dict], max_length: int | None, train_on_prompt: bool = False) -> Encoded:
    """Token ids of the rendered conversation and labels: the assistant turns' tokens (content + end-of-turn), -100
    elsewhere; every token with train_on_prompt. A token trains when it starts inside an answer's span."""
    text, spans = answer_spans(tokenizer, turns)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if train_on_prompt:
        labels = list(ids)
    else:
        labels = [-100] * len(ids)
        k = 0
        for j, (start, _) in enumerate(offsets):
            while k < len(spans) and start >= spans[k][1]:
                k += 1
            if k < len(spans) and spans[k][0] <= start < spans[k][1]:
                labels[j] = ids[j]
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels, truncated, _runs(labels))


def _runs(labels: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for j, label in enumerate(labels + [-100]):
        if label != -100 and start is None:
            start = j
        elif label == -100 and start is not None:
            runs.append((start, j))
            start = None
    return runs


def show(tokenizer, example: Encoded, number: int) -> str:
    """An encoded example as text with the trained tokens between [[ and ]] (what `--preview` prints)."""
    pieces, last = [], 0
    ids = example.input_ids
    for start, end in example.spans:
        pieces.append(tokenizer.decode(ids[last:start]))
        pieces.append("[[" + tokenizer.decode(ids[start:end]) + "]]")
        last = end
    pieces.append(tokenizer.decode(ids[last:]))
    head = (f"--- example {number}: {len(ids)} tokens, {example.trained} trained"
            + (" (truncated at data.max_length)" if example.truncated else ""))
    return head + "\n" + "".join(pieces)
