"""hfkit: pretrain and fine-tune transformer models with the Hugging Face stack.

Python API (each call never exits the interpreter; errors raise `hfkit.HfkitError` subclasses):

    import hfkit
    result = hfkit.pretrain("recipes/pretrain/bert-mlm-tiny.yaml", output_dir="runs/demo", train={"max_steps": 50})
    result.output_dir, result.metrics["perplexity"]

Overrides are keyword arguments: a section as a dict (`train={"max_steps": 50}`), or one dotted key
(`**{"train.max_steps": 50}`, or `train__max_steps=50`). Importing hfkit imports neither torch nor transformers.
"""

from __future__ import annotations

# The submodule is imported before the function of the same name is defined, so that `hfkit.pretrain` is the
# function (the import system sets the package attribute only on a module's first load). It imports no torch.
from . import pretrain as _pretrain_module
from .config import DataConfig, MLMConfig, ModelConfig, PretrainConfig, TokenizerConfig, TrainConfig, resolve
from .errors import ConfigError, DataError, HfkitError, ModelError, OutputDirError
from .training import RunResult

__version__ = "0.1.0"


def load_config(kind: str, recipe=None, **overrides):
    """The validated config that `kind` ("pretrain") would run, without running it."""
    return resolve(kind, recipe, overrides)


def pretrain(recipe=None, **overrides) -> RunResult:
    """Pretrain (masked-LM or causal-LM) from a recipe path, dict or PretrainConfig, with overrides."""
    return _pretrain_module.run(resolve("pretrain", recipe, overrides))


__all__ = ["pretrain", "load_config", "resolve", "RunResult", "PretrainConfig", "ModelConfig", "TokenizerConfig",
           "DataConfig", "MLMConfig", "TrainConfig", "HfkitError", "ConfigError", "DataError", "ModelError",
           "OutputDirError", "__version__"]
