"""Which block gets a 2-layer, 128-wide masked LM off the unigram plateau? Plain transformers models and a plain
training loop; only the tokenizer is hfkit's (its WordPiece training gives the same vocabulary in every run).

The text is the pool of benchmarks/pretrain_payoff.py (9,568 Rotten Tomatoes sentences, 0.28M tokens; the 1,000
test rows are left out), with a WordPiece vocabulary of 4,000 trained on it, packed into 128-token blocks. Each
block trains for 1,000 steps of 32 blocks (4.1M tokens) with AdamW, 6% warm-up and linear decay, clipping at 1.0,
bf16 autocast, 15% masking (80/10/10), the loss at masked positions only, and no dropout. The eval loss is on 200
held-out sentences, masked the same way every time. The corpus's unigram entropy is printed for reference: a model
that ignores context cannot go below it.

    python benchmarks/mlm_plateau.py        # ~8 min on 2 CPU cores; prints the table
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
STEPS, BATCH, BLOCK = 1000, 32, 128
RUNS = [  # (label, block, learning rate)
    ("bert-tiny (post-LN, learned positions)", "bert", 1e-3),
    ("pre-LN, learned positions (roberta-prelayernorm)", "prelayernorm", 1e-3),
    ("pre-LN, learned positions (roberta-prelayernorm)", "prelayernorm", 3e-3),
    ("modernbert-tiny (pre-LN, rotary, GeGLU)", "modernbert", 1e-3),
    ("modernbert-tiny (pre-LN, rotary, GeGLU)", "modernbert", 3e-3),
]


def corpus():
    import pandas as pd

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from pretrain_payoff import WORK, cut

    from hfkit.tokenizer import train_tokenizer  # the same vocabulary in every run (tokenizers' own is not)

    pool = pd.read_csv(cut(WORK / "data")["pool"])["text"].astype(str).tolist()
    tok = train_tokenizer(pool, kind="mlm", family="bert", algorithm="wordpiece", vocab_size=4000, show_progress=False)
    ids = [tok(s, add_special_tokens=False)["input_ids"] for s in pool]
    order = list(range(len(ids)))
    random.Random(0).shuffle(order)

    def pack(rows):
        flat = [t for i in rows for t in ids[i] + [tok.sep_token_id]]
        n = len(flat) // (BLOCK - 1)
        return torch.tensor([[tok.cls_token_id] + flat[k * (BLOCK - 1):(k + 1) * (BLOCK - 1)] for k in range(n)])

    return tok, pack(order[200:]), pack(order[:200])


def mask(x, tok, generator):
    """BERT's masking: 15% of the non-special tokens; of those 80% [MASK], 10% a random token, 10% kept."""
    labels = x.clone()
    special = torch.tensor([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])
    chosen = (torch.rand(x.shape, generator=generator) < 0.15) & ~torch.isin(x, special)
    labels[~chosen] = -100
    x, r = x.clone(), torch.rand(x.shape, generator=generator)
    x[chosen & (r < 0.8)] = tok.mask_token_id
    swap = chosen & (r >= 0.8) & (r < 0.9)
    x[swap] = torch.randint(5, len(tok), x.shape, generator=generator)[swap]
    return x, labels


def build(block: str, tok):
    from transformers import (BertConfig, BertForMaskedLM, ModernBertConfig, ModernBertForMaskedLM,
                              RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM)

    size = dict(vocab_size=len(tok), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                pad_token_id=tok.pad_token_id)
    if block == "modernbert":
        return ModernBertForMaskedLM(ModernBertConfig(
            **size, intermediate_size=384, layer_types=["full_attention"] * 2, max_position_embeddings=512,
            cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id, sparse_prediction=True))
    off = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, intermediate_size=512)
    if block == "bert":
        return BertForMaskedLM(BertConfig(**size, **off, max_position_embeddings=512))
    return RobertaPreLayerNormForMaskedLM(RobertaPreLayerNormConfig(**size, **off, max_position_embeddings=514,
                                                                    type_vocab_size=1))


def masked_loss(model, x, labels):
    if model.config.model_type == "modernbert":
        return model(input_ids=x, labels=labels).loss  # sparse_prediction: logits at masked positions only
    hidden = model.base_model(input_ids=x)[0]
    head = model.cls if hasattr(model, "cls") else model.lm_head
    chosen = labels != -100
    return torch.nn.functional.cross_entropy(head(hidden[chosen]).float(), labels[chosen])


def run(block: str, lr: float, tok, train, val) -> tuple[list[float], float]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build(block, tok)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = int(0.06 * STEPS)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (STEPS - s) / (STEPS - warm)))
    curve, start = [], time.perf_counter()
    for step in range(1, STEPS + 1):
        model.train()
        x, labels = mask(train[torch.randint(0, len(train), (BATCH,), generator=generator)], tok, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = masked_loss(model, x, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % (STEPS // 4) == 0:
            model.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                curve.append(float(masked_loss(model, *mask(val, tok, torch.Generator().manual_seed(1)))))
    return curve, time.perf_counter() - start


def main() -> None:
    tok, train, val = corpus()
    counts = torch.bincount(train.flatten(), minlength=len(tok)).float()
    p = counts[counts > 0] / counts.sum()
    print(f"corpus: {train.numel():,} training tokens; unigram entropy {float(-(p * p.log()).sum()):.2f} nats")
    quarters = " | ".join(f"step {STEPS * q // 4}" for q in range(1, 5))
    print(f"\n| block | rate | eval loss at {quarters} | seconds |")
    print("|---|---|" + "---|" * 4 + "---|")
    for label, block, lr in RUNS:
        curve, seconds = run(block, lr, tok, train, val)
        print(f"| {label} | {lr:g} | " + " | ".join(f"{v:.2f}" for v in curve) + f" | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
