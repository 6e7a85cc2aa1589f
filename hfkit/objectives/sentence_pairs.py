"""Masked-LM jointly with a sentence-pair task, as BERT was trained (Devlin et al. 2019) and ALBERT after it.

    nsp  next-sentence prediction: segment B follows A in the document (label 0) or comes from another one (1)
    sop  sentence-order prediction (Lan et al. 2020): A and B are consecutive, in order (0) or swapped (1)

Examples are `[CLS] A [SEP] B [SEP]` with token types 0 / 1, built from documents split into sentences: sentences
are gathered up to the block size, cut at a random sentence boundary into A and B, then B is replaced (nsp) or
the two swapped (sop) half of the time. Documents of one sentence give no pair. The run directory's root holds a
`BertForPreTraining` (`AutoModelForPreTraining`); its `cls.seq_relationship` head answers the task trained (for
sop, 1 means "swapped").
"""

from __future__ import annotations

import math
import random
import re

from . import Objective

SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a document: cut after . ! ? (and closing quotes or brackets) before white space, and at line
    breaks."""
    return [s.strip() for s in SENTENCE_END.split(text) if s and s.strip()]


def make_pairs(documents: list[list[list[int]]], *, max_tokens: int, task: str, rng: random.Random) -> list[tuple]:
    """(a_ids, b_ids, label) from tokenized documents (lists of sentences of token ids)."""
    pairs = []
    for d, sentences in enumerate(documents):
        chunk, length = [], 0
        for i, sentence in enumerate(sentences):
            chunk.append(sentence)
            length += len(sentence)
            if length < max_tokens and i < len(sentences) - 1:
                continue
            if len(chunk) >= 2:
                cut = rng.randint(1, len(chunk) - 1)
                a = [t for s in chunk[:cut] for t in s]
                b = [t for s in chunk[cut:] for t in s]
                label = int(rng.random() < 0.5)
                if label and task == "sop":
                    a, b = b, a
                elif label and task == "nsp":
                    others = [j for j in range(len(documents)) if j != d and documents[j]]
                    if not others:
                        label = 0
                    else:
                        other = documents[rng.choice(others)]
                        start = rng.randrange(len(other))
                        b = [t for s in other[start:] for t in s]
                pairs.append((a, b, label))
            chunk, length = [], 0
    # Truncate the longer segment from its end until the pair fits (BERT's rule).
    out = []
    for a, b, label in pairs:
        a, b = list(a), list(b)
        while len(a) + len(b) > max_tokens:
            (a if len(a) > len(b) else b).pop()
        if a and b:
            out.append((a, b, label))
    return out


class SentencePairs(Objective):
    kind, auto_class, packed, perplexity = "mlm", "AutoModelForPreTraining", False, False
    task = ""

    def validate(self, cfg) -> list[str]:
        from ..models import PRESETS

        if cfg.model.preset in PRESETS and PRESETS[cfg.model.preset]["family"] != "bert":
            return [f"model.preset: objective {self.name} trains BERT's sentence-pair head (BertForPreTraining); "
                    f"'{cfg.model.preset}' is not a bert-* preset"]
        if cfg.mlm.whole_word:
            return [f"mlm.whole_word: not supported with objective {self.name}; unset it"]
        return []

    def build_datasets(self, cfg, corpus, tokenizer, log) -> dict:
        from datasets import Dataset

        from ..errors import DataError

        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise DataError(f"objective {self.name}: the tokenizer has no [CLS]/[SEP] tokens to build sentence pairs")
        out = {}
        for split, texts in corpus.items():
            documents, multi = [], 0
            for text in texts["text"]:
                sentences = split_sentences(text)
                multi += len(sentences) > 1
                documents.append(tokenizer(sentences, add_special_tokens=False)["input_ids"] if len(sentences) > 1
                                 else [])
            if multi == 0:
                raise DataError(f"data.{'train' if split == 'train' else 'validation'}: objective {self.name} needs "
                                f"documents of 2 or more sentences, and none of the {len(documents):,} has more than "
                                "one; use data.sample_by=paragraph or document, or objective mlm")
            seed = cfg.train.seed + (0 if split == "train" else 1)
            pairs = make_pairs(documents, max_tokens=cfg.data.block_size - 3, task=self.task, rng=random.Random(seed))
            cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
            rows = {"input_ids": [], "token_type_ids": [], "special_tokens_mask": [], "next_sentence_label": []}
            for a, b, label in pairs:
                rows["input_ids"].append([cls] + a + [sep] + b + [sep])
                rows["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
                rows["special_tokens_mask"].append([1] + [0] * len(a) + [1] + [0] * len(b) + [1])
                rows["next_sentence_label"].append(label)
            log(f"{split}: {multi:,} of {len(documents):,} documents have 2+ sentences; {len(pairs):,} pairs, "
                f"{sum(rows['next_sentence_label']):,} of them {'swapped' if self.task == 'sop' else 'random'}")
            out[split] = Dataset.from_dict(rows)
        return out

    def build_model(self, cfg, tokenizer):
        from transformers import AutoModelForPreTraining

        from .language_model import load_or_build

        model = load_or_build(cfg, tokenizer, AutoModelForPreTraining)
        if not hasattr(model, "cls") or not hasattr(model.cls, "seq_relationship"):
            from ..errors import ModelError

            raise ModelError(f"model.path: objective {self.name} needs a BERT model (BertForPreTraining); this "
                             f"checkpoint loads as {type(model).__name__}")
        return model

    def collator(self, cfg, tokenizer):
        from ..collators import MaskedLMCollator

        masker = MaskedLMCollator(tokenizer, probability=cfg.mlm.probability, seed=cfg.train.seed)

        def collate(examples):
            import torch

            from ..collators import _pad

            batch = masker(examples)
            batch["token_type_ids"], _ = _pad([e["token_type_ids"] for e in examples], 0)
            batch["next_sentence_label"] = torch.tensor([e["next_sentence_label"] for e in examples])
            return batch

        return collate

    def evaluate(self, trainer, dataset, cfg) -> dict:
        """The pair task's accuracy and the masked-LM perplexity, over the validation pairs."""
        import torch
        import torch.nn.functional as F

        from . import summed_over_batches

        if dataset is None:
            return {}

        def counts(model, batch):
            out = model(**{k: v for k, v in batch.items() if k not in ("labels", "next_sentence_label")})
            labels, chosen = batch["labels"], batch["labels"] != -100
            nll = F.cross_entropy(out.prediction_logits[chosen].float(), labels[chosen], reduction="sum")
            right = (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum()
            return torch.stack([nll.double(), chosen.sum().double(), right.double(),
                                torch.tensor(float(len(labels)), dtype=torch.float64, device=nll.device)])

        nll, masked, right, pairs = summed_over_batches(trainer, dataset, counts)
        return {f"{self.name}_accuracy": right / max(pairs, 1), "mlm_perplexity": math.exp(min(nll / max(masked, 1), 700.0))}


class NextSentence(SentencePairs):
    name, title, task = "nsp", "masked-LM + next-sentence prediction", "nsp"


class SentenceOrder(SentencePairs):
    name, title, task = "sop", "masked-LM + sentence-order prediction", "sop"
