"""`hfkit plan`'s memory model against published figures, side by side. Runs in seconds (models on the meta device).

1. ZeRO (Rajbhandari et al. 2020), figure 1: model states per GPU for a 7.5B-parameter model trained with
   mixed-precision Adam over 64 data-parallel GPUs (activations not included).
2. LLaMA-Factory 0.9.5's README, "Hardware Requirement" (marked *estimated* there; no batch or sequence length
   given): a 7B model, full fine-tuning in mixed precision and LoRA in 16 bits, on one GPU. hfkit plans
   recipes/models/llama-2-7b-shape at 1 sequence of 512 tokens with activation checkpointing.

    python benchmarks/plan_vs_published.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEVEN_B = str(ROOT / "recipes" / "models" / "llama-2-7b-shape")
DECIMAL_GB = 1e9


def zero_paper() -> list[tuple[str, float, float]]:
    from hfkit.plan import GB, Shape, memory

    shape = Shape(total=int(7.5e9), trained=int(7.5e9), matmul=int(7.5e9), layers=1, hidden=1, vocab=0, seq=1,
                  batch=1, largest_layer=0)
    published = {"DDP": 120.0, "ZeRO-2": 16.6, "ZeRO-3": 1.9}  # GB, figure 1 (Nd = 64)
    rows = []
    for strategy, value in published.items():
        w, g, o, _, _ = memory(shape, strategy, 64, checkpointing=False)
        rows.append((strategy, value, (w + g + o) * GB / DECIMAL_GB))
    return rows


def llama_factory() -> list[tuple[str, str, float, float]]:
    from hfkit.config import resolve
    from hfkit.plan import GB, memory, model_shape

    rows = []
    for label, recipe, strategy, published, extra in (
            ("full, mixed precision (torch autocast, fp32 weights)", "sft-full", "DDP", 120.0, []),
            ("LoRA, 16-bit base (DeepSpeed bf16 module)", "sft-lora", "ZeRO-2", 16.0, []),
            ("LoRA, bf16 base (model.dtype auto, autocast)", "sft-lora", "DDP", 16.0, []),
            ("LoRA, fp32 base (model.dtype=float32, autocast)", "sft-lora", "DDP", 16.0, ["model.dtype=float32"])):
        cfg = resolve("finetune", recipe, [f"model.path={SEVEN_B}", "data.max_length=512", "train.batch_size=1",
                                           *extra])
        shape, _ = model_shape(cfg, "finetune")
        w, g, o, a, _ = memory(shape, strategy, 1, checkpointing=True)
        rows.append((label, strategy, published, (w + g + o + a) * GB / DECIMAL_GB))
    return rows


def main() -> None:
    print("ZeRO paper, figure 1: 7.5B parameters, mixed-precision Adam, 64 GPUs, model states per GPU (GB)\n")
    print("| strategy | published | hfkit plan | plan / published |")
    print("|---|---|---|---|")
    for strategy, published, planned in zero_paper():
        print(f"| {strategy} | {published:.1f} | {planned:.1f} | {planned / published:.2f} |")
    print("\nLLaMA-Factory 0.9.5 README (estimated), 7B on one GPU, GB; hfkit: 1 x 512 tokens, activation checkpointing\n")
    print("| method | hfkit strategy | published | hfkit plan | plan / published |")
    print("|---|---|---|---|---|")
    for label, strategy, published, planned in llama_factory():
        print(f"| {label} | {strategy} | {published:.0f} | {planned:.1f} | {planned / published:.2f} |")


if __name__ == "__main__":
    main()
