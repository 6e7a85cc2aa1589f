"""Does ELECTRA's discriminator learn once its generator leaves the unigram plateau? (issue 16)

benchmarks/electra_probe.py found that a discriminator cannot tell unigram samples from text, and a BERT-block
generator at this size never gets past unigram statistics. benchmarks/mlm_plateau.py found a block that does get
past them: ModernBERT's. Here both halves of ELECTRA are ModernBERT blocks, in plain transformers
(ModernBertModel) and a plain loop, on the same text, tokenizer, masking and budget as mlm_plateau.py (1,000
steps x 32 x 128 tokens of the movie pool, AdamW, 6% warm-up, linear decay, clipping at 1.0, bf16 autocast).

- discriminator: ModernBERT 2 x 128 (modernbert-tiny's shape) and ELECTRA's head (dense, GELU, one logit per token);
- generator: ModernBERT, 2 layers, `width` wide, reading the discriminator's token embeddings through a linear
  projection and predicting onto them (ELECTRA's shared embeddings for a narrower generator), masked-LM loss at
  the masked positions only;
- loss = generator masked-LM + 50 x replaced-token detection (ELECTRA's weight); a sampled token equal to the
  original counts as original.
The last arm replaces the generator's samples by uniformly random tokens, the check that the discriminator can
learn the task at all. Reported on 200 held-out sentences, masked the same way every time.

    python benchmarks/electra_blocks.py        # ~10 min on 2 CPU cores; prints the table
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from mlm_plateau import BATCH, STEPS, corpus, mask  # noqa: E402

ARMS = [  # (generator width, learning rate, replacements)
    (64, 3e-3, "generator"),
    (32, 3e-3, "generator"),
    (64, 1e-3, "generator"),
    (64, 3e-3, "uniform"),
]


def config(tok, width: int, layers: int = 2):
    from transformers import ModernBertConfig

    return ModernBertConfig(vocab_size=len(tok), hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=max(1, width // 64), intermediate_size=3 * width,
                            layer_types=["full_attention"] * layers, max_position_embeddings=512,
                            pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                            bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)


class Electra(torch.nn.Module):
    def __init__(self, tok, width: int, uniform: bool, weight: float = 50.0):
        from transformers import ModernBertModel

        super().__init__()
        nn = torch.nn
        self.discriminator = ModernBertModel(config(tok, 128))
        self.embeddings = self.discriminator.embeddings.tok_embeddings
        self.generator = ModernBertModel(config(tok, width))
        self.generator.embeddings.tok_embeddings = None  # it reads the shared embeddings through `project_in`
        self.project_in = nn.Linear(128, width)
        self.project_out = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.LayerNorm(128))
        self.bias = nn.Parameter(torch.zeros(len(tok)))
        self.detect = nn.Sequential(nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 1))
        self.uniform, self.weight, self.vocab = uniform, weight, len(tok)

    def forward(self, masked_ids, labels, original):
        hidden = self.generator(inputs_embeds=self.project_in(self.embeddings(masked_ids))).last_hidden_state
        chosen = labels != -100
        logits = (self.project_out(hidden[chosen]) @ self.embeddings.weight.T + self.bias).float()
        generator_loss = torch.nn.functional.cross_entropy(logits, labels[chosen])
        with torch.no_grad():
            if self.uniform:
                sampled = torch.randint(5, self.vocab, (int(chosen.sum()),))
            else:
                sampled = torch.distributions.Categorical(logits=logits).sample()
        corrupted = original.clone()
        corrupted[chosen] = sampled
        replaced = (corrupted != original).float()
        scores = self.detect(self.discriminator(input_ids=corrupted).last_hidden_state).squeeze(-1).float()
        detection_loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, replaced)
        accuracy = float(((scores > 0).float() == replaced).float().mean())
        return generator_loss + self.weight * detection_loss, float(generator_loss), accuracy, float(1 - replaced.mean())


def run(tok, train, val, width: int, lr: float, replacements: str) -> tuple[float, float, float, float]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = Electra(tok, width, uniform=replacements == "uniform")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = int(0.06 * STEPS)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (STEPS - s) / (STEPS - warm)))
    start = time.perf_counter()
    for _ in range(STEPS):
        original = train[torch.randint(0, len(train), (BATCH,), generator=generator)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(*mask(original, tok, generator), original)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, generator_loss, accuracy, base = model(*mask(val, tok, torch.Generator().manual_seed(1)), val)
    return generator_loss, accuracy, base, time.perf_counter() - start


def main() -> None:
    tok, train, val = corpus()
    print("| replacements | generator width | rate | generator MLM loss | detection accuracy | base rate (all original) "
          "| gain | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for width, lr, replacements in ARMS:
        loss, accuracy, base, seconds = run(tok, train, val, width, lr, replacements)
        print(f"| {replacements} | {width} | {lr:g} | {loss:.2f} | {accuracy:.4f} | {base:.4f} | {accuracy - base:+.4f} | "
              f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
