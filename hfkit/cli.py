"""The `hfkit` command: a thin typer adapter over the Python API.

Errors a user can cause print one line (`error: ...`) and exit 2 (config/data/usage) or 1 (a failure while
running); `HFKIT_DEBUG=1` shows the traceback instead. torch and transformers are imported inside commands only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__

app = typer.Typer(
    name="hfkit",
    help=(
        "Pretrain and fine-tune transformer models with the Hugging Face stack.\n\n"
        "Every command takes a recipe (a YAML file, or the name of a shipped one) and KEY=VALUE overrides, "
        "e.g.\n\n"
        "  hfkit pretrain bert-mlm-tiny data.train=corpus.txt output_dir=runs/bert train.max_steps=200\n\n"
        "Values are YAML (train.learning_rate=3e-4, data.train=[a.txt,b.txt]). `hfkit recipes` lists recipes."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

OVERRIDES_HELP = "KEY=VALUE overrides applied after the recipe, e.g. train.max_steps=100 output_dir=runs/x"


def _run(fn, *args, **kwargs):
    """Call into the library; turn its errors into one line and an exit code."""
    from .errors import HfkitError

    try:
        return fn(*args, **kwargs)
    except HfkitError as e:
        if os.environ.get("HFKIT_DEBUG") == "1":
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130)
    except Exception as e:  # a failure while running: still one line unless debugging
        if os.environ.get("HFKIT_DEBUG") == "1":
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        typer.echo(f"error: {type(e).__name__}: {first[:500]} (rerun with HFKIT_DEBUG=1 for the traceback)", err=True)
        raise typer.Exit(1)


def _main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _train(kind: str, recipe: str, overrides, overwrite: bool, resume: bool, shown_keys: tuple[str, ...],
           find_lr: bool = False) -> None:
    """`hfkit pretrain` / `hfkit finetune`: resolve the config, run it, print the main metrics (rank 0 only);
    `find_lr`: only the learning-rate range test, its suggestion printed."""
    import importlib

    from .config import resolve

    extra = list(overrides or [])
    if overwrite:
        extra.append("train.overwrite=true")
    if resume:
        extra.append("train.resume=auto")
    cfg = _run(resolve, kind, recipe, extra)
    try:
        result = _run(importlib.import_module(f"hfkit.{kind}").run, cfg, find_lr=find_lr)
    finally:
        _close_process_group()
    if not _main_process():
        return
    if find_lr:
        rate = result.metrics.get("learning_rate_found")
        note = " (the curve is flat: this is the method's default)" if result.metrics.get("lr_find_inconclusive") else ""
        typer.echo(f"suggested learning rate: {rate:.2g}{note}  (curve: {result.output_dir / 'lr_find.png'}); train "
                   f"with train.learning_rate={rate:.2g}, or train.learning_rate=auto to find it in the run")
        return
    shown = {k: result.metrics.get(k) for k in shown_keys}
    typer.echo("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items() if v is not None))
    typer.echo(f"run directory: {result.output_dir}")


def _close_process_group() -> None:
    """Tear down torch.distributed before the interpreter exits: left to exit-time destructors, gloo's threads
    sometimes abort a rank ("terminate called without an active exception") after a finished run."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _version(value: bool):
    if value:
        typer.echo(f"hfkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    pass


@app.command()
def pretrain(
    recipe: str = typer.Argument(..., help="Recipe YAML path, a shipped recipe name (bert-mlm-tiny), or a run's hfkit.yaml."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output_dir (same as train.overwrite=true)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in output_dir (train.resume=auto)."),
    find_lr: bool = typer.Option(False, "--find-lr", help="Only run the learning-rate range test (the rate rising "
                                 "from 1e-7 to 1 over train.lr_find_steps batches): print the suggested rate, write "
                                 "output_dir/lr_find.png, train nothing."),
):
    """Pretrain a masked-LM (objective: mlm, BERT-style), a causal-LM (objective: clm, GPT-style) or an ELECTRA
    discriminator (objective: electra: replaced-token detection, learns from every token; from a preset).

    From scratch with model.preset (a tokenizer is trained on your corpus), or continued from model.path
    (a run directory, a local Hugging Face folder or a hub id). Writes the model, tokenizer, hfkit.yaml,
    metrics.json (with perplexity), checkpoints and TensorBoard logs into output_dir.

    Examples:

      hfkit pretrain bert-mlm-tiny data.train=corpus.txt output_dir=runs/bert

      hfkit pretrain gpt2-clm-tiny data.train='docs/*.jsonl' data.text_column=body train.max_steps=500

      hfkit pretrain runs/bert/hfkit.yaml --resume

      hfkit pretrain bert-mlm-tiny objective=electra electra.generator_size=0.25 data.train=corpus.txt

    A corpus too big to copy, read as a stream and split across 8 processes (resumable):

      torchrun --nproc_per_node 8 -m hfkit pretrain gpt2-clm-small data.streaming=true data.train='web/*.jsonl' train.max_steps=100000
    """
    _train("pretrain", recipe, overrides, overwrite, resume,
           ("perplexity_before", "perplexity", "eval_loss", "train_loss", "global_step"), find_lr)


@app.command()
def finetune(
    recipe: str = typer.Argument(..., help="Recipe YAML path, a shipped recipe name (classification-lora), or a run's hfkit.yaml."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output_dir (same as train.overwrite=true)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in output_dir (train.resume=auto)."),
    find_lr: bool = typer.Option(False, "--find-lr", help="Only run the learning-rate range test (the rate rising "
                                 "from 1e-7 to 1 over train.lr_find_steps batches): print the suggested rate, write "
                                 "output_dir/lr_find.png, train nothing."),
    preview: Optional[int] = typer.Option(None, "--preview", help="Task sft: print this many training conversations "
                                          "as encoded, the tokens that train between [[ ]], and stop (nothing is "
                                          "trained or written)."),
):
    """Fine-tune a model for a task: classification (one label per text or pair), token_classification (one
    tag per word: named entities, part-of-speech) or sft (a causal LM learns to answer instructions and chats).
    Methods: full | frozen | lora | prompt_tuning | prefix_tuning | p_tuning | ia3, or for classification as a cloze
    through the LM head: pet (few-shot training) | zero_shot (evaluation only; see prompt.*). Token classification
    allows full, frozen, lora, prefix_tuning and ia3; sft allows full, lora, prompt_tuning and p_tuning.

    model.path is a pretraining run directory, a local Hugging Face folder, builtin:all-minilm-l6-v2, or a hub
    id. Classification labels may be strings or ints (single-label), lists (multi_label: true) or floats
    (regression: true); set data.text_pair_column for pairs. Token classification reads CoNLL files (token<TAB>tag,
    a blank line between sentences) or jsonl/parquet/hub rows with data.tokens_column / data.tags_column; IOB1 and
    BIOES tags are converted to IOB2. Writes the model or adapter, metrics.json (eval_accuracy, eval_f1, per-class or
    per-entity-type report, trainable_params) and checkpoints into output_dir.

    Examples:

      hfkit finetune classification-lora model.path=runs/bert data.train=train.csv data.validation=dev.csv

      hfkit finetune classification-frozen model.path=builtin:all-minilm-l6-v2 data.train=builtin:movie-reviews

      hfkit finetune classification-full model.path=bert-base-uncased data.train=nli.jsonl data.text_pair_column=hypothesis

      hfkit finetune classification-pet model.path=roberta-base data.train=train.csv data.shots_per_class=16

      hfkit finetune ner-lora model.path=runs/bert data.train=train.conll data.validation=dev.conll

    Supervised fine-tuning of a causal LM on conversations (`messages`; `prompt`/`completion`; Alpaca's
    `instruction`/`input`/`output`): only the assistant turns train (sft.train_on_prompt=false), sft.packing=true
    packs conversations that still attend only to themselves, and a model without a chat template gets
    sft.chat_template=chatml, saved with its tokenizer. Check what trains first with --preview:

      hfkit finetune sft-lora model.path=builtin:smollm2-135m-instruct data.train=chats.jsonl --preview 3

      hfkit finetune sft-full model.path=runs/gpt2-clm-tiny sft.chat_template=chatml data.train=builtin:chatterbot

    then `hfkit generate RUN "a prompt"` or `hfkit chat RUN`.

    Let a learning-rate range test pick the rate (curve in lr_find.png), or only print its suggestion:

      hfkit finetune classification-full data.train=train.csv train.learning_rate=auto

      hfkit finetune classification-lora data.train=train.csv --find-lr

    Unbalanced classes: the best checkpoint is picked by macro-F1 (the log says why); train.class_weights=balanced
    also weights the loss. ULMFiT's options: train.layer_lr_decay=0.8, frozen.unfreeze_schedule=gradual.
    """
    if preview is not None:
        from .config import resolve
        from .finetune import preview as show_preview

        cfg = _run(resolve, "finetune", recipe, list(overrides or []))
        typer.echo(_run(show_preview, cfg, preview))
        return
    _train("finetune", recipe, overrides, overwrite, resume,
           ("eval_accuracy", "eval_f1", "eval_mse", "eval_pearson", "eval_loss", "eval_perplexity", "test_accuracy",
            "test_f1", "trainable_params", "global_step"), find_lr)


@app.command()
def compare(
    recipe: str = typer.Argument(..., help="A fine-tuning recipe (path or shipped name): the task, data and budget every run shares."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP + "; aim one at some runs with METHOD:KEY=VALUE or LABEL:KEY=VALUE", show_default=False),
    methods: str = typer.Option("full,frozen,lora,prompt_tuning", "--methods", "-m", help="Comma-separated methods (full, frozen, lora, prompt_tuning, prefix_tuning, p_tuning, ia3, pet, zero_shot)."),
    models: Optional[str] = typer.Option(None, "--models", help="Comma-separated models, each PATH, LABEL=PATH, or LABEL=random:PATH (that architecture from random initialisation). Default: the recipe's model.path."),
    skip: Optional[str] = typer.Option(None, "--skip", help="Comma-separated runs (LABEL-METHOD) to leave out of the models x methods grid."),
    launcher: Optional[str] = typer.Option(None, "--launcher", help="Start each run with this command instead of python, e.g. 'torchrun --nproc_per_node 4'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier comparison in output_dir."),
    seeds: int = typer.Option(1, "--seeds", help="Run each cell this many times (train.seed, +1, ...) and report mean "
                              "± standard deviation: on a few hundred rows results swing by points between seeds."),
):
    """Which way of adapting should I use? Run the same task, data and budget through several methods (and models)
    and compare accuracy/F1, trainable parameters, wall time, peak memory and tokens/s.

    Each run is an ordinary `hfkit finetune` in its own process, written to output_dir/<run>; every method uses
    its own default learning rate unless train.learning_rate is given. Writes comparison.json, comparison.md and
    comparison.png (quality against trainable parameters) into output_dir and prints the table.

      hfkit compare classification-full --methods full,frozen,lora data.train=train.csv output_dir=runs/cmp

      hfkit compare classification-lora --methods full,lora --seeds 3 data.train=train.csv output_dir=runs/cmp3

      hfkit compare classification-pet --methods full,frozen,lora,pet --models news=runs/news-bert,scratch=random:runs/news-bert --skip scratch-lora full:train.learning_rate=1e-3
    """
    from .compare import compare as run_compare

    if not _main_process():
        return
    _run(run_compare, recipe, [m.strip() for m in methods.split(",") if m.strip()],
         [m.strip() for m in models.split(",") if m.strip()] if models else None, list(overrides or []),
         launcher=launcher, overwrite=overwrite, skip=[x.strip() for x in skip.split(",")] if skip else None,
         seeds=seeds)


@app.command()
def predict(
    run_dir: str = typer.Argument(..., help="A fine-tuned run directory (full model, adapter or frozen head)."),
    texts: Optional[List[str]] = typer.Argument(None, help="Texts to classify.", show_default=False),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Predict every row of a file of any size (.txt lines, or csv/tsv/jsonl/json/parquet with the run's text column), a chunk at a time."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the results here (.jsonl or .parquet, one record per input row, in input order) instead of printing JSONL."),
    batch_size: int = typer.Option(32, "--batch-size", help="Texts per forward pass."),
    resume: bool = typer.Option(False, "--resume", help="Continue a --file job that was stopped: finished chunks are kept, no row is written twice."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output (it stays whole until the new one is complete)."),
    chunk_rows: int = typer.Option(4096, "--chunk-rows", help="Rows read, sorted by length and written together; memory holds one chunk."),
    template: Optional[str] = typer.Option(None, "--template", help="Zero-shot: a cloze template, e.g. '{text} It was {mask}.'; RUN_DIR may then be any masked or causal LM."),
    verbalizer: Optional[str] = typer.Option(None, "--verbalizer", help="Zero-shot: label words as YAML, e.g. '{positive: [great], negative: [terrible]}'."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Zero-shot: contextual calibration against content-free inputs."),
):
    """Predict labels and scores (or, for a token-classification run, entities) with a fine-tuned run.

    Prints `label<TAB>score<TAB>text` per text given as arguments:

      hfkit predict runs/sentiment-lora "a wonderful film" "dull and lifeless"

    A token-classification run prints each text, then one line per entity: type, score, character span, text
    (JSONL: {"text", "entities": [{"text", "type", "start", "end", "score"}]}):

      hfkit predict runs/ner-lora "Empire State Building is in New York"

    A file of any size: read and predicted a chunk at a time (memory stays flat), with a progress bar, into one
    JSONL or parquet file in input order ({"text", "label", "score", "scores"} per row). A stopped job goes on with
    --resume. Under torchrun or accelerate launch each process predicts its share of the chunks and the output is
    the same single file:

      hfkit predict runs/sentiment-lora --file reviews.csv --output predictions.jsonl

      hfkit predict runs/sentiment-lora --file reviews.csv --output predictions.jsonl --resume

      torchrun --nproc_per_node 8 -m hfkit predict runs/sentiment-lora --file big.parquet --output out.parquet

    Zero-shot, any masked or causal LM as a cloze classifier (no training):

      hfkit predict runs/my-bert "a wonderful film" --template "{text} It was {mask}." --verbalizer "{positive: [great], negative: [terrible]}"
    """
    import json

    zero_shot = _zero_shot(template, verbalizer, calibrate)
    if file is not None:
        from .inference import predict_file

        _over_file(predict_file, run_dir, file, output, texts, ("texts", "predictions"), batch_size=batch_size,
                   chunk_rows=chunk_rows, resume=resume, overwrite=overwrite, prompt=zero_shot)
        return
    items = list(texts or [])
    if not items:
        typer.echo("error: nothing to classify; give texts as arguments or --file FILE", err=True)
        raise typer.Exit(2)
    from .inference import predict as run_predict

    results = _run(run_predict, run_dir, items, None, batch_size, zero_shot)
    if output is not None:
        if output.exists() and not overwrite:
            typer.echo(f"error: --output: '{output}' exists; give --overwrite to replace it or another path", err=True)
            raise typer.Exit(2)
        with open(output, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": t, **r}, ensure_ascii=False) + "\n" for t, r in zip(items, results))
        typer.echo(f"{len(results)} predictions written to {output}")
        return
    for text, result in zip(items, results):
        if "entities" in result or "words" in result:  # token classification: one line per entity (or word)
            typer.echo(text)
            for e in result.get("entities", result.get("words")):
                typer.echo(f"  {e.get('type', e.get('tag'))}\t{e['score']:.4f}\t{e['start']}-{e['end']}\t{e['text']}")
            continue
        label = result.get("label", ",".join(result.get("labels", [])) if "labels" in result else "")
        score = result.get("score")
        typer.echo(f"{label}\t{score:.4f}\t{text}" if score is not None else f"{label}\t\t{text}")


@app.command()
def evaluate(
    run_dir: str = typer.Argument(..., help="A fine-tuned run directory."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled data with the run's text and label columns, or conversations for an sft run (file, folder, glob, builtin:NAME)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the metrics as JSON here."),
    batch_size: int = typer.Option(32, "--batch-size", help="Texts per forward pass."),
    template: Optional[str] = typer.Option(None, "--template", help="Zero-shot: a cloze template, e.g. '{text} It was {mask}.'; RUN_DIR may then be any masked or causal LM."),
    verbalizer: Optional[str] = typer.Option(None, "--verbalizer", help="Zero-shot: label words as YAML, e.g. '{positive: [great], negative: [terrible]}'."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Zero-shot: contextual calibration against content-free inputs."),
):
    """Evaluate a fine-tuned run on labelled data: accuracy, F1 (or MSE/Pearson), per-class report, confusion matrix.
    A token-classification run: entity-level precision/recall/F1 (strict IOB2), word accuracy, per-type report.
    An sft run: the loss on the answer tokens (as it trained) and its perplexity, on conversations in any of its
    formats.

      hfkit evaluate runs/sentiment-lora --data test.csv

      hfkit evaluate runs/ner-lora --data test.conll

      hfkit evaluate runs/my-bert --data test.csv --template "{text} It was {mask}." --verbalizer "{positive: [great], negative: [terrible]}"
    """
    import json

    from .inference import evaluate as run_evaluate

    metrics = _run(run_evaluate, run_dir, data, batch_size, _zero_shot(template, verbalizer, calibrate))
    text = json.dumps(metrics, indent=2)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


def _over_file(job, run_dir: str, file: Path, output: Optional[Path], given, nouns: tuple[str, str],
               **options) -> None:
    """The --file mode of predict and generate: `job` over every row; JSONL on stdout without --output."""
    import json

    if given:
        typer.echo(f"error: give {nouns[0]} either on the command line or with --file, not both", err=True)
        raise typer.Exit(2)

    def emit(records):
        for record in records:
            typer.echo(json.dumps(record, ensure_ascii=False))

    summary = _run(job, run_dir, str(file), str(output) if output else None, emit=emit, **options)
    if output is not None and _main_process():
        typer.echo(f"{summary['rows']} {nouns[1]} written to {output} ({summary['rows_per_second']} rows/s)")


def _quiet_load(load, *args):
    """Load without transformers' weight-loading bar: the command's output is the text it generates."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return load(*args)
    finally:
        hf_logging.enable_progress_bar()


@app.command()
def plan(
    recipe: str = typer.Argument(..., help="A pretraining or fine-tuning recipe (path or shipped name)."),
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
    gpus: int = typer.Option(..., "--gpus", help="GPUs in all (over every node)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="The GPU, e.g. h100-80gb, a100-40gb, l4-24gb (an unknown name lists the known ones)."),
    gpu_memory: Optional[float] = typer.Option(None, "--gpu-memory", help="Or the GPU's memory in GB (then --peak-tflops for a time)."),
    peak_tflops: Optional[float] = typer.Option(None, "--peak-tflops", help="Peak dense bf16 TFLOP/s of one GPU (default: the --gpu's data sheet)."),
    nodes: int = typer.Option(1, "--nodes", help="Machines the GPUs are spread over."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs one node holds."),
    mfu: float = typer.Option(0.40, "--mfu", help="Model FLOPs utilisation to expect (0.40: a round figure below PaLM's 46%)."),
):
    """Will a recipe fit on these GPUs, with which strategy, and how long will it take? Prints, per strategy (DDP,
    ZeRO-2, FSDP full shard, ZeRO-3, with and without CPU offload and activation checkpointing), the memory per GPU
    (weights, gradients, optimizer state, activations) and the hours for train.max_steps; then the cheapest one
    that fits and the exact `accelerate launch` command. The model is built on the meta device: no weights are
    read (model.path may be a folder holding only config.json) and a 7B model plans in seconds. Activations are
    what the model's own forward saves for the backward pass, traced there at the recipe's sequence length.

      hfkit plan recipes/pretrain/llama-clm-small.yaml --gpus 8 --gpu h100-80gb

      hfkit plan sft-lora model.path=recipes/models/llama-2-7b-shape --gpus 1 --gpu a100-40gb
    """
    from .config import resolve
    from .plan import run as run_plan

    kind = _run(_recipe_kind, recipe)
    cfg = _run(resolve, kind, recipe, list(overrides or []))
    typer.echo(_run(run_plan, kind, cfg, gpus=gpus, nodes=nodes, gpus_per_node=gpus_per_node, gpu=gpu,
                    gpu_memory=gpu_memory, peak_tflops=peak_tflops, mfu=mfu, recipe=recipe,
                    overrides=list(overrides or [])))


def _recipe_kind(recipe: str) -> str:
    """pretrain or finetune: from the recipe's folder (recipes/pretrain/...) or whether it sets an objective."""
    from .config import find_recipe, load_yaml, recipe_kind

    path = find_recipe(recipe)
    return "pretrain" if "pretrain" in path.parts else recipe_kind(load_yaml(path))


MAX_NEW_HELP = "Generate at most this many tokens (the reply also ends at the template's end-of-turn token)."
TEMPERATURE_HELP = "0 = greedy (deterministic); above 0 samples, higher is more varied."
TOP_P_HELP = "Sampling only: keep the smallest set of likeliest tokens whose probability reaches this (nucleus)."


@app.command()
def generate(
    run_dir: str = typer.Argument(..., help="An sft run directory (full model or adapter), a causal-LM pretraining run, a model folder or builtin:NAME."),
    prompts: Optional[List[str]] = typer.Argument(None, help="One or more prompts, each answered on its own as a user turn.", show_default=False),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help=MAX_NEW_HELP),
    temperature: float = typer.Option(0.0, "--temperature", help=TEMPERATURE_HELP),
    top_p: float = typer.Option(1.0, "--top-p", help=TOP_P_HELP),
    system: Optional[str] = typer.Option(None, "--system", help="A system turn before each prompt."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling (temperature > 0)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Answer every row of a file (.txt lines, or csv/tsv/jsonl/json/parquet with a --column), in batches, a chunk at a time."),
    column: str = typer.Option("prompt", "--column", help="--file: the column holding the prompts."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="--file: write {\"prompt\", \"text\"} per row here (.jsonl or .parquet), in input order, instead of printing JSONL."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", help="--file: end a reply just before this string (repeat for several)."),
    batch_size: int = typer.Option(16, "--batch-size", help="--file: prompts generated together (left-padded, KV cache)."),
    resume: bool = typer.Option(False, "--resume", help="--file: continue a stopped job; no row is written twice."),
    overwrite: bool = typer.Option(False, "--overwrite", help="--file: replace an existing --output (whole until the new one is complete)."),
):
    """Answer prompts with a causal LM, through the run's own chat template (the one it was trained with).

      hfkit generate runs/sft-lora "Give three tips for staying healthy."

      hfkit generate runs/sft-lora "Name a colour." --temperature 0.7 --top-p 0.9 --seed 1

    A file of prompts, answered in batches into one JSONL or parquet file in input order; a stopped job goes on
    with --resume, and under torchrun / accelerate launch each process answers its share:

      hfkit generate runs/sft-lora --file questions.jsonl --column question --output answers.jsonl --max-new-tokens 64

    A model without a chat template continues the prompt as plain text.
    """
    if file is not None:
        from .generation import generate_file

        _over_file(generate_file, run_dir, file, output, prompts, ("prompts", "replies"), column=column,
                   system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                   seed=seed or 0, stop=list(stop or []) or None, batch_size=batch_size, resume=resume,
                   overwrite=overwrite)
        return
    if not prompts:
        typer.echo("error: nothing to answer; give prompts as arguments or --file FILE", err=True)
        raise typer.Exit(2)
    from .generation import generate as run_generate, load_causal_lm

    model, tokenizer = _run(_quiet_load, load_causal_lm, run_dir)
    for prompt in prompts:
        turns = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        reply = _run(run_generate, model, tokenizer, turns, max_new_tokens=max_new_tokens, temperature=temperature,
                     top_p=top_p, seed=seed)
        typer.echo(reply if len(prompts) == 1 else f"> {prompt}\n{reply}\n")


@app.command()
def chat(
    run_dir: str = typer.Argument(..., help="An sft run directory, a model folder or builtin:NAME with a chat template."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help=MAX_NEW_HELP),
    temperature: float = typer.Option(0.0, "--temperature", help=TEMPERATURE_HELP),
    top_p: float = typer.Option(1.0, "--top-p", help=TOP_P_HELP),
    system: Optional[str] = typer.Option(None, "--system", help="A system turn that opens the conversation."),
):
    """Talk to a causal LM: each line you type is a user turn; the model answers with the whole conversation so
    far in context, rendered by the run's chat template. /reset starts over; /exit (or Ctrl-D) ends.

      hfkit chat runs/sft-lora --system "You answer in one sentence."
    """
    import sys

    from .generation import generate as run_generate, load_causal_lm

    model, tokenizer = _run(_quiet_load, load_causal_lm, run_dir)
    if not getattr(tokenizer, "chat_template", None):
        typer.echo(f"error: {run_dir} has no chat template; fine-tune it with task sft (sft.chat_template=chatml) or "
                   "use hfkit generate", err=True)
        raise typer.Exit(2)
    opening = [{"role": "system", "content": system}] if system else []
    turns = list(opening)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            typer.echo("you> ", nl=False)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line == "/exit":
            break
        if line == "/reset":
            turns = list(opening)
            typer.echo("(conversation reset)")
            continue
        turns.append({"role": "user", "content": line})
        reply = _run(run_generate, model, tokenizer, turns, max_new_tokens=max_new_tokens, temperature=temperature,
                     top_p=top_p)
        turns.append({"role": "assistant", "content": reply})
        typer.echo(f"assistant> {reply}")


def _zero_shot(template: str | None, verbalizer: str | None, calibrate: bool) -> dict | None:
    if template is None and verbalizer is None:
        if calibrate:
            typer.echo("error: --calibrate needs --template and --verbalizer (zero-shot)", err=True)
            raise typer.Exit(2)
        return None
    if not template or not verbalizer:
        typer.echo("error: zero-shot needs both --template and --verbalizer", err=True)
        raise typer.Exit(2)
    return {"template": template, "verbalizer": verbalizer, "calibrate": calibrate}


@app.command()
def recipes(
    name: Optional[str] = typer.Argument(None, help="Show this recipe's YAML (a name from the list, or a path)."),
    presets: bool = typer.Option(False, "--presets", help="List the model presets instead."),
):
    """List the shipped recipes, show one, or list the model presets."""
    from .config import find_recipe, list_recipes, recipes_dir

    if presets:
        from .models import PRESETS

        width = max(map(len, PRESETS))
        for preset, spec in PRESETS.items():
            size = ", ".join(f"{k}={v}" for k, v in spec["config"].items())
            like = f"  (shape of {spec['like']})" if spec.get("like") else ""
            typer.echo(f"{preset:{width}s} {spec['kind']}  {size}{like}")
        return
    if name:
        path = find_recipe(name)
        if not path.is_file():
            typer.echo(f"error: no recipe named '{name}'; `hfkit recipes` lists them", err=True)
            raise typer.Exit(2)
        typer.echo(f"# {path}")
        typer.echo(path.read_text(encoding="utf-8"))
        return
    found = list_recipes()
    if not found:
        typer.echo(f"no recipes found under {recipes_dir()}")
        return
    for path in found:
        first = next((line[1:].strip() for line in path.read_text(encoding="utf-8").splitlines()
                      if line.startswith("#")), "")
        typer.echo(f"{path.relative_to(recipes_dir()).with_suffix('').as_posix():34s} {first}")


@app.command()
def env(strict: bool = typer.Option(False, "--strict", help="Exit 1 when a package is outside hfkit's tested ranges "
                                                             "or differs from the lock.")):
    """What to paste into a bug report: hfkit, Python, platform, torch (CUDA, devices), the device's peak TFLOP/s
    (a GPU's data sheet, or a matmul probe measured once per machine and cached), the Hugging Face libraries, and
    whether they are the versions hfkit was tested with.

    Each package is compared with the range hfkit declares (pyproject.toml) and, in a source checkout, with the lock
    that `make setup` and CI install (requirements/lock.txt). A version outside the range was never run by hfkit's
    tests; one inside it that differs from the lock probably works (`make test-latest` checks the newest).
    """
    import platform
    import sys

    from .versions import LOCK_FILE, report

    lines = [f"hfkit: {__version__} ({Path(__file__).resolve().parent})",
             f"python: {sys.version.split()[0]} ({sys.executable})",
             f"platform: {platform.platform()}"]
    try:
        import torch

        cuda = torch.version.cuda or "none (CPU build)"
        devices = (", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                   if torch.cuda.is_available() else "no GPU visible")
        lines.append(f"torch device: CUDA {cuda}; {devices}; {torch.get_num_threads()} CPU threads")
        from .flops import device_peak_tflops

        peaks = [(dtype, *device_peak_tflops(None, dtype)) for dtype in ("fp32", "bf16")]
        lines.append("peak (the MFU in metrics.json is measured against it): " + "; ".join(
            f"{dtype} {value:.3g} TFLOP/s ({source})" for dtype, value, source in peaks if value))
    except ImportError:
        lines.append("torch device: torch is not installed")
    lines.append(f"lock: {LOCK_FILE}" if LOCK_FILE.is_file() else "lock: none (not a source checkout)")
    rows = report()
    width = max(len(r.name) for r in rows)
    off = []
    for r in rows:
        if r.installed is None and r.declared is None:
            continue
        notes = []
        if r.installed is None:
            notes.append("not installed")
        if r.in_range is False:
            notes.append(f"OUTSIDE the tested range {r.declared}")
        if r.name == "torch" and r.locked is None:
            notes.append("per platform, not in the lock")
        if r.matches_lock is False:
            notes.append(f"lock has {r.locked}")
        elif r.matches_lock:
            notes.append("locked")
        if r.in_range is False or r.matches_lock is False:
            off.append(r.name)
        lines.append(f"  {r.name:{width}s}  {r.installed or '-':12s} {r.declared or '':22s} {'; '.join(notes)}")
    if off:
        lines.append(f"differs from the tested set: {', '.join(off)}")
    else:
        lines.append("all locked versions" if LOCK_FILE.is_file() else "all within hfkit's ranges")
    typer.echo("\n".join(lines))
    if strict and off:
        raise typer.Exit(1)


def main() -> None:
    """The `hfkit` command. In a launched process (torchrun / accelerate launch: WORLD_SIZE > 1) the interpreter's
    Python exit work (atexit handlers: loggers, trackers) runs as usual, and then the process leaves without the
    native teardown after it: there gloo's threads sometimes abort a rank that has finished ("terminate called
    without an active exception", exit -6), which makes the launcher report a finished run as failed. Seen on a
    2-process LoRA run in fresh-clone CI twice, once after the process group was already destroyed."""
    try:
        app()
    except SystemExit as done:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise
        import atexit
        import sys

        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
