"""A real instruct model, real instruction data, LoRA: SmolLM2-135M-Instruct on LLaMA-Factory's Alpaca demo rows
(recipes/finetune/sft-lora.yaml). Answer-only validation loss before and after (the same function, `hfkit
evaluate`'s, on the same held-out conversations), greedy generations before and after, wall time, and whether the
saved adapter (plain peft) and the merged model (plain transformers) generate what `hfkit generate` does.

    python benchmarks/sft_lora_smollm2.py [--train-rows 200] [--validation-rows 50] [--epochs 1]

Writes benchmarks/results/sft_lora_smollm2.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

RESULTS = Path(__file__).parent / "results" / "sft_lora_smollm2.json"
PROMPTS = ["Give three tips for staying healthy.", "What is the capital of France?",
           "Rewrite this sentence in the passive voice: The cat chased the mouse."]


def split_data(train_rows: int, validation_rows: int, seed: int) -> tuple[Path, Path]:
    from hfkit.data import BUILTIN_CORPORA

    ds = BUILTIN_CORPORA["alpaca-en-demo"]().shuffle(seed=seed)
    folder = Path("runs") / "alpaca-split"
    folder.mkdir(parents=True, exist_ok=True)
    validation = ds.select(range(validation_rows))
    train = ds.select(range(validation_rows, validation_rows + train_rows))
    validation.to_json(str(folder / "validation.jsonl"))
    train.to_json(str(folder / "train.jsonl"))
    return folder / "train.jsonl", folder / "validation.jsonl"


def answer_loss(model, tokenizer, cfg, data: Path) -> float:
    from hfkit.tasks.sft import SupervisedFineTuning

    return SupervisedFineTuning().evaluate(SimpleNamespace(model=model, tokenizer=tokenizer, config=cfg), str(data), 8)


def greedy_all(model, tokenizer, n: int) -> list[str]:
    from hfkit.generation import generate

    return [generate(model, tokenizer, [{"role": "user", "content": p}], max_new_tokens=n) for p in PROMPTS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=200)
    parser.add_argument("--validation-rows", type=int, default=50)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import hfkit
    from hfkit.config import resolve
    from hfkit.generation import load_causal_lm

    train, validation = split_data(args.train_rows, args.validation_rows, args.seed)
    overrides = {"data.train": str(train), "data.validation": str(validation), "output_dir": "runs/bench-sft-lora-smollm2",
                 "train.epochs": args.epochs, "train.overwrite": True, "train.report_to": []}
    cfg = resolve("finetune", "sft-lora", [f"{k}={v}" for k, v in overrides.items() if k != "train.report_to"])
    base, tokenizer = load_causal_lm("builtin:smollm2-135m-instruct")
    before = answer_loss(base, tokenizer, cfg, validation)
    said_before = greedy_all(base, tokenizer, args.new_tokens)
    del base

    start = time.perf_counter()
    result = hfkit.finetune("sft-lora", **overrides)
    wall = time.perf_counter() - start
    run = result.output_dir
    model, tokenizer = load_causal_lm(run)  # the adapter on its base, as `hfkit generate` loads it
    after = answer_loss(model, tokenizer, cfg, validation)
    said_after = greedy_all(model, tokenizer, args.new_tokens)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hfkit.models import resolve_model_path

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        resolve_model_path("builtin:smollm2-135m-instruct")), str(run)).eval()
    merged = AutoModelForCausalLM.from_pretrained(run / "merged").eval()
    same_adapter = greedy_all(plain, tokenizer, args.new_tokens) == said_after
    same_merged = greedy_all(merged, tokenizer, args.new_tokens) == said_after
    m = result.metrics
    out = {"train_rows": args.train_rows, "validation_rows": args.validation_rows, "epochs": args.epochs,
           "answer_loss_before": before["loss"], "answer_loss_after": after["loss"],
           "perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
           "trainer_eval_loss": m.get("eval_loss"), "train_wall_seconds": m["train_wall_seconds"], "wall": wall,
           "tokens_per_second": m["train_tokens_per_second"], "trainable_params": m["trainable_params"],
           "steps": m["global_step"], "prompts": PROMPTS, "before": said_before, "after": said_after,
           "plain_peft_generates_the_same": same_adapter, "merged_generates_the_same": same_merged}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
