"""Tokenize-and-pack at growing corpus sizes, with data.num_proc 1 and 2: wall time, peak memory, cache hit.

The corpus is the packaged news articles (3,824 articles, ~2.1M words) repeated, one article per line, up to each
size in tokens (~100M at the largest). Each measurement is a fresh process running what `hfkit pretrain` runs
before training: `load_corpus` (read, clean, split) then `tokenize_and_pack` (masked-LM blocks of 128, the
WordPiece tokenizer trained once here), into an empty cache; then the same again (the cache hit). Peak RSS is the
child's own (ru_maxrss; this parent stays small), and that counts the memory-mapped Arrow files the child reads,
which the kernel can drop and read again. The anonymous part (heap, Python objects: what must stay in memory) is
sampled every 0.1 s over the child and its num_proc workers. Memory bounded means: the anonymous peak does not
grow with the corpus.

    python benchmarks/preprocess_scale.py [--sizes 10,30,100] [--procs 1,2]    # sizes in millions of tokens
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from transformers import AutoTokenizer
from hfkit.config import DataConfig
from hfkit.data import load_corpus, tokenize_and_pack
corpus_file, tokenizer_dir, cache, num_proc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
start = time.perf_counter()
d = DataConfig(train=corpus_file, validation_split=0.0, num_proc=num_proc if num_proc > 1 else None)
corpus = load_corpus(d, seed=0)
lm = tokenize_and_pack(corpus, tokenizer, objective="mlm", block_size=128, num_proc=d.num_proc, cache_dir=cache,
                       log=lambda *a: None)
blocks = len(lm["train"])
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": blocks * 128}))
"""


def tree(root: int) -> list[int]:
    """root and every process below it (num_proc's workers)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def anon_mb(pids: list[int]) -> float:
    """Anonymous resident memory (heap, Python objects; not the memory-mapped Arrow files, which the kernel can
    drop and reread) summed over the processes, MB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def child(cmd: list[str]) -> tuple[dict, float, float]:
    """(the child's JSON, its peak RSS MB (ru_maxrss, mapped files included), the peak anonymous RSS MB of it and
    its workers, sampled every 0.1 s)."""
    import threading

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], anon_mb(tree(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:3]} failed")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024, peak[0]


PREPARE = """
import sys
from hfkit.data import BUILTIN_CORPORA
from hfkit.tokenizer import train_tokenizer
texts = [" ".join(t.split()) for t in BUILTIN_CORPORA["news-articles"]()["text"]]
tok = train_tokenizer(texts, kind="mlm", family="bert", algorithm="wordpiece", vocab_size=8000, min_frequency=2,
                      lowercase=True, model_max_length=128)
tok.save_pretrained(sys.argv[1])
tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
with open(sys.argv[2], "w", encoding="utf-8") as fh:
    fh.write("\\n".join(texts) + "\\n")
print(tokens)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,30,100", help="corpus sizes in millions of tokens")
    parser.add_argument("--procs", default="1,2")
    args = parser.parse_args()
    sizes = [float(x) for x in args.sizes.split(",")]
    procs = [int(x) for x in args.procs.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        once = tmp / "news-once.txt"
        made = subprocess.run([sys.executable, "-c", PREPARE, str(tmp / "tok"), str(once)], capture_output=True,
                              text=True, check=True)
        per_copy = int(made.stdout.strip().splitlines()[-1])
        text = once.read_text(encoding="utf-8")
        for size in sizes:
            copies = max(1, round(size * 1e6 / per_copy))
            corpus = tmp / f"news-x{copies}.txt"
            with open(corpus, "w", encoding="utf-8") as fh:
                for _ in range(copies):
                    fh.write(text)
            for n in procs:
                cache = tmp / f"cache-{copies}-{n}"
                cmd = [sys.executable, "-c", CHILD, str(corpus), str(tmp / "tok"), str(cache), str(n)]
                first, rss, anon = child(cmd)
                hit, hit_rss, _ = child(cmd)
                rows.append((copies * per_copy, corpus.stat().st_size, n, first["seconds"], rss, anon, hit["seconds"],
                             hit_rss, first["tokens"]))
                print(f"{copies * per_copy / 1e6:.1f}M tokens, num_proc {n}: {first['seconds']:.1f} s, "
                      f"peak RSS {rss:,.0f} MB, anonymous {anon:,.0f} MB; cache hit {hit['seconds']:.2f} s", flush=True)
            corpus.unlink()
    print("\n| corpus tokens | text MB | num_proc | first run s | M tokens/s | peak RSS MB (main process, mapped "
          "files included) | peak anonymous MB (all processes) | cache hit s | peak RSS MB (hit) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tokens, size, n, seconds, rss, anon, hit, hit_rss, packed in rows:
        print(f"| {tokens / 1e6:.1f}M | {size / 2**20:,.0f} | {n} | {seconds:.1f} | {packed / seconds / 1e6:.2f} | "
              f"{rss:,.0f} | {anon:,.0f} | {hit:.2f} | {hit_rss:,.0f} |")


if __name__ == "__main__":
    main()
