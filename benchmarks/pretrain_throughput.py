"""Pretraining throughput: hfkit against the hand-written Trainer script, MLM and CLM, in one invocation.

The baseline follows the transformers documentation's language-modeling recipe (the run_mlm.py / run_clm.py
examples): tokenize with `datasets.map`, `group_texts` into blocks, `DataCollatorForLanguageModeling`, the model
from config, `Trainer`. Both sides use the same tokenizer (trained once here), the same texts (the packaged news
articles), model config (hfkit's bert-tiny / gpt2-tiny presets: 2 layers x 128), block size, batch, steps, learning
rate and seed. Only `trainer.train()` is timed on either side (hfkit: train_wall_seconds); tokens/s = steps x
batch x block / seconds. Sides alternate, `--repeats` times; the table shows medians and hfkit / baseline.

    python benchmarks/pretrain_throughput.py [--steps 40] [--repeats 3] [--objectives mlm,clm]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import hfkit
from hfkit.data import BUILTIN_CORPORA

BLOCK, BATCH, LR = 128, 32, 1e-3


def corpus(folder: Path, documents: int) -> Path:
    texts = BUILTIN_CORPORA["news-articles"]()["text"][:documents]
    path = folder / "news.txt"
    path.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    return path


def baseline(objective: str, text_file: Path, tokenizer_dir: Path, steps: int, out: Path) -> float:
    """The documented hand-written way; returns tokens/s of trainer.train()."""
    from datasets import load_dataset
    from transformers import (AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer,
                              DataCollatorForLanguageModeling, Trainer, TrainingArguments, set_seed)

    from hfkit.models import preset_config

    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    raw = load_dataset("text", data_files={"train": str(text_file)})["train"]
    tokenized = raw.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])

    def group_texts(examples):
        joined = {k: sum(examples[k], []) for k in examples}
        total = (len(joined["input_ids"]) // BLOCK) * BLOCK
        return {k: [v[i:i + BLOCK] for i in range(0, total, BLOCK)] for k, v in joined.items()}

    blocks = tokenized.map(group_texts, batched=True)
    config = preset_config("bert-tiny" if objective == "mlm" else "gpt2-tiny", tokenizer, {}, "sdpa")
    model = (AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM).from_config(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=objective == "mlm", mlm_probability=0.15)
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
                             report_to=[], save_strategy="no", logging_steps=10, seed=42, disable_tqdm=True)
    result = Trainer(model=model, args=args, train_dataset=blocks, data_collator=collator).train()
    return steps * BATCH * BLOCK / result.metrics["train_runtime"]


def with_hfkit(objective: str, text_file: Path, tokenizer_dir: Path, steps: int, out: Path, **extra) -> float:
    recipe = "bert-mlm-tiny" if objective == "mlm" else "gpt2-clm-tiny"
    result = hfkit.pretrain(recipe, output_dir=str(out), tokenizer={"path": str(tokenizer_dir)},
                            data={"train": str(text_file), "block_size": BLOCK, "validation_split": 0.0},
                            train={"max_steps": steps, "batch_size": BATCH, "learning_rate": LR, "report_to": [],
                                   "save_steps": 10**6, "eval_before_training": False, "overwrite": True,
                                   "warmup_ratio": 0.0, **extra.pop("train", {})}, **extra)
    m = result.metrics
    return steps * BATCH * BLOCK / m["train_wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--documents", type=int, default=600)
    parser.add_argument("--objectives", default="mlm,clm")
    parser.add_argument("--compile", action="store_true", help="also time train.compile=true (compile time included)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfkit-bench-pretrain-"))
    text_file = corpus(work, args.documents)
    results = []
    for objective in args.objectives.split(","):
        # one tokenizer for both sides: a short hfkit run trains and saves it
        recipe = "bert-mlm-tiny" if objective == "mlm" else "gpt2-clm-tiny"
        tok_run = hfkit.pretrain(recipe, output_dir=str(work / f"tok-{objective}"), data={"train": str(text_file)},
                                 tokenizer={"vocab_size": 8000},
                                 train={"max_steps": 1, "report_to": [], "eval_before_training": False})
        tokenizer_dir = tok_run.output_dir
        sides = {"baseline (Trainer + DataCollatorForLanguageModeling + group_texts)":
                 lambda out: baseline(objective, text_file, tokenizer_dir, args.steps, out),
                 "hfkit, defaults": lambda out: with_hfkit(objective, text_file, tokenizer_dir, args.steps, out)}
        if objective == "mlm":
            sides["hfkit, mlm.head_on_masked_only=false"] = lambda out: with_hfkit(
                objective, text_file, tokenizer_dir, args.steps, out, mlm={"head_on_masked_only": False})
        sides["hfkit, train.precision=bf16"] = lambda out: with_hfkit(
            objective, text_file, tokenizer_dir, args.steps, out, train={"precision": "bf16"})
        if args.compile:
            sides["hfkit, train.compile=true"] = lambda out: with_hfkit(
                objective, text_file, tokenizer_dir, args.steps, out, train={"compile": True})
        speeds: dict[str, list[float]] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            for name, side in sides.items():
                out = work / f"{objective}-{repeat}-{len(speeds[name])}-{abs(hash(name))}"
                speeds[name].append(side(out))
                shutil.rmtree(out, ignore_errors=True)
                print(f"[bench] {objective} {name}: {speeds[name][-1]:,.0f} tokens/s", flush=True)
        base = statistics.median(next(iter(speeds.values())))
        for name, values in speeds.items():
            results.append((objective, name, statistics.median(values), statistics.median(values) / base))
    print(f"\nPretraining throughput, {args.steps} steps x batch {BATCH} x block {BLOCK}, 2-layer x 128 models, "
          f"vocab 8,000, median of {args.repeats} alternating runs\n")
    print("| objective | side | tokens/s | ratio to baseline |")
    print("|---|---|---|---|")
    for objective, name, speed, ratio in results:
        print(f"| {objective} | {name} | {speed:,.0f} | {ratio:.2f}x |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
