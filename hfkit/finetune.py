"""Fine-tuning for classification (single-label, multi-label, regression; single texts or pairs).

    labelled data -> labels -> tokenizer -> model -> method -> Trainer -> train -> evaluate -> save

A method is a small function `apply(model, cfg, fresh) -> model` in `METHODS`; `fresh` names the modules the
checkpoint did not have (the new head: BERT's pooler after MLM pretraining, say), which PEFT methods train and
save with the adapter. `frozen` also swaps the model for a pooled head on the backbone's features (`heads.py`).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .config import FinetuneConfig, save_yaml
from .errors import ConfigError, DataError, ModelError
from .flops import mfu_metrics
from .models import count_parameters, fix_loss_scaling, load_pretrained, resolve_model_path
from .training import (RunResult, claim_output_dir, draw_run, final_weights, finite_or_none, log, padding_fraction,
                       ranks_in_sync, run_stats, save_final, start_run, steps_this_session, train_safely, training_arguments,
                       write_json, write_model_card)


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


def infer_labels(cfg: FinetuneConfig, train) -> LabelInfo:
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


def _stratified_split(ds, fraction: float, seed: int, by: str | None):
    """(train, held-out): `fraction` of each label's rows held out (of all rows when `by` is None)."""
    rng = random.Random(seed)
    groups: dict = {}
    keys = ds[by] if by else [0] * len(ds)
    for i, k in enumerate(keys):
        groups.setdefault(str(k), []).append(i)
    held = []
    for indices in groups.values():
        rng.shuffle(indices)
        held += indices[: max(1, round(len(indices) * fraction))] if len(indices) > 1 else []
    held_set = set(held)
    keep = [i for i in range(len(ds)) if i not in held_set]
    if not keep or not held:
        raise DataError(f"data.validation_split: {len(ds)} row(s) are too few to hold out {fraction:.0%}; "
                        "give data.validation")
    return ds.select(keep), ds.select(sorted(held))


def load_labelled(cfg: FinetuneConfig, names: list[str] | None = None, columns: list[str] | None = None):
    """Train / validation / (test) datasets with text column(s) and an encoded `labels` column, plus LabelInfo.
    `names` fixes the label set (prompting: the verbalizer's); `columns` the text columns (prompting: the
    template's). zero_shot loads no training data."""
    from datasets import DatasetDict

    from .data import concatenate, load_table, select_columns

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
        by = "labels" if info.problem_type == "single_label_classification" else None
        train, splits["validation"] = _stratified_split(train, d.validation_split, cfg.train.seed, by)
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


def tokenize(splits, tokenizer, cfg: FinetuneConfig):
    d = cfg.data

    def encode(batch):
        pair = batch[d.text_pair_column] if d.text_pair_column else None
        return tokenizer(batch[d.text_column], pair, truncation=True, max_length=d.max_length)

    keep = {"labels"}
    return splits.map(encode, batched=True, num_proc=d.num_proc, desc="Tokenizing",
                      remove_columns=[c for c in splits["train"].column_names if c not in keep])


# --------------------------------------------------------------------------------------------- model and methods
def load_tokenizer_for(cfg: FinetuneConfig):
    from .tokenizer import load_tokenizer

    m = cfg.model
    tokenizer = load_tokenizer(resolve_model_path(cfg.tokenizer.path or m.path), revision=m.revision,
                               trust_remote_code=m.trust_remote_code)
    if tokenizer.pad_token is None:
        # GPT-style tokenizers have no pad token; eos is safe here because padding is masked by attention.
        if tokenizer.eos_token is None:
            raise ModelError("the tokenizer has neither a pad nor an eos token to pad batches with; set tokenizer.path")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_source(cfg: FinetuneConfig) -> str:
    return resolve_model_path(cfg.model.path)


def build_model(cfg: FinetuneConfig, tokenizer, info: LabelInfo):
    """(model, fresh): the model, and the module paths initialised here because the checkpoint lacks them."""
    m = cfg.model
    id2label = {i: n for i, n in enumerate(info.names)}
    if cfg.method == "frozen":
        from transformers import AutoModel

        from .heads import PooledClassifier

        backbone = load_pretrained(AutoModel, model_source(cfg), revision=m.revision, trust_remote_code=m.trust_remote_code,
                                   attn_implementation=m.attn_implementation, random_init=m.random_init, **m.overrides)
        f = cfg.frozen
        model = PooledClassifier(backbone, num_labels=info.num_labels, problem_type=info.problem_type, pooling=f.pooling,
                                 head=f.head, hidden_size=f.hidden_size, dropout=f.dropout, id2label=id2label)
        return model, []
    from transformers import AutoModelForSequenceClassification

    model, loading = load_pretrained(AutoModelForSequenceClassification, model_source(cfg), revision=m.revision,
                                     trust_remote_code=m.trust_remote_code, attn_implementation=m.attn_implementation,
                                     random_init=m.random_init, num_labels=info.num_labels, id2label=id2label,
                                     label2id={n: i for i, n in id2label.items()}, problem_type=info.problem_type,
                                     output_loading_info=True, **m.overrides)
    # Weights the checkpoint lacks are initialised at random on *every* load; an adapter must carry them.
    fresh = sorted({key.rsplit(".", 1)[0] for key in loading.get("missing_keys", [])})
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # GPT-style models find the last real token by it
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    fix_loss_scaling(model)
    return model, fresh


def apply_full(model, cfg, fresh):
    for p in model.parameters():
        p.requires_grad = True
    return model


def apply_frozen(model, cfg, fresh):
    model.freeze_backbone(unfreeze_last=cfg.frozen.unfreeze_last)
    return model


def linear_module_names(model) -> list[str]:
    """Leaf names of the linear layers (nn.Linear, GPT-2's Conv1D) that LoRA can adapt."""
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def _extra_modules(fresh: list[str]) -> list[str] | None:
    """Fresh modules beyond the classifier, which PEFT's sequence-classification task already saves."""
    extra = [name for name in fresh if name.rsplit(".", 1)[-1] not in ("classifier", "score")]
    return extra or None


def apply_lora(model, cfg, fresh):
    from peft import LoraConfig, TaskType, get_peft_model

    targets = cfg.lora.target_modules
    if targets:
        available = linear_module_names(model)
        missing = [t for t in targets if t not in available]
        if missing:
            raise ConfigError(f"lora.target_modules: {', '.join(missing)} not in this model; its linear layers are "
                              f"{', '.join(available)}")
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                        lora_dropout=cfg.lora.dropout, target_modules=targets or "all-linear",
                        modules_to_save=_extra_modules(fresh))
    return get_peft_model(model, config)


def apply_prompt_tuning(model, cfg, fresh):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    s = cfg.soft_prompt
    kwargs = {}
    if s.init_text:
        kwargs = dict(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=s.init_text,
                      tokenizer_name_or_path=cfg.tokenizer.path or model_source(cfg))
    config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=s.num_virtual_tokens,
                                modules_to_save=_extra_modules(fresh), **kwargs)
    return get_peft_model(model, config)


def prefix_tuning_problem(head_cls, backbone_cls) -> str | None:
    """Why the installed PEFT cannot prefix-tune a sequence classifier of `head_cls`, or None when it can.

    PEFT (0.21) hands the prefix to the classifier's forward as `past_key_values`, or else to its backbone's, and
    looks for that parameter by name. transformers 5.24 renamed it `cache` in BERT, RoBERTa, GPT-2 and Llama, so
    there PEFT raises at the first forward pass ("Model does not support past key values"). This is PEFT's own test,
    asked of the classes before anything runs; tests/test_finetune.py checks it against what PEFT really does.
    """
    import inspect

    for cls in (head_cls, backbone_cls):
        if cls is not None and "past_key_values" in inspect.signature(cls.forward).parameters:
            return None
    import peft
    import transformers

    return (f"method prefix_tuning: PEFT {peft.__version__} cannot prefix-tune {head_cls.__name__} under transformers "
            f"{transformers.__version__} (its forward no longer takes past_key_values); use method prompt_tuning, "
            f"p_tuning, lora, ia3, full or frozen, or transformers 5.23 (the version hfkit's lock installs)")


def check_method_supported(cfg: FinetuneConfig) -> None:
    """Refuse, before any data or weights are read, a method that the installed libraries cannot apply."""
    if cfg.method != "prefix_tuning":
        return
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING, MODEL_MAPPING

    m = cfg.model
    try:
        config = AutoConfig.from_pretrained(model_source(cfg), revision=m.revision, trust_remote_code=m.trust_remote_code)
        head_cls = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except (OSError, ValueError, KeyError):
        return  # a bad path or an unknown architecture: loading the model reports it
    backbone_cls = MODEL_MAPPING[type(config)] if type(config) in MODEL_MAPPING else None
    problem = prefix_tuning_problem(head_cls, backbone_cls)
    if problem:
        raise ConfigError(problem)


def apply_prefix_tuning(model, cfg, fresh):
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    config = PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=cfg.soft_prompt.num_virtual_tokens,
                                modules_to_save=_extra_modules(fresh))
    return get_peft_model(model, config)


def apply_p_tuning(model, cfg, fresh):
    from peft import PromptEncoderConfig, TaskType, get_peft_model

    s = cfg.soft_prompt
    config = PromptEncoderConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=s.num_virtual_tokens,
                                 encoder_hidden_size=s.encoder_hidden_size, modules_to_save=_extra_modules(fresh))
    return get_peft_model(model, config)


def apply_ia3(model, cfg, fresh):
    from peft import IA3Config, TaskType, get_peft_model

    return get_peft_model(model, IA3Config(task_type=TaskType.SEQ_CLS, modules_to_save=_extra_modules(fresh)))


METHODS = {"full": apply_full, "frozen": apply_frozen, "lora": apply_lora, "prompt_tuning": apply_prompt_tuning,
           "prefix_tuning": apply_prefix_tuning, "p_tuning": apply_p_tuning, "ia3": apply_ia3}
PEFT_METHODS = {"lora", "prompt_tuning", "prefix_tuning", "p_tuning", "ia3"}


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
    from .metrics import classification_metric

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


# --------------------------------------------------------------------------------------------- the recipe
def build_trainer(cfg: FinetuneConfig, model, tokenizer, splits, info: LabelInfo, output_dir: str, collator,
                  trainer_cls=None):
    from transformers import EarlyStoppingCallback, Trainer

    trainer_cls = trainer_cls or Trainer
    has_eval = "validation" in splits
    t = cfg.train
    extra: dict = {}
    if has_eval and t.load_best:
        extra = dict(load_best_model_at_end=True, metric_for_best_model=t.metric_for_best,
                     greater_is_better=t.metric_for_best not in ("mse", "mae", "loss", "eval_loss"))
    args = training_arguments(t, output_dir, has_eval=has_eval, save_with_eval=True, remove_unused_columns=False,
                              **extra)
    callbacks = [EarlyStoppingCallback(t.early_stopping_patience)] if has_eval and t.early_stopping_patience else []
    return trainer_cls(model=model, args=args, train_dataset=splits["train"], eval_dataset=splits.get("validation"),
                   data_collator=collator, processing_class=tokenizer, compute_metrics=make_compute_metrics(info),
                   callbacks=callbacks)


def run(cfg: FinetuneConfig) -> RunResult:
    from transformers import DataCollatorWithPadding, default_data_collator

    if cfg.prompted:
        from .prompting import run as run_prompted

        return run_prompted(cfg)
    check_method_supported(cfg)
    output_dir = cfg.output_dir
    resume_from, state = start_run(cfg, cfg.model.path)
    with state.main_process_first():  # the main process reads and tokenizes first; the others reuse its cache
        splits, info = load_labelled(cfg)
        tokenizer = load_tokenizer_for(cfg)
        encoded = tokenize(splits, tokenizer, cfg)
    counts = Counter(splits["train"]["labels"]) if info.problem_type == "single_label_classification" else None
    log(f"data: {len(splits['train']):,} training rows" +
        "".join(f", {len(ds):,} {name} rows" for name, ds in splits.items() if name != "train") +
        (f"; labels: {', '.join(f'{info.names[k]} ({v})' for k, v in sorted(counts.items()))}" if counts else ""))
    model, fresh = build_model(cfg, tokenizer, info)
    if fresh:
        log(f"initialised here (not in the checkpoint): {', '.join(fresh)}")
    model = METHODS[cfg.method](model, cfg, fresh)
    trainable, total = count_parameters(model)
    log(f"method {cfg.method}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")

    lengths = [len(ids) for ids in encoded["train"]["input_ids"]]
    collator = DataCollatorWithPadding(tokenizer)
    cached = cfg.method == "frozen" and cfg.frozen.unfreeze_last == 0 and cfg.frozen.cache_features
    if cached and cfg.train.group_by_length:
        cfg.train.group_by_length = False  # cached features have one length: nothing to group
    if cached:
        from .heads import extract_features

        start = time.perf_counter()
        encoded = extract_features(model, encoded, collator, batch_size=cfg.train.eval_batch_size or 64)
        log(f"frozen backbone: features computed once in {time.perf_counter() - start:.1f}s; the head trains on them")
        collator = default_data_collator

    if state.is_main_process:
        claim_output_dir(output_dir, overwrite=cfg.train.overwrite, resume_from=resume_from)
        save_yaml(cfg, Path(output_dir) / "hfkit.yaml")
    trainer = build_trainer(cfg, model, tokenizer, encoded, info, output_dir, collator)

    start = time.perf_counter()
    train_output = train_safely(trainer, resume_from, output_dir)
    wall = time.perf_counter() - start
    metrics = run_metrics(cfg, trainer, train_output, encoded, info, model=model, wall=wall, resume_from=resume_from,
                          lengths=lengths, per_token=not cached)
    metrics.update(method=cfg.method, features_cached=cached)
    final, state_dict = final_weights(trainer)  # every rank: FSDP / ZeRO-3 gather the weights collectively
    if trainer.is_world_process_zero():
        save_final(lambda folder: save_run(final, tokenizer, cfg, folder, state_dict), output_dir)
        write_json(Path(output_dir) / "metrics.json", metrics)
        draw_run(trainer, output_dir, f"eval_{cfg.train.metric_for_best}")
        shown = {k: v for k, v in metrics.items() if not k.endswith("_report")}
        write_model_card(output_dir, title=f"{Path(output_dir).name}: classification ({cfg.method})",
                         lines=[f"method: {cfg.method}", f"base model: {cfg.model.path}", f"labels: {', '.join(info.names)}",
                                f"data: {cfg.data.train}"],
                         metrics=shown, load_snippet=load_snippet(cfg, output_dir))
    log(f"done: {output_dir}")
    return RunResult(output_dir=Path(output_dir), metrics=metrics, config=cfg)


def run_metrics(cfg: FinetuneConfig, trainer, train_output, encoded, info: LabelInfo, *, model, wall: float,
                resume_from: str | None, lengths: list[int], per_token: bool = True) -> dict:
    """metrics.json of a fine-tuning run: the Trainer's, evaluation (and test) metrics with per-class reports from one
    prediction pass each, parameter counts, throughput, and (per_token: the model ran on every token trained)
    padding fraction and MFU."""
    metrics: dict = {k: v for k, v in train_output.metrics.items() if isinstance(v, (int, float))}
    metrics["train_loss"] = finite_or_none(train_output.training_loss)
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in encoded:
            output = trainer.predict(encoded[split], metric_key_prefix=prefix)  # metrics and logits in one pass
            metrics.update({k: v for k, v in output.metrics.items() if isinstance(v, (int, float))})
            if info.problem_type != "regression":
                metrics[f"{prefix}_report"] = class_report(output.predictions, encoded[split]["labels"], info)
    trainable, total = count_parameters(model)
    metrics.update(trainable_params=trainable, total_params=total, trainable_fraction=trainable / total,
                   global_step=trainer.state.global_step, train_wall_seconds=round(wall, 3),
                   world_size=trainer.args.world_size)
    mean_tokens = sum(lengths) / max(len(lengths), 1)
    metrics.update(seen_stats(trainer, resume_from, len(lengths), mean_tokens, wall))
    if per_token:
        metrics["train_padding_fraction"] = padding_fraction(lengths, cfg.train.batch_size, cfg.train.group_by_length,
                                                             cfg.train.seed)
        metrics.update(mfu_metrics(model, mean_tokens, metrics["train_tokens_per_second"], trainer.args.world_size,
                                   cfg.train.peak_tflops))
    in_sync = ranks_in_sync(trainer)
    if in_sync is not None:
        metrics["ranks_in_sync"] = in_sync
    return metrics


def seen_stats(trainer, resume_from, rows: int, mean_tokens: float, wall: float) -> dict:
    """Throughput over the examples this session trained on: steps x global batch, capped by rows x epochs."""
    t = trainer.args
    samples = steps_this_session(trainer, resume_from) * t.per_device_train_batch_size * t.gradient_accumulation_steps \
        * t.world_size
    samples = min(samples, int(round(rows * trainer.state.epoch))) if trainer.state.epoch else samples
    return run_stats(tokens=round(samples * mean_tokens), samples=samples, wall=wall)


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


def save_run(model, tokenizer, cfg: FinetuneConfig, output_dir: str, state_dict: dict | None = None) -> None:
    """Final model at the run directory's root: a full model, a PEFT adapter (+ the labelled config), or a
    frozen backbone + head. `lora.merge` also writes a merged plain model to output_dir/merged.

    state_dict: the full weights gathered from the ranks when they were sharded (FSDP, DeepSpeed ZeRO-3)."""
    out = Path(output_dir)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out, state_dict=state_dict)
    if cfg.method in PEFT_METHODS:
        base = model.get_base_model()
        base.config.save_pretrained(out)  # the labels and problem type, for loading the adapter with peft
        if cfg.lora.merge and cfg.method in ("lora", "ia3") and state_dict is not None:
            log("lora.merge: skipped, the weights were sharded across processes; merge the saved adapter with "
                "peft's merge_and_unload after the run")
        elif cfg.lora.merge and cfg.method in ("lora", "ia3"):
            merged = model.merge_and_unload()
            merged.save_pretrained(out / "merged")
            tokenizer.save_pretrained(out / "merged")


def load_snippet(cfg: FinetuneConfig, output_dir: str) -> str:
    if cfg.method == "frozen":
        return ("# A frozen backbone (AutoModel) + a small head; hfkit loads both:\n"
                f"import hfkit\nhfkit.predict('{output_dir}', ['some text'])\n"
                "# Without hfkit: AutoModel.from_pretrained(dir) gives the backbone; classifier_head.json says how\n"
                "# to pool its last hidden state and classifier_head.safetensors holds the head's weights.")
    if cfg.method in PEFT_METHODS:
        return ("from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer\n"
                "from peft import PeftModel\n"
                f"config = AutoConfig.from_pretrained('{output_dir}')  # labels recorded by hfkit\n"
                f"base = AutoModelForSequenceClassification.from_pretrained('{model_source(cfg)}', config=config)\n"
                f"model = PeftModel.from_pretrained(base, '{output_dir}')\n"
                f"tokenizer = AutoTokenizer.from_pretrained('{output_dir}')")
    return ("from transformers import pipeline\n"
            f"classify = pipeline('text-classification', model='{output_dir}')")
