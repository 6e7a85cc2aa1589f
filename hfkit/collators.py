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
    """BERT masking through transformers' DataCollatorForLanguageModeling, on pre-packed blocks.

    Whole-word masking: transformers finds word boundaries from character offsets; packed blocks carry a
    `word_start` flag per token instead, turned here into offsets where a new word leaves a one-character gap.
    With whole-word masking every selected piece becomes the mask token (transformers' collator supports no
    random replacement there).
    """

    def __init__(self, tokenizer, probability: float = 0.15, whole_word: bool = False):
        from transformers import DataCollatorForLanguageModeling

        self.pad_token_id = tokenizer.pad_token_id
        self.whole_word = whole_word
        self.masker = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=probability, whole_word_mask=whole_word,
            mask_replace_prob=1.0 if whole_word else 0.8, random_replace_prob=0.0 if whole_word else 0.1,
        )

    @staticmethod
    def offsets_from_word_starts(word_start):
        """(batch, seq, 2) offsets: token i spans [i + w_i, i + w_i + 1), w = running count of word starts."""
        import torch

        start = torch.arange(word_start.shape[1]).unsqueeze(0) + torch.cumsum(word_start, dim=1)
        return torch.stack([start, start + 1], dim=-1)

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        input_ids, attention_mask = _pad([e["input_ids"] for e in examples], self.pad_token_id)
        if "special_tokens_mask" in examples[0]:
            special, _ = _pad([e["special_tokens_mask"] for e in examples], 1)
        else:
            special = torch.tensor([self.masker.tokenizer.get_special_tokens_mask(r, already_has_special_tokens=True)
                                    for r in input_ids.tolist()])
        special = special.masked_fill(attention_mask == 0, 1)
        offsets = None
        if self.whole_word:
            word_start, _ = _pad([e["word_start"] for e in examples], 1)
            offsets = self.offsets_from_word_starts(word_start)
        masked, labels = self.masker.torch_mask_tokens(input_ids, special_tokens_mask=special, offset_mapping=offsets)
        return {"input_ids": masked, "attention_mask": attention_mask, "labels": labels}
