"""Fine-tuning tasks, each behind the same seam (`Task`), found by name in `TASKS`.

A task owns what is specific to it: reading and checking its data, its labels, the model head and PEFT task type,
the collator, metrics, what a prediction looks like, and the run's model card. A method (`hfkit/methods.py`) owns
how the model is adapted and works for every task that lists it in `methods`. `finetune.run` calls only this
interface, so a new task is one module here and one line in TASKS.

Importing this package (or a task module) imports neither torch nor transformers: `hfkit --help` and config
validation stay fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# name -> "module:class" of the Task, imported on first use.
TASKS: dict[str, str] = {
    "classification": "hfkit.tasks.classification:Classification",
    "token_classification": "hfkit.tasks.token_classification:TokenClassification",
    "sft": "hfkit.tasks.sft:SupervisedFineTuning",
}


def get_task(name: str, cfg=None) -> "Task":
    """A new instance of the task for `cfg` (one per run: a task may keep what it learns about its splits while
    encoding; a task may pick its head from the config, e.g. classification's cloze head)."""
    from ..errors import ConfigError

    if name not in TASKS:
        raise ConfigError(f"task: unknown task '{name}'; choose one of {', '.join(TASKS)}")
    module, attribute = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attribute).for_config(cfg)


class Task:
    """The interface `finetune.run` relies on. `info` is the task's label description (from `load_data`)."""

    name: str = ""
    title: str = ""  # for the model card, e.g. "token classification"
    methods: frozenset[str] = frozenset()  # the methods this task allows
    default_metric: str = "accuracy"  # metric_for_best when the config does not name one
    loss_only: bool = False  # evaluation computes the loss only (no logits gathered; `report` gets the metrics dict)
    pooled_features: bool = False  # one feature vector per example: a frozen linear head on them is solved (solver.py)

    @classmethod
    def for_config(cls, cfg) -> "Task":
        return cls()

    # ---- configuration
    def validate(self, cfg) -> list[str]:
        """Problems with the task-specific settings of a FinetuneConfig, each naming its key."""
        return []

    def metric_for_best(self, cfg) -> str:
        return self.default_metric

    def select_metric(self, cfg, info) -> tuple[str, str]:
        """(metric that picks the best checkpoint, why), once the data is known; train.metric_for_best wins."""
        return self.metric_for_best(cfg), "the task's measure"

    def loss_function(self, cfg, info):
        """A Trainer compute_loss_func replacing the model's own loss (e.g. class-weighted), or None."""
        return None

    def check_supported(self, cfg) -> None:
        """Refuse, before any data is read, what the installed libraries cannot do (raise ConfigError)."""

    # ---- data
    def load_data(self, cfg, tokenizer):
        """(DatasetDict of train / validation / test with raw inputs and a `labels` column, info)."""
        raise NotImplementedError

    def describe(self, splits, info) -> str:
        """One log line about the data."""
        raise NotImplementedError

    def encode(self, splits, tokenizer, cfg, info):
        """Tokenized splits: model inputs and `labels`."""
        raise NotImplementedError

    def collator(self, tokenizer, cfg, info):
        raise NotImplementedError

    # ---- model
    def peft_task_type(self, cfg, info) -> str:
        """PEFT's TaskType name for this task's model (SEQ_CLS, TOKEN_CLS, CAUSAL_LM, ...)."""
        raise NotImplementedError

    def build_model(self, cfg, tokenizer, info):
        """(model with the task's head, names of the modules the checkpoint did not have)."""
        raise NotImplementedError

    def build_frozen_model(self, cfg, tokenizer, info):
        """A frozen backbone + trainable head (`heads.py`), for method frozen."""
        raise NotImplementedError

    def trainer_class(self, cfg, info):
        """The Trainer subclass to use (None: transformers.Trainer)."""
        return None

    def training_arguments(self, cfg, info) -> tuple[type | None, dict]:
        """(the TrainingArguments subclass the trainer needs or None, extra settings for it)."""
        return None, {}

    def preview(self, splits, tokenizer, cfg, info, n: int) -> str:
        """`hfkit finetune --preview N`: the first n encoded training examples as text, what trains marked."""
        from ..errors import ConfigError

        raise ConfigError(f"--preview: shows how task sft masks conversations; task {self.name} has no preview")

    # ---- evaluation and output
    def compute_metrics(self, cfg, info, split: str):
        """compute_metrics for the Trainer on the encoded `split` (validation during training)."""
        raise NotImplementedError

    def report(self, cfg, info, output, split: str) -> dict:
        """Extra metrics.json entries (key -> value, prefixed with the split's metric prefix) from a prediction pass
        (a transformers PredictionOutput; for a loss_only task, the evaluation's metrics dict) on `split`: the per-class report..."""
        return {}

    def method_note(self, cfg) -> str:
        """Said after the method's name in the log, e.g. " (lora)" for a cloze trained through LoRA."""
        return ""

    def run_facts(self, cfg) -> dict:
        """Task facts recorded in metrics.json beside the method."""
        return {}

    def save(self, cfg, info, model, tokenizer, folder, state_dict=None) -> None:
        """The run's final model in `folder`: tokenizer, then the model or its PEFT adapter with the labelled base
        config beside it; `lora.merge` adds folder/merged. `state_dict`: the full weights gathered from sharded
        ranks (FSDP, ZeRO-3)."""
        from ..methods import METHODS
        from ..training import log

        folder = Path(folder)
        tokenizer.save_pretrained(folder)
        model.save_pretrained(folder, state_dict=state_dict)
        method = METHODS[cfg.adaptation]
        if not method.peft:
            return
        model.get_base_model().config.save_pretrained(folder)  # the labels, for loading the adapter with peft
        if cfg.lora.merge and method.mergeable and state_dict is not None:
            log("lora.merge: skipped, the weights were sharded across processes; merge the saved adapter with "
                "peft's merge_and_unload after the run")
        elif cfg.lora.merge and method.mergeable:
            merged = model.merge_and_unload()
            merged.save_pretrained(folder / "merged")
            tokenizer.save_pretrained(folder / "merged")

    def card(self, cfg, info, output_dir: str) -> tuple[str, list[str], str]:
        """(title, bullet lines, load snippet) of the run's README.md."""
        raise NotImplementedError
