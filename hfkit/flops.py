"""Model FLOPs and MFU (model FLOPs utilisation), the PaLM paper's definition (Chowdhery et al., 2022, App. B).

Training FLOPs per token = 6 N + 12 L H T: N = the weights that multiply each token (every parameter except
embedding lookups, plus an LM head's output projection, counted even when tied to the embeddings), L layers,
H hidden size, T tokens per sequence (the attention scores and their weighted sum, forward and backward). It
counts what the model needs, not what a run recomputes (gradient checkpointing) or skips (frozen weights).
MFU = achieved model FLOP/s / (peak FLOP/s per device x devices).

The peak: `train.peak_tflops` (or HFKIT_PEAK_TFLOPS) when given; on a GPU in the table, its data sheet; otherwise
(a CPU, or an unknown GPU) a matmul probe at the run's dtype measures it: square matrices large enough to reach the
BLAS's steady rate, timed for about half a second. The figure is cached per machine (CPU or GPU model, threads,
torch version, dtype) in $HFKIT_CACHE/peak.json, so a run pays for the probe once.
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


def datasheet_peak(name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def machine_key(dtype: str) -> str:
    """What the measured peak depends on: the processor (or GPU), threads, torch, dtype."""
    import platform

    import torch

    if torch.cuda.is_available():
        chip = torch.cuda.get_device_name(0)
    else:
        chip = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                chip = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), chip)
        except OSError:
            pass
        chip = f"{chip}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
    return f"{chip} | torch {torch.__version__} | {dtype}"


def probe_peak_tflops(dtype: str = "fp32", seconds: float = 0.5) -> float:
    """Measured dense matmul TFLOP/s of this device at `dtype` (fp32 | bf16 | fp16): square matrices, sized so one
    product takes about 50 ms (at most 2048 on a CPU, 8192 on a GPU), after a warm-up."""
    import time

    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]

    def rate(n: int, least: float) -> float:
        a = torch.randn(n, n, device=device).to(kind)
        b = torch.randn(n, n, device=device).to(kind)
        a @ b  # warm-up: BLAS threads, kernel choice
        done, start = 0, time.perf_counter()
        while True:
            a @ b
            done += 1
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if elapsed >= least:
                return 2.0 * n ** 3 * done / elapsed / 1e12

    guess = rate(256, 0.02)  # a first figure sizes the real probe (a CPU without native bf16 is 100x slower)
    n = int(min(8192 if cuda else 2048, max(256, (0.05 * guess * 1e12 / 2) ** (1 / 3))))
    n -= n % 64
    # The best of three windows: a peak is what the device can do, and a window that another process or a clock
    # change slowed is not that (single 0.5 s windows here spread 0.148-0.170 TFLOP/s).
    return max(rate(n, seconds / 3) for _ in range(3))


def measured_peak_tflops(dtype: str = "fp32", refresh: bool = False) -> float:
    """probe_peak_tflops, cached per machine_key in $HFKIT_CACHE/peak.json."""
    import json
    import os

    from .data import default_cache_dir

    path = default_cache_dir() / "peak.json"
    key = machine_key(dtype)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        table = {}
    if key in table and not refresh:
        return table[key]
    table[key] = round(probe_peak_tflops(dtype), 4)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"peak.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: measured again next time
    return table[key]


def device_peak_tflops(configured: float | None, dtype: str = "fp32") -> tuple[float | None, str]:
    """(peak TFLOP/s of one device, where it came from): train.peak_tflops or HFKIT_PEAK_TFLOPS, else the data
    sheet of a GPU in the table, else measured (cached)."""
    import os

    import torch

    if configured:
        return configured, "configured"
    if os.environ.get("HFKIT_PEAK_TFLOPS"):
        return float(os.environ["HFKIT_PEAK_TFLOPS"]), "HFKIT_PEAK_TFLOPS"
    if torch.cuda.is_available():
        sheet = datasheet_peak(torch.cuda.get_device_name(0))
        if sheet and dtype != "fp32":
            return sheet, "data sheet"
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return None, "measured on process 0 only"  # probes in every process at once would measure a shared CPU
    return measured_peak_tflops(dtype), f"measured ({dtype} matmul)"


def mfu_metrics(model, seq_len: float, tokens_per_second: float | None, world_size: int,
                peak_tflops: float | None, dtype: str = "fp32") -> dict:
    """model_flops_per_token, train_model_tflops_per_second (all devices), the peak and where it came from, mfu."""
    if not tokens_per_second:
        return {}
    per_token = flops_per_token(model, round(seq_len))
    achieved = per_token * tokens_per_second / 1e12
    peak, source = device_peak_tflops(peak_tflops, dtype)
    return {"model_flops_per_token": per_token, "train_model_tflops_per_second": round(achieved, 4),
            "peak_tflops_per_device": peak, "peak_source": source,
            "mfu": round(achieved / (peak * world_size), 4) if peak else None}


def run_dtype(args) -> str:
    """The dtype a Trainer computes its matmuls in: bf16 / fp16 (autocast) or fp32."""
    return "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) else "fp32"
