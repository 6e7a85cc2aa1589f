"""Batch collators for packed language-model blocks.

Packed blocks are full length except each tokenization batch's last one, so padding is rare; padded positions
are excluded from the loss by the attention mask, never by token id (a pad id equal to eos would otherwise
hide every end-of-document label from a causal LM).
"""

from __future__ import annotations


def _pad(rows: list[list[int]], value: int):
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return out, mask


class CausalLMCollator:
    """input_ids, attention_mask, and labels = input_ids (the model shifts them) with padding set to -100."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        input_ids, attention_mask = _pad([e["input_ids"] for e in examples], self.pad_token_id)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class MaskedLMCollator:
    """BERT masking on pre-packed blocks, each example's draws keyed by its (epoch, index) (hfkit/randomness.py).

    `probability` of the non-special tokens are selected and predicted; of those, 80% become the mask token, 10% a
    random token of the vocabulary, 10% stay (BERT's split). Whole-word masking selects words, each with
    `probability`, and every piece of a selected word becomes the mask token; packed blocks carry a `word_start`
    flag per token for it. Every example draws the same numbers in the same order from its own generator (one
    uniform per token or word, then per token), so its mask depends on its key and content alone: not on the batch
    it lands in, its padding, the process count or where a run was resumed.
    """

    def __init__(self, tokenizer, probability: float = 0.15, whole_word: bool = False, seed: int = 0):
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.probability, self.whole_word, self.seed = probability, whole_word, seed
        self.mask_share, self.random_share = (1.0, 0.0) if whole_word else (0.8, 0.1)

    def mask_one(self, ids, special, word_start, key):
        """(masked ids, labels) of one unpadded example (1-d tensors)."""
        import torch

        from .randomness import example_generator

        g = example_generator(self.seed, key)
        n = ids.shape[0]
        if self.whole_word:
            words = torch.cumsum(word_start, 0)  # word number of each token
            chosen = torch.rand(int(words[-1]) + 1 if n else 1, generator=g) < self.probability
            selected = chosen[words] & ~special
        else:
            selected = (torch.rand(n, generator=g) < self.probability) & ~special
        how = torch.rand(n, generator=g)
        random_ids = torch.randint(self.vocab_size, (n,), generator=g)
        labels = torch.where(selected, ids, torch.full_like(ids, -100))
        masked = ids.clone()
        as_mask = selected & (how < self.mask_share)
        as_random = selected & (how >= self.mask_share) & (how < self.mask_share + self.random_share)
        masked[as_mask] = self.mask_token_id
        masked[as_random] = random_ids[as_random]
        return masked, labels

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        from .randomness import batch_keys

        input_ids, attention_mask = _pad([e["input_ids"] for e in examples], self.pad_token_id)
        labels = torch.full_like(input_ids, -100)
        masked = input_ids.clone()
        special_ids = set(self.tokenizer.all_special_ids)
        for i, (example, key) in enumerate(zip(examples, batch_keys(examples))):
            ids = torch.as_tensor(example["input_ids"], dtype=torch.long)
            if "special_tokens_mask" in example:
                special = torch.as_tensor(example["special_tokens_mask"], dtype=torch.bool)
            else:
                special = torch.tensor([t in special_ids for t in example["input_ids"]], dtype=torch.bool)
            word_start = torch.as_tensor(example["word_start"], dtype=torch.long) if self.whole_word else None
            n = ids.shape[0]
            masked[i, :n], labels[i, :n] = self.mask_one(ids, special, word_start, key)
        return {"input_ids": masked, "attention_mask": attention_mask, "labels": labels}
