"""Predict with, or evaluate, a fine-tuned run directory: a full model, a PEFT adapter or a frozen backbone + head."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import DataError, ModelError


@dataclass
class LoadedRun:
    model: object
    tokenizer: object
    problem_type: str
    id2label: dict[int, str]
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_separator: str | None = None
    max_length: int = 128
    prompt: object = None  # prompting.Prompt for cloze runs (pet, zero_shot)


def load_run_columns(run_dir: str | Path) -> tuple[str, str | None]:
    """(text_column, text_pair_column) the run was trained with, from its hfkit.yaml (defaults: text, none)."""
    saved = Path(run_dir) / "hfkit.yaml"
    data = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("data", {}) if saved.is_file() else {}
    return data.get("text_column", "text"), data.get("text_pair_column")


def load_prompt_run(run: Path, tokenizer, prompt=None) -> LoadedRun:
    """A cloze run (prompt.json): the LM (full weights, an adapter on the base, or the unchanged base model)."""
    from .prompting import Prompt, load_lm

    prompt = prompt or Prompt.load(run, tokenizer)
    base = prompt.extra.get("base_model")
    if (run / "adapter_config.json").is_file():
        from peft import PeftModel

        base_path = json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load_lm(base_path, prompt.kind)[0], run)
    else:
        model = load_lm(str(run) if (run / "config.json").is_file() else base, prompt.kind)[0]
    x = prompt.extra
    return LoadedRun(model=model.eval(), tokenizer=tokenizer, problem_type="single_label_classification",
                     id2label=dict(enumerate(prompt.labels)), text_column=x.get("text_column", "text"),
                     text_pair_column=x.get("text_pair_column"), label_column=x.get("label_column", "label"),
                     max_length=prompt.max_length, prompt=prompt)


def zero_shot_run(model_path: str, template: str, verbalizer, calibrate: bool = False, kind: str = "auto",
                  max_length: int = 128) -> LoadedRun:
    """A cloze classifier over any masked or causal LM, untrained: `hfkit predict/evaluate MODEL --template ...`."""
    from transformers import AutoTokenizer

    from .errors import ConfigError
    from .models import check_local_model_dir, resolve_model_path
    from .prompting import detect_kind, make_prompt

    if isinstance(verbalizer, str):
        try:
            verbalizer = yaml.safe_load(verbalizer)
        except yaml.YAMLError:
            raise ConfigError("--verbalizer: not valid YAML; write e.g. '{positive: [great], negative: [terrible]}'") from None
    path = resolve_model_path(model_path)
    check_local_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kind = detect_kind(path, tokenizer, kind)
    prompt = make_prompt(template, verbalizer, tokenizer, kind, max_length, extra={"method": "zero_shot",
                                                                                    "base_model": path})
    run = load_prompt_run(Path(path), tokenizer, prompt)
    if calibrate:
        prompt.calibration = prompt.content_free_log_probs(run.model, tokenizer)
    return run


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load any classification run hfkit wrote (or a plain HF sequence-classification folder)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from .heads import HEAD_CONFIG, PooledClassifier

    run = Path(run_dir)
    if not run.is_dir():
        raise ModelError(f"run directory '{run}' does not exist")
    saved = run / "hfkit.yaml"
    cfg = yaml.safe_load(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
    data = cfg.get("data") or {}
    if cfg.get("objective"):
        raise ModelError(f"'{run}' is a pretraining run ({cfg['objective']}); predict and evaluate take a fine-tuned run")
    tokenizer = AutoTokenizer.from_pretrained(run)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (run / "prompt.json").is_file():
        return load_prompt_run(run, tokenizer)
    if (run / HEAD_CONFIG).is_file():
        model = PooledClassifier.from_pretrained(run)
        head = model.head_config
        problem_type, id2label = head["problem_type"], {int(k): v for k, v in head["id2label"].items()}
    elif (run / "adapter_config.json").is_file():
        from peft import PeftModel

        config = AutoConfig.from_pretrained(run)
        base_path = json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = AutoModelForSequenceClassification.from_pretrained(base_path, config=config)
        model = PeftModel.from_pretrained(base, run).eval()
        problem_type, id2label = config.problem_type, config.id2label
    elif (run / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(run).eval()
        problem_type, id2label = model.config.problem_type, model.config.id2label
    else:
        raise ModelError(f"'{run}' holds no model (no config.json, adapter_config.json or {HEAD_CONFIG}); "
                         "did the run finish?")
    if problem_type is None:
        problem_type = "regression" if len(id2label) == 1 and "score" in id2label.values() else "single_label_classification"
    return LoadedRun(model=model, tokenizer=tokenizer, problem_type=problem_type, id2label=dict(id2label),
                     text_column=data.get("text_column", "text"), text_pair_column=data.get("text_pair_column"),
                     label_column=data.get("label_column", "label"), label_separator=data.get("label_separator"),
                     max_length=data.get("max_length", 128))


def logits_for(run: LoadedRun, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32):
    """Logits in input order; batches are sorted by length so padding stays small."""
    import torch

    if run.prompt is not None:
        from .prompting import predict_scores

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
            logits = run.model(**batch).logits.float()
            for row, i in enumerate(idx):
                out[i] = logits[row]
    return torch.stack(out) if out else torch.empty(0)


def open_run(run_dir, prompt: dict | None = None) -> LoadedRun:
    """A run directory, or with `prompt` ({template, verbalizer[, calibrate, kind, max_length]}) any masked or
    causal LM as an untrained (zero-shot) cloze classifier."""
    if isinstance(run_dir, LoadedRun):
        return run_dir
    if prompt:
        return zero_shot_run(str(run_dir), **prompt)
    return load_run(run_dir)


def predict(run_dir: str | Path, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32,
            prompt: dict | None = None) -> list[dict]:
    """[{label, score, scores}] per text (multi-label: `labels` over 0.5; regression: `score` only).
    `prompt`: classify zero-shot with a template and label words (see open_run)."""
    import torch

    if isinstance(texts, str):
        texts = [texts]
    if pairs is not None and len(pairs) != len(texts):
        raise DataError(f"{len(texts)} texts but {len(pairs)} pair texts; give one pair per text")
    run = open_run(run_dir, prompt)
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


def evaluate(run_dir: str | Path, data: str | list[str], batch_size: int = 32, prompt: dict | None = None) -> dict:
    """Metrics of a run on labelled data (same file forms as training), with the columns the run was trained on.
    `prompt`: evaluate a model zero-shot with a template and label words (see open_run)."""
    import numpy as np

    from .data import concatenate, load_table, select_columns
    from .finetune import LabelInfo, class_report, encode_labels, predictions_from_logits
    from .metrics import classification_metric

    run = open_run(run_dir, prompt)
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
        from .prompting import predict_scores

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
