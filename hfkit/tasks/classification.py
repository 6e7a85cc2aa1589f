"""Classification: one label per text or text pair (single-label, multi-label, regression).

The head is AutoModelForSequenceClassification's (PEFT task type SEQ_CLS), or with method frozen a pooled head on the
backbone's features (heads.PooledClassifier). The cloze head (methods pet / zero_shot) scores label words with the
model's own LM head; it lives in prompting.py.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from . import Task


# --------------------------------------------------------------------------------------------- labels
@dataclass
class LabelInfo:
    """What the task's labels are; recorded in the model config as id2label / label2id / problem_type."""

    problem_type: str  # single_label_classification | multi_label_classification | regression
    names: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == "regression" else len(self.names)

    @property
    def metric_config(self) -> str:
        return {"single_label_classification": "single_label", "multi_label_classification": "multi_label",
                "regression": "regression"}[self.problem_type]


def _label_name(value) -> str:
    return str(value).strip() if not isinstance(value, bool) else str(value).lower()


def _split_labels(value, separator: str | None) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [_label_name(v) for v in value]
    if isinstance(value, str) and separator is not None:
        return [v.strip() for v in value.split(separator) if v.strip()]
    if value is None:
        return []
    return [_label_name(value)]


def infer_labels(cfg, train) -> LabelInfo:
    column = cfg.data.label_column
    values = train[column]
    if cfg.regression:
        return LabelInfo("regression", ["score"])
    if cfg.multi_label:
        names = sorted({n for v in values for n in _split_labels(v, cfg.data.label_separator)})
        return LabelInfo("multi_label_classification", names)
    distinct = {v for v in values if v is not None}
    if distinct and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        if any(float(v) != int(v) for v in distinct):
            raise DataError(f"data.train: the '{column}' column holds fractional numbers; set regression: true to "
                            "predict them, or use class labels")
        names = [str(int(v)) for v in sorted(distinct)]
    else:
        names = sorted(_label_name(v) for v in distinct)
    if len(names) < 2:
        raise DataError(f"data.train: the '{column}' column has {len(names)} distinct label(s); classification needs >= 2")
    return LabelInfo("single_label_classification", names)


def encode_labels(ds, column: str, separator: str | None, info: LabelInfo, key: str,
                  known: str = "the training data"):
    """Add a `labels` column from `column` (a new column: datasets keeps a column's type through `map`,
    DESIGN.md §6). `separator` splits string labels of a multi-label task."""
    index = {name: i for i, name in enumerate(info.names)}
    values = ds[column]
    encoded = []
    for row, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{key}: row {row + 1} has no label in column '{column}'")
        if info.problem_type == "regression":
            try:
                encoded.append(float(value))
            except (TypeError, ValueError):
                raise DataError(f"{key}: row {row + 1}: label {value!r} is not a number (regression: true)") from None
        elif info.problem_type == "multi_label_classification":
            hot = [0.0] * len(info.names)
            for name in _split_labels(value, separator):
                if name not in index:
                    raise DataError(f"{key}: label '{name}' (row {row + 1}) never appears in {known}; "
                                    f"its labels: {', '.join(info.names)}")
                hot[index[name]] = 1.0
            encoded.append(hot)
        else:
            name = str(int(value)) if isinstance(value, float) and float(value).is_integer() else _label_name(value)
            if name not in index:
                raise DataError(f"{key}: label '{name}' (row {row + 1}) never appears in {known}; "
                                f"its labels: {', '.join(info.names)}")
            encoded.append(index[name])
    return ds.add_column("labels", encoded)


# --------------------------------------------------------------------------------------------- data
def _check_texts(ds, columns: list[str], key: str) -> None:
    for column in columns:
        empty = [i + 1 for i, t in enumerate(ds[column]) if not isinstance(t, str) or not t.strip()]
        if empty:
            raise DataError(f"{key}: {len(empty)} row(s) have an empty '{column}' (first: row {empty[0]}); "
                            "remove those rows or fix the column")


def _stratified_split(ds, fraction: float, seed: int, stratify: bool):
    """(train, held-out): `fraction` of the rows held out, of each label's rows when `stratify` (datasets'
    train_test_split over a ClassLabel column)."""
    from datasets import ClassLabel

    if len(ds) < 2 or round(len(ds) * fraction) < 1:
        raise DataError(f"data.validation_split: {len(ds)} row(s) are too few to hold out {fraction:.0%}; "
                        "give data.validation")
    by = None
    if stratify:
        ds = ds.cast_column("labels", ClassLabel(num_classes=max(ds["labels"]) + 1))
        by = "labels"
    try:
        parts = ds.train_test_split(test_size=fraction, seed=seed, stratify_by_column=by)
    except ValueError:  # a label with a single row cannot be stratified: split all rows instead
        parts = ds.train_test_split(test_size=fraction, seed=seed)
    train, held = parts["train"], parts["test"]
    if by:
        from datasets import Value

        train, held = train.cast_column("labels", Value("int64")), held.cast_column("labels", Value("int64"))
    return train, held


def load_labelled(cfg, names: list[str] | None = None, columns: list[str] | None = None):
    """Train / validation / (test) datasets with text column(s) and an encoded `labels` column, plus LabelInfo.
    `names` fixes the label set (prompting: the verbalizer's); `columns` the text columns (prompting: the
    template's). zero_shot loads no training data."""
    from datasets import DatasetDict

    from ..data import concatenate, load_table, select_columns

    d = cfg.data
    columns = (columns or [d.text_column] + ([d.text_pair_column] if d.text_pair_column else [])) + [d.label_column]
    hints = {d.text_column: "data.text_column", d.label_column: "data.label_column"}
    if d.text_pair_column:
        hints[d.text_pair_column] = "data.text_pair_column"

    def load(spec, key, split):
        parts = load_table(spec, key=key, dataset_config=d.dataset_config, hub_split=split)
        ds = concatenate([select_columns(p, columns, key, hints) for p in parts], key)
        if len(ds) == 0:
            raise DataError(f"{key}: no rows")
        _check_texts(ds, columns[:-1], key)
        return ds

    column, separator = d.label_column, d.label_separator
    known = "the training data" if names is None else "prompt.verbalizer"

    def encode(ds, key):
        return encode_labels(ds, column, separator, info, key, known)

    train = None
    if names is not None:  # prompting: the verbalizer's labels
        info = LabelInfo("single_label_classification", list(names))
    if d.train is not None and cfg.method != "zero_shot":
        train = load(d.train, "data.train", "train")
        if names is None:
            info = infer_labels(cfg, train)
        train = encode(train, "data.train")
    splits = {}
    if d.validation is not None:
        splits["validation"] = encode(load(d.validation, "data.validation", "validation"), "data.validation")
    elif d.validation_split > 0 and train is not None:
        train, splits["validation"] = _stratified_split(train, d.validation_split, cfg.train.seed,
                                                        info.problem_type == "single_label_classification")
    if d.test is not None:
        splits["test"] = encode(load(d.test, "data.test", "test"), "data.test")
    if train is None:
        return DatasetDict(splits), info
    if d.shots_per_class is not None:
        train = _few_shot(train, d.shots_per_class, cfg.train.seed, info)
    if d.max_train_samples is not None and len(train) > d.max_train_samples:
        train = train.shuffle(seed=cfg.train.seed).select(range(d.max_train_samples))
    return DatasetDict({"train": train, **splits}), info


def _few_shot(train, k: int, seed: int, info: LabelInfo):
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(train["labels"]):
        by_label.setdefault(label, []).append(i)
    chosen = []
    for label, indices in sorted(by_label.items()):
        if len(indices) < k:
            raise DataError(f"data.shots_per_class: label '{info.names[label]}' has only {len(indices)} training rows, "
                            f"fewer than {k}")
        chosen += rng.sample(indices, k)
    rng.shuffle(chosen)
    return train.select(chosen)


# --------------------------------------------------------------------------------------------- metrics
def predictions_from_logits(logits, problem_type: str):
    import numpy as np

    logits = np.asarray(logits)
    if problem_type == "regression":
        return logits.reshape(-1)
    if problem_type == "multi_label_classification":
        return (logits > 0).astype(int)  # sigmoid(logit) > 0.5
    return logits.argmax(-1)


def make_compute_metrics(info: LabelInfo):
    from ..metrics import classification_metric

    metric = classification_metric(info.metric_config)

    def compute(eval_pred):
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        predictions = predictions_from_logits(logits, info.problem_type)
        references = eval_pred.label_ids
        if info.problem_type == "multi_label_classification":
            references = references.astype(int)
        kwargs = {"num_labels": info.num_labels} if info.problem_type == "single_label_classification" else {}
        return metric.compute(predictions=predictions, references=references, **kwargs)

    return compute


def class_report(logits, labels, info: LabelInfo) -> dict:
    """Per-class precision/recall/F1/support and (single-label) the confusion matrix, rows = true labels."""
    import numpy as np

    logits = logits[0] if isinstance(logits, tuple) else logits
    predicted = predictions_from_logits(logits, info.problem_type)
    truth = np.asarray(labels)
    per_class = {}
    if info.problem_type == "multi_label_classification":
        truth = truth.astype(int)
        pairs = [(predicted[:, i] == 1, truth[:, i] == 1) for i in range(len(info.names))]
    else:
        pairs = [(predicted == i, truth == i) for i in range(len(info.names))]
    for name, (p, t) in zip(info.names, pairs):
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(t.sum())}
    report: dict = {"per_class": per_class}
    if info.problem_type == "single_label_classification":
        n = len(info.names)
        matrix = np.zeros((n, n), dtype=int)
        for t, p in zip(truth, predicted):
            matrix[int(t), int(p)] += 1
        report["confusion_matrix"] = {"labels": info.names, "rows_true_columns_predicted": matrix.tolist()}
    return report


# --------------------------------------------------------------------------------------------- the task
def logits_for(run, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32):
    """Logits in input order; batches are sorted by length so padding stays small."""
    import torch

    if run.prompt is not None:
        from ..prompting import predict_scores

        rows = [{run.text_column: t, **({run.text_pair_column: pairs[i]} if pairs else {})} for i, t in enumerate(texts)]
        missing = [c for c in run.prompt.template.columns if c not in rows[0]] if rows else []
        if missing:
            raise DataError(f"the prompt's template uses column(s) {', '.join(missing)}; give them with --file "
                            "(csv/jsonl with those columns)")
        return predict_scores(run.prompt, run.model, run.tokenizer, rows, batch_size)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [None] * len(texts)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = run.tokenizer([texts[i] for i in idx], [pairs[i] for i in idx] if pairs else None, truncation=True,
                                  max_length=run.max_length, padding=True, return_tensors="pt")
            batch = batch.to(next(run.model.parameters()).device)
            logits = run.model(**batch).logits.float().cpu()
            for row, i in enumerate(idx):
                out[i] = logits[row]
    return torch.stack(out) if out else torch.empty(0)


def tokenize(splits, tokenizer, cfg):
    d = cfg.data

    def encode(batch):
        pair = batch[d.text_pair_column] if d.text_pair_column else None
        return tokenizer(batch[d.text_column], pair, truncation=True, max_length=d.max_length)

    keep = {"labels"}
    return splits.map(encode, batched=True, num_proc=d.num_proc, desc="Tokenizing",
                      remove_columns=[c for c in splits["train"].column_names if c not in keep])


class Classification(Task):
    name = "classification"
    title = "classification"
    pooled_features = True
    methods = frozenset({"full", "frozen", "lora", "prompt_tuning", "prefix_tuning", "p_tuning", "ia3", "pet",
                         "zero_shot"})

    def metric_for_best(self, cfg) -> str:
        return "mse" if cfg.regression else ("f1" if cfg.multi_label else "accuracy")

    _labels: list = []  # the training labels, once load_data has run

    # The smallest class below this share of the largest makes a set unbalanced: selection then uses macro-F1.
    UNBALANCED = 0.5

    def select_metric(self, cfg, info) -> tuple[str, str]:
        if info.problem_type != "single_label_classification":
            return self.metric_for_best(cfg), "the task's measure"
        counts = Counter(self._labels)
        if not counts:
            return "accuracy", "no training labels to weigh"
        (big, most), (small, least) = max(counts.items(), key=lambda kv: kv[1]), min(counts.items(), key=lambda kv: kv[1])
        shares = f"smallest class {info.names[small]} has {least} training rows, largest {info.names[big]} {most}"
        if least < self.UNBALANCED * most:
            return "f1", f"classes are unbalanced ({shares}): macro-F1 weighs every class alike, accuracy would favour the largest"
        return "accuracy", f"classes are near balanced ({shares})"

    def loss_function(self, cfg, info):
        if cfg.train.class_weights != "balanced":
            return None
        import torch

        from ..optim import weighted_loss
        from ..solver import class_weights
        from ..training import log

        weights = class_weights(torch.tensor(self._labels), info.num_labels)
        log("class weights (balanced, n / (classes x count)): " +
            ", ".join(f"{name} {w:.2f}" for name, w in zip(info.names, weights.tolist())))
        return weighted_loss(weights.float())

    def check_supported(self, cfg) -> None:
        from ..methods import check_prefix_tuning

        check_prefix_tuning(cfg, "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING")

    def load_data(self, cfg, tokenizer):
        splits, info = load_labelled(cfg)
        self._remember_labels(splits, info)
        return splits, info

    def _remember_labels(self, splits, info) -> None:
        self._labels = list(splits["train"]["labels"]) if "train" in splits else []

    def describe(self, splits, info) -> str:
        counts = Counter(splits["train"]["labels"]) if info.problem_type == "single_label_classification" else None
        return (f"data: {len(splits['train']):,} training rows" +
                "".join(f", {len(ds):,} {name} rows" for name, ds in splits.items() if name != "train") +
                (f"; labels: {', '.join(f'{info.names[k]} ({v})' for k, v in sorted(counts.items()))}" if counts else ""))

    def encode(self, splits, tokenizer, cfg, info):
        return tokenize(splits, tokenizer, cfg)

    def collator(self, tokenizer, cfg, info):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def peft_task_type(self, cfg, info) -> str:
        return "SEQ_CLS"

    def build_model(self, cfg, tokenizer, info):
        from transformers import AutoModelForSequenceClassification

        from ..models import load_head_model

        return load_head_model(AutoModelForSequenceClassification, cfg, tokenizer, info.names,
                               num_labels=info.num_labels, problem_type=info.problem_type)

    def build_frozen_model(self, cfg, tokenizer, info):
        from ..heads import PooledClassifier
        from ..models import load_backbone

        f = cfg.frozen
        model = PooledClassifier(load_backbone(cfg), num_labels=info.num_labels, problem_type=info.problem_type,
                                 pooling=f.pooling, head=f.head, hidden_size=f.hidden_size, dropout=f.dropout,
                                 id2label=dict(enumerate(info.names)))
        return model, []

    def compute_metrics(self, cfg, info, split):
        return make_compute_metrics(info)

    def report(self, cfg, info, output, split) -> dict:
        if info.problem_type == "regression":
            return {}
        return {"report": class_report(output.predictions, output.label_ids, info)}

    def card(self, cfg, info, output_dir: str):
        from ..methods import METHODS
        from ..models import resolve_model_path

        lines = [f"method: {cfg.method}", f"base model: {cfg.model.path}", f"labels: {', '.join(info.names)}",
                 f"data: {cfg.data.train}"]
        if METHODS[cfg.method].frozen_backbone:
            snippet = ("# A frozen backbone (AutoModel) + a small head; hfkit loads both:\n"
                       f"import hfkit\nhfkit.predict('{output_dir}', ['some text'])\n"
                       "# Without hfkit: AutoModel.from_pretrained(dir) gives the backbone; classifier_head.json says how\n"
                       "# to pool its last hidden state and classifier_head.safetensors holds the head's weights.")
        elif METHODS[cfg.method].peft:
            snippet = ("from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer\n"
                       "from peft import PeftModel\n"
                       f"config = AutoConfig.from_pretrained('{output_dir}')  # labels recorded by hfkit\n"
                       f"base = AutoModelForSequenceClassification.from_pretrained('{resolve_model_path(cfg.model.path)}', "
                       "config=config)\n"
                       f"model = PeftModel.from_pretrained(base, '{output_dir}')\n"
                       f"tokenizer = AutoTokenizer.from_pretrained('{output_dir}')")
        else:
            snippet = f"from transformers import pipeline\nclassify = pipeline('text-classification', model='{output_dir}')"
        return f"{Path(output_dir).name}: classification ({cfg.method})", lines, snippet


    # ---- prediction on a loaded run (inference.LoadedRun)
    def predict(self, run, texts: list[str], pairs: list[str] | None, batch_size: int) -> list[dict]:
        import torch

        logits = logits_for(run, list(texts), pairs, batch_size)
        results = []
        for row in logits:
            if run.problem_type == "regression":
                results.append({"score": float(row.reshape(-1)[0])})
            elif run.problem_type == "multi_label_classification":
                probs = torch.sigmoid(row)
                scores = {run.id2label[i]: float(p) for i, p in enumerate(probs)}
                results.append({"labels": [n for n, p in scores.items() if p > 0.5], "scores": scores})
            else:
                probs = torch.softmax(row, -1)
                best = int(probs.argmax())
                results.append({"label": run.id2label[best], "score": float(probs[best]),
                                "scores": {run.id2label[i]: float(p) for i, p in enumerate(probs)}})
        return results

    def evaluate(self, run, data, batch_size: int) -> dict:
        import numpy as np

        from ..data import concatenate, load_table, select_columns
        from ..metrics import classification_metric

        text_columns = run.prompt.template.columns if run.prompt is not None else (
            [run.text_column] + ([run.text_pair_column] if run.text_pair_column else []))
        columns = text_columns + [run.label_column]
        hints = {c: f"the run's data column ({c})" for c in columns}
        ds = concatenate([select_columns(p, columns, "--data", hints) for p in load_table(data, key="--data")], "--data")
        names = [run.id2label[i] for i in sorted(run.id2label)]
        info = LabelInfo(run.problem_type, names)
        ds = encode_labels(ds, run.label_column, run.label_separator, info, "--data",
                           "the run's labels" if run.prompt is None else "the prompt's verbalizer")
        if run.prompt is not None:
            from ..prompting import predict_scores

            logits = predict_scores(run.prompt, run.model, run.tokenizer, ds.select_columns(text_columns).to_list(),
                                    batch_size, desc="Scoring").numpy()
        else:
            texts = list(ds[run.text_column])
            pairs = list(ds[run.text_pair_column]) if run.text_pair_column else None
            logits = logits_for(run, texts, pairs, batch_size).numpy()
        labels = np.asarray(list(ds["labels"]))
        metric = classification_metric(info.metric_config)
        kwargs = {"num_labels": info.num_labels} if info.problem_type == "single_label_classification" else {}
        refs = labels.astype(int) if info.problem_type == "multi_label_classification" else labels
        result = {f"eval_{k}": v for k, v in metric.compute(predictions=predictions_from_logits(logits, info.problem_type),
                                                              references=refs, **kwargs).items()}
        result["eval_samples"] = len(ds)
        if info.problem_type != "regression":
            result["eval_report"] = class_report(logits, labels, info)
        return result

    @classmethod
    def for_config(cls, cfg) -> "Classification":
        return Cloze() if cfg is not None and cfg.prompted else cls()


class Cloze(Classification):
    """The cloze head (methods pet and zero_shot): a template turns each row into a prompt with a slot, the model's
    own LM head scores label words there (prompting.py), and those scores are the logits. prompt.tune picks which
    weights learn (full, lora, prompt_tuning, p_tuning); zero_shot trains nothing."""

    def __init__(self):
        self.prompt = None

    def load_data(self, cfg, tokenizer):
        from ..models import resolve_model_path
        from ..prompting import detect_kind, make_prompt, use_chat

        d, m = cfg.data, cfg.model
        source = resolve_model_path(m.path)
        kind = detect_kind(source, tokenizer, cfg.prompt.kind, revision=m.revision, trust_remote_code=m.trust_remote_code)
        extra = {"method": cfg.method, "base_model": source, "text_column": d.text_column,
                 "text_pair_column": d.text_pair_column, "label_column": d.label_column,
                 "chat": use_chat(cfg.prompt.chat, tokenizer, kind)}
        self.prompt = make_prompt(cfg.prompt.template, cfg.prompt.verbalizer, tokenizer, kind, d.max_length,
                                  aliases={"text": d.text_column, "text_pair": d.text_pair_column}, extra=extra)
        splits, info = load_labelled(cfg, names=self.prompt.labels, columns=self.prompt.template.columns)
        self._remember_labels(splits, info)
        return splits, info

    def describe(self, splits, info) -> str:
        p = self.prompt
        shown = p.template.render({c: "<" + c + "> " for c in p.template.columns}, "<slot>")
        words = "; ".join(f"{label}: {', '.join(w)}" for label, w in zip(p.labels, p.verbalizer.words))
        counts = Counter(splits["train"]["labels"]) if "train" in splits else {}
        rows = (f"{len(splits['train']):,} training rows (" + ", ".join(f"{info.names[k]} {v}" for k, v in
                                                                      sorted(counts.items())) + ")") if counts else ""
        others = ", ".join(f"{len(ds):,} {name} rows" for name, ds in splits.items() if name != "train")
        return f"prompt ({p.kind}): {shown!r}; {words}\ndata: " + ", ".join(x for x in (rows, others) if x)

    def encode(self, splits, tokenizer, cfg, info):
        columns = splits[next(iter(splits))].column_names
        return splits.map(lambda row: self.prompt.encode(row, tokenizer), num_proc=cfg.data.num_proc,
                          desc="Prompting", remove_columns=[c for c in columns if c != "labels"])

    def collator(self, tokenizer, cfg, info):
        import functools

        from ..prompting import Prompt

        return functools.partial(Prompt.collate, tokenizer=tokenizer)

    def peft_task_type(self, cfg, info) -> str:
        return "CAUSAL_LM" if self.prompt.kind == "clm" else "FEATURE_EXTRACTION"

    def build_model(self, cfg, tokenizer, info):
        import math

        from ..errors import ModelError
        from ..models import dtype_kwargs, resolve_model_path
        from ..prompting import load_lm
        from ..training import log

        m = cfg.model
        model, missing = load_lm(resolve_model_path(m.path), self.prompt.kind, revision=m.revision,
                                 trust_remote_code=m.trust_remote_code, attn_implementation=m.attn_implementation,
                                 random_init=m.random_init, **dtype_kwargs(cfg), **m.overrides)
        if missing:
            log(f"warning: the checkpoint has no trained weights for {', '.join(missing)} (initialised at random): "
                + ("zero-shot scores from it are noise" if cfg.method == "zero_shot" else "PET must learn them"))
            if cfg.method == "pet" and cfg.prompt.tune != "full":
                raise ModelError(f"prompt.tune: {cfg.prompt.tune} trains an adapter on a trained LM head, but this "
                                 f"checkpoint has none ({', '.join(missing)} would start at random and, tied to the "
                                 "embeddings, cannot be saved with an adapter); use prompt.tune=full, or a model with "
                                 "its LM head")
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        if cfg.prompt.calibrate:
            self.prompt.calibration = self.prompt.content_free_log_probs(model, tokenizer)
            log("calibration: content-free label probabilities "
                + ", ".join(f"{n} {math.exp(v):.3f}" for n, v in zip(self.prompt.labels, self.prompt.calibration)))
        return model, []  # an adapter never saves the LM head: it is tied to the embeddings

    def build_frozen_model(self, cfg, tokenizer, info):
        raise NotImplementedError("the cloze head reads the LM head's word scores; it has no frozen variant")

    def trainer_class(self, cfg, info):
        import functools

        from ..prompting import prompt_trainer_class

        return functools.partial(prompt_trainer_class(), prompt=self.prompt)

    def method_note(self, cfg) -> str:
        return f" ({cfg.prompt.tune})" if cfg.method == "pet" else ""

    def run_facts(self, cfg) -> dict:
        return {"prompt_kind": self.prompt.kind, **({"tune": cfg.prompt.tune} if cfg.method == "pet" else {})}

    def save(self, cfg, info, model, tokenizer, folder, state_dict=None) -> None:
        tokenizer.save_pretrained(folder)
        if cfg.method != "zero_shot":  # zero_shot changed no weight: the run names its base model in prompt.json
            model.save_pretrained(folder, state_dict=state_dict)
        self.prompt.save(folder)

    def card(self, cfg, info, output_dir: str):
        p = self.prompt
        words = "; ".join(f"{label}: {', '.join(w)}" for label, w in zip(p.labels, p.verbalizer.words))
        tuned = f" ({cfg.prompt.tune})" if cfg.method == "pet" else ""
        lines = [f"method: {cfg.method}{tuned}", f"base model: {cfg.model.path}",
                 f"template ({p.kind}): `{p.template.source}`", f"verbalizer: {words}",
                 f"data: {cfg.data.train if cfg.method == 'pet' else cfg.data.validation}"]
        head = "AutoModelForMaskedLM" if p.kind == "mlm" else "AutoModelForCausalLM"
        snippet = ["import hfkit", f"hfkit.predict('{output_dir}', ['some text'])  # labels from the prompt in prompt.json",
                   ""]
        if cfg.method == "zero_shot":
            snippet.append(f"# No weights here: the model is {p.extra['base_model']} (unchanged); prompt.json holds the "
                           "template, label words and calibration.")
        elif cfg.prompt.tune == "full":
            snippet += ["# Without hfkit: the cloze model is a plain masked/causal LM", f"from transformers import {head}",
                        f"model = {head}.from_pretrained('{output_dir}')"]
        else:
            snippet += ["# Without hfkit: a PEFT adapter on the base LM", f"from transformers import {head}",
                        "from peft import PeftModel",
                        f"model = PeftModel.from_pretrained({head}.from_pretrained('{p.extra['base_model']}'), "
                        f"'{output_dir}')"]
        return (f"{Path(output_dir).name}: prompt-based classification ({cfg.method}{tuned})", lines,
                "\n".join(snippet))
