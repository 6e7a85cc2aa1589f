"""hfkit: pretrain and fine-tune transformer models with the Hugging Face stack.

Python API (each call never exits the interpreter; errors raise `hfkit.HfkitError` subclasses):

    import hfkit
    result = hfkit.pretrain("recipes/pretrain/bert-mlm-tiny.yaml", output_dir="runs/demo", train={"max_steps": 50})
    result.output_dir, result.metrics["perplexity"]
    clf = hfkit.finetune("classification-lora", model={"path": "runs/demo"}, data={"train": "train.csv"})
    hfkit.predict(clf.output_dir, ["a great film"])

Overrides are keyword arguments: a section as a dict (`train={"max_steps": 50}`), or one dotted key
(`**{"train.max_steps": 50}`, or `train__max_steps=50`). Importing hfkit imports neither torch nor transformers.
"""

from __future__ import annotations

import types as _types

from . import compare as _compare_module
from . import finetune as _finetune_module
from . import pretrain as _pretrain_module
from .config import (DataConfig, FinetuneConfig, FrozenConfig, LabelledDataConfig, LoraConfig, MLMConfig, ModelConfig,
                     PretrainConfig, PromptConfig, SoftPromptConfig, TokenizerConfig, TrainConfig, resolve)
from .errors import ConfigError, DataError, HfkitError, ModelError, OutputDirError
from .training import RunResult

__version__ = "0.1.0"


def load_config(kind: str, recipe=None, **overrides):
    """The validated config that `kind` ("pretrain") would run, without running it."""
    return resolve(kind, recipe, overrides)


def _pretrain(recipe=None, find_lr: bool = False, **overrides) -> RunResult:
    """Pretrain (masked-LM or causal-LM) from a recipe path, dict or PretrainConfig, with overrides. find_lr=True
    only runs the learning-rate range test (metrics["learning_rate_found"], output_dir/lr_find.png)."""
    return _pretrain_module.run(resolve("pretrain", recipe, overrides), find_lr=find_lr)


def _finetune(recipe=None, find_lr: bool = False, **overrides) -> RunResult:
    """Fine-tune for a task (classification, token_classification) by a method (full, frozen, lora, prompt_tuning,
    prefix_tuning, p_tuning, ia3; for classification also as a cloze with prompt.template / prompt.verbalizer: pet
    trains it, zero_shot only evaluates it). find_lr=True only runs the learning-rate range test
    (metrics["learning_rate_found"], output_dir/lr_find.png)."""
    return _finetune_module.run(resolve("finetune", recipe, overrides), find_lr=find_lr)


def _compare(recipe, methods, models=None, output_dir=None, launcher=None, overwrite=False, skip=None, seeds=1,
             **overrides) -> list[dict]:
    """Run the recipe's task through each method (and model: 'PATH', 'LABEL=PATH', 'LABEL=random:PATH'), each
    as its own `hfkit finetune` process (`seeds` times each); returns the run rows (also in
    output_dir/comparison.json, with each cell's mean and spread under "cells" when seeds > 1)."""
    from .config import flatten_overrides

    if isinstance(methods, str):
        methods = methods.split(",")
    return _compare_module.compare(recipe, list(methods), models, flatten_overrides(overrides), output_dir, launcher,
                                   overwrite, skip, seeds)


def _callable(module, function) -> None:
    """Make the recipe module callable as the API function, so that `hfkit.finetune(...)` runs a recipe and
    `import hfkit.finetune` still gives the module (a function of the same name would shadow it)."""
    module.__class__ = type(f"{module.__name__.rsplit('.', 1)[-1].title()}Module", (_types.ModuleType,),
                            {"__call__": lambda self, *args, **kwargs: function(*args, **kwargs),
                             "__doc__": function.__doc__})


_callable(_pretrain_module, _pretrain)
_callable(_finetune_module, _finetune)
_callable(_compare_module, _compare)
pretrain, finetune, compare = _pretrain_module, _finetune_module, _compare_module


def predict(run_dir, texts, pairs=None, batch_size: int = 32, prompt: dict | None = None) -> list[dict]:
    """Labels and scores from a fine-tuned run directory (full model, adapter, frozen head or cloze run alike).
    With prompt={"template": ..., "verbalizer": {...}}, `run_dir` may be any masked/causal LM: zero-shot."""
    from .inference import predict as _predict

    return _predict(run_dir, texts, pairs, batch_size, prompt)


def predict_file(run_dir, path, output=None, **options) -> dict:
    """Predict every row of a file of any size (csv, tsv, jsonl, json, parquet, txt) into `output` (.jsonl or
    .parquet, input order), a chunk at a time: memory stays flat, `resume=True` continues a stopped job, and under
    torchrun / accelerate launch the processes share the work. Options: batch_size, chunk_rows, resume,
    overwrite, prompt, progress. Returns {rows, predicted, seconds, rows_per_second, output}."""
    from .inference import predict_file as _predict_file

    return _predict_file(run_dir, str(path), output, **options)


def generate_file(run_dir, path, output=None, **options) -> dict:
    """Answer every prompt of a file (its `column`, default "prompt", or each line of a .txt) with a causal LM into
    `output` ({"prompt", "text"} per row), in batches, resumable like predict_file. Options: column, system,
    max_new_tokens, temperature, top_p, seed, stop, batch_size, chunk_rows, resume, overwrite, progress."""
    from .generation import generate_file as _generate_file

    return _generate_file(run_dir, str(path), output, **options)


def evaluate(run_dir, data, batch_size: int = 32, prompt: dict | None = None) -> dict:
    """Metrics of a fine-tuned run on labelled data (a file, folder, glob, list or builtin:NAME); with `prompt`,
    of any masked/causal LM used zero-shot as a cloze classifier."""
    from .inference import evaluate as _evaluate

    return _evaluate(run_dir, data, batch_size, prompt)


__all__ = ["pretrain", "finetune", "compare", "predict", "predict_file", "generate_file", "evaluate", "load_config", "FinetuneConfig", "LabelledDataConfig",
           "FrozenConfig", "LoraConfig", "SoftPromptConfig", "PromptConfig", "resolve", "RunResult", "PretrainConfig", "ModelConfig", "TokenizerConfig",
           "DataConfig", "MLMConfig", "TrainConfig", "HfkitError", "ConfigError", "DataError", "ModelError",
           "OutputDirError", "__version__"]
