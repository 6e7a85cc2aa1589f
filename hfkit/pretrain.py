"""Pretraining by any objective in hfkit/objectives/ (masked-LM, causal-LM, ELECTRA), from a preset or continued
from a checkpoint.

    tokenizer -> data -> model -> collator -> Trainer -> train -> save

Each step is a function you can call alone; `run(cfg)` strings them together. What differs between objectives
(the model, collator, extra metrics, what the run directory holds) is the objective's; this module calls only its
interface.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .checkpoints import holds_output_dir
from .config import PretrainConfig, save_yaml
from .errors import ModelError
from .flops import mfu_metrics, run_dtype
from .models import PRESETS, count_parameters, resolve_model_path
from .objectives import get_objective
from .training import (RunResult, claim_output_dir, finish_run, finite_or_none, fsdp_units, log, ranks_in_sync,
                       run_stats, shared_folder, start_run, steps_this_session, train_safely, training_arguments)


# --------------------------------------------------------------------------------------------- steps
def build_tokenizer(cfg: PretrainConfig, train_texts, resume_from: str | None = None, state=None):
    """The tokenizer: from a checkpoint being resumed, tokenizer.path, model.path, or trained on the corpus.

    In a multi-process run only the main process trains one (the others would do the same work); the others load
    it from a shared folder, which `run` lets them reach after the main process.
    """
    from .tokenizer import choose_algorithm, ensure_special_tokens, load_tokenizer, train_tokenizer

    m, t = cfg.model, cfg.tokenizer
    if resume_from and (Path(resume_from) / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(resume_from)
    elif t.path or m.path:
        tokenizer = load_tokenizer(resolve_model_path(t.path or m.path), revision=m.revision,
                                   trust_remote_code=m.trust_remote_code)
    elif state is not None and state.num_processes > 1 and not state.is_main_process:
        tokenizer = load_tokenizer(str(shared_folder(cfg.output_dir, "tokenizer")))
    else:
        spec = PRESETS[m.preset]
        algorithm = choose_algorithm(t.type, spec["tokenizer"])
        if cfg.data.streaming:
            from .streaming import tokenizer_sample

            texts, n = tokenizer_sample(train_texts, t.max_documents)
            log(f"training a {algorithm} tokenizer (vocab {t.vocab_size}) on up to the stream's first {n:,} documents")
        else:
            rows = train_texts if t.max_documents is None else \
                train_texts.select(range(min(t.max_documents, len(train_texts))))
            texts = rows["text"]  # a column: read lazily, and more than once by the WordPiece trainer
            log(f"training a {algorithm} tokenizer (vocab {t.vocab_size}) on {len(rows):,} documents")
        if algorithm == "unigram":
            log("note: Unigram training is not reproducible across processes (the tokenizers library's trainer); "
                "set tokenizer.path to reuse one tokenizer across runs")
        tokenizer = train_tokenizer(texts, kind=spec["kind"], family=spec["family"],
                                    algorithm=algorithm, vocab_size=t.vocab_size, min_frequency=t.min_frequency,
                                    lowercase=t.lowercase, model_max_length=cfg.data.block_size)
        if state is not None and state.num_processes > 1:
            # The other ranks load this copy. A trained tokenizer comes back from save + load unchanged, so every
            # rank has the same cache key and rank 0 saves the files a one-process run saves (no load-time keys).
            tokenizer.save_pretrained(shared_folder(cfg.output_dir, "tokenizer"))
    ensure_special_tokens(tokenizer, get_objective(cfg.objective).kind)
    return tokenizer


def build_model(cfg: PretrainConfig, tokenizer):
    """What the objective trains: a fresh model from model.preset, or the checkpoint at model.path with its head."""
    return get_objective(cfg.objective).build_model(cfg, tokenizer)


def build_datasets(cfg: PretrainConfig, corpus, tokenizer):
    lm = get_objective(cfg.objective).build_datasets(cfg, corpus, tokenizer, log)
    for split, ds in lm.items():
        log(f"{split}: {len(ds):,} examples of up to {cfg.data.block_size} tokens")
    return lm


def build_collator(cfg: PretrainConfig, tokenizer):
    return get_objective(cfg.objective).collator(cfg, tokenizer)


def build_trainer(cfg: PretrainConfig, model, tokenizer, lm, collator, output_dir: str):
    from transformers import Trainer

    has_eval = "validation" in lm
    # A stream starts where the checkpoint left it (streaming.py), so the Trainer must not fast-forward it.
    args = training_arguments(cfg.train, output_dir, has_eval=has_eval, remove_unused_columns=False,
                              prediction_loss_only=True, ignore_data_skip=cfg.data.streaming)
    fsdp_units(model)
    train, validation = lm["train"], lm.get("validation")
    keyed = get_objective(cfg.objective).keyed(cfg)
    if keyed:  # masks and crops keyed by (epoch, example index): the same wherever a run is cut (randomness.py)
        from .randomness import EVAL_EPOCH, KeyedExamples

        train = train if cfg.data.streaming else KeyedExamples(train)  # a stream keys its own blocks
        validation = None if validation is None else KeyedExamples(validation, epoch=EVAL_EPOCH)
    kwargs = dict(model=model, args=args, train_dataset=train, eval_dataset=validation,
                  data_collator=collator, processing_class=tokenizer)
    if cfg.data.streaming:
        from .streaming import streaming_trainer

        trainer = streaming_trainer(**kwargs)
    else:
        trainer = Trainer(**kwargs)
    if keyed and not cfg.data.streaming:
        from .randomness import epoch_callback

        trainer.add_callback(epoch_callback(train))
    for callback in get_objective(cfg.objective).callbacks(cfg, tokenizer):
        trainer.add_callback(callback)
    return trainer


def perplexity(loss: float | None, applies: bool = True) -> float | None:
    if not applies or loss is None or not math.isfinite(loss):
        return None
    return math.exp(min(loss, 700.0))  # exp(709) overflows a float


# --------------------------------------------------------------------------------------------- the recipe
def run(cfg: PretrainConfig, find_lr: bool = False) -> RunResult:
    """Pretrain per `cfg`; `find_lr`: only run the learning-rate range test (lr_find.png / lr_find.json)."""
    from .data import load_corpus
    from .optim import set_up_optimization  # imports torch: not at module level (hfkit --help stays light)
    from .rows import shared_count, take_tally

    output_dir = cfg.output_dir
    objective = get_objective(cfg.objective)
    resume_from, state, recipe = start_run(cfg, cfg.model.path)
    streaming = cfg.data.streaming
    take_tally()  # malformed rows are counted from here (data.on_error=skip)
    with state.main_process_first():  # the main process reads, trains the tokenizer and tokenizes; the rest reuse
        if streaming:
            from .streaming import build_stream, load_stream_corpus

            corpus = load_stream_corpus(cfg.data, seed=cfg.train.seed, rank=state.process_index,
                                        world_size=state.num_processes, log=log)
        else:
            corpus = load_corpus(cfg.data, seed=cfg.train.seed)
            log(f"corpus: {len(corpus['train']):,} training documents"
                + (f", {len(corpus['validation']):,} validation documents" if "validation" in corpus
                   else ", no validation set"))
        tokenizer = build_tokenizer(cfg, corpus["train"], resume_from, state)
        lm = build_datasets(cfg, {k: v for k, v in corpus.items() if k != "train" or not streaming}, tokenizer)
    position = None
    if streaming:
        lm["train"], position = build_stream(
            cfg, corpus["train"], tokenizer, resume_from=resume_from, rank=state.process_index,
            world_size=state.num_processes, blocks_per_step=cfg.train.batch_size * cfg.train.gradient_accumulation_steps)
    model = build_model(cfg, tokenizer)
    trainable, total = count_parameters(model)
    log(f"model: {type(model).__name__}, {total / 1e6:.2f}M parameters")
    if not streaming and len(lm["train"]) == 0:
        raise ModelError("data.train: tokenization produced no blocks")
    if find_lr:
        trainer = build_trainer(cfg, model, tokenizer, lm, build_collator(cfg, tokenizer), output_dir)
        return RunResult(output_dir=Path(output_dir), metrics=set_up_optimization(trainer, cfg, find_only=True),
                         config=cfg)
    if state.is_main_process:
        claim_output_dir(output_dir, overwrite=cfg.train.overwrite, resume_from=resume_from)
    trainer = build_trainer(cfg, model, tokenizer, lm, build_collator(cfg, tokenizer), output_dir)
    if position is not None:
        trainer.add_callback(position)
    metrics: dict = set_up_optimization(trainer, cfg, resume_from=resume_from)
    if state.is_main_process:
        save_yaml(cfg, Path(output_dir) / "hfkit.yaml")

    has_eval = "validation" in lm
    if cfg.train.eval_before_training and has_eval and resume_from is None:
        before = trainer.evaluate()
        metrics["eval_loss_before"] = finite_or_none(before.get("eval_loss"))
        metrics["perplexity_before"] = perplexity(before.get("eval_loss"), objective.perplexity)
        log(f"before training: eval loss {before['eval_loss']:.4f}" + (
            f", perplexity {metrics['perplexity_before']:.1f}" if metrics["perplexity_before"] else ""))
    if cfg.train.eval_before_training and resume_from is None:
        extra = objective.evaluate(trainer, trainer.eval_dataset, cfg)
        metrics.update({f"{k}_before": v for k, v in extra.items()})
        if extra:
            log("before training: " + ", ".join(f"{k} {v:.4g}" for k, v in extra.items()))

    start = time.perf_counter()
    train_output = train_safely(trainer, resume_from, output_dir, config=recipe)
    wall = time.perf_counter() - start
    metrics.update({k: v for k, v in train_output.metrics.items() if isinstance(v, (int, float))})
    metrics["train_loss"] = finite_or_none(train_output.training_loss)
    if has_eval:
        final = trainer.evaluate()
        metrics["eval_loss"] = finite_or_none(final.get("eval_loss"))
        metrics["perplexity"] = perplexity(final.get("eval_loss"), objective.perplexity)
        log(f"after training: eval loss {final['eval_loss']:.4f}" + (
            f", perplexity {metrics['perplexity']:.1f}" if metrics["perplexity"] else ""))

    extra = objective.evaluate(trainer, trainer.eval_dataset, cfg)
    if extra:
        metrics.update(extra)
        log("after training: " + ", ".join(f"{k} {v:.4g}" for k, v in extra.items()))
    metrics.update(trainable_params=trainable, total_params=total, global_step=trainer.state.global_step,
                   train_wall_seconds=round(wall, 3), world_size=trainer.args.world_size)
    if not streaming:
        metrics["train_blocks"] = len(lm["train"])
    metrics["data_rows_skipped"] = shared_count(trainer.accelerator)  # distinct malformed rows, every process
    t = trainer.args
    blocks = steps_this_session(trainer, resume_from) * t.per_device_train_batch_size * t.gradient_accumulation_steps \
        * t.world_size
    length = objective.example_length(cfg, lm["train"])
    metrics.update(run_stats(tokens=round(blocks * length), samples=blocks, wall=wall))
    metrics.update(mfu_metrics(model, length, metrics["train_tokens_per_second"], t.world_size,
                               cfg.train.peak_tflops, run_dtype(t)))
    in_sync = ranks_in_sync(trainer)
    if in_sync is not None:
        metrics["ranks_in_sync"] = in_sync

    source = f"preset {cfg.model.preset} (from scratch)" if cfg.model.preset else f"continued from {cfg.model.path}"
    card = (f"{Path(output_dir).name}: {objective.title} pretraining",
            [f"objective: {cfg.objective}", f"model: {type(model).__name__}, {source}", f"data: {cfg.data.train}",
             f"block size {cfg.data.block_size}, {trainer.state.global_step} steps"],
            objective.load_snippet(output_dir))

    def save(final, state_dict, folder):  # the objective's model(s) + tokenizer at the run directory's root
        objective.save(final, state_dict, folder, tokenizer)

    finish_run(trainer, output_dir, save=save, metrics=metrics, card=card)
    return RunResult(output_dir=Path(output_dir), metrics=metrics, config=cfg)


run = holds_output_dir(run)  # the output_dir lock (start_run) is released however run ends
