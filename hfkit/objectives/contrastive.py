"""Contrastive sentence embeddings, unsupervised SimCSE (Gao et al. 2021): each sentence goes through the encoder
twice, the two dropout masks make two views of it, and the loss pulls the views together against the other
sentences of the batch (in-batch negatives; cross-entropy over cosine similarities / temperature). With
`contrastive.views: crop` the two views are instead two spans drawn independently from the same document each time
it is seen (independent cropping, Izacard et al. 2021), dropout still on: a harder task, and the one that raised
MiniLM's Spearman on the Lee set where dropout-only views lowered it (benchmarks/contrastive.py).

It continues from any encoder (model.path) or a preset. The run directory's root holds the encoder
(`AutoModel`) with the pooling it was trained with, recorded the way sentence-transformers reads it
(`modules.json`, `1_Pooling/config.json`). With `contrastive.similarity` set (a file of text pairs with a
human score, or builtin:lee), the Spearman correlation between cosine similarity and the scores is reported
before (with train.eval_before_training) and after training. The evaluation loss runs without dropout, so both
views are the same text: it measures how well the texts of a batch are told apart from each other.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import Objective, sampled_lengths

LEE = ("gensim", "test/test_data", "gensim==4.4.0")


def rank(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = rank(x), rank(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx and vy else 0.0


def lee_pairs() -> tuple[list[str], list[tuple[int, int, float]]]:
    """gensim's Lee corpus (Lee, Pincombe & Welsh 2005): 50 news documents and the mean human similarity of each of
    the 1,225 pairs (upper triangle of a 50x50 matrix)."""
    from ..data import _package_file

    docs = _package_file(LEE[0], f"{LEE[1]}/lee.cor", LEE[2]).read_text(encoding="latin-1").splitlines()
    matrix = [[float(v) for v in line.split()] for line in
              _package_file(LEE[0], f"{LEE[1]}/similarities0-1.txt", LEE[2]).read_text().splitlines() if line.strip()]
    pairs = [(i, j, matrix[i][j]) for i in range(len(matrix)) for j in range(i + 1, len(matrix))]
    return [d.strip() for d in docs], pairs


def load_similarity(spec: str) -> tuple[list[str], list[tuple[int, int, float]]]:
    """(texts, [(i, j, score)]) from builtin:lee or a csv/tsv/jsonl file with columns text1, text2, score."""
    from ..data import load_table
    from ..errors import DataError

    if spec == "builtin:lee":
        return lee_pairs()
    table = load_table(spec, key="contrastive.similarity")[0]
    missing = [c for c in ("text1", "text2", "score") if c not in table.column_names]
    if missing:
        raise DataError(f"contrastive.similarity: no column {', '.join(missing)}; it needs text1, text2 and score "
                        f"(its columns are {', '.join(table.column_names)})")
    texts, pairs = [], []
    for row in table:
        pairs.append((len(texts), len(texts) + 1, float(row["score"])))
        texts += [str(row["text1"]), str(row["text2"])]
    return texts, pairs


def encoder_class():
    import torch
    import torch.nn.functional as F

    class ContrastiveEncoder(torch.nn.Module):
        """An encoder and its pooling; forward = the SimCSE loss over a batch of sentences."""

        accepts_loss_kwargs = False

        def __init__(self, encoder, pooling: str, temperature: float):
            super().__init__()
            self.encoder, self.pooling, self.temperature = encoder, pooling, temperature
            self.config = encoder.config
            # embed() reads last_hidden_state only: a pooler layer (BERT's) gets no gradient, and DDP, which hfkit
            # runs without the unused-parameter scan, fails at the second step on a parameter that never got one.
            pooler = getattr(encoder, "pooler", None)
            if pooler is not None:
                pooler.requires_grad_(False)

        def embed(self, input_ids, attention_mask, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            if self.pooling == "cls":
                return hidden[:, 0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

        def forward(self, input_ids, attention_mask, token_type_ids=None, pair_input_ids=None,
                    pair_attention_mask=None, return_loss: bool = True, **kwargs):
            # `return_loss=True` in the signature: Trainer computes an evaluation loss for a model without labels.
            # Without a pair the second view is the same text (only dropout differs); both views go through one
            # forward pass, as SimCSE does.
            n = input_ids.shape[0]
            if pair_input_ids is None:
                pair_input_ids, pair_attention_mask = input_ids, attention_mask
            else:
                token_type_ids = None  # spans are single segments: the model's default (all zeros)
            both = lambda a, b: None if a is None else torch.cat([a, b])  # noqa: E731
            views = self.embed(both(input_ids, pair_input_ids), both(attention_mask, pair_attention_mask),
                               both(token_type_ids, token_type_ids)).float()
            first, second = F.normalize(views[:n], dim=-1), F.normalize(views[n:], dim=-1)
            scores = first @ second.T / self.temperature
            return {"loss": F.cross_entropy(scores, torch.arange(n, device=scores.device))}

    return ContrastiveEncoder


class CropCollator:
    """Two independent random spans of `crop_tokens` tokens from each document (stored without special tokens),
    each wrapped like a packed masked-LM block ([CLS] ... [SEP]) and padded to one length, as input_ids (first
    view) and pair_input_ids (second view). Each document's span starts come from its own generator, keyed by its
    (epoch, index) (hfkit/randomness.py): the same spans whatever the batch, the process count or the resume point."""

    def __init__(self, tokenizer, crop_tokens: int, seed: int = 0):
        from ..data import block_layout

        self.prefix, self.suffix, _ = block_layout(tokenizer, "mlm")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.crop_tokens, self.seed = crop_tokens, seed

    def spans(self, ids: list[int], key) -> tuple[list[int], list[int]]:
        import torch

        from ..randomness import example_generator

        g = example_generator(self.seed, key)
        starts = torch.randint(0, max(len(ids) - self.crop_tokens, 0) + 1, (2,), generator=g).tolist()
        return tuple(self.prefix + list(ids[s:s + self.crop_tokens]) + self.suffix for s in starts)

    def __call__(self, examples: list[dict]) -> dict:
        from ..collators import _pad
        from ..randomness import batch_keys

        first, second = zip(*(self.spans(e["input_ids"], key) for e, key in zip(examples, batch_keys(examples))))
        ids, mask = _pad(list(first) + list(second), self.pad_id)  # one width for both views: forward concatenates
        n = len(examples)
        return {"input_ids": ids[:n], "attention_mask": mask[:n], "pair_input_ids": ids[n:],
                "pair_attention_mask": mask[n:]}


class Contrastive(Objective):
    name, title, kind, auto_class, packed, perplexity = "contrastive", "contrastive (SimCSE)", "mlm", "AutoModel", False, False

    def validate(self, cfg) -> list[str]:
        c, problems = cfg.contrastive, []
        if cfg.train.batch_size < 2:
            problems.append(f"train.batch_size: {cfg.train.batch_size} leaves no in-batch negatives for objective "
                            "contrastive; use 2 or more (SimCSE used 64)")
        if c.temperature <= 0:
            problems.append(f"contrastive.temperature: {c.temperature} must be > 0 (SimCSE: 0.05)")
        if c.views == "crop" and not 1 <= c.crop_tokens <= cfg.data.block_size - 2:
            problems.append(f"contrastive.crop_tokens: {c.crop_tokens} must be between 1 and data.block_size - 2 "
                            f"({cfg.data.block_size - 2}), leaving room for the special tokens")
        if cfg.mlm.whole_word:
            problems.append("mlm.whole_word: does not apply to objective contrastive; unset it")
        return problems

    def build_datasets(self, cfg, corpus, tokenizer, log) -> dict:
        out = {}
        if cfg.contrastive.views == "crop":  # whole documents, token ids only; the collator draws and wraps spans
            tokenize = lambda b: tokenizer(b["text"], add_special_tokens=False, return_attention_mask=False,  # noqa: E731
                                           return_token_type_ids=False, verbose=False)
        else:
            tokenize = lambda b: tokenizer(b["text"], truncation=True, max_length=cfg.data.block_size)  # noqa: E731
        for split, texts in corpus.items():
            out[split] = texts.map(tokenize, batched=True, remove_columns=texts.column_names,
                                   desc=f"Tokenizing {split}")
        return out

    def keyed(self, cfg) -> bool:
        return cfg.contrastive.views == "crop"  # dropout views draw nothing in the collator

    def example_length(self, cfg, dataset) -> float:
        """With crop views the model reads spans, not the stored documents: min(length, crop_tokens) + 2."""
        if cfg.contrastive.views != "crop":
            return super().example_length(cfg, dataset)
        lengths = sampled_lengths(dataset)
        return sum(min(n, cfg.contrastive.crop_tokens) + 2 for n in lengths) / max(len(lengths), 1)

    def build_model(self, cfg, tokenizer):
        from transformers import AutoModel

        from .language_model import load_or_build

        return encoder_class()(load_or_build(cfg, tokenizer, AutoModel), cfg.contrastive.pooling,
                               cfg.contrastive.temperature)

    def collator(self, cfg, tokenizer):
        from transformers import DataCollatorWithPadding

        if cfg.contrastive.views == "crop":
            return CropCollator(tokenizer, cfg.contrastive.crop_tokens, seed=cfg.train.seed)
        return DataCollatorWithPadding(tokenizer)

    def evaluate(self, trainer, dataset, cfg) -> dict:
        """Spearman correlation of cosine similarity with the human scores of contrastive.similarity."""
        spec = cfg.contrastive.similarity
        if not spec:
            return {}
        import torch
        import torch.nn.functional as F

        texts, pairs = load_similarity(spec)
        model, tokenizer = trainer.model, trainer.processing_class
        was_training = model.training
        model.eval()
        vectors = []
        with torch.no_grad():
            for start in range(0, len(texts), 32):
                batch = tokenizer(texts[start:start + 32], truncation=True, max_length=cfg.data.block_size,
                                  padding=True, return_tensors="pt").to(trainer.args.device)
                vectors.append(F.normalize(model.embed(**batch).float(), dim=-1))
        model.train(was_training)
        v = torch.cat(vectors)
        cosine = [float(v[i] @ v[j]) for i, j, _ in pairs]
        return {"similarity_spearman": spearman(cosine, [s for _, _, s in pairs]), "similarity_pairs": len(pairs)}

    def save(self, model, state_dict, folder, tokenizer) -> None:
        if state_dict is not None:
            state_dict = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
        model.encoder.save_pretrained(folder, state_dict=state_dict)
        tokenizer.save_pretrained(folder)
        folder = Path(folder)
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": model.config.hidden_size, "pooling_mode_cls_token": model.pooling == "cls",
            "pooling_mode_mean_tokens": model.pooling == "mean", "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False}, indent=2) + "\n")
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
            indent=2) + "\n")

    def load_snippet(self, output_dir: str) -> str:
        return ("import torch\nfrom transformers import AutoModel, AutoTokenizer\n"
                f"model = AutoModel.from_pretrained('{output_dir}')\n"
                f"tokenizer = AutoTokenizer.from_pretrained('{output_dir}')\n"
                "# pooling: see 1_Pooling/config.json (sentence-transformers also loads this folder)")
