"""The fine-tuning recipe, the same for every task and method.

    tokenizer -> labelled data (task) -> tokens (task) -> model with the task's head -> method -> Trainer -> train
    -> evaluate -> save

A task (`hfkit/tasks/`) says what the data, head, collator, metrics and model card are; a method (`methods.py`)
says which weights learn. This module only calls them, in order.
"""

from __future__ import annotations

import time
from pathlib import Path

from .checkpoints import holds_output_dir
from .config import FinetuneConfig, save_yaml
from .errors import ConfigError, ModelError
from .flops import mfu_metrics, run_dtype
from .methods import METHODS
from .models import base_dtype, count_parameters, resolve_model_path, upcast_trainable
from .tasks import Task, get_task
from .training import (RunResult, claim_output_dir, finish_run, finite_or_none, fsdp_units, log, padding_fraction,
                       ranks_in_sync, run_stats, start_run, steps_this_session, training_arguments)


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


def check_method(cfg: FinetuneConfig, task: Task) -> None:
    if cfg.method not in task.methods:
        raise ConfigError(f"method {cfg.method}: not available for task {task.name}; use one of "
                          f"{', '.join(sorted(task.methods))}")


def build_trainer(cfg: FinetuneConfig, task: Task, info, model, tokenizer, encoded, collator):
    from transformers import EarlyStoppingCallback, Trainer

    trainer_cls = task.trainer_class(cfg, info) or Trainer
    has_eval = "validation" in encoded
    t = cfg.train
    extra: dict = {}
    if has_eval and t.load_best:
        extra = dict(load_best_model_at_end=True, metric_for_best_model=t.metric_for_best,
                     greater_is_better=t.metric_for_best not in ("mse", "mae", "loss", "eval_loss"))
    args_class, task_extra = task.training_arguments(cfg, info)
    args = training_arguments(t, cfg.output_dir, has_eval=has_eval, save_with_eval=True, remove_unused_columns=False,
                              args_class=args_class, **extra, **task_extra)
    callbacks = [EarlyStoppingCallback(t.early_stopping_patience)] if has_eval and t.early_stopping_patience else []
    fsdp_units(model)
    return trainer_cls(model=model, args=args, train_dataset=encoded.get("train"),
                       compute_loss_func=task.loss_function(cfg, info),
                       eval_dataset=encoded.get("validation"), data_collator=collator, processing_class=tokenizer,
                       compute_metrics=task.compute_metrics(cfg, info, "validation") if has_eval else None,
                       callbacks=callbacks)


def choose_metric(cfg: FinetuneConfig, task: Task, info, has_validation: bool) -> None:
    """train.metric_for_best, when not set: the task's choice for this data (e.g. macro-F1 for unbalanced classes)."""
    if cfg.train.metric_for_best is None:
        cfg.train.metric_for_best, why = task.select_metric(cfg, info)
        if has_validation:
            log(f"model selection: the checkpoint with the best eval {cfg.train.metric_for_best} is kept ({why})")


def optimization(trainer, cfg: FinetuneConfig, resume_from: str | None = None, find_only: bool = False) -> dict:
    """optim.set_up_optimization with the method's rules for learning_rate auto (its default rate, for a flat
    range-test curve, and its divisor); nothing for a solved head, which has no rate. metrics.json entries."""
    from .config import DEFAULT_LEARNING_RATES
    from .optim import set_up_optimization  # imports torch: not at module level (hfkit --help stays light)

    if cfg.head_solved:
        if find_only:
            raise ConfigError("--find-lr: a linear frozen head on cached features is solved (frozen.solver auto), "
                              "with no learning rate; use frozen.solver=sgd or frozen.head=mlp to train it by rate")
        return {}
    return set_up_optimization(trainer, cfg, resume_from=resume_from, find_only=find_only,
                               default_rate=DEFAULT_LEARNING_RATES[cfg.adaptation],
                               divisor=METHODS[cfg.adaptation].lr_find_divisor)


def preview(cfg: FinetuneConfig, n: int) -> str:
    """The first n training examples as the task encodes them, what trains marked (task sft); writes nothing."""
    task = get_task(cfg.task, cfg)
    check_method(cfg, task)
    if n < 1:
        raise ConfigError(f"--preview: {n} examples; give a number >= 1")
    tokenizer = load_tokenizer_for(cfg)
    splits, info = task.load_data(cfg, tokenizer)
    return task.preview(splits, tokenizer, cfg, info, n)


def run(cfg: FinetuneConfig, find_lr: bool = False) -> RunResult:
    task, method = get_task(cfg.task, cfg), METHODS[cfg.adaptation]
    check_method(cfg, task)
    task.check_supported(cfg)
    resume_from, state, recipe = start_run(cfg, cfg.model.path)
    with state.main_process_first():  # the main process reads and tokenizes first; the others reuse its cache
        tokenizer = load_tokenizer_for(cfg)
        splits, info = task.load_data(cfg, tokenizer)
        encoded = task.encode(splits, tokenizer, cfg, info)
    log(task.describe(splits, info))
    choose_metric(cfg, task, info, has_validation="validation" in splits)
    model, fresh = getattr(task, method.model_builder)(cfg, tokenizer, info)
    if fresh:
        log(f"initialised here (not in the checkpoint): {', '.join(fresh)}")
    model = upcast_trainable(method.apply(model, cfg, task.peft_task_type(cfg, info), fresh), cfg)
    trainable, total = count_parameters(model)
    log(f"method {cfg.method}{task.method_note(cfg)}: {trainable:,} of {total:,} parameters train "
        f"({100 * trainable / total:.2f}%)")
    lengths = [len(ids) for ids in encoded["train"]["input_ids"]] if "train" in encoded else []
    encoded, collator, cached = method.prepare(model, encoded, task.collator(tokenizer, cfg, info), cfg, log)

    if find_lr:
        found = optimization(build_trainer(cfg, task, info, model, tokenizer, encoded, collator), cfg, find_only=True)
        return RunResult(output_dir=Path(cfg.output_dir), metrics=found, config=cfg)
    if state.is_main_process:
        claim_output_dir(cfg.output_dir, overwrite=cfg.train.overwrite, resume_from=resume_from)
    trainer = build_trainer(cfg, task, info, model, tokenizer, encoded, collator)
    lengths, packed = trained_rows(trainer, encoded, lengths, cfg)
    found = optimization(trainer, cfg, resume_from)
    if state.is_main_process:
        save_yaml(cfg, Path(cfg.output_dir) / "hfkit.yaml")
    start = time.perf_counter()
    train_output = method.train(trainer, cfg, resume_from, recipe)
    wall = time.perf_counter() - start
    metrics = {"method": cfg.method, **task.run_facts(cfg), "features_cached": cached, **found,
               "metric_for_best": cfg.train.metric_for_best}
    metrics.update(run_metrics(cfg, task, info, trainer, train_output, encoded, model=model, wall=wall,
                               resume_from=resume_from, lengths=lengths, per_token=not cached, packed=packed))

    def save(final, state_dict, folder):
        task.save(cfg, info, final, tokenizer, folder, state_dict)

    finish_run(trainer, cfg.output_dir, save=save, metrics=metrics, card=task.card(cfg, info, cfg.output_dir),
               plot_metric=f"eval_{cfg.train.metric_for_best}")
    return RunResult(output_dir=Path(cfg.output_dir), metrics=metrics, config=cfg)


run = holds_output_dir(run)  # the output_dir lock (start_run) is released however run ends


def trained_rows(trainer, encoded, lengths: list[int], cfg: FinetuneConfig) -> tuple[list[int], bool]:
    """(token count of each row the trainer trains on, whether it packed them): a packing trainer (TRL's) turned
    the encoded examples into fewer, unpadded rows of several examples each."""
    if not (getattr(trainer, "padding_free", False) and lengths):
        return lengths, False
    rows = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    log(f"packing: {len(encoded['train']):,} examples in {len(rows):,} rows of up to {cfg.data.max_length} tokens")
    return rows, True


def run_metrics(cfg: FinetuneConfig, task: Task, info, trainer, train_output, encoded, *, model, wall: float,
                resume_from: str | None, lengths: list[int], per_token: bool = True, packed: bool = False) -> dict:
    """metrics.json of a fine-tuning run: the Trainer's, evaluation (and test) metrics with the task's report from one
    prediction pass each, parameter counts, throughput, and (per_token: the model ran on every token trained)
    padding fraction and MFU."""
    metrics: dict = {}
    if train_output is not None:
        metrics.update({k: v for k, v in train_output.metrics.items() if isinstance(v, (int, float))})
        metrics["train_loss"] = finite_or_none(train_output.training_loss)
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split not in encoded:
            continue
        if task.loss_only:  # the loss alone: no logits gathered
            output = found = trainer.evaluate(encoded[split], metric_key_prefix=prefix)
        else:
            trainer.compute_metrics = task.compute_metrics(cfg, info, split)
            output = trainer.predict(encoded[split], metric_key_prefix=prefix)  # metrics and logits in one pass
            found = output.metrics
        metrics.update({k: v for k, v in found.items() if isinstance(v, (int, float))})
        metrics[f"{prefix}_samples"] = len(encoded[split])
        metrics.update({f"{prefix}_{k}": v for k, v in task.report(cfg, info, output, split).items()})
    trainable, total = count_parameters(model)
    metrics.update(trainable_params=trainable, total_params=total, trainable_fraction=trainable / total,
                   global_step=trainer.state.global_step, train_wall_seconds=round(wall, 3),
                   world_size=trainer.args.world_size, base_dtype=base_dtype(cfg),
                   weights_mb=round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1))
    if train_output is None:
        return metrics
    mean_tokens = sum(lengths) / max(len(lengths), 1)
    metrics.update(seen_stats(trainer, resume_from, len(lengths), mean_tokens, wall))
    if per_token:
        metrics["train_padding_fraction"] = 0.0 if packed else padding_fraction(
            lengths, cfg.train.batch_size, cfg.train.group_by_length, cfg.train.seed)
        metrics.update(mfu_metrics(model, mean_tokens, metrics["train_tokens_per_second"], trainer.args.world_size,
                                   cfg.train.peak_tflops, run_dtype(trainer.args)))
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
