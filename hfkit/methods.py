"""Fine-tuning methods: how the model is adapted, for every task that allows the method.

A method is a `Method` in `METHODS`: `apply(model, cfg, task_type, fresh) -> model` makes the right weights
trainable (or wraps the model with a PEFT adapter of PEFT TaskType `task_type`); `fresh` names the modules the
checkpoint did not have (e.g. BERT's pooler after MLM pretraining), which an adapter must train and save too.
`frozen` builds the task's frozen-backbone model instead of its usual one; when no backbone layer trains, its
features are computed once (`prepare`) and the head trains on them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

from .errors import ConfigError


def apply_full(model, cfg, task_type, fresh):
    for p in model.parameters():
        p.requires_grad = True
    return model


def apply_frozen(model, cfg, task_type, fresh):
    model.freeze_backbone(unfreeze_last=cfg.frozen.unfreeze_last)
    if cfg.frozen.unfreeze_schedule != "none":
        model.backbone_frozen = False  # layers will train (optim.gradual_unfreezing): dropout on, as in training
    return model


def linear_module_names(model) -> list[str]:
    """Leaf names of the linear layers (nn.Linear, GPT-2's Conv1D) that LoRA can adapt."""
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


HEADS = ("classifier", "score")  # the classification heads of transformers' models, which PEFT saves whole


def _extra_modules(fresh: list[str]) -> list[str] | None:
    """Fresh modules beyond the classifier, which PEFT's classification task types already save."""
    extra = [name for name in fresh if name.rsplit(".", 1)[-1] not in HEADS]
    return extra or None


def _peft(model, config):
    from peft import get_peft_model

    return get_peft_model(model, config)


def apply_lora(model, cfg, task_type, fresh):
    from peft import LoraConfig

    targets = cfg.lora.target_modules
    if targets:
        available = linear_module_names(model)
        missing = [t for t in targets if t not in available]
        if missing:
            raise ConfigError(f"lora.target_modules: {', '.join(missing)} not in this model; its linear layers are "
                              f"{', '.join(available)}")
    # The task's head is trained whole (PEFT saves it as a module to save); "all-linear" would also put LoRA on a
    # token classifier, which PEFT then refuses to save whole. (For sequence classifiers PEFT already leaves the head
    # out and warns that the exclusion matched nothing: that warning says nothing to a user.)
    config = LoraConfig(task_type=task_type, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                        target_modules=targets or "all-linear", exclude_modules=None if targets else list(HEADS),
                        modules_to_save=_extra_modules(fresh))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*but no modules were excluded", category=UserWarning)
        return _peft(model, config)


def apply_prompt_tuning(model, cfg, task_type, fresh):
    from peft import PromptTuningConfig, PromptTuningInit

    from .models import resolve_model_path

    s = cfg.soft_prompt
    init = {}
    if s.init_text:
        init = dict(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=s.init_text,
                    tokenizer_name_or_path=resolve_model_path(cfg.tokenizer.path or cfg.model.path))
    return _peft(model, PromptTuningConfig(task_type=task_type, num_virtual_tokens=s.num_virtual_tokens,
                                           modules_to_save=_extra_modules(fresh), **init))


def apply_prefix_tuning(model, cfg, task_type, fresh):
    from peft import PrefixTuningConfig

    return _peft(model, PrefixTuningConfig(task_type=task_type, num_virtual_tokens=cfg.soft_prompt.num_virtual_tokens,
                                           modules_to_save=_extra_modules(fresh)))


def apply_p_tuning(model, cfg, task_type, fresh):
    from peft import PromptEncoderConfig

    s = cfg.soft_prompt
    return _peft(model, PromptEncoderConfig(task_type=task_type, num_virtual_tokens=s.num_virtual_tokens,
                                            encoder_hidden_size=s.encoder_hidden_size,
                                            modules_to_save=_extra_modules(fresh)))


def apply_ia3(model, cfg, task_type, fresh):
    from peft import IA3Config

    return _peft(model, IA3Config(task_type=task_type, modules_to_save=_extra_modules(fresh)))


def apply_none(model, cfg, task_type, fresh):
    """zero_shot: nothing trains."""
    for p in model.parameters():
        p.requires_grad = False
    return model


def keep_inputs(model, encoded, collator, cfg, log):
    """(encoded, collator, features_cached) unchanged: the model reads tokens."""
    return encoded, collator, False


def cache_features(model, encoded, collator, cfg, log):
    """(encoded, collator, features_cached): when the backbone is frozen whole, its features, computed once, replace
    the tokens (heads.extract_features) and the head trains on them."""
    if not cfg.features_cached:
        return encoded, collator, False
    from .heads import extract_features, feature_collator

    cfg.train.group_by_length = False  # cached features need no grouping by length
    start = time.perf_counter()
    encoded = extract_features(model, encoded, collator, batch_size=cfg.train.eval_batch_size or 64)
    log(f"frozen backbone: features computed once in {time.perf_counter() - start:.1f}s; the head trains on them")
    return encoded, feature_collator, True


def fit(trainer, cfg, resume_from, recipe=None):
    """Train (resumable, stopped safely on a signal or a non-finite loss); the Trainer's TrainOutput. `recipe`: the
    config as the run started (checkpoints record it)."""
    from .training import train_safely

    return train_safely(trainer, resume_from, cfg.output_dir, config=recipe)


def fit_frozen(trainer, cfg, resume_from, recipe=None):
    """A linear head on cached pooled features is solved (solver.py); any other frozen head trains by epochs."""
    if cfg.head_solved:
        from .solver import solve_frozen_head

        return solve_frozen_head(trainer, cfg)
    return fit(trainer, cfg, resume_from, recipe)


def no_training(trainer, cfg, resume_from, recipe=None):
    return None


@dataclass(frozen=True)
class Method:
    name: str
    apply: Callable
    peft: bool = False
    model_builder: str = "build_model"  # the Task method that builds the model this method adapts
    prepare: Callable = keep_inputs  # what the model reads: tokens, or features computed once
    train: Callable = fit  # zero_shot evaluates only
    mergeable: bool = False  # lora.merge can fold the adapter into the base weights
    lr_find_divisor: float = 10.0  # learning_rate auto: the range test's lowest-loss rate / this (optim.suggest_rate)

    @property
    def frozen_backbone(self) -> bool:
        return self.model_builder == "build_frozen_model"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("full", apply_full),
    Method("frozen", apply_frozen, model_builder="build_frozen_model", prepare=cache_features, train=fit_frozen),
    Method("lora", apply_lora, peft=True, mergeable=True, lr_find_divisor=2.0),
    Method("prompt_tuning", apply_prompt_tuning, peft=True),
    Method("prefix_tuning", apply_prefix_tuning, peft=True),
    Method("p_tuning", apply_p_tuning, peft=True),
    Method("ia3", apply_ia3, peft=True, mergeable=True),
    Method("zero_shot", apply_none, train=no_training),
)}
PEFT_METHODS = {name for name, m in METHODS.items() if m.peft}


# --------------------------------------------------------------------------------------------- prefix tuning check
def prefix_tuning_problem(head_cls, backbone_cls) -> str | None:
    """Why the installed PEFT cannot prefix-tune `head_cls`, or None when it can.

    PEFT (0.21) hands the prefix to the head's forward as `past_key_values`, or else to its backbone's, and looks
    for that parameter by name. transformers 5.24 renamed it `cache` in BERT, RoBERTa, GPT-2 and Llama, so there
    PEFT raises at the first forward pass ("Model does not support past key values"). This is PEFT's own test,
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


def check_prefix_tuning(cfg, head_mapping: str) -> None:
    """Refuse prefix tuning, before any data or weights are read, when the installed libraries cannot apply it to
    the model's `head_mapping` class (a transformers auto mapping name, e.g. MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING)."""
    if cfg.method != "prefix_tuning":
        return
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto

    from .models import resolve_model_path

    m = cfg.model
    try:
        config = AutoConfig.from_pretrained(resolve_model_path(m.path), revision=m.revision,
                                            trust_remote_code=m.trust_remote_code)
        head_cls = getattr(modeling_auto, head_mapping)[type(config)]
    except (OSError, ValueError, KeyError):
        return  # a bad path or an unknown architecture: loading the model reports it
    mapping = modeling_auto.MODEL_MAPPING
    problem = prefix_tuning_problem(head_cls, mapping[type(config)] if type(config) in mapping else None)
    if problem:
        raise ConfigError(problem)
