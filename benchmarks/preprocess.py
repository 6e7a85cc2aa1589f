"""Preprocessing (tokenize + pack into blocks): hfkit against the documented `datasets.map` + `group_texts` way,
and hfkit's second run on unchanged data (its content-keyed cache).

Both sides: the packaged news articles, the same WordPiece tokenizer (trained here once), block size 128.
The baseline follows run_mlm.py: `map(tokenize, batched=True)` then `map(group_texts, batched=True)` with
caching off (a fresh process on new data); hfkit: `tokenize_and_pack` into a fresh cache directory, then again.
Tokens/s counts the tokens in the packed blocks. Sides alternate, `--repeats` times; medians.

    python benchmarks/preprocess.py [--documents 3824] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

BLOCK = 128


def main() -> None:
    import datasets
    from datasets import Dataset, DatasetDict

    from hfkit.data import BUILTIN_CORPORA, tokenize_and_pack
    from hfkit.tokenizer import train_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=3824)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfkit-bench-prep-"))
    texts = BUILTIN_CORPORA["news-articles"]()["text"][:args.documents]
    tokenizer = train_tokenizer(texts, kind="mlm", family="bert", algorithm="wordpiece", vocab_size=8000,
                                min_frequency=2, lowercase=True, model_max_length=BLOCK)
    corpus = DatasetDict({"train": Dataset.from_dict({"text": list(texts)})})
    datasets.disable_caching()

    def baseline() -> tuple[float, int]:
        start = time.perf_counter()
        tokenized = corpus["train"].map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])

        def group_texts(examples):
            joined = {k: sum(examples[k], []) for k in examples}
            total = (len(joined["input_ids"]) // BLOCK) * BLOCK
            return {k: [v[i:i + BLOCK] for i in range(0, total, BLOCK)] for k, v in joined.items()}

        blocks = tokenized.map(group_texts, batched=True)
        return time.perf_counter() - start, sum(len(x) for x in blocks["input_ids"])

    def hfkit_run(cache: Path) -> tuple[float, int]:
        start = time.perf_counter()
        lm = tokenize_and_pack(corpus, tokenizer, objective="mlm", block_size=BLOCK, cache_dir=str(cache))
        return time.perf_counter() - start, sum(len(x) for x in lm["train"]["input_ids"])

    rows: dict[str, list] = {"baseline (map tokenize + group_texts)": [], "hfkit, first run": [],
                             "hfkit, second run (cache hit)": []}
    for repeat in range(args.repeats):
        cache = work / f"cache-{repeat}"
        rows["baseline (map tokenize + group_texts)"].append(baseline())
        rows["hfkit, first run"].append(hfkit_run(cache))
        rows["hfkit, second run (cache hit)"].append(hfkit_run(cache))
        print("[bench] " + ", ".join(f"{k}: {v[-1][0]:.2f}s" for k, v in rows.items()), flush=True)
    base = statistics.median(s for s, _ in rows["baseline (map tokenize + group_texts)"])
    print(f"\nTokenize + pack {len(texts):,} news articles into blocks of {BLOCK}, WordPiece vocab 8,000, "
          f"1 process, median of {args.repeats}\n")
    print("| side | seconds | tokens in blocks | tokens/s | speed-up over baseline |")
    print("|---|---|---|---|---|")
    for name, results in rows.items():
        seconds = statistics.median(s for s, _ in results)
        tokens = results[0][1]
        print(f"| {name} | {seconds:.2f} | {tokens:,} | {tokens / seconds:,.0f} | {base / seconds:.2f}x |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
