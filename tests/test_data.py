"""Data: every input format, cleaning, clear errors, packing invariants, the tokenized-data cache."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from hfkit.config import DataConfig
from hfkit.data import block_layout, load_corpus, load_texts, tokenize_and_pack
from hfkit.errors import DataError
from hfkit.tokenizer import train_tokenizer

from conftest import synthetic_documents

DOCS = ["first document here", "second one", "third document is longer than the others"]


def write_all_formats(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    (folder / "b.jsonl").write_text("\n".join(json.dumps({"body": d, "id": i}) for i, d in enumerate(DOCS)) + "\n")
    (folder / "c.json").write_text(json.dumps([{"body": d} for d in DOCS]))
    pd.DataFrame({"body": DOCS, "n": [1, 2, 3]}).to_csv(folder / "d.csv", index=False)
    pd.DataFrame({"body": DOCS}).to_csv(folder / "e.tsv", sep="\t", index=False)
    pd.DataFrame({"body": DOCS}).to_parquet(folder / "f.parquet")


@pytest.mark.parametrize("name", ["b.jsonl", "c.json", "d.csv", "e.tsv", "f.parquet"])
def test_structured_formats_read_the_text_column(tmp_path, name):
    write_all_formats(tmp_path)
    ds = load_texts(str(tmp_path / name), key="data.train", text_column="body")
    assert ds.column_names == ["text"]
    assert list(ds["text"]) == DOCS


def test_txt_lines_paragraphs_documents(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("one a\none b\n\ntwo a\n", encoding="utf-8")
    assert list(load_texts(str(path), key="k", text_column="text", sample_by="line")["text"]) == ["one a", "one b", "", "two a"]
    paragraphs = list(load_texts(str(path), key="k", text_column="text", sample_by="paragraph")["text"])
    assert [p.strip() for p in paragraphs if p.strip()] == ["one a\none b", "two a"]
    assert len(load_texts(str(path), key="k", text_column="text", sample_by="document")) == 1


def test_folder_glob_and_list(tmp_path):
    for i in range(3):
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "docs" / f"{i}.txt").write_text(f"doc {i}\n")
    assert sorted(list(load_texts(str(tmp_path / "docs"), key="k", text_column="text")["text"])) == ["doc 0", "doc 1", "doc 2"]
    assert len(load_texts(str(tmp_path / "docs" / "*.txt"), key="k", text_column="text")) == 3
    both = load_texts([str(tmp_path / "docs" / "0.txt"), str(tmp_path / "docs" / "1.txt")], key="k", text_column="text")
    assert list(both["text"]) == ["doc 0", "doc 1"]


def test_mixed_formats_in_one_list(tmp_path):
    write_all_formats(tmp_path)
    ds = load_texts([str(tmp_path / "a.txt"), str(tmp_path / "d.csv")], key="k", text_column="body")
    assert list(ds["text"]) == DOCS + DOCS


def test_clear_errors(tmp_path):
    write_all_formats(tmp_path)
    with pytest.raises(DataError, match="'nope/x.txt' does not exist"):
        load_texts("nope/x.txt", key="data.train", text_column="text")
    with pytest.raises(DataError, match=r"the pattern '.*\*.md' matches no files"):
        load_texts(str(tmp_path / "*.md"), key="data.train", text_column="text")
    with pytest.raises(DataError, match="no column 'text' in the data; its columns are body, n"):
        load_texts(str(tmp_path / "d.csv"), key="data.train", text_column="text")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match="bad.jsonl' line 3: not valid JSON"):
        load_texts(str(bad), key="data.train", text_column="text")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.txt' line 1: not UTF-8"):
        load_texts(str(latin), key="data.train", text_column="text")
    with pytest.raises(DataError, match="unknown builtin corpus 'nope'"):
        load_texts("builtin:nope", key="data.train", text_column="text")


MALFORMED = {  # format: (file text, what the error names); the bad row sits on line 4 of 6 (CSV: after the header)
    "jsonl": ('{"text": "a b"}\n{"text": "c d"}\n{"text": "e f"}\n{"text": "g h\n{"text": "i j"}\n{"text": "k l"}\n',
              "line 4: not valid JSON"),
    "object": ('{"text": "a b"}\n{"text": "c d"}\n{"text": "e f"}\n["g", "h"]\n{"text": "i j"}\n{"text": "k l"}\n',
               "line 4: not a JSON object"),
    "number": ('{"text": "a b"}\n{"text": "c d"}\n{"text": "e f"}\n{"text": 7}\n{"text": "i j"}\n{"text": "k l"}\n',
               "line 4: column 'text' holds a int, not text"),
    "csv": ("text,label\na b,1\nc d,0\ng h,1,extra\ni j,0\nk l,1\n", "line 4: 3 fields where the header has 2"),
    "tsv": ("text\tlabel\na b\t1\nc d\t0\ng h\t1\textra\ni j\t0\nk l\t1\n", "line 4: 3 fields where the header has 2"),
    "txt": (b"a b\nc d\ne f\ng \xe9h\ni j\nk l\n", "line 4: not UTF-8 (byte 0xe9 at column 3"),
}
SUFFIX = {"object": "jsonl", "number": "jsonl"}


def write_malformed(folder, kind):
    text, message = MALFORMED[kind]
    path = folder / f"{kind}.{SUFFIX.get(kind, kind)}"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path, message


@pytest.mark.parametrize("kind", sorted(MALFORMED))
@pytest.mark.parametrize("streaming", [False, True], ids=["materialised", "streamed"])
def test_a_malformed_row_is_named_or_skipped_and_counted(tmp_path, kind, streaming):
    from hfkit.rows import take_tally
    from hfkit.streaming import open_text_stream

    path, message = write_malformed(tmp_path, kind)

    def texts(on_error):
        if streaming:
            d = DataConfig(train=str(path), streaming=True, shuffle_buffer=0, on_error=on_error)
            return [row["text"] for row in open_text_stream(d, seed=0)]
        return list(load_corpus(DataConfig(train=str(path), validation_split=0, on_error=on_error), seed=0)["train"]["text"])

    take_tally()
    with pytest.raises(DataError, match=re.escape(f"{path.name}' {message}")) as error:
        texts("error")
    assert "set data.on_error=skip" in str(error.value)
    expected = ["a b", "c d", "i j", "k l"] if kind in ("csv", "tsv") else ["a b", "c d", "e f", "i j", "k l"]
    assert texts("skip") == expected
    assert take_tally() == 1
    if not streaming:  # the copy without the bad row is reused, and its count with it
        assert texts("skip") == expected
        assert take_tally() == 1


def test_a_json_array_cannot_skip_a_row(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[{"text": "a"},\n {"text": "b"\n {"text": "c"}]\n')
    with pytest.raises(DataError, match="rows.json' line 3 is not valid JSON.*write the file as .jsonl"):
        load_texts(str(path), key="data.train", text_column="text", on_error="skip")


def test_cleaning_and_split(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("  padded  \n\n   \nx\nreal text\n" * 10)
    d = DataConfig(train=str(path), validation_split=0.2, min_chars=2)
    corpus = load_corpus(d, seed=0)
    texts = list(corpus["train"]["text"]) + list(corpus["validation"]["text"])
    assert sorted(set(texts)) == ["padded", "real text"]  # stripped; empty and 1-char lines dropped
    assert len(texts) == 20 and len(corpus["validation"]) == 4
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    with pytest.raises(DataError, match="no text left after dropping empty documents"):
        load_corpus(DataConfig(train=str(empty)), seed=0)


@pytest.fixture(scope="module")
def tokenizers():
    docs = synthetic_documents(100)
    return {kind: train_tokenizer(docs, kind=kind, family=family, algorithm=alg, vocab_size=150, min_frequency=1,
                                  show_progress=False)
            for kind, family, alg in [("mlm", "bert", "wordpiece"), ("clm", "gpt2", "bpe")]}


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_packing_loses_and_duplicates_nothing(tokenizers, objective, tmp_path):
    from datasets import Dataset, DatasetDict

    tok = tokenizers[objective]
    docs = synthetic_documents(2500, seed=1)  # > 1 tokenization batch of 1000 documents
    packed = tokenize_and_pack(DatasetDict(train=Dataset.from_dict({"text": docs})), tok, objective=objective,
                               block_size=32, cache_dir=str(tmp_path), log=lambda m: None)["train"]
    prefix, suffix, separator = block_layout(tok, objective)
    blocks = list(packed["input_ids"])
    assert all(len(b) <= 32 for b in blocks)
    short = [b for b in blocks if len(b) < 32]
    assert len(short) <= 3  # at most the tail of each tokenization batch
    stream = []
    for b in blocks:
        assert b[:len(prefix)] == prefix and b[len(b) - len(suffix):] == suffix
        stream += b[len(prefix):len(b) - len(suffix)]
    expected = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        expected += ids + [separator]
    assert stream == expected  # every token once, in order, one separator after every document
    assert stream.count(separator) == len(docs)
    if objective == "mlm":
        special = set(tok.all_special_ids)
        for ids, mask in zip(blocks[:50], list(packed["special_tokens_mask"])[:50]):
            assert mask == [int(t in special) for t in ids]


def test_tokenized_cache_hits_on_second_run(tokenizers, tmp_path):
    from datasets import Dataset, DatasetDict

    corpus = DatasetDict(train=Dataset.from_dict({"text": synthetic_documents(50)}))
    messages: list[str] = []
    first = tokenize_and_pack(corpus, tokenizers["mlm"], objective="mlm", block_size=32, cache_dir=str(tmp_path),
                              log=messages.append)
    assert not messages
    second = tokenize_and_pack(corpus, tokenizers["mlm"], objective="mlm", block_size=32, cache_dir=str(tmp_path),
                               log=messages.append)
    assert len(messages) == 1 and "found in cache" in messages[0]
    assert list(second["train"]["input_ids"]) == list(first["train"]["input_ids"])
    tokenize_and_pack(corpus, tokenizers["mlm"], objective="mlm", block_size=48, cache_dir=str(tmp_path),
                      log=messages.append)
    assert len(messages) == 1  # another block size is another cache entry
    changed = DatasetDict(train=Dataset.from_dict({"text": synthetic_documents(50)[:-1] + ["a changed document"]}))
    tokenize_and_pack(changed, tokenizers["mlm"], objective="mlm", block_size=32, cache_dir=str(tmp_path),
                      log=messages.append)
    assert len(messages) == 1  # changed text misses the cache
