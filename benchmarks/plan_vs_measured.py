"""`hfkit plan`'s state and activation terms against the memory real training steps take, on this CPU, at three
model sizes. Each size runs in a fresh process: a GPT-2 (4 layers, vocabulary 8,000, 8 x 256 tokens, fp32, AdamW,
dropout 0) built from config, 3 training steps.

Measured, in three ways, each from the moment the model exists (so: gradients + optimizer state + activations):
- allocated: the peak of the bytes malloc has handed out and not taken back (glibc's mallinfo2, sampled after every
  tensor operation, backward included). This is what `torch.cuda.max_memory_allocated` reports on a GPU, and what
  the plan models.
- resident: the peak resident set (VmHWM). It also holds memory freed but kept by the allocator, and pages the
  first steps touch once (threads, oneDNN scratch); on a GPU the same gap is the caching allocator's reserve.
- saved: what autograd saved for the backward pass of the first step (saved-tensor hooks, storages counted once),
  against the plan's trace of the same model on the meta device.

Planned: hfkit.plan.memory for one device, with the activations traced in fp32 as the runs hold them.

    python benchmarks/plan_vs_measured.py
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

SIZES = (256, 512, 1024)
LAYERS, SEQ, BATCH, VOCAB = 4, 256, 8, 8000


def gpt2(width: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=LAYERS, n_embd=width, n_head=8, vocab_size=VOCAB, n_positions=SEQ,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def child(width: int) -> None:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def allocated() -> int:  # bytes in use: arena chunks handed out plus mmap'd blocks (all arenas)
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    class Peak(TorchDispatchMode):
        peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            Peak.peak = max(Peak.peak, allocated())
            return out

    torch.manual_seed(0)
    model = gpt2(width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    rss_before, allocated_before = rss_mb("VmRSS"), allocated()
    with Peak():
        for step in range(3):
            if step == 0:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    loss = model(input_ids=ids, labels=ids).loss
            else:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    print(json.dumps({"width": width, "allocated_mb": (Peak.peak - allocated_before) / 2**20,
                      "resident_mb": rss_mb("VmHWM") - rss_before, "saved_mb": sum(saved.values()) / 2**20}))


def planned(width: int) -> dict:
    import torch

    from hfkit.flops import matmul_params
    from hfkit.plan import GB, Shape, memory, trace_saved

    with torch.device("meta"):  # fp32, as the CPU runs
        model = gpt2(width)
    total = sum(p.numel() for p in model.parameters())
    traced = trace_saved(model, SEQ, labels=True)
    shape = Shape(total=total, trained=total, matmul=matmul_params(model), layers=LAYERS, hidden=width, vocab=VOCAB,
                  seq=SEQ, batch=BATCH, largest_layer=0, saved=traced)
    _, g, o, a, _ = memory(shape, "DDP", 1, checkpointing=False)
    saved = BATCH * (LAYERS * traced.per_block + traced.outside)
    return {"params": total, "states_mb": (g + o) * GB / 2**20, "activations_mb": a * GB / 2**20,
            "saved_mb": saved / 2**20}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    print("| width | parameters | saved: traced / measured MB | planned grads + Adam MB | planned activations MB | "
          "planned total MB | measured allocated MB | planned / allocated | measured resident MB | planned / resident |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for width in SIZES:
        out = subprocess.run([sys.executable, __file__, "--child", str(width)], capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        p = planned(width)
        total = p["states_mb"] + p["activations_mb"]
        print(f"| {width} | {p['params'] / 1e6:.1f}M | {p['saved_mb']:.0f} / {m['saved_mb']:.0f} | {p['states_mb']:.0f} | "
              f"{p['activations_mb']:.0f} | {total:.0f} | {m['allocated_mb']:.0f} | {total / m['allocated_mb']:.2f} | "
              f"{m['resident_mb']:.0f} | {total / m['resident_mb']:.2f} |")


if __name__ == "__main__":
    main()
