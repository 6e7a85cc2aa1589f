"""Model FLOPs and MFU (model FLOPs utilisation), the PaLM paper's definition (Chowdhery et al., 2022, App. B).

Training FLOPs per token = 6 N + 12 L H T: N = the weights that multiply each token (every parameter except
embedding lookups, plus an LM head's output projection, counted even when tied to the embeddings), L layers,
H hidden size, T tokens per sequence (the attention scores and their weighted sum, forward and backward). It
counts what the model needs, not what a run recomputes (gradient checkpointing) or skips (frozen weights).
MFU = achieved model FLOP/s / (peak FLOP/s per device x devices).
"""

from __future__ import annotations

# Dense bf16/fp16 tensor-core peaks in TFLOP/s, from the vendors' data sheets (no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0,
               "A10": 125.0, "V100": 125.0, "T4": 65.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


def matmul_params(model) -> int:
    """N: parameters that multiply each token's activations: all but the embedding tables (looked up, not
    multiplied), plus the LM head's output projection when it is tied to one of them (counted once)."""
    import torch

    tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    total = sum(p.numel() for p in model.parameters()) - sum(t.numel() for t in tables)  # parameters() dedups ties
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and any(output.weight is t for t in tables):
        total += output.weight.numel()  # tied: a lookup table on the way in, a matmul on the way out
    return total


def depth_and_width(config) -> tuple[int, int]:
    """(L layers, H hidden size) of a transformers config (GPT-2 names them n_layer / n_embd); 0 when unknown."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0) or 0
    return layers, hidden


def training_flops(matmul: int, layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 N + 12 L H T."""
    return 6.0 * matmul + 12.0 * layers * hidden * seq_len


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token of `model` at sequences of seq_len tokens."""
    return training_flops(matmul_params(model), *depth_and_width(getattr(model, "config", None)), seq_len)


def device_peak_tflops(configured: float | None) -> float | None:
    """The peak to measure MFU against: train.peak_tflops, else the table entry for this GPU, else None (CPU)."""
    if configured:
        return configured
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def mfu_metrics(model, seq_len: float, tokens_per_second: float | None, world_size: int,
                peak_tflops: float | None) -> dict:
    """model_flops_per_token, train_model_tflops_per_second (all devices) and mfu (None without a known peak)."""
    if not tokens_per_second:
        return {}
    per_token = flops_per_token(model, round(seq_len))
    achieved = per_token * tokens_per_second / 1e12
    peak = device_peak_tflops(peak_tflops)
    return {"model_flops_per_token": per_token, "train_model_tflops_per_second": round(achieved, 4),
            "peak_tflops_per_device": peak, "mfu": round(achieved / (peak * world_size), 4) if peak else None}
