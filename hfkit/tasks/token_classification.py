"""Token classification: one tag per word (named entities, part-of-speech, chunks).

    words + tags -> IOB2 -> windows of whole words -> first piece of each word labelled -> per-token head
    -> one prediction per word (from the window where the word has the most context) -> entity-level F1

* Data: CoNLL files (`token<TAB>tag` per line, the tag in the last column, a blank line between sentences,
  `-DOCSTART-` skipped), or JSONL / JSON / parquet / hub datasets with a list of words (`data.tokens_column`) and a
  list of tags (`data.tags_column`), tags as strings or ints (a hub ClassLabel's names are used).
* Tags: a tag set whose tags are `O` or `B-`/`I-`/`E-`/`S-` + a type is an entity scheme; IOB1 and BIOES are
  converted to IOB2 on load (`data.tag_scheme: auto` detects which). An `I-X` that follows neither `B-X` nor `I-X`
  is invalid IOB2: an error naming the row, or with `data.repair_tags: true` made a `B-X` and counted in the log.
  Any other tag set (part-of-speech) is used as it is.
* Labels on words, not sub-words: the fast tokenizer's `word_ids()` map pieces to words; a word's first piece carries
  its tag and the rest are ignored (-100), unless `data.label_all_tokens` (then they carry it too, B- made I-).
  Byte-level BPE tokenizers (RoBERTa, GPT-2) get `add_prefix_space=True`, which pre-split words need.
* Long sentences are cut into windows of whole words that fit `data.max_length`, overlapping by about
  `data.stride` tokens. Training uses every window; evaluation and prediction take each word's tag from the one
  window where it is farthest from an edge, so every word gets exactly one prediction.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from . import Task

PREFIXES = ("B", "I", "E", "S")


# --------------------------------------------------------------------------------------------- tag schemes
def split_tag(tag: str) -> tuple[str | None, str | None]:
    """("B", "PER") for B-PER, ("O", None) for O, (None, tag) for a tag outside the IOB family."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[0] in PREFIXES and tag[1] in "-_":
        return tag[0], tag[2:]
    return None, tag


def detect_scheme(sentences: list[list[str]]) -> str:
    """iob2 | iob1 | bioes | none (not an entity tag set)."""
    tags = {t for s in sentences for t in s}
    parts = [split_tag(t) for t in tags]
    if any(p is None for p, _ in parts) or all(p == "O" for p, _ in parts):
        return "none"
    if any(p in ("E", "S") for p, _ in parts):
        return "bioes"
    # IOB1 begins entities with I- and uses B- only between two adjacent entities of one type; IOB2 begins every
    # entity with B-. So: entities that start with I- and no B- after O or at a sentence start -> IOB1.
    starts_with_i = starts_with_b = False
    for sentence in sentences:
        previous = "O"
        for tag in sentence:
            prefix, _ = split_tag(tag)
            if split_tag(previous)[0] == "O":
                starts_with_i |= prefix == "I"
                starts_with_b |= prefix == "B"
            previous = tag
    return "iob1" if starts_with_i and not starts_with_b else "iob2"


def to_iob2(tags: list[str], scheme: str) -> tuple[list[str], list[int]]:
    """(IOB2 tags, positions of invalid I- tags that were turned into B-). IOB1's entity-opening I- are converted,
    not counted; BIOES's S-/E- become B-/I-."""
    out, invalid = [], []
    previous_type = None  # type of the entity the previous word belongs to (None after O)
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        if prefix == "O":
            out.append("O")
            previous_type = None
            continue
        if scheme == "bioes":
            prefix = {"S": "B", "E": "I"}.get(prefix, prefix)
        if prefix == "I" and previous_type != kind:
            if scheme != "iob1":
                invalid.append(i)
            prefix = "B"
        out.append(f"{prefix}-{kind}")
        previous_type = kind
        if scheme == "bioes" and split_tag(tag)[0] in ("S", "E"):
            previous_type = None  # S- and E- end their entity
    return out, invalid


def tag_names(sentences: list[list[str]]) -> list[str]:
    """Tags in a stable order: O first, then by entity type, B- before I-."""
    tags = {t for s in sentences for t in s}
    return sorted(tags, key=lambda t: (t != "O", split_tag(t)[1] or "", split_tag(t)[0] or ""))


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1) of each entity in IOB2 tags; an I- without its B- opens one (lenient)."""
    spans, current = [], None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = split_tag(tag)
        if current and (prefix != "I" or kind != current[0]):
            spans.append((current[0], current[1], i))
            current = None
        if prefix in ("B", "I") and current is None:
            current = (kind, i)
    return spans


# --------------------------------------------------------------------------------------------- labels and data
@dataclass
class TagInfo:
    """The tag set: IOB2 entity tags (scheme iob2) or plain tags (scheme none). Recorded as id2label / label2id."""

    names: list[str]
    scheme: str = "iob2"
    repaired: dict[str, int] = field(default_factory=dict)  # split -> invalid tags repaired

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def metric_config(self) -> str:
        return "iob2" if self.scheme == "iob2" else "tags"

    def inside(self) -> list[int]:
        """For each tag id, the id of its I- tag (B-X -> I-X where I-X exists), for label_all_tokens."""
        index = {n: i for i, n in enumerate(self.names)}
        out = []
        for i, name in enumerate(self.names):
            prefix, kind = split_tag(name)
            out.append(index.get(f"I-{kind}", i) if prefix == "B" else i)
        return out


def _word_rows(spec, key: str, d):
    """Dataset(tokens, tags) with string tags, from any source the spec names (`d`: the data settings)."""
    from datasets import Dataset

    from ..data import concatenate, load_table

    parts = []
    for part in load_table(spec, key=key, dataset_config=d.dataset_config, hub_split=_split_of(key), words=True):
        if set(part.column_names) == {"tokens", "tags"} and (d.tokens_column, d.tags_column) != ("tokens", "tags") \
                and not {d.tokens_column, d.tags_column} <= set(part.column_names):
            columns = ("tokens", "tags")  # CoNLL files always give these
        else:
            columns = (d.tokens_column, d.tags_column)
        for column, setting in zip(columns, ("data.tokens_column", "data.tags_column")):
            if column not in part.column_names:
                raise DataError(f"{key}: no column '{column}' in the data; its columns are "
                                f"{', '.join(part.column_names)}; set {setting}")
        names = _class_names(part.features[columns[1]])
        tags = [[names[t] if names else str(t) for t in row] if row is not None else None for row in part[columns[1]]]
        parts.append(Dataset.from_dict({"tokens": part[columns[0]], "tags": tags}))
    ds = concatenate(parts, key)
    for row, (words, tags) in enumerate(zip(ds["tokens"], ds["tags"]), 1):
        if not isinstance(words, list) or not words:
            raise DataError(f"{key}: row {row} has no words (column {d.tokens_column} must hold a non-empty list)")
        if not isinstance(tags, list) or len(tags) != len(words):
            raise DataError(f"{key}: row {row} has {len(words)} words but {len(tags) if isinstance(tags, list) else 0} "
                            "tags; give one tag per word")
    return ds


def _split_of(key: str) -> str:
    return {"data.train": "train", "data.validation": "validation", "data.test": "test"}.get(key, "train")


def _class_names(feature) -> list[str] | None:
    """The names of a hub dataset's ClassLabel tags (a sequence of ClassLabel), else None."""
    inner = getattr(feature, "feature", None)
    return list(inner.names) if inner is not None and hasattr(inner, "names") else None


def _to_scheme(ds, scheme: str, key: str, repair: bool) -> tuple[object, int]:
    if scheme == "none":
        return ds, 0
    converted, repaired = [], 0
    for row, tags in enumerate(ds["tags"], 1):
        tags = [str(t) for t in tags]
        new, invalid = to_iob2(tags, scheme)
        if invalid and not repair:
            i = invalid[0]
            before = tags[i - 1] if i else "the sentence start"
            raise DataError(f"{key}: row {row}, word {i + 1} ('{ds[row - 1]['tokens'][i]}'): tag {tags[i]} follows "
                            f"{before}, which is invalid IOB2; fix the tags, or set data.repair_tags=true to make such "
                            "tags B-")
        repaired += len(invalid)
        converted.append(new)
    return ds.remove_columns("tags").add_column("tags", converted), repaired


def encode_tags(ds, info: TagInfo, key: str, known: str = "the training data"):
    index = {n: i for i, n in enumerate(info.names)}
    ids = []
    for row, tags in enumerate(ds["tags"], 1):
        for tag in tags:
            if tag not in index:
                raise DataError(f"{key}: tag '{tag}' (row {row}) never appears in {known}; its tags: "
                                f"{', '.join(info.names)}")
        ids.append([index[t] for t in tags])
    return ds.add_column("labels", ids)


def load_tagged(cfg):
    """(DatasetDict of train / validation / test with tokens, tags, labels; TagInfo)."""
    from datasets import DatasetDict

    d = cfg.data
    train = _word_rows(d.train, "data.train", d)
    scheme = detect_scheme(train["tags"]) if d.tag_scheme == "auto" else d.tag_scheme
    splits = {"train": train}
    if d.validation is not None:
        splits["validation"] = _word_rows(d.validation, "data.validation", d)
    elif d.validation_split > 0:
        if len(train) < 2 or round(len(train) * d.validation_split) < 1:
            raise DataError(f"data.validation_split: {len(train)} sentence(s) are too few to hold out "
                            f"{d.validation_split:.0%}; give data.validation")
        parts = train.train_test_split(test_size=d.validation_split, seed=cfg.train.seed)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
    if d.test is not None:
        splits["test"] = _word_rows(d.test, "data.test", d)
    repaired = {}
    for name in list(splits):
        splits[name], repaired[name] = _to_scheme(splits[name], scheme, f"data.{name}", d.repair_tags)
    info = TagInfo(tag_names(splits["train"]["tags"]), "iob2" if scheme != "none" else "none", repaired)
    for name in list(splits):
        splits[name] = encode_tags(splits[name], info, f"data.{name}")
    train = splits["train"]
    if d.max_train_samples is not None and len(train) > d.max_train_samples:
        splits["train"] = train.shuffle(seed=cfg.train.seed).select(range(d.max_train_samples))
    return DatasetDict(splits), info


# --------------------------------------------------------------------------------------------- tokenization
def is_byte_level(tokenizer) -> bool:
    """Whether the tokenizer pre-tokenizes bytes with a leading-space convention (RoBERTa, GPT-2)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in str(backend.pre_tokenizer)


def word_tokenizer(tokenizer):
    """The tokenizer set up for pre-split words: byte-level BPE needs add_prefix_space=True (a word inside a
    sentence is spelled with its leading space)."""
    if is_byte_level(tokenizer) and not getattr(tokenizer, "add_prefix_space", False):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path, add_prefix_space=True)
    return tokenizer


def _clean_words(words: list[str], tokenizer) -> list[str]:
    """A word made only of white space would vanish in tokenization and lose its tag: spell it as unknown."""
    unk = tokenizer.unk_token or "?"
    return [w if isinstance(w, str) and w.strip() else unk for w in words]


def windows(piece_counts: list[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """[(first word, last word + 1)] covering all words, each window at most `budget` pieces (a longer single word
    gets a window of its own, truncated), consecutive windows sharing about `stride` pieces of whole words (at most
    half a window)."""
    n = len(piece_counts)
    out, start = [], 0
    while start < n:
        end, used = start, 0
        while end < n and (used + piece_counts[end] <= budget or end == start):
            used += piece_counts[end]
            end += 1
        out.append((start, end))
        if end >= n:
            break
        back, shared, overlap = end, 0, min(stride, budget // 2)  # at most half a window: windows keep moving
        while back - 1 > start and shared + piece_counts[back - 1] <= overlap:
            back -= 1
            shared += piece_counts[back]
        start = back
    return out


def owners(spans: list[tuple[int, int]], n: int) -> list[int]:
    """For each word, the window where it is farthest from an edge (ties: the earlier window)."""
    best = [(-1, 0)] * n
    for k, (start, end) in enumerate(spans):
        for w in range(start, end):
            room = min(w - start, end - 1 - w)
            if room > best[w][0]:
                best[w] = (room, k)
    return [k for _, k in best]


@dataclass
class Encoded:
    """Windows of one split: per window its sentence, its first word, and the words it owns (evaluation)."""

    sentence: list[int]
    first_word: list[int]
    owned: list[list[int]]  # word indices (in the sentence) whose prediction this window gives


def encode_words(sentences: list[list[str]], labels: list[list[int]] | None, tokenizer, *, max_length: int,
                 stride: int, label_all: bool = False, inside: list[int] | None = None, train: bool = False):
    """(rows of input_ids / attention_mask [/ token_type_ids] / labels, Encoded). Training rows label every word of
    each window; evaluation rows label only the first piece of the words the window owns."""
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    budget = max(max_length - specials, 1)
    rows: list[dict] = []
    meta = Encoded([], [], [])
    for s, words in enumerate(sentences):
        words = _clean_words(words, tokenizer)
        whole = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        counts = [0] * len(words)
        for w in whole.word_ids():
            if w is not None:
                counts[w] += 1
        spans = windows(counts, budget, stride)
        owner = owners(spans, len(words))
        for k, (start, end) in enumerate(spans):
            enc = tokenizer(words[start:end], is_split_into_words=True, truncation=True, max_length=max_length)
            row = {key: list(value) for key, value in enc.items()}
            owned = [w for w in range(start, end) if owner[w] == k]
            if labels is not None:
                tags, previous = [], None
                for w in enc.word_ids():
                    if w is None:
                        tags.append(-100)
                    elif w != previous:
                        word = start + w
                        tags.append(labels[s][word] if train or owner[word] == k else -100)
                    else:
                        tags.append(inside[labels[s][start + w]] if train and label_all else -100)
                    previous = w
                row["labels"] = tags
            rows.append(row)
            meta.sentence.append(s)
            meta.first_word.append(start)
            meta.owned.append(owned)
    return rows, meta


def word_predictions(logits, labels, meta: Encoded, sentence_lengths: list[int]):
    """Per sentence, per word: the logits row of the word's first piece in its owning window.
    `labels` mark those positions (not -100) in the same order as `meta.owned`."""
    import numpy as np

    out = [[None] * n for n in sentence_lengths]
    for r in range(len(meta.sentence)):
        positions = np.nonzero(np.asarray(labels[r]) != -100)[0]
        for w, p in zip(meta.owned[r], positions):
            out[meta.sentence[r]][w] = logits[r][p]
    return out


# --------------------------------------------------------------------------------------------- the task
class TokenClassification(Task):
    name = "token_classification"
    title = "token classification"
    # Not prompt_tuning / p_tuning: PEFT (0.21) prepends their virtual tokens to the input and hands the labels to the
    # model unchanged, so logits and labels differ in length ("Expected input batch_size (52) to match target
    # batch_size (12)"). Prefix tuning adds keys and values, not positions, and works (where transformers lets it).
    methods = frozenset({"full", "frozen", "lora", "prefix_tuning", "ia3"})
    default_metric = "f1"

    def __init__(self):
        self.meta: dict[str, tuple[Encoded, list[list[str]]]] = {}  # split -> its windows and its words' tags

    def validate(self, cfg) -> list[str]:
        problems = []
        if cfg.multi_label or cfg.regression:
            problems.append("multi_label / regression: classification settings; unset them for token_classification")
        if cfg.data.stride < 0:
            problems.append("data.stride: must be >= 0")  # any overlap works: each window starts a word further on
        if cfg.data.shots_per_class is not None:
            problems.append("data.shots_per_class: few-shot sampling is for classification; use data.max_train_samples")
        return problems

    def metric_for_best(self, cfg) -> str:
        return "f1"

    def check_supported(self, cfg) -> None:
        from ..methods import check_prefix_tuning

        check_prefix_tuning(cfg, "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING")

    def load_data(self, cfg, tokenizer):
        return load_tagged(cfg)

    def describe(self, splits, info) -> str:
        train = splits["train"]
        if info.scheme == "iob2":
            counts = Counter(kind for tags in train["tags"] for kind, _, _ in entities(tags))
            what = "entities: " + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items()))
        else:
            what = f"{info.num_labels} tags"
        repaired = {k: v for k, v in info.repaired.items() if v}
        return (f"data: {len(train):,} training sentences ({sum(len(t) for t in train['tokens']):,} words)"
                + "".join(f", {len(ds):,} {name} sentences" for name, ds in splits.items() if name != "train")
                + f"; {what}" + ("; invalid IOB2 tags repaired: "
                                 + ", ".join(f"{v} in {k}" for k, v in repaired.items()) if repaired else ""))

    def encode(self, splits, tokenizer, cfg, info):
        from datasets import Dataset, DatasetDict

        d = cfg.data
        tokenizer = word_tokenizer(tokenizer)
        out = {}
        for name, ds in splits.items():
            rows, meta = encode_words(ds["tokens"], ds["labels"], tokenizer, max_length=d.max_length, stride=d.stride,
                                      label_all=d.label_all_tokens, inside=info.inside(), train=name == "train")
            out[name] = Dataset.from_list(rows)
            self.meta[name] = (meta, ds["tags"])
        return DatasetDict(out)

    def collator(self, tokenizer, cfg, info):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    def peft_task_type(self, cfg, info) -> str:
        return "TOKEN_CLS"

    def build_model(self, cfg, tokenizer, info):
        from transformers import AutoModelForTokenClassification

        from ..models import load_head_model

        return load_head_model(AutoModelForTokenClassification, cfg, tokenizer, info.names, num_labels=info.num_labels)

    def build_frozen_model(self, cfg, tokenizer, info):
        from ..heads import TokenClassifier
        from ..models import load_backbone

        f = cfg.frozen
        model = TokenClassifier(load_backbone(cfg), num_labels=info.num_labels, problem_type="token_classification",
                                pooling="token", head=f.head, hidden_size=f.hidden_size, dropout=f.dropout,
                                id2label=dict(enumerate(info.names)))
        return model, []

    def compute_metrics(self, cfg, info, split):
        meta, references = self.meta[split]
        metric = self._metric(info)

        def compute(eval_pred):
            result = self._score(eval_pred.predictions, eval_pred.label_ids, meta, references, info, metric)
            return {k: v for k, v in result.items() if k != "report"}

        return compute

    def report(self, cfg, info, output, split) -> dict:
        meta, references = self.meta[split]
        result = self._score(output.predictions, output.label_ids, meta, references, info, self._metric(info))
        return {"report": result["report"], "sentences": len(references), "words": sum(len(r) for r in references)}

    @staticmethod
    def _metric(info):
        from ..metrics import sequence_metric

        return sequence_metric(info.metric_config)

    @staticmethod
    def _score(logits, labels, meta, references, info, metric) -> dict:
        logits = logits[0] if isinstance(logits, tuple) else logits
        predicted = word_predictions(logits.argmax(-1)[..., None], labels, meta, [len(r) for r in references])
        tags = [[info.names[int(p[0])] if p is not None else "O" for p in sentence] for sentence in predicted]
        return metric.compute(predictions=tags, references=[list(r) for r in references])

    # ---- prediction on a loaded run (inference.LoadedRun)
    def predict(self, run, texts: list[str], pairs, batch_size: int) -> list[dict]:
        if pairs is not None:
            raise DataError("token classification tags single texts; give no pair texts")
        spans = [split_words(t) for t in texts]
        probs = word_probabilities(run, [[w for w, _, _ in s] for s in spans], batch_size)
        names = [run.id2label[i] for i in sorted(run.id2label)]
        iob = all(split_tag(n)[0] is not None for n in names)
        results = []
        for text, words, p in zip(texts, spans, probs):
            best = [int(row.argmax()) for row in p]
            score = [float(row[b]) for row, b in zip(p, best)]
            tags = [names[b] for b in best]
            if not iob:
                results.append({"words": [{"text": w, "tag": t, "start": a, "end": b, "score": round(c, 4)}
                                          for (w, a, b), t, c in zip(words, tags, score)]})
                continue
            found = []
            for kind, first, last in entities(tags):
                start, end = words[first][1], words[last - 1][2]
                found.append({"text": text[start:end], "type": kind, "start": start, "end": end,
                              "score": round(sum(score[first:last]) / (last - first), 4)})
            results.append({"entities": found})
        return results

    def evaluate(self, run, data, batch_size: int) -> dict:
        d = run.data  # the run's data settings (columns, tag scheme, windows)
        names = [run.id2label[i] for i in sorted(run.id2label)]
        info = TagInfo(names, "iob2" if all(split_tag(n)[0] is not None for n in names) else "none")
        ds = _word_rows(data, "--data", d)
        scheme = info.scheme if info.scheme == "none" else (
            detect_scheme(ds["tags"]) if d.tag_scheme == "auto" else d.tag_scheme)
        ds, repaired = _to_scheme(ds, scheme, "--data", d.repair_tags)
        ds = encode_tags(ds, info, "--data", known="the run's tags")
        probs = word_probabilities(run, ds["tokens"], batch_size)
        predicted = [[names[int(row.argmax())] for row in sentence] for sentence in probs]
        result = self._metric(info).compute(predictions=predicted, references=[list(t) for t in ds["tags"]])
        out = {f"eval_{k}": v for k, v in result.items() if k != "report"}
        out.update(eval_sentences=len(ds), eval_words=sum(len(t) for t in ds["tokens"]), eval_report=result["report"])
        if repaired:
            out["eval_tags_repaired"] = repaired
        return out

    def card(self, cfg, info, output_dir: str):
        from ..methods import METHODS
        from ..models import resolve_model_path

        kinds = sorted({split_tag(n)[1] for n in info.names if split_tag(n)[1]}) if info.scheme == "iob2" else info.names
        lines = [f"method: {cfg.method}", f"base model: {cfg.model.path}",
                 f"{'entity types' if info.scheme == 'iob2' else 'tags'}: {', '.join(kinds)}", f"data: {cfg.data.train}"]
        method = METHODS[cfg.method]
        if method.frozen_backbone:
            snippet = ("# A frozen backbone (AutoModel) + a per-token head; hfkit loads both:\n"
                       f"import hfkit\nhfkit.predict('{output_dir}', ['Empire State Building is in New York'])\n"
                       "# Without hfkit: AutoModel.from_pretrained(dir) gives the backbone; classifier_head.safetensors\n"
                       "# holds the linear head applied to each token's last hidden state (classifier_head.json).")
        elif method.peft:
            snippet = ("from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer\n"
                       "from peft import PeftModel\n"
                       f"config = AutoConfig.from_pretrained('{output_dir}')  # the tags, recorded by hfkit\n"
                       f"base = AutoModelForTokenClassification.from_pretrained('{resolve_model_path(cfg.model.path)}', "
                       "config=config)\n"
                       f"model = PeftModel.from_pretrained(base, '{output_dir}')\n"
                       f"tokenizer = AutoTokenizer.from_pretrained('{output_dir}')")
        else:
            snippet = ("from transformers import pipeline\n"
                       "# aggregation 'first': the model was trained on each word's first piece\n"
                       f"ner = pipeline('token-classification', model='{output_dir}', aggregation_strategy='first')\n"
                       "ner('Empire State Building is in New York')")
        return f"{Path(output_dir).name}: token classification ({cfg.method})", lines, snippet



# --------------------------------------------------------------------------------------------- prediction on raw text
_WORD = re.compile(r"https?://\S+|[@#]?\w+(?:['’-]\w+)*|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) character spans: URLs, @mentions and #tags whole, words with inner ' or -, any other
    non-space character alone."""
    return [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]


def word_probabilities(run, sentences: list[list[str]], batch_size: int = 32):
    """Per sentence, per word: tag probabilities (numpy) from the word's first piece in its owning window."""
    import numpy as np
    import torch

    tokenizer = word_tokenizer(run.tokenizer)
    d = run.data
    rows, meta = encode_words(sentences, [[0] * len(s) for s in sentences], tokenizer, max_length=d.max_length,
                              stride=d.stride)
    marks = [row.pop("labels") for row in rows]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    logits: list = [None] * len(rows)
    run.model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer.pad([rows[i] for i in idx], return_tensors="pt")
            batch = batch.to(next(run.model.parameters()).device)
            out = run.model(**batch).logits.float().cpu()
            for j, i in enumerate(idx):
                logits[i] = torch.softmax(out[j, :len(rows[i]["input_ids"])], -1).numpy()
    words = word_predictions(logits, marks, meta, [len(s) for s in sentences])
    width = len(run.id2label)
    fallback = np.full(width, 1.0 / width)  # a word no window kept (cannot happen with whole-word windows)
    return [[p if p is not None else fallback for p in sentence] for sentence in words]
