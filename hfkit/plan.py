"""`hfkit plan`: before anything runs, will a recipe fit on a cluster's GPUs, with which strategy, and how long
will it take? The model is built on the meta device (no memory, seconds even for 7B).

Memory per GPU for mixed-precision AdamW, 16 bytes per trained parameter however it is split (Rajbhandari et al.
2020, "ZeRO", sec. 3.1), as each strategy holds it:

    DDP and FSDP (torch autocast, fp32 weights): weights 4 B, gradients 4 B, Adam's m and v 8 B
    DeepSpeed ZeRO (bf16 module, fp32 master copy in the optimizer): weights 2 B, gradients 2 B, optimizer 12 B

DDP keeps all of it on every GPU; ZeRO-2 shards gradients and optimizer state over the data-parallel GPUs; ZeRO-3
and FSDP full shard shard the weights too; CPU offload moves the optimizer state (ZeRO-3 / FSDP: the weights too)
into host memory. Frozen weights (LoRA's base) take only their weight bytes: 2 when model.dtype stores the base in
16 bits (its default, auto, does so for LoRA under bf16), else the strategy's weight bytes.

Activations are traced, not guessed: one sequence runs through the model's own forward on the meta device (bf16,
with PEFT's adapters for LoRA), and what autograd saves for the backward pass is added up, per transformer block
and outside them (`trace_saved`). That counts what a formula misses: unfused GELU, RMSNorm's fp32 upcast, the
loss's fp32 logits and log-softmax, PEFT's fp32 copy of each adapter's input. Attention is counted as FlashAttention
and the memory-efficient kernel store it (q, k, v, output, log-sum-exp: never the s x s scores), which is what
sdpa picks on a GPU. With activation checkpointing each block keeps only its input, and one block's full set
exists while it recomputes. The backward of the loss adds two fp32 logits-sized gradients. A bare `Shape` (the
published comparisons) falls back to Korthikanti et al. 2022, eq. 1 without the scores: 34 s b h bytes per layer.
10% of each GPU is kept back for the CUDA context, the allocator's fragmentation and communication buffers.

Time = training FLOPs (flops.py: 6 N + 12 L H T per token, x 4/3 with checkpointing, which recomputes the forward)
/ (GPUs x peak bf16 FLOP/s x MFU). The default MFU, 0.40, is a round figure below the 46% PaLM reports for its
largest runs (Chowdhery et al. 2022, table 3) and near what Megatron-style training of 1-10B models reports;
set --mfu to what your stack achieves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .console import log
from .errors import ConfigError

# name -> (memory GB, dense bf16 TFLOP/s from the vendor's data sheet, no sparsity)
GPUS: dict[str, tuple[float, float]] = {
    "h200-141gb": (141, 989), "h100-80gb": (80, 989), "h100-94gb": (94, 989), "a100-80gb": (80, 312),
    "a100-40gb": (40, 312), "l40s-48gb": (48, 362), "a10g-24gb": (24, 125), "l4-24gb": (24, 121),
    "rtx4090-24gb": (24, 165), "v100-32gb": (32, 125), "t4-16gb": (16, 65),
}
DEFAULT_MFU = 0.40
HEADROOM = 0.90  # of each GPU's memory usable by the run
GB = 1024 ** 3

# strategy -> (accelerate config, bytes per weight / gradient / optimizer state, sharded: weights / grads / optimizer,
# offloaded: weights / optimizer)
TORCH_AMP, DEEPSPEED_BF16 = (4, 4, 8), (2, 2, 12)
STRATEGIES: dict[str, tuple[str, tuple[int, int, int], tuple[bool, bool, bool], tuple[bool, bool]]] = {
    "DDP": ("multi-gpu-ddp.yaml", TORCH_AMP, (False, False, False), (False, False)),
    "ZeRO-2": ("deepspeed-zero2.yaml", DEEPSPEED_BF16, (False, True, True), (False, False)),
    "ZeRO-2 + offload": ("deepspeed-zero2-offload.yaml", DEEPSPEED_BF16, (False, True, True), (False, True)),
    "FSDP full shard": ("fsdp.yaml", TORCH_AMP, (True, True, True), (False, False)),
    "ZeRO-3": ("deepspeed-zero3.yaml", DEEPSPEED_BF16, (True, True, True), (False, False)),
    "FSDP + offload": ("fsdp.yaml", TORCH_AMP, (True, True, True), (True, True)),
    "ZeRO-3 + offload": ("deepspeed-zero3-offload.yaml", DEEPSPEED_BF16, (True, True, True), (True, True)),
}


@dataclass
class Shape:
    """What the plan needs to know about the model and the batch."""

    total: int  # parameters
    trained: int  # parameters that train (LoRA: the adapters)
    matmul: int  # parameters that multiply each token (flops.matmul_params)
    layers: int
    hidden: int
    vocab: int
    seq: int  # tokens per sequence
    batch: int  # sequences per GPU per forward pass
    largest_layer: int  # parameters of one transformer block (what ZeRO-3 / FSDP gathers at a time)
    saved: "Saved | None" = None  # activations traced through the model's own forward; None: the formula
    base_bytes: int | None = None  # bytes per frozen weight when the base is stored in 16 bits (model.dtype)


@dataclass
class Saved:
    """What autograd keeps for the backward pass, per sequence (bytes), traced by `trace_saved`."""

    per_block: float  # in one transformer block
    outside: float  # embeddings, final norm, LM head, loss
    block_input: float  # one block's input: all that activation checkpointing keeps of a block
    logits: float  # one fp32 copy of the logits (0 without an LM head); the backward adds two (`memory`)


@dataclass
class Row:
    strategy: str
    checkpointing: bool
    weights: float  # GB per GPU
    grads: float
    optimizer: float
    activations: float
    total: float
    host: float  # GB of CPU memory per GPU (offload)
    fits: bool
    hours: float | None


def model_shape(cfg, kind: str) -> tuple[Shape, object]:
    """(Shape, config) of the recipe's model, built on the meta device."""
    import warnings
    from pathlib import Path

    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    from .errors import ModelError
    from .flops import depth_and_width, matmul_params
    from .models import PRESETS, _config_class, base_dtype, resolve_model_path

    m = cfg.model
    if kind == "pretrain" and m.preset:
        spec = PRESETS[m.preset]
        values = {**spec["config"], "vocab_size": cfg.tokenizer.vocab_size, **(m.overrides or {})}
        if spec["family"] == "modernbert":  # its config defaults these to ids of its own 50k vocabulary
            values = {"pad_token_id": 0, "cls_token_id": 1, "bos_token_id": 1, "sep_token_id": 2, "eos_token_id": 2,
                      **values}
        config = _config_class(spec["family"])(**values)
    else:
        path = resolve_model_path(m.path)
        if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
            raise ModelError(f"model.path: '{path}' has no config.json (a config alone is enough to plan)")
        try:
            config = AutoConfig.from_pretrained(path)
        except OSError as e:
            raise ModelError(f"model.path: cannot read a config from '{path}': {str(e).splitlines()[0][:200]}") from None
    if kind == "pretrain":
        from .objectives import get_objective

        auto = AutoModelForCausalLM if get_objective(cfg.objective).kind == "clm" else AutoModelForMaskedLM
    elif cfg.task == "sft" or cfg.prompted:  # the LM head scores every position
        causal = any(a.endswith("ForCausalLM") for a in config.architectures or []) or cfg.task == "sft"
        auto = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    else:
        auto = AutoModel  # a task head on the encoder: no vocabulary-sized logits
    with torch.device("meta"):  # bf16, as a GPU run holds its activations (DeepSpeed's bf16 module, or autocast)
        model = auto.from_config(config, dtype=torch.bfloat16)
    total = sum(p.numel() for p in model.parameters())
    layers, hidden = depth_and_width(config)
    vocab = config.vocab_size if auto is not AutoModel else 0  # the logits' width
    embeddings = sum(e.weight.numel() for e in model.modules() if isinstance(e, torch.nn.Embedding))
    largest = (total - embeddings) // max(layers, 1)
    trained = total
    method = getattr(cfg, "method", "full")
    if method == "lora":  # r x (in + out) per linear layer, as PEFT's all-linear (no LM head); GPT-2's Conv1D too
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        trained = 0
        for mod in model.modules():
            if mod is head:
                continue
            if isinstance(mod, torch.nn.Linear):
                trained += cfg.lora.r * (mod.in_features + mod.out_features)
            elif type(mod).__name__ == "Conv1D":
                trained += cfg.lora.r * sum(mod.weight.shape)
    elif method != "full":
        raise ConfigError(f"hfkit plan: plans methods full and lora; method {method} trains too little to matter "
                          "(plan it as lora for an upper bound)")
    seq = cfg.data.block_size if kind == "pretrain" else cfg.data.max_length
    matmul = matmul_params(model)
    if method == "lora":  # a frozen base saves less: trace the model PEFT builds
        from peft import LoraConfig, get_peft_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
            model = get_peft_model(model, LoraConfig(r=cfg.lora.r, target_modules="all-linear"))
    try:
        saved = trace_saved(model, seq, labels=vocab > 0)
    except Exception as e:  # an architecture the meta device cannot run: the formula, and the plan says so
        saved = None
        log(f"plan: activations from Korthikanti et al.'s formula; tracing {type(model).__name__} failed "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
    # The run's own rule (models.base_dtype) on a GPU, where train.precision auto computes in bf16.
    precision = "bf16" if cfg.train.precision == "auto" else cfg.train.precision
    base_bytes = 2 if method == "lora" and base_dtype(cfg, precision) != "float32" else None
    return Shape(total=total, trained=trained, matmul=matmul, layers=layers, hidden=hidden, vocab=vocab, seq=seq,
                 batch=cfg.train.batch_size, largest_layer=largest, saved=saved, base_bytes=base_bytes), config


def _flash_like_sdpa():
    """A stand-in for torch's scaled_dot_product_attention while tracing: it saves what FlashAttention and the
    memory-efficient kernel save (q, k, v, the output and the softmax's log-sum-exp), never the s x s scores that
    the meta device's math path would."""
    import torch

    class Flash(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            out = q.new_empty(q.shape[:-1] + v.shape[-1:])
            ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
            return out

        @staticmethod
        def backward(ctx, grad):  # pragma: no cover - tracing runs no backward
            raise NotImplementedError

    return lambda q, k, v, *args, **kwargs: Flash.apply(q, k, v)


def transformer_blocks(model) -> list:
    """The model's repeated blocks: the modules transformers keeps whole when sharding (`_no_split_modules`)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def trace_saved(model, seq: int, labels: bool) -> Saved:
    """Run one sequence of `seq` tokens through `model` (on the meta device: shapes only, no memory, well under a
    second for 7B) and add up what autograd saves for the backward pass, in and outside the transformer blocks.
    This counts the model's real implementation (unfused GELU, RMSNorm's fp32 upcast, the loss's fp32 logits, ...)
    in the dtype it was built in, with attention as FlashAttention stores it (`_flash_like_sdpa`). Raises
    ValueError for a model without `_no_split_modules` (no blocks to count)."""
    from unittest import mock

    import torch

    blocks = transformer_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} names no transformer blocks (_no_split_modules)")
    params = {id(p) for p in model.parameters()}
    kept, seen, where = [], set(), [None]
    totals = {"block": 0, "outside": 0}

    def pack(t):
        base = t._base if t._base is not None else t
        if id(base) not in params and id(base) not in seen:
            seen.add(id(base))
            kept.append(base)  # keeps ids unique while tracing
            totals["outside" if where[0] is None else "block"] += base.untyped_storage().nbytes()
        return t

    def enter(module, args, kwargs=None):
        where[0] = module

    def leave(module, args, output):
        where[0] = None

    handles = [h for b in blocks for h in (b.register_forward_pre_hook(enter), b.register_forward_hook(leave))]
    device = next(model.parameters()).device
    ids = torch.zeros(1, seq, dtype=torch.long, device=device)
    try:
        # one unpadded sequence: skip what looks at values (padding, packed sequences), which meta tensors have not
        with mock.patch("torch.nn.functional.scaled_dot_product_attention", _flash_like_sdpa()), \
                mock.patch("transformers.PreTrainedModel.warn_if_padding_and_no_attention_mask"), \
                mock.patch("transformers.masking_utils.find_packed_sequence_indices", return_value=None), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, **({"labels": ids} if labels else {}))
    finally:
        for h in handles:
            h.remove()
    from .flops import depth_and_width

    dtype = next(model.parameters()).dtype
    hidden = depth_and_width(model.config)[1]
    vocab = model.config.vocab_size if labels else 0
    return Saved(per_block=totals["block"] / len(blocks), outside=totals["outside"],
                 block_input=seq * hidden * torch.empty((), dtype=dtype).element_size(), logits=4.0 * seq * vocab)


def memory(shape: Shape, strategy: str, gpus: int, checkpointing: bool,
           activation_bytes: int = 2) -> tuple[float, float, float, float, float]:
    """(weights, grads, optimizer, activations, host) in GB per GPU. Activations: traced through the model
    (`shape.saved`), or, for a bare Shape, Korthikanti et al.'s formula; activation_bytes (2 for bf16/fp16, 4 for
    fp32) applies to the formula only: a traced model already has its dtype."""
    _, (bw, bg, bo), (shard_w, shard_g, shard_o), (off_w, off_o) = STRATEGIES[strategy]
    n = max(gpus, 1)
    weights = float(bw * shape.trained + (shape.base_bytes or bw) * (shape.total - shape.trained))
    grads = float(bg * shape.trained)
    optimizer = float(bo * shape.trained)
    gathered = 2 * bw * shape.largest_layer  # one block gathered whole, and the next prefetched
    if shard_w:
        weights = weights / n + gathered
    if shard_g:
        grads /= n
    if shard_o:
        optimizer /= n
    host = 0.0
    if off_o:
        host += optimizer
        optimizer = 0.0
    if off_w:
        host += weights - gathered
        weights = gathered
    s, b, h, L = shape.seq, shape.batch, shape.hidden, shape.layers
    if shape.saved is not None:  # each block's input with checkpointing, and one block's full set while it recomputes
        a = shape.saved
        kept = L * a.block_input + a.per_block if checkpointing else L * a.per_block
        # the backward of the loss's log-softmax holds its incoming and its outgoing gradient, each logits-sized
        activations = b * (kept + a.outside + 2 * a.logits)
    else:
        per_value = activation_bytes / 2  # the 34 s b h of the 16-bit formula, in this precision
        if checkpointing:
            activations = per_value * (2.0 * s * b * h * L + 34.0 * s * b * h)
        else:
            activations = per_value * 34.0 * s * b * h * L
        activations += 2 * 4.0 * s * b * shape.vocab
    return weights / GB, grads / GB, optimizer / GB, activations / GB, host / GB


def plan(shape: Shape, gpus: int, gpu_memory: float, peak_tflops: float | None, steps: int | None,
         global_batch: int, mfu: float) -> list[Row]:
    from .flops import training_flops

    rows = []
    tokens = (steps or 0) * global_batch * shape.seq
    per_token = training_flops(shape.matmul, shape.layers, shape.hidden, shape.seq)
    for strategy in STRATEGIES:
        if gpus == 1 and strategy != "DDP" and "offload" not in strategy:
            continue  # nothing to shard over
        for checkpointing in (False, True):
            w, g, o, a, host = memory(shape, strategy, gpus, checkpointing)
            total = w + g + o + a
            hours = None
            if peak_tflops and steps:
                flops = tokens * per_token * (4 / 3 if checkpointing else 1.0)
                hours = flops / (gpus * peak_tflops * 1e12 * mfu) / 3600
            rows.append(Row(strategy, checkpointing, w, g, o, a, total, host, total <= gpu_memory * HEADROOM, hours))
    return rows


def recommend(rows: list[Row]) -> Row | None:
    """The cheapest row that fits. Without offload before with it (offload moves the optimizer step, and for ZeRO-3
    the weights, over PCIe every step), and without activation checkpointing (a third more compute) before with
    it; within that, STRATEGIES order: ZeRO-2 communicates what DDP does (ZeRO paper, sec. 7), ZeRO-3 / FSDP half
    as much again."""
    order = list(STRATEGIES)
    fitting = [r for r in rows if r.fits]
    if not fitting:
        return None
    return min(fitting, key=lambda r: ("offload" in r.strategy, r.checkpointing, order.index(r.strategy)))


def resolve_gpu(gpu: str | None, gpu_memory: float | None, peak_tflops: float | None) -> tuple[str, float, float | None]:
    if gpu is not None and gpu_memory is not None:
        raise ConfigError("--gpu and --gpu-memory: give one (a known GPU, or its memory in GB)")
    if gpu is not None:
        key = gpu.lower()
        if key not in GPUS:
            raise ConfigError(f"--gpu: unknown GPU '{gpu}'; known: {', '.join(GPUS)} (or give --gpu-memory GB and "
                              "--peak-tflops)")
        memory_gb, peak = GPUS[key]
        return key, memory_gb, peak_tflops or peak
    if gpu_memory is None:
        raise ConfigError(f"hfkit plan: say which GPU: --gpu NAME ({', '.join(GPUS)}) or --gpu-memory GB")
    if gpu_memory <= 0:
        raise ConfigError(f"--gpu-memory: {gpu_memory} GB; give a positive number")
    return f"{gpu_memory:g} GB GPU", gpu_memory, peak_tflops


def run(kind: str, cfg, *, gpus: int, nodes: int = 1, gpus_per_node: int = 8, gpu: str | None = None,
        gpu_memory: float | None = None, peak_tflops: float | None = None, mfu: float = DEFAULT_MFU,
        recipe: str = "RECIPE", overrides: list[str] | None = None) -> str:
    """The plan as text: a table per strategy, the recommendation and its launch command."""
    if gpus < 1 or nodes < 1 or gpus_per_node < 1:
        raise ConfigError("--gpus, --nodes and --gpus-per-node: give numbers >= 1")
    if gpus > nodes * gpus_per_node:
        raise ConfigError(f"--gpus {gpus}: {nodes} node(s) x {gpus_per_node} GPUs per node hold {nodes * gpus_per_node}; "
                          f"use --nodes {math.ceil(gpus / gpus_per_node)} or fewer GPUs")
    if gpus % nodes:
        raise ConfigError(f"--gpus {gpus} do not split evenly over --nodes {nodes}")
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu: {mfu}; give a fraction in (0, 1], e.g. 0.4")
    name, memory_gb, peak = resolve_gpu(gpu, gpu_memory, peak_tflops)
    shape, config = model_shape(cfg, kind)
    t = cfg.train
    if t.global_batch_size:
        per_step = t.batch_size * gpus
        if t.global_batch_size % per_step:
            raise ConfigError(f"train.global_batch_size {t.global_batch_size} is not a multiple of train.batch_size x "
                              f"GPUs = {per_step}; change one of them")
        accumulation = t.global_batch_size // per_step
    else:
        accumulation = t.gradient_accumulation_steps
    global_batch = t.batch_size * gpus * accumulation
    rows = plan(shape, gpus, memory_gb, peak, t.max_steps, global_batch, mfu)
    best = recommend(rows)
    lines = [f"model: {type(config).__name__.removesuffix('Config')}, {shape.total / 1e9:.3g}B parameters "
             f"({shape.trained / 1e6:,.1f}M train), {shape.layers} layers x {shape.hidden}, vocabulary {config.vocab_size:,}",
             f"batch: {t.batch_size} x {shape.seq} tokens per GPU per pass, accumulation {accumulation}, global batch "
             f"{global_batch} sequences ({global_batch * shape.seq:,} tokens) on {gpus} x {name} ({nodes} node(s))",
             f"steps: {t.max_steps if t.max_steps else 'set by epochs: time not estimated (set train.max_steps)'}"
             + (f"; time at MFU {mfu:.2f} of {peak:g} TFLOP/s bf16 per GPU" if peak and t.max_steps else ""), "",
             "| strategy | act. ckpt | weights | grads | optimizer | activations | total GB/GPU | host GB/GPU | fits "
             f"{memory_gb * HEADROOM:.0f} GB | hours |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'1 GPU' if gpus == 1 and r.strategy == 'DDP' else r.strategy} | {'yes' if r.checkpointing else 'no'} | {r.weights:.1f} | {r.grads:.1f} | "
                     f"{r.optimizer:.1f} | {r.activations:.1f} | {r.total:.1f} | {r.host:.1f} | "
                     f"{'yes' if r.fits else 'no'} | {'' if r.hours is None else f'{r.hours:.3g}'} |")
    if best is None:
        least = min(rows, key=lambda r: r.total)
        raise ConfigError(
            f"hfkit plan: fits no strategy on {gpus} x {name}: the smallest, {least.strategy} with activation "
            f"checkpointing, needs {least.total:.1f} GB per GPU, {least.total - memory_gb * HEADROOM:.1f} GB over the "
            f"{memory_gb * HEADROOM:.0f} GB usable; lower train.batch_size or the sequence length, add GPUs, or use "
            "method lora")
    config_file = STRATEGIES[best.strategy][0]
    if gpus == 1 and best.strategy == "DDP":
        config_file = "single-gpu.yaml"
    extra = list(overrides or [])
    if best.checkpointing:
        extra.append("train.gradient_checkpointing=true")
    if not t.global_batch_size:
        extra.append(f"train.global_batch_size={global_batch}")
    launch = ["accelerate launch", f"--config_file recipes/accelerate/{config_file}", f"--num_processes {gpus}",
              f"--num_machines {nodes}"]
    if best.strategy == "FSDP + offload":
        launch.append("--fsdp_offload_params true")
    if nodes > 1:
        launch.append("--machine_rank $NODE_RANK --main_process_ip $MAIN_IP")
    if best.strategy.startswith("ZeRO") and accumulation != 1:
        launch.append(f"--gradient_accumulation_steps {accumulation}")
    launch.append(f"-m hfkit {kind} {recipe}" + "".join(f" {o}" for o in extra))
    lines += ["", f"recommended: {'1 GPU, no sharding' if gpus == 1 and best.strategy == 'DDP' else best.strategy}" + (" with activation checkpointing" if best.checkpointing else "")
              + f", {best.total:.1f} GB per GPU" + (f", about {best.hours:.3g} h" if best.hours is not None else ""),
              " \\\n    ".join(launch)]
    if best.strategy.startswith("ZeRO"):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            lines.append("DeepSpeed is not installed in this environment: pip install -e \".[deepspeed]\" (hfkit's "
                         "lock has it: make setup)")
    return "\n".join(lines)
