"""`hfkit plan`'s state and activation terms against the memory a real training step takes, on this CPU, at three
model sizes. Each size runs in a fresh process: a GPT-2 (4 layers, vocabulary 8,000, 8 x 256 tokens, fp32, AdamW)
built from config; the resident set is read after the model exists (weights only) and its peak after 3 training
steps. measured = peak - before = gradients + optimizer state + activations (+ the allocator's slack); planned =
the same three terms from hfkit.plan.memory (one device, fp32: activation_bytes=4).

    python benchmarks/plan_vs_measured.py
"""

from __future__ import annotations

import json
import subprocess
import sys

SIZES = (256, 512, 1024)
LAYERS, SEQ, BATCH, VOCAB = 4, 256, 8, 8000


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def child(width: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=LAYERS, n_embd=width, n_head=8, vocab_size=VOCAB, n_positions=SEQ, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    before = rss_mb("VmRSS")
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    print(json.dumps({"width": width, "before_mb": before, "peak_mb": rss_mb("VmHWM")}))


def planned(width: int) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel
    import torch

    from hfkit.flops import matmul_params
    from hfkit.plan import GB, Shape, memory

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(n_layer=LAYERS, n_embd=width, n_head=8, vocab_size=VOCAB, n_positions=SEQ))
    total = sum(p.numel() for p in model.parameters())
    shape = Shape(total=total, trained=total, matmul=matmul_params(model), layers=LAYERS, hidden=width, vocab=VOCAB,
                  seq=SEQ, batch=BATCH, largest_layer=0)
    _, g, o, a, _ = memory(shape, "DDP", 1, checkpointing=False, activation_bytes=4)
    return {"params": total, "states_mb": (g + o) * GB / 2**20, "activations_mb": a * GB / 2**20}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    print("| width | parameters | planned grads + Adam MB | planned activations MB | planned total MB | measured MB | planned / measured |")
    print("|---|---|---|---|---|---|---|")
    for width in SIZES:
        out = subprocess.run([sys.executable, __file__, "--child", str(width)], capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        p = planned(width)
        measured = m["peak_mb"] - m["before_mb"]
        total = p["states_mb"] + p["activations_mb"]
        print(f"| {width} | {p['params'] / 1e6:.1f}M | {p['states_mb']:.0f} | {p['activations_mb']:.0f} | {total:.0f} | "
              f"{measured:.0f} | {total / measured:.2f} |")


if __name__ == "__main__":
    main()
