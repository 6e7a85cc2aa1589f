"""Why does ELECTRA not pay off here? Two probes on the shipped news corpus (issue 16).

1. Detection alone: a plain transformers ElectraForPreTraining (2 layers x 128, no generator, no hfkit) learns to
   spot replaced tokens at 15%, the replacements drawn either uniformly from the vocabulary or from the corpus's
   unigram distribution (what a generator stuck on the unigram plateau samples). 300 steps x 32 x 128 tokens,
   AdamW at --lr; detection accuracy against the base rate (always answering "original") on the last batches.
2. Collapse: for hfkit runs given with --runs (e.g. an electra-tiny and a bert-mlm-tiny run at the same budget),
   the effective rank (exp of the entropy of the singular values) of the final hidden states over 300 movie-review
   sentences, the mean pairwise cosine of mean-pooled sentence vectors, and the same for a random-init twin.

    hfkit pretrain electra-tiny output_dir=runs/probe-electra train.max_steps=600
    hfkit pretrain bert-mlm-tiny output_dir=runs/probe-mlm tokenizer.vocab_size=8000 data.block_size=128 \\
        train.batch_size=16 train.learning_rate=1e-3 train.max_steps=600
    python benchmarks/electra_probe.py --tokenizer runs/probe-electra --runs runs/probe-electra runs/probe-mlm
"""

from __future__ import annotations

import argparse
import statistics


def blocks(tokenizer, length: int = 128):
    import torch

    from hfkit.data import BUILTIN_CORPORA

    ids: list[int] = []
    for text in list(BUILTIN_CORPORA["news-articles"]()["text"])[:1500]:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
    return torch.tensor(ids[: len(ids) // length * length]).view(-1, length)


def detection(tokenizer, data, mode: str, lr: float, steps: int = 300, seed: int = 0) -> tuple[float, float]:
    """(accuracy, base rate) over the last 50 steps' batches."""
    import torch
    from transformers import ElectraConfig, ElectraForPreTraining

    torch.manual_seed(seed)
    vocab = len(tokenizer)
    model = ElectraForPreTraining(ElectraConfig(vocab_size=vocab, embedding_size=128, hidden_size=128,
                                                num_hidden_layers=2, num_attention_heads=2, intermediate_size=512))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    unigram = torch.bincount(data.flatten(), minlength=vocab).float() + 1
    accuracy, base = [], []
    for step in range(steps):
        batch = data[torch.randint(0, len(data), (32,))]
        mask = torch.rand(batch.shape) < 0.15
        if mode == "uniform":
            fake = torch.randint(0, vocab, batch.shape)
        else:
            fake = torch.multinomial(unigram, batch.numel(), replacement=True).view(batch.shape)
        corrupted = torch.where(mask, fake, batch)
        labels = (corrupted != batch).float()
        out = model(corrupted, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if step >= steps - 50:
            accuracy.append(((out.logits > 0).float() == labels).float().mean().item())
            base.append(1 - labels.mean().item())
    return statistics.mean(accuracy), statistics.mean(base)


def effective_rank(x) -> float:
    import torch

    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p + 1e-12)).sum()))


def collapse(path: str, random_init: bool = False) -> tuple[float, float]:
    """(token effective rank, mean pairwise cosine of sentence vectors) of a run's final hidden states."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from hfkit.data import _movie_review_frame

    texts = [t for t in _movie_review_frame()["text"].astype(str).tolist()[:400] if len(t) > 20][:300]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_config(AutoConfig.from_pretrained(path)) if random_init else AutoModel.from_pretrained(path)
    model.eval()
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    sentences = (hidden * mask).sum(1) / mask.sum(1)
    cos = torch.nn.functional.cosine_similarity(sentences.unsqueeze(1), sentences.unsqueeze(0), dim=-1)
    off_diagonal = cos[~torch.eye(len(cos), dtype=torch.bool)]
    return effective_rank(hidden[enc["attention_mask"].bool()]), float(off_diagonal.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="an hfkit run whose tokenizer the detection probe uses")
    parser.add_argument("--runs", nargs="*", default=[], help="hfkit pretraining runs for the collapse probe")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 1e-4])
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    data = blocks(tokenizer)
    print("| replacements | learning rate | detection accuracy | base rate (all original) | gain |")
    print("|---|---|---|---|---|")
    for mode in ("uniform", "unigram"):
        for lr in args.lr:
            acc, base = detection(tokenizer, data, mode, lr)
            print(f"| {mode} | {lr:g} | {acc:.3f} | {base:.3f} | {acc - base:+.3f} |")
    if args.runs:
        print("\n| model | token effective rank (of 128) | mean cosine between sentence vectors |")
        print("|---|---|---|")
        for path in args.runs:
            rank, cos = collapse(path)
            print(f"| {path} | {rank:.1f} | {cos:.3f} |")
        rank, cos = collapse(args.runs[0], random_init=True)
        print(f"| random init ({args.runs[0]}'s config) | {rank:.1f} | {cos:.3f} |")


if __name__ == "__main__":
    main()
