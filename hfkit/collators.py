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
    uniform per token and purpose), so its mask depends on its key and content alone: not on the batch it lands
    in, its padding, the process count or where a run was resumed.
    """

    def __init__(self, tokenizer, probability: float = 0.15, whole_word: bool = False, seed: int = 0):
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.probability, self.whole_word, self.seed = probability, whole_word, seed
        self.mask_share, self.random_share = (1.0, 0.0) if whole_word else (0.8, 0.1)

    def draws(self, examples: list[dict], width: int):
        """(batch, 3, width) uniforms: per token, whether it is selected, how it is replaced, and by which token;
        row i from example i's own generator, its first len(example) columns used."""
        import torch

        from .randomness import batch_keys, example_generator

        out = torch.ones((len(examples), 3, width))
        for i, (example, key) in enumerate(zip(examples, batch_keys(examples))):
            n = len(example["input_ids"])
            out[i, :, :n] = torch.rand((3, n), generator=example_generator(self.seed, key))
        return out

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        input_ids, attention_mask = _pad([e["input_ids"] for e in examples], self.pad_token_id)
        if "special_tokens_mask" in examples[0]:
            special, _ = _pad([e["special_tokens_mask"] for e in examples], 1)
        else:
            ids = set(self.tokenizer.all_special_ids)
            special = torch.tensor([[int(t in ids) for t in row] for row in input_ids.tolist()])
        special = special.bool() | (attention_mask == 0)
        u = self.draws(examples, input_ids.shape[1])
        if self.whole_word:
            word_start, _ = _pad([e["word_start"] for e in examples], 1)
            words = torch.cumsum(word_start, dim=1) - 1  # word number of each token; row i's words take the first
            chosen = u[:, 0, :].gather(1, words.clamp(max=u.shape[2] - 1))  # uniforms of its row (fewer than tokens)
            selected = (chosen < self.probability) & ~special
        else:
            selected = (u[:, 0, :] < self.probability) & ~special
        how = u[:, 1, :]
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
        masked = input_ids.clone()
        as_random = selected & (how >= self.mask_share) & (how < self.mask_share + self.random_share)
        masked[selected & (how < self.mask_share)] = self.mask_token_id
        random_ids = (u[:, 2, :] * self.vocab_size).long().clamp(max=self.vocab_size - 1)
        masked[as_random] = random_ids[as_random]
        return {"input_ids": masked, "attention_mask": attention_mask, "labels": labels}
