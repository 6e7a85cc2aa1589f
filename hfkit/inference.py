"""Predict with, or evaluate, a fine-tuned run directory: a full model, a PEFT adapter or a frozen backbone + head,
for classification (labels and scores) and token classification (entities or tags per word)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    task: str = "classification"
    config: object = None  # the run's FinetuneConfig (None for a plain model folder)
    data: object = field(default=None, repr=False)  # the run's LabelledDataConfig (defaults for a plain folder)


def load_run_columns(run_dir: str | Path) -> tuple[str, str | None]:
    """(text_column, text_pair_column) the run was trained with, from its hfkit.yaml (defaults: text, none)."""
    from .config import LabelledDataConfig, read_run_config

    cfg = read_run_config(run_dir)
    d = cfg.data if cfg is not None and hasattr(cfg.data, "text_pair_column") else LabelledDataConfig()
    return d.text_column, d.text_pair_column


def _base_model_path(run: Path) -> str:
    from peft import PeftConfig

    return PeftConfig.from_pretrained(str(run)).base_model_name_or_path


def load_prompt_run(run: Path, tokenizer, prompt=None) -> LoadedRun:
    """A cloze run (prompt.json): the LM (full weights, an adapter on the base, or the unchanged base model)."""
    from .prompting import Prompt, load_lm

    prompt = prompt or Prompt.load(run, tokenizer)
    base = prompt.extra.get("base_model")
    if (run / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_lm(_base_model_path(run), prompt.kind)[0], run)
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
    from .prompting import detect_kind, make_prompt, use_chat

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
    prompt = make_prompt(template, verbalizer, tokenizer, kind, max_length, extra={
        "method": "zero_shot", "base_model": path, "chat": use_chat("auto", tokenizer, kind)})
    run = load_prompt_run(Path(path), tokenizer, prompt)
    if calibrate:
        prompt.calibration = prompt.content_free_log_probs(run.model, tokenizer)
    return run


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load any fine-tuned run hfkit wrote (or a plain HF sequence- or token-classification folder)."""
    from transformers import AutoConfig, AutoTokenizer

    from .config import LabelledDataConfig, read_run_config
    from .heads import HEAD_CONFIG, load_frozen

    run = Path(run_dir)
    if not run.is_dir():
        raise ModelError(f"run directory '{run}' does not exist")
    cfg = read_run_config(run)
    if cfg is not None and hasattr(cfg, "objective"):
        raise ModelError(f"'{run}' is a pretraining run ({cfg.objective}); predict and evaluate take a fine-tuned run")
    if cfg is not None and cfg.task == "sft":  # a causal LM with its own tokenizer handling
        from .generation import load_causal_lm

        model, tokenizer = load_causal_lm(run)
        return LoadedRun(model=model, tokenizer=tokenizer, problem_type="causal_lm", id2label={}, task=cfg.task,
                         config=cfg, data=cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(run)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (run / "prompt.json").is_file():
        return load_prompt_run(run, tokenizer)
    task = cfg.task if cfg is not None else _plain_folder_task(run)
    if task == "token_classification":
        from transformers import AutoModelForTokenClassification as auto_cls
    else:
        from transformers import AutoModelForSequenceClassification as auto_cls
    if (run / HEAD_CONFIG).is_file():
        model = load_frozen(run)
        head = model.head_config
        problem_type, id2label = head["problem_type"], {int(k): v for k, v in head["id2label"].items()}
    elif (run / "adapter_config.json").is_file():
        from peft import PeftModel

        config = AutoConfig.from_pretrained(run)
        base = auto_cls.from_pretrained(_base_model_path(run), config=config)
        model = PeftModel.from_pretrained(base, run).eval()
        problem_type, id2label = config.problem_type, config.id2label
    elif (run / "config.json").is_file():
        model = auto_cls.from_pretrained(run).eval()
        problem_type, id2label = model.config.problem_type, model.config.id2label
    else:
        raise ModelError(f"'{run}' holds no model (no config.json, adapter_config.json or {HEAD_CONFIG}); "
                         "did the run finish?")
    if task == "token_classification":
        problem_type = "token_classification"
    elif problem_type is None:
        problem_type = "regression" if len(id2label) == 1 and "score" in id2label.values() else "single_label_classification"
    d = cfg.data if cfg is not None else LabelledDataConfig()
    return LoadedRun(model=model, tokenizer=tokenizer, problem_type=problem_type, id2label=dict(id2label),
                     text_column=d.text_column, text_pair_column=d.text_pair_column, label_column=d.label_column,
                     label_separator=d.label_separator, max_length=d.max_length, task=task, config=cfg, data=d)


def _plain_folder_task(run: Path) -> str:
    """A model folder without hfkit.yaml: its architecture says which head it has."""
    import json

    config = json.loads((run / "config.json").read_text(encoding="utf-8")) if (run / "config.json").is_file() else {}
    return "token_classification" if any(a.endswith("ForTokenClassification")
                                         for a in config.get("architectures") or []) else "classification"


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
    """One result per text, as the run's task writes it. Classification: {label, score, scores} (multi-label:
    `labels` over 0.5; regression: `score` only). Token classification: {entities: [{text, type, start, end,
    score}]} (a tag set that is not IOB: {words: [{text, tag, start, end, score}]}).
    `prompt`: classify zero-shot with a template and label words (see open_run)."""
    from .tasks import get_task

    if isinstance(texts, str):
        texts = [texts]
    if pairs is not None and len(pairs) != len(texts):
        raise DataError(f"{len(texts)} texts but {len(pairs)} pair texts; give one pair per text")
    run = open_run(run_dir, prompt)
    return get_task(run.task, run.config).predict(run, list(texts), pairs, batch_size)


def evaluate(run_dir: str | Path, data: str | list[str], batch_size: int = 32, prompt: dict | None = None) -> dict:
    """Metrics of a run on labelled data (same file forms and metrics as training), with the columns the run was
    trained on. `prompt`: evaluate a model zero-shot with a template and label words (see open_run)."""
    from .tasks import get_task

    run = open_run(run_dir, prompt)
    return get_task(run.task, run.config).evaluate(run, data, batch_size)


def predict_file(run_dir: str | Path, path: str, output: str | Path | None = None, *, batch_size: int = 32,
                 chunk_rows: int | None = None, resume: bool = False, overwrite: bool = False,
                 prompt: dict | None = None, progress: bool = True, emit=None) -> dict:
    """Predict every row of a file of any size (csv, tsv, jsonl, json, parquet, txt) into `output` (.jsonl or
    .parquet, one record per row in input order: {"text", ...the task's result}), a chunk at a time, resumable
    (`resume=True`) and shared between processes under torchrun / accelerate launch (see hfkit.batch). Without
    `output`, each chunk's records go to `emit`. Returns {rows, predicted, seconds, rows_per_second, output}."""
    from .batch import CHUNK_ROWS, input_format, place, run_file, text_of
    from .tasks import get_task

    fmt = input_format(path)
    run = open_run(run_dir, prompt)
    run.model = place(run.model)
    task = get_task(run.task, run.config)
    column = "text" if fmt == "text" else run.text_column
    pair_column = run.text_pair_column

    def predict_chunk(rows: list[dict], k: int) -> list[dict]:
        col = column if column in rows[0] or "text" not in rows[0] else "text"  # a file may name it `text`
        texts = [text_of(r, col, path) for r in rows]
        pairs = [text_of(r, pair_column, path) for r in rows] if pair_column else None
        results = task.predict(run, texts, pairs, batch_size)
        if pairs is None:
            return [{"text": t, **r} for t, r in zip(texts, results)]
        return [{"text": t, "text_pair": p, **r} for t, p, r in zip(texts, pairs, results)]

    return run_file(path, output, predict_chunk, run_dir, {"kind": "predict", "prompt": prompt}, chunk_rows=chunk_rows or CHUNK_ROWS, resume=resume,
                    overwrite=overwrite, progress=progress, emit=emit)
