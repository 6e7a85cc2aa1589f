"""What streaming (data.streaming: true) costs against a materialised, cached corpus, on the same pretraining run.

Each run is a fresh `hfkit pretrain` process on the packaged news articles written to one .txt file (about 2.1M
words), with one fixed WordPiece tokenizer (trained here once, so no run trains one) and no evaluation. Sides:
materialised with an empty cache (reads, tokenizes and caches everything before step 1), materialised with a warm
cache, and streaming (tokenizes 1,000 documents at a time during training). Reported: process wall time (relative
to the empty-cache side) and the run's train tokens/s (streaming pays for tokenization inside it). Sides alternate,
`--repeats` times; medians.

    python benchmarks/streaming.py [--steps 150] [--repeats 3] [--preset bert-mlm-tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    from hfkit.data import BUILTIN_CORPORA
    from hfkit.tokenizer import train_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="bert-mlm-tiny", help="a pretraining recipe (bert-mlm-tiny, gpt2-clm-tiny)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfkit-bench-stream-"))
    texts = [t.replace("\n", " ") for t in BUILTIN_CORPORA["news-articles"]()["text"]]
    corpus = work / "news.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    clm = "clm" in args.preset
    tokenizer = train_tokenizer(texts, kind="clm" if clm else "mlm", family="gpt2" if clm else "bert",
                                algorithm="bpe" if clm else "wordpiece", vocab_size=8000, min_frequency=2,
                                lowercase=not clm, model_max_length=128)
    tokenizer.save_pretrained(work / "tokenizer")

    def run(name: str, streaming: bool, cache: Path) -> dict:
        out = work / "runs" / name
        env = dict(os.environ, HFKIT_CACHE=str(cache), HF_DATASETS_CACHE=str(work / "hf-datasets"),
                   HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "hfkit", "pretrain", args.preset, f"data.train={corpus}",
                               f"tokenizer.path={work / 'tokenizer'}", f"output_dir={out}", "data.validation_split=0",
                               f"data.streaming={str(streaming).lower()}", f"train.max_steps={args.steps}",
                               f"train.save_steps={args.steps}", "train.report_to=[]", "--overwrite"],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        shutil.rmtree(out)
        return {"wall": wall, "tps": metrics["train_tokens_per_second"]}

    rows: dict[str, list] = {"materialised, empty cache": [], "materialised, warm cache": [], "streaming": []}
    for _ in range(args.repeats):
        cold = work / "cache-cold"
        shutil.rmtree(cold, ignore_errors=True)
        rows["materialised, empty cache"].append(run("cold", False, cold))
        rows["materialised, warm cache"].append(run("warm", False, cold))  # the cache the cold run just filled
        rows["streaming"].append(run("stream", True, work / "cache-stream"))

    total_words = sum(len(t.split()) for t in texts)
    print(f"\n{args.preset}, {args.steps} steps, {len(texts):,} documents ({total_words / 1e6:.1f}M words), "
          f"medians of {args.repeats}\n")
    print("| side | process wall s | train tokens/s |")
    print("|---|---|---|")
    base = statistics.median(r["wall"] for r in rows["materialised, empty cache"])
    for name, runs in rows.items():
        wall = statistics.median(r["wall"] for r in runs)
        tps = statistics.median(r["tps"] for r in runs)
        print(f"| {name} | {wall:.1f} ({wall / base:.2f}x) | {tps:,.0f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
