"""Tokenizer training and the language-model collators (whole-word masking among them)."""

from __future__ import annotations

import pytest
import torch

from hfkit.collators import CausalLMCollator, MaskedLMCollator
from hfkit.tokenizer import train_tokenizer

from conftest import synthetic_documents


@pytest.mark.parametrize("kind, family, algorithm, needed", [
    ("mlm", "bert", "wordpiece", ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"]),
    ("mlm", "roberta", "bpe", ["<s>", "</s>", "<mask>", "<pad>"]),
    ("clm", "gpt2", "bpe", ["<|endoftext|>", "<pad>"]),
    ("clm", "llama", "unigram", ["<|endoftext|>", "<pad>"]),
])
def test_trained_tokenizer_round_trips(tmp_path, kind, family, algorithm, needed):
    from transformers import AutoTokenizer

    vocab_size = 300 if algorithm == "bpe" else 120  # byte-level BPE starts from 256 byte tokens
    tok = train_tokenizer(synthetic_documents(200), kind=kind, family=family, algorithm=algorithm, vocab_size=vocab_size,
                          min_frequency=1, show_progress=False)
    assert len(tok) <= vocab_size
    assert all(t in tok.get_vocab() for t in needed)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    # Unchanged by save + load: the ranks of a multi-process run that load it hold what the first rank trained.
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    text = "the clever doctor feeds the horse ."
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(again(text)["input_ids"], skip_special_tokens=True).replace(" .", ".") == text.replace(" .", ".")


def test_wordpiece_learns_whole_words_of_the_corpus():
    tok = train_tokenizer(synthetic_documents(200), kind="mlm", family="bert", algorithm="wordpiece", vocab_size=200,
                          min_frequency=1, show_progress=False)
    assert tok.tokenize("the clever doctor") == ["the", "clever", "doctor"]
    assert tok("the dog")["input_ids"][0] == tok.cls_token_id and tok("the dog")["input_ids"][-1] == tok.sep_token_id


def test_whole_word_masking_masks_whole_words():
    tok = train_tokenizer(synthetic_documents(200), kind="mlm", family="bert", algorithm="wordpiece", vocab_size=60,
                          min_frequency=1, show_progress=False)
    text = "the clever farmer watches the happy teacher . the brown horse follows the quiet child ."
    enc = tok(text, add_special_tokens=False)
    word_ids = enc.word_ids()
    assert len(set(word_ids)) < len(word_ids), "vocabulary too large: no word is split into pieces"
    starts = [1] + [int(word_ids[i] != word_ids[i - 1]) for i in range(1, len(word_ids))]
    ids = [tok.cls_token_id] + enc["input_ids"] + [tok.sep_token_id]
    example = {"input_ids": ids, "special_tokens_mask": [1] + [0] * len(enc["input_ids"]) + [1],
               "word_start": [1] + starts + [1]}
    collator = MaskedLMCollator(tok, probability=0.3, whole_word=True)
    torch.manual_seed(0)
    partial_words = 0
    masked_total = 0
    for _ in range(200):
        batch = collator([example])
        masked = (batch["labels"][0, 1:-1] != -100).tolist()
        masked_total += sum(masked)
        for word in set(word_ids):
            flags = {m for m, w in zip(masked, word_ids) if w == word}
            partial_words += len(flags) > 1
        assert batch["labels"][0, 0] == -100 and batch["labels"][0, -1] == -100  # specials never masked
    assert masked_total > 0 and partial_words == 0


def test_token_masking_rate_and_replacement_split():
    tok = train_tokenizer(synthetic_documents(200), kind="mlm", family="bert", algorithm="wordpiece", vocab_size=120,
                          min_frequency=1, show_progress=False)
    ids = tok(" ".join(synthetic_documents(20)), add_special_tokens=True)["input_ids"][:128]
    collator = MaskedLMCollator(tok, probability=0.15)
    torch.manual_seed(0)
    batch = collator([{"input_ids": ids, "special_tokens_mask": [int(i in tok.all_special_ids) for i in ids]}] * 200)
    selected = batch["labels"] != -100
    rate = selected.float().mean().item()
    assert 0.13 < rate < 0.17
    as_mask = (batch["input_ids"] == tok.mask_token_id) & selected
    assert 0.76 < as_mask.sum().item() / selected.sum().item() < 0.84  # 80% of selected tokens become [MASK]


def test_causal_collator_pads_without_hiding_eos():
    collator = CausalLMCollator(pad_token_id=0)  # pad id equal to a real token id (as with pad = eos)
    batch = collator([{"input_ids": [5, 0, 6, 7]}, {"input_ids": [8, 0]}])
    assert batch["labels"].tolist() == [[5, 0, 6, 7], [8, 0, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]



def test_wordpiece_pins_a_continuation_seen_only_after_normalising_the_whole_text():
    # '\x1c' splits "ab\x1cq" for str.split but BertNormalizer deletes it, so 'q' follows 'b' only in the full text.
    docs = synthetic_documents(50) + ["the ab\x1cq dog ."] * 3
    tok = train_tokenizer(docs, kind="mlm", family="bert", algorithm="wordpiece", vocab_size=120, min_frequency=1,
                          show_progress=False)
    vocab = tok.get_vocab()
    assert "##q" in vocab
    # Every single-character continuation is pinned: ids right after the 5 specials, in character order (one left
    # to the trainer would get its id later, in hash order).
    singles = sorted((i, piece) for piece, i in vocab.items() if len(piece) == 3 and piece.startswith("##"))
    assert [i for i, _ in singles] == list(range(5, 5 + len(singles)))
    assert [piece for _, piece in singles] == sorted(piece for _, piece in singles)
