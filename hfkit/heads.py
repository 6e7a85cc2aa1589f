"""Frozen feature extraction: a backbone (AutoModel) whose features (pooled per text, or per token) feed a small
trained head.

When no backbone layer trains, its features are computed once (`extract_features`) and the head trains on
them, so each epoch costs a pass over a small MLP instead of the transformer.
Saved as the backbone in plain transformers format plus `classifier_head.safetensors` / `classifier_head.json`
(whose `kind` says which head).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from .optim import transformer_layers

HEAD_WEIGHTS = "classifier_head.safetensors"
HEAD_CONFIG = "classifier_head.json"


class ClassifierHead(nn.Module):
    def __init__(self, in_dim: int, num_labels: int, kind: str = "linear", hidden_size: int = 256, dropout: float = 0.1):
        super().__init__()
        if kind == "linear":
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_labels))
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_size), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden_size, num_labels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class FrozenBackbone(nn.Module):
    """A backbone (AutoModel) and a small head on its features; subclasses say which features and which loss."""

    kind = ""
    output_cls = SequenceClassifierOutput

    def __init__(self, backbone, *, num_labels: int, problem_type: str, pooling: str = "mean", head: str = "linear",
                 hidden_size: int = 256, dropout: float = 0.1, id2label: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.head_config = dict(kind=self.kind, pooling=pooling, head=head, hidden_size=hidden_size, dropout=dropout,
                                num_labels=num_labels, problem_type=problem_type,
                                id2label={str(k): v for k, v in (id2label or {}).items()})
        self.head = ClassifierHead(backbone.config.hidden_size, num_labels, head, hidden_size, dropout)
        self.backbone_frozen = False

    # The Trainer reads `config` for a few things (e.g. the model's dtype); the backbone's is the right one.
    @property
    def config(self):
        return self.backbone.config

    def freeze_backbone(self, unfreeze_last: int = 0) -> None:
        for p in self.backbone.parameters():
            p.requires_grad = False
        self.backbone_frozen = unfreeze_last == 0
        if unfreeze_last:
            layers = transformer_layers(self.backbone)
            if layers is None or unfreeze_last > len(layers):
                from .errors import ConfigError

                raise ConfigError(f"frozen.unfreeze_last: {unfreeze_last} is more than the model's "
                                  f"{0 if layers is None else len(layers)} layers")
            for layer in layers[-unfreeze_last:]:
                for p in layer.parameters():
                    p.requires_grad = True

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()  # fixed features: no dropout in a backbone that does not train
        return self

    def hidden(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state

    def features(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits, labels):
        raise NotImplementedError

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, features=None, labels=None, **kwargs):
        if features is None:
            features = self.features(input_ids, attention_mask, token_type_ids)
        logits = self.head(features.to(self.head.net[-1].weight.dtype))
        return self.output_cls(loss=None if labels is None else self.loss(logits, labels), logits=logits)

    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None) -> None:
        """The backbone as a transformers model folder, the head beside it; `state_dict`: this module's full
        weights when they were gathered from sharded ranks."""
        from safetensors.torch import save_file

        directory = Path(directory)
        backbone = head = None
        if state_dict is not None:
            backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
            head = {k.removeprefix("head."): v for k, v in state_dict.items() if k.startswith("head.")}
        self.backbone.save_pretrained(directory, state_dict=backbone)
        save_file({k: v.contiguous() for k, v in (head or self.head.state_dict()).items()}, str(directory / HEAD_WEIGHTS))
        (directory / HEAD_CONFIG).write_text(json.dumps(self.head_config, indent=2) + "\n", encoding="utf-8")


class PooledClassifier(FrozenBackbone):
    """One label (or score) per text, from the mean or first-token pooled features."""

    kind = "sequence"

    def features(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        hidden = self.hidden(input_ids, attention_mask, token_type_ids)
        if self.head_config["pooling"] == "cls" or attention_mask is None:
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def loss(self, logits, labels):
        problem = self.head_config["problem_type"]
        if problem == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        if problem == "multi_label_classification":
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
        return nn.functional.cross_entropy(logits, labels.long())


class TokenClassifier(FrozenBackbone):
    """One tag per token, from that token's last hidden state; labels -100 are ignored."""

    kind = "token"
    output_cls = TokenClassifierOutput

    def features(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        return self.hidden(input_ids, attention_mask, token_type_ids)

    def loss(self, logits, labels):
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long(),
                                           ignore_index=-100)


FROZEN_KINDS = {cls.kind: cls for cls in (PooledClassifier, TokenClassifier)}


def load_frozen(directory: str | Path) -> FrozenBackbone:
    """A saved frozen-backbone model (runs written before `kind` was recorded are sequence classifiers)."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    directory = Path(directory)
    config = json.loads((directory / HEAD_CONFIG).read_text(encoding="utf-8"))
    cls = FROZEN_KINDS[config.get("kind", "sequence")]
    model = cls(AutoModel.from_pretrained(directory), num_labels=config["num_labels"],
                problem_type=config["problem_type"], pooling=config["pooling"], head=config["head"],
                hidden_size=config["hidden_size"], dropout=config["dropout"], id2label=config["id2label"])
    model.head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS)))
    return model.eval()


class FeatureDataset(torch.utils.data.Dataset):
    """Cached backbone features and labels, in memory: rows of {"features": [H] or [L, H], "labels": ...}."""

    def __init__(self, features: list, labels: list):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "labels": self.labels[i]}


def feature_collator(rows: list[dict]) -> dict:
    """Stack pooled features; pad per-token features with zeros and their labels with -100."""
    first = rows[0]["features"]
    if first.dim() == 1:
        labels = torch.tensor([r["labels"] for r in rows])
        return {"features": torch.stack([r["features"] for r in rows]), "labels": labels}
    length = max(r["features"].shape[0] for r in rows)
    features = torch.zeros(len(rows), length, first.shape[-1], dtype=first.dtype)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        n = r["features"].shape[0]
        features[i, :n] = r["features"]
        labels[i, :n] = torch.tensor(r["labels"][:n])
    return {"features": features, "labels": labels}


@torch.no_grad()
def extract_features(model: FrozenBackbone, encoded, collator, batch_size: int = 64) -> dict:
    """Each split's backbone features (pooled, or per token trimmed to the row's length), computed once, as a
    FeatureDataset; batches sorted by length for little padding."""
    from tqdm.auto import tqdm

    model.eval()
    out = {}
    for split, ds in encoded.items():
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in ds.column_names]
        rows = ds.select_columns(columns).to_list()
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        features: list = [None] * len(rows)
        for start in tqdm(range(0, len(order), batch_size), desc=f"Frozen features ({split})"):
            idx = order[start:start + batch_size]
            batch = collator([rows[i] for i in idx])
            batch = {k: v.to(model.backbone.device) for k, v in batch.items() if k in columns}
            computed = model.features(**batch).float().cpu()
            for j, i in enumerate(idx):
                features[i] = computed[j] if computed.dim() == 2 else computed[j, :len(rows[i]["input_ids"])].clone()
        out[split] = FeatureDataset(features, list(ds["labels"]))
    return out
