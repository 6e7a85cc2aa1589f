"""WordPiece training: hfkit's reproducible path against the tokenizers library's WordPieceTrainer, side by side.

For each side, on the news corpus (3,824 articles, 2.1M words), vocabulary 8,000: training time (median of
--repeats, the two sides alternating), whether --processes fresh processes train byte-identical tokenizers,
pieces shared with the other side, and tokens per document on the first 300 documents.

    python benchmarks/tokenizer_training.py --repeats 3 --processes 3
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time

SIDES = ("hfkit", "library")


def train(side: str):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from hfkit.data import BUILTIN_CORPORA
    from hfkit.tokenizer import BERT_SPECIALS, train_tokenizer

    texts = BUILTIN_CORPORA["news-articles"]()["text"]
    start = time.perf_counter()
    if side == "hfkit":
        tok = train_tokenizer(texts, kind="mlm", family="bert", algorithm="wordpiece", vocab_size=8000,
                              show_progress=False).backend_tokenizer
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(
            vocab_size=8000, min_frequency=2, special_tokens=list(BERT_SPECIALS.values()), show_progress=False))
    seconds = time.perf_counter() - start
    lengths = [len(tok.encode(t, add_special_tokens=False).ids) for t in texts[:300]]
    return {"seconds": seconds, "vocab": sorted(tok.get_vocab()), "tokens_per_doc": statistics.mean(lengths),
            "sha": hashlib.sha256(json.dumps(tok.get_vocab(), sort_keys=True).encode()).hexdigest()[:12]}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(train(sys.argv[2])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=3)
    args = parser.parse_args()
    runs = {side: [] for side in SIDES}
    for _ in range(max(args.repeats, args.processes)):
        for side in SIDES:  # alternating, each in a fresh process
            out = subprocess.run([sys.executable, __file__, "--one", side], capture_output=True, text=True, check=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    vocab = {side: set(runs[side][0]["vocab"]) for side in SIDES}
    print("| trainer | train s (median) | identical in fresh processes | pieces shared with the other | tokens/doc |")
    print("|---|---|---|---|---|")
    for side, other in zip(SIDES, reversed(SIDES)):
        r = runs[side]
        shas = {x["sha"] for x in r[:args.processes]}
        same = (f"yes ({args.processes} of {args.processes})" if len(shas) == 1 else
                f"no: {len(shas)} vocabularies in {args.processes} runs")
        print(f"| {side} | {statistics.median(x['seconds'] for x in r[:args.repeats]):.1f} | {same} | "
              f"{len(vocab[side] & vocab[other]):,} of {len(vocab[side]):,} | {r[0]['tokens_per_doc']:.1f} |")


if __name__ == "__main__":
    main()
