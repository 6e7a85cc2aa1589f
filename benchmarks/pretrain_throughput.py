"""Pretraining throughput: hfkit against the hand-written Trainer script, MLM and CLM, in one invocation.

The baseline follows the transformers documentation's language-modeling recipe (the run_mlm.py / run_clm.py
examples): tokenize with `datasets.map`, `group_texts` into blocks, `DataCollatorForLanguageModeling`, the model
from config, `Trainer`. Both sides use the same tokenizer (trained once here), the same texts (the packaged news
articles), model config (hfkit's bert-tiny / gpt2-tiny presets: 2 layers x 128), block size, batch, steps, learning
rate and seed. Only `trainer.train()` is timed on either side (hfkit: train_wall_seconds); tokens/s = steps x
batch x block / seconds. Sides alternate, `--repeats` times; the table shows medians and hfkit / baseline.

MFU is measured against this machine's own peak: hfkit's matmul probe at the side's dtype (flops.py; fp32 unless
the side trains in bf16), the FLOPs per token of PaLM's formula (6 N + 12 L H T, the LM head at every position).
hfkit's masked-LM head runs on the masked positions only, so for it the FLOPs really executed are fewer: the
"executed" column counts the head at the 15% of positions it runs on (hardware FLOPs utilisation).

`--shape mini` trains 4 x 256 models (bert-mini; GPT-2 of the same shape) instead of 2 x 128, and `--levers`
adds hfkit sides that each change one setting against its defaults: sequence length 256, batch 64, eager
attention, fused AdamW, bf16 (where the probe finds native bf16) and torch.compile (with --compile).

    python benchmarks/pretrain_throughput.py [--steps 40] [--repeats 3] [--objectives mlm,clm] [--shape mini] [--levers]
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
SHAPES = {"tiny": ({}, {}), "mini": ({"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
                                      "intermediate_size": 1024}, {"n_layer": 4, "n_embd": 256, "n_head": 4})}


def corpus(folder: Path, documents: int) -> Path:
    texts = BUILTIN_CORPORA["news-articles"]()["text"][:documents]
    path = folder / "news.txt"
    path.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    return path


def peak(dtype: str) -> float:
    from hfkit.flops import measured_peak_tflops

    return measured_peak_tflops(dtype)


def head_params(model) -> int:
    """Parameters of BERT's MLM head, which hfkit applies at the masked positions only (transform + decoder, the
    decoder's weight tied to the embeddings but a matmul here)."""
    return sum(p.numel() for p in model.cls.parameters())


def baseline(objective: str, text_file: Path, tokenizer_dir: Path, steps: int, out: Path, shape: dict) -> tuple:
    """The documented hand-written way; returns (tokens/s of trainer.train(), MFU, executed-FLOPs utilisation)."""
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
    config = preset_config("bert-tiny" if objective == "mlm" else "gpt2-tiny", tokenizer,
                           shape[0] if objective == "mlm" else shape[1], "sdpa")
    model = (AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM).from_config(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=objective == "mlm", mlm_probability=0.15)
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
                             report_to=[], save_strategy="no", logging_steps=10, seed=42, disable_tqdm=True)
    result = Trainer(model=model, args=args, train_dataset=blocks, data_collator=collator).train()
    from hfkit.flops import flops_per_token

    speed = steps * BATCH * BLOCK / result.metrics["train_runtime"]
    mfu = flops_per_token(model, BLOCK) * speed / (peak("fp32") * 1e12)
    return speed, mfu, mfu  # the plain collator's model runs its head at every position


def with_hfkit(objective: str, text_file: Path, tokenizer_dir: Path, steps: int, out: Path, shape: tuple,
               **extra) -> tuple:
    from transformers import AutoModelForMaskedLM

    recipe = "bert-mlm-tiny" if objective == "mlm" else "gpt2-clm-tiny"
    train = {"max_steps": steps, "batch_size": BATCH, "learning_rate": LR, "report_to": [], "save_steps": 10**6,
             "eval_before_training": False, "overwrite": True, "warmup_ratio": 0.0, **extra.pop("train", {})}
    data = {"train": str(text_file), "block_size": BLOCK, "validation_split": 0.0, **extra.pop("data", {})}
    model = {"preset": "bert-tiny" if objective == "mlm" else "gpt2-tiny",
             "overrides": shape[0] if objective == "mlm" else shape[1], **extra.pop("model", {})}
    result = hfkit.pretrain(recipe, output_dir=str(out), tokenizer={"path": str(tokenizer_dir)}, data=data,
                            train=train, model=model, **extra)
    m = result.metrics
    speed = steps * train["batch_size"] * data["block_size"] / m["train_wall_seconds"]
    mfu = m["model_flops_per_token"] * speed / (m["peak_tflops_per_device"] * 1e12)
    executed = mfu
    if objective == "mlm" and extra.get("mlm", {}).get("head_on_masked_only", True):
        trained = AutoModelForMaskedLM.from_pretrained(result.output_dir)
        skipped = 6.0 * head_params(trained) * (1 - 0.15)  # per token: the head runs on the 15% masked positions
        executed = mfu * (1 - skipped / m["model_flops_per_token"])
    return speed, mfu, executed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--documents", type=int, default=600)
    parser.add_argument("--objectives", default="mlm,clm")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--levers", action="store_true", help="add one-setting-changed hfkit sides")
    parser.add_argument("--compile", action="store_true", help="also time train.compile=true (compile time included)")
    parser.add_argument("--sides", help="keep only the sides whose name contains one of these (comma-separated); "
                                        "the baseline always runs")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    work = Path(tempfile.mkdtemp(prefix="hfkit-bench-pretrain-"))
    text_file = corpus(work, args.documents)
    native_bf16 = peak("bf16") > peak("fp32")
    print(f"[bench] measured peak: fp32 {peak('fp32'):.3f} TFLOP/s, bf16 {peak('bf16'):.4f} TFLOP/s", flush=True)
    results = []
    for objective in args.objectives.split(","):
        # one tokenizer for both sides: a short hfkit run trains and saves it
        recipe = "bert-mlm-tiny" if objective == "mlm" else "gpt2-clm-tiny"
        tok_run = hfkit.pretrain(recipe, output_dir=str(work / f"tok-{objective}"), data={"train": str(text_file)},
                                 tokenizer={"vocab_size": 8000},
                                 train={"max_steps": 1, "report_to": [], "eval_before_training": False})
        tokenizer_dir = tok_run.output_dir

        def ours(out, **extra):
            return with_hfkit(objective, text_file, tokenizer_dir, args.steps, out, shape, **extra)

        sides = {"baseline (Trainer + DataCollatorForLanguageModeling + group_texts)":
                 lambda out: baseline(objective, text_file, tokenizer_dir, args.steps, out, shape),
                 "hfkit, defaults": ours}
        if objective == "mlm":
            sides["hfkit, mlm.head_on_masked_only=false"] = lambda out: ours(out, mlm={"head_on_masked_only": False})
        if native_bf16:
            sides["hfkit, train.precision=bf16"] = lambda out: ours(out, train={"precision": "bf16"})
        else:
            print(f"[bench] bf16 side skipped: this CPU has no native bf16 matmul (probe {peak('bf16'):.4f} "
                  f"TFLOP/s against fp32 {peak('fp32'):.3f})", flush=True)
        if args.levers:
            sides["hfkit, data.block_size=256"] = lambda out: ours(out, data={"block_size": 256})
            sides["hfkit, train.batch_size=64"] = lambda out: ours(out, train={"batch_size": 64})
            sides["hfkit, model.attn_implementation=eager"] = lambda out: ours(
                out, model={"attn_implementation": "eager"})
            sides["hfkit, train.optimizer=adamw_torch_fused"] = lambda out: ours(out, train={"optimizer": "adamw_torch_fused"})
        if args.compile:
            sides["hfkit, train.compile=true"] = lambda out: ours(out, train={"compile": True})
        if args.sides:
            keep = args.sides.split(",")
            sides = {name: side for i, (name, side) in enumerate(sides.items())
                     if i == 0 or any(k in name for k in keep)}
        speeds: dict[str, list[tuple]] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            for name, side in sides.items():
                out = work / f"{objective}-{repeat}-{len(speeds[name])}-{abs(hash(name))}"
                speeds[name].append(side(out))
                shutil.rmtree(out, ignore_errors=True)
                speed, mfu, executed = speeds[name][-1]
                print(f"[bench] {objective} {name}: {speed:,.0f} tokens/s, MFU {mfu:.1%}, executed {executed:.1%}",
                      flush=True)
        base = statistics.median(s[0] for s in next(iter(speeds.values())))
        for name, values in speeds.items():
            speed = statistics.median(v[0] for v in values)
            results.append((objective, name, speed, speed / base, statistics.median(v[1] for v in values),
                            statistics.median(v[2] for v in values)))
    layers = "4 x 256" if args.shape == "mini" else "2 x 128"
    print(f"\nPretraining throughput, {args.steps} steps x batch {BATCH} x block {BLOCK} (unless the side says), "
          f"{layers} models, vocab 8,000, median of {args.repeats} alternating runs; peak measured here: fp32 "
          f"{peak('fp32'):.3f} TFLOP/s, bf16 {peak('bf16'):.4f} TFLOP/s\n")
    print("| objective | side | tokens/s | ratio to baseline | MFU (model FLOPs) | executed FLOPs / peak |")
    print("|---|---|---|---|---|---|")
    for objective, name, speed, ratio, mfu, executed in results:
        print(f"| {objective} | {name} | {speed:,.0f} | {ratio:.2f}x | {mfu:.1%} | {executed:.1%} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
