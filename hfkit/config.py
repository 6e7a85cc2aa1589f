"""Typed configuration: dataclasses per concern, YAML recipes that mirror them, dotted overrides.

One precedence rule, in one function (`resolve`): dataclass defaults < recipe YAML < overrides.
Every problem found while building a config is gathered and reported together, each naming its key.
This module imports neither torch nor transformers, so `hfkit --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError


# --------------------------------------------------------------------------------------------- sections
@dataclass
class ModelConfig:
    preset: str | None = None
    """Build a fresh model from a named preset (`hfkit recipes --presets` lists them), for pretraining from scratch."""
    path: str | None = None
    """Or load one: a run directory, any local Hugging Face model folder, or a hub id."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Any field of the transformers config, e.g. {num_hidden_layers: 4, hidden_dropout_prob: 0.0}."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    """Attention backend; sdpa is PyTorch's fused scaled-dot-product attention."""
    trust_remote_code: bool = False
    """Allow a hub model to run its own Python code. Off unless you trust the repository."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `path` is a hub id."""
    random_init: bool = False
    """Fine-tuning: `path`'s architecture and tokenizer with freshly initialised weights, the baseline that shows
    what pretraining buys (methods full, frozen, or pet with prompt.tune=full)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Fine-tuning: the dtype the loaded weights are stored in. auto = the run's 16-bit dtype (train.precision bf16 or
    fp16, which auto picks on a GPU) when the method freezes the base model (lora, ia3, soft prompts, frozen),
    else float32. What trains (adapters, heads, prompts) and the optimizer stay float32 either way. A 16-bit base
    halves its memory; full fine-tuning keeps float32 weights (the master copy mixed precision needs)."""


@dataclass
class TokenizerConfig:
    path: str | None = None
    """Load a tokenizer from here. Default: the model's own (model.path), or train one when model.preset is set."""
    type: Literal["auto", "wordpiece", "bpe", "unigram"] = "auto"
    """Algorithm when training: auto = WordPiece for BERT presets, byte-level BPE for RoBERTa/GPT-2/Llama presets."""
    vocab_size: int = 8000
    """Vocabulary size when training a tokenizer."""
    min_frequency: int = 2
    """A merge or word piece must occur this often in the corpus to enter the vocabulary."""
    lowercase: bool = True
    """WordPiece only: lowercase and strip accents, as uncased BERT does."""
    max_documents: int | None = None
    """Train the tokenizer on at most this many training documents (None: all)."""


@dataclass
class DataConfig:
    train: str | list[str] | None = None
    """Training text: a file (.txt .jsonl .json .csv .tsv .parquet), a folder, a glob, a list of them,
    `builtin:NAME` (a corpus a pip package ships), or a hub dataset id."""
    validation: str | list[str] | None = None
    """Validation text, same forms as `train`. Default: `validation_split` of the training documents."""
    validation_split: float = 0.05
    """Fraction of training documents held out for evaluation when `validation` is not given (0 disables)."""
    text_column: str = "text"
    """Column holding the text in csv/jsonl/parquet/hub data (a labelled file works: its other columns are ignored,
    so a task's own text can be pretrained on before fine-tuning on it)."""
    exclude: str | list[str] | None = None
    """Text that must never be pretrained on, same forms as `train` and read with `text_column` (e.g. the
    evaluation file of the task you will fine-tune on): the run refuses if any training document equals one of
    its rows (after stripping white space)."""
    dataset_config: str | None = None
    """Hub datasets only: the configuration name, e.g. wikitext-103-raw-v1."""
    sample_by: Literal["line", "paragraph", "document"] = "line"
    """.txt files only: one document per line, per blank-line separated paragraph, or per file."""
    min_chars: int = 1
    """Documents shorter than this after stripping white space are dropped."""
    max_documents: int | None = None
    """Use at most this many training documents (after cleaning), for quick runs."""
    block_size: int = 128
    """Tokens per training example; documents are packed into blocks of this length."""
    num_proc: int | None = None
    """Processes for tokenization (None: 1)."""
    cache_dir: str | None = None
    """Where tokenized datasets are cached (default $HFKIT_CACHE or ~/.cache/hfkit)."""
    streaming: bool = False
    """Read data.train as a stream: tokenized and packed on the fly, split across processes, never stored whole
    (for corpora larger than disk or RAM). Needs train.max_steps; evaluation uses data.validation only."""
    shuffle_buffer: int = 10_000
    """Streaming only: documents held in the shuffle buffer (shards are shuffled too; 0 keeps the file order)."""
    on_error: Literal["error", "skip"] = "error"
    """A malformed row in a .jsonl/.json/.csv/.tsv/.txt file (not JSON, a wrong field count, a text column holding a
    number, a line that is not UTF-8): stop with its file and line (error), or skip it and count it in
    metrics.json as data_rows_skipped (skip). Applies to data.train and data.validation, streamed or not."""


@dataclass
class MLMConfig:
    probability: float = 0.15
    """Fraction of tokens selected for prediction (0.15 is BERT's rate; of those 80% -> [MASK], 10% random, 10% kept)."""
    whole_word: bool = False
    """Mask all pieces of a word together (whole-word masking). Selected pieces are all replaced by [MASK]."""
    head_on_masked_only: bool = True
    """Project only the masked positions onto the vocabulary (BERT/RoBERTa-style heads): the same loss, and for
    small models most of the compute saved (benchmarks/pretrain_throughput.py)."""


@dataclass
class ElectraSettings:
    generator_size: float = 0.25
    """The generator's width as a fraction of the discriminator's (same depth); ELECTRA uses 1/4 to 1/2. A
    generator as strong as the discriminator makes the task too hard for it."""
    discriminator_weight: float = 50.0
    """Weight of the replaced-token-detection loss against the generator's masked-LM loss (ELECTRA: 50)."""


@dataclass
class ContrastiveSettings:
    pooling: Literal["mean", "cls"] = "mean"
    """How token states become one sentence vector (saved with the model for sentence-transformers)."""
    temperature: float = 0.05
    """Cosine similarities are divided by this before the softmax over the batch (SimCSE: 0.05)."""
    views: Literal["dropout", "crop"] = "dropout"
    """What makes a positive pair. dropout: the same text twice, only the dropout masks differ (unsupervised
    SimCSE). crop: two spans of crop_tokens tokens drawn independently from the same document each time it is seen
    (independent cropping, as in Contriever, Izacard et al. 2021); it suits documents and models already trained
    contrastively, for which dropout-only views are too easy (benchmarks/contrastive.py)."""
    crop_tokens: int = 32
    """Tokens per span with views: crop (special tokens added around it); a shorter document is used whole."""
    similarity: str | None = None
    """A similarity set to report Spearman correlation on: builtin:lee (gensim's 50 news documents, 1,225 pairs
    scored by people) or a csv/tsv/jsonl file with columns text1, text2, score."""


@dataclass
class TrainConfig:
    max_steps: int | None = None
    """Optimizer steps to train for; overrides `epochs` when set."""
    epochs: float = 1.0
    """Passes over the training data (used when max_steps is None)."""
    batch_size: int = 16
    """Examples per device per forward pass."""
    eval_batch_size: int | None = None
    """Examples per device during evaluation (default: batch_size)."""
    gradient_accumulation_steps: int = 1
    """Forward passes per optimizer step (derived when global_batch_size is set)."""
    global_batch_size: int | None = None
    """Examples per optimizer step over all devices; accumulation = global / (batch_size x world size), so a run
    means the same on 1 or 64 GPUs. The derived gradient_accumulation_steps is recorded in hfkit.yaml."""
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "adamw_8bit"] = "adamw_torch"
    """adamw_torch_fused is faster on GPUs; adafactor keeps less state; adamw_8bit needs bitsandbytes."""
    learning_rate: float | Literal["auto"] | None = None
    """Peak learning rate (null: 5e-4 for pretraining; for fine-tuning the method's, see DEFAULT_LEARNING_RATES);
    auto: a learning-rate range test on the run's own model and data picks it (lr_find.png, the rate in hfkit.yaml)."""
    lr_find_steps: int = 100
    """Steps of the range test behind learning_rate auto / --find-lr (the rate rises from 1e-7 to 1)."""
    layer_lr_decay: float = 1.0
    """Discriminative rates (ULMFiT): the head trains at learning_rate, the top layer at x this, the next at x this^2,
    ..., the embeddings last; 1 = one rate for all."""
    class_weights: Literal["none", "balanced"] = "none"
    """balanced: weight the loss by inverse class frequency (single-label classification), so small classes count."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.0
    """Fraction of the training steps spent warming the learning rate up linearly."""
    lr_scheduler: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt"
    ] = "linear"
    """Learning-rate schedule after warm-up."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    seed: int = 42
    """Seed for initialisation, data order and masking."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto = bf16 on a GPU that supports it, else fp32."""
    peak_tflops: float | None = None
    """Peak TFLOP/s of one device, for the MFU in metrics.json (default: a common GPU's data sheet, else a matmul
    probe at the run's dtype, measured once per machine and cached; HFKIT_PEAK_TFLOPS also sets it)."""
    logging_steps: int = 10
    """Log the training loss every N steps."""
    eval_steps: int | None = None
    """Evaluate every N steps (default: 5 times per run when max_steps is set, else every epoch)."""
    save_steps: int = 500
    """Write a resumable checkpoint every N steps."""
    save_total_limit: int | None = 2
    """Keep at most this many checkpoints (None: all)."""
    resume: str | None = None
    """Resume from a checkpoint: `auto` (the newest in output_dir whose files match its manifest) or a checkpoint
    folder."""
    resume_changed: bool = False
    """Resume even though the recipe changed since the checkpoint was written (other data, model, objective, global
    batch...); without it such a resume is refused with the list of changes."""
    collective_timeout: int = 1800
    """Seconds a process waits in a collective (all-reduce, barrier) for the others before the run stops with the
    ranks that fell behind named: a stalled or lost process ends the run instead of hanging it. Long enough for a
    large model's checkpoint save on a GPU cluster (torch's default is the same 30 minutes)."""
    overwrite: bool = False
    """Allow writing into a non-empty output_dir (its old checkpoints are removed)."""
    eval_before_training: bool = False
    """Evaluate once before training too (metrics.json then has `perplexity_before` for LM runs)."""
    dataloader_num_workers: int = 0
    """Worker processes for the data loader."""
    compile: bool = False
    """torch.compile the model (TrainingArguments.torch_compile): compiling costs tens of seconds up front and did
    not pay off in CPU runs of up to 160 steps; see benchmarks/README.md."""
    group_by_length: bool = False
    """Fine-tuning: batch rows of similar length together (less padding; slightly less random batches)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% more compute."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers for the Trainer (tensorboard, wandb, ... or [] for none)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of the best-model metric (None: never)."""
    load_best: bool = True
    """Fine-tuning: end with the checkpoint that scored best on the validation data (false: the last one, e.g.
    when the validation data is also what you report)."""
    metric_for_best: str | None = None
    """Metric that picks the best checkpoint (fine-tuning default: accuracy, or f1 for multi-label, mse for regression)."""


# --------------------------------------------------------------------------------------------- recipes
@dataclass
class PretrainConfig:
    objective: str = "mlm"
    """mlm: masked-LM (BERT-style encoders); clm: causal-LM (GPT-style decoders); electra: replaced-token
    detection (an encoder that learns from every token; needs model.preset). See hfkit/objectives/."""
    output_dir: str = "runs/pretrain"
    """The run directory: final model + tokenizer, hfkit.yaml, metrics.json, checkpoints, logs."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    """Masking, for the masked objectives (mlm, electra's generator)."""
    electra: ElectraSettings = field(default_factory=ElectraSettings)
    contrastive: ContrastiveSettings = field(default_factory=ContrastiveSettings)
    train: TrainConfig = field(default_factory=TrainConfig)

    def fill_defaults(self) -> None:
        if self.train.learning_rate is None:
            self.train.learning_rate = 5e-4

    def validate(self) -> list[str]:
        from .models import PRESETS, preset_names
        from .objectives import OBJECTIVES, get_objective

        problems: list[str] = []
        objective = None
        if self.objective in OBJECTIVES:
            objective = get_objective(self.objective)
        else:
            problems.append(f"objective: '{self.objective}' is not one of {', '.join(OBJECTIVES)}"
                            f"{_suggest(self.objective, list(OBJECTIVES))}")
        m = self.model
        if (m.preset is None) == (m.path is None):
            problems.append("model: set exactly one of model.preset (train from scratch) or model.path (continue)")
        if m.random_init:
            problems.append("model.random_init: fine-tuning only; to pretrain from scratch set model.preset")
        if m.preset is not None:
            if m.preset not in PRESETS:
                problems.append(f"model.preset: unknown preset '{m.preset}'{_suggest(m.preset, preset_names())}; "
                                f"choose one of {', '.join(preset_names())}")
            else:
                kind = PRESETS[m.preset]["kind"]
                if objective is not None and objective.kind != kind:
                    needs, has = ("a masked-LM model", "causal") if objective.kind == "mlm" else \
                        ("a causal-LM model", "an encoder")
                    presets = "a bert-*/roberta-*/modernbert-*" if objective.kind == "mlm" else "a gpt2-*/llama-*"
                    other = "clm" if objective.kind == "mlm" else "mlm"
                    problems.append(f"objective: '{self.objective}' needs {needs} but preset '{m.preset}' is {has}; "
                                    f"use objective: {other}, or {presets} preset")
                max_pos = PRESETS[m.preset].get("max_positions")
                limit = m.overrides.get("max_position_embeddings", m.overrides.get("n_positions", max_pos))
                if isinstance(limit, int) and self.data.block_size > limit:
                    problems.append(f"data.block_size: {self.data.block_size} exceeds the {limit} positions of preset "
                                    f"'{m.preset}'; lower it or set model.overrides.max_position_embeddings")
        if m.preset is not None and self.tokenizer.path is None and self.tokenizer.vocab_size < 100:
            problems.append(f"tokenizer.vocab_size: {self.tokenizer.vocab_size} is too small to train a tokenizer; use >= 100")
        if self.tokenizer.min_frequency < 1:
            problems.append("tokenizer.min_frequency: must be >= 1")
        if not 0.0 < self.mlm.probability < 1.0:
            problems.append(f"mlm.probability: {self.mlm.probability} must be between 0 and 1 (BERT uses 0.15)")
        if objective is not None:
            problems += objective.validate(self)
        problems += _validate_data(self.data)
        problems += _validate_train(self.train)
        if self.data.streaming:
            if objective is not None and not objective.packed:
                problems.append(f"data.streaming: objective {self.objective} builds its examples from whole documents; "
                                "unset data.streaming")
            if not self.train.max_steps:
                problems.append("data.streaming: a stream has no known length; set train.max_steps")
            if self.train.dataloader_num_workers:
                problems.append("train.dataloader_num_workers: a streaming run tokenizes in the training process "
                                "(the tokenizer uses its own threads); set it to 0")
            if self.train.group_by_length:
                problems.append("train.group_by_length: needs the whole dataset; unset it with data.streaming")
            if self.data.exclude:
                problems.append("data.exclude: a stream is not read ahead, so it cannot be checked for overlap; "
                                "remove the held-out rows from the files, then unset data.exclude")
        if self.train.class_weights != "none":
            problems.append("train.class_weights: weights classes of a fine-tuning run; pretraining has no classes")
        if self.data.block_size < 8:
            problems.append(f"data.block_size: {self.data.block_size} is too small; use >= 8 (128 or 512 are usual)")
        if not self.output_dir:
            problems.append("output_dir: must be set, e.g. output_dir=runs/my-model")
        return problems


def _validate_data(d: DataConfig) -> list[str]:
    problems = []
    if d.train is None or d.train == [] or d.train == "":
        problems.append("data.train: no training data given; set data.train=PATH (file, folder, glob, builtin:NAME or hub id)")
    if not 0.0 <= d.validation_split < 1.0:
        problems.append(f"data.validation_split: {d.validation_split} must be in [0, 1)")
    if d.min_chars < 0:
        problems.append("data.min_chars: must be >= 0")
    if d.max_documents is not None and d.max_documents < 1:
        problems.append("data.max_documents: must be >= 1 (or null for all)")
    if d.num_proc is not None and d.num_proc < 1:
        problems.append("data.num_proc: must be >= 1 (or null)")
    if not d.text_column:
        problems.append("data.text_column: must name a column")
    if d.shuffle_buffer < 0:
        problems.append("data.shuffle_buffer: must be >= 0")
    return problems


def _validate_train(t: TrainConfig) -> list[str]:
    problems = []

    def positive(name: str, value, allow_none=False):
        if value is None and allow_none:
            return
        if value is None or value <= 0:
            problems.append(f"train.{name}: {value} must be > 0")

    positive("batch_size", t.batch_size)
    positive("eval_batch_size", t.eval_batch_size, allow_none=True)
    positive("gradient_accumulation_steps", t.gradient_accumulation_steps)
    positive("global_batch_size", t.global_batch_size, allow_none=True)
    if t.optimizer == "adamw_8bit":
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            problems.append("train.optimizer: adamw_8bit needs the bitsandbytes package (pip install bitsandbytes)")
    if t.learning_rate != "auto":
        positive("learning_rate", t.learning_rate, allow_none=True)
    positive("lr_find_steps", t.lr_find_steps)
    if not 0.0 < t.layer_lr_decay <= 1.0:
        problems.append(f"train.layer_lr_decay: {t.layer_lr_decay} must be in (0, 1] (0.8 is usual; 1 turns it off)")
    positive("max_steps", t.max_steps, allow_none=True)
    if t.max_steps is None:
        positive("epochs", t.epochs)
    positive("logging_steps", t.logging_steps)
    positive("eval_steps", t.eval_steps, allow_none=True)
    positive("save_steps", t.save_steps)
    positive("save_total_limit", t.save_total_limit, allow_none=True)
    positive("collective_timeout", t.collective_timeout)
    if t.weight_decay < 0:
        problems.append(f"train.weight_decay: {t.weight_decay} must be >= 0")
    if not 0.0 <= t.warmup_ratio < 1.0:
        problems.append(f"train.warmup_ratio: {t.warmup_ratio} must be in [0, 1)")
    if t.max_grad_norm < 0:
        problems.append(f"train.max_grad_norm: {t.max_grad_norm} must be >= 0")
    if t.dataloader_num_workers < 0:
        problems.append("train.dataloader_num_workers: must be >= 0")
    if t.resume is not None and t.resume != "auto" and not Path(t.resume).is_dir():
        problems.append(f"train.resume: '{t.resume}' is not a checkpoint folder; use train.resume=auto or a checkpoint-N path")
    return problems


@dataclass
class LabelledDataConfig:
    train: str | list[str] | None = None
    """Labelled training data: .csv .tsv .jsonl .json .parquet files, folders, globs, lists, builtin:NAME or a hub id."""
    validation: str | list[str] | None = None
    """Validation data, same forms. Default: `validation_split` of the training rows (stratified by label)."""
    test: str | list[str] | None = None
    """Optional test data, evaluated once after training (metrics prefixed test_)."""
    validation_split: float = 0.1
    """Fraction of training rows held out when `validation` is not given."""
    text_column: str = "text"
    """Column with the input text."""
    text_pair_column: str | None = None
    """Column with the second text of a pair (NLI, paraphrase), or null."""
    label_column: str = "label"
    """Column with the label: a string or int class, a list of classes (multi_label), or a float (regression)."""
    label_separator: str | None = None
    """multi_label only: split string labels on this separator (e.g. ',') instead of expecting lists."""
    dataset_config: str | None = None
    """Hub datasets only: the configuration name."""
    max_length: int = 128
    """Truncate inputs to this many tokens (batches are padded only to their longest example)."""
    max_train_samples: int | None = None
    """Use at most this many training rows (after a seeded shuffle), for quick runs."""
    shots_per_class: int | None = None
    """Few-shot: sample this many training rows per class with the seed (single-label only)."""
    num_proc: int | None = None
    """Processes for tokenization (None: 1)."""
    tokens_column: str = "tokens"
    """token_classification: column with each sentence's list of words (CoNLL files always give `tokens`)."""
    tags_column: str = "tags"
    """token_classification: column with one tag per word, strings or ints (CoNLL files always give `tags`)."""
    tag_scheme: Literal["auto", "iob2", "iob1", "bioes", "none"] = "auto"
    """token_classification: how the tags mark entities; iob1 and bioes are converted to IOB2 on load, none is a plain
    tag set (part-of-speech). auto: bioes when S-/E- tags occur, iob1 when entities open with I- and never with B-,
    none when some tag is neither O nor B-/I-/E-/S- + a type, else iob2."""
    repair_tags: bool = False
    """token_classification: turn an invalid IOB2 tag (I-X after O or another type) into B-X and count the repairs in
    the log, instead of stopping with an error."""
    label_all_tokens: bool = False
    """token_classification: train on every piece of a word (later pieces of a B- word get its I- tag) instead of the
    first piece only. Evaluation always reads each word's first piece."""
    stride: int = 32
    """token_classification: a sentence longer than max_length is cut into windows of whole words that overlap by
    about this many tokens; each word's prediction comes from the window where it has the most context."""


@dataclass
class FrozenConfig:
    pooling: Literal["cls", "mean"] = "mean"
    """How token features become one vector: the first token's, or the mean over real tokens."""
    head: Literal["linear", "mlp"] = "linear"
    """Classifier on the pooled features: one linear layer, or Linear-GELU-Dropout-Linear."""
    hidden_size: int = 256
    """Width of the MLP head's hidden layer."""
    dropout: float = 0.1
    """Dropout before the head's last layer."""
    unfreeze_last: int = 0
    """Also train the top N transformer layers throughout; 0 keeps the backbone frozen."""
    unfreeze_schedule: Literal["none", "gradual"] = "none"
    """gradual (ULMFiT; methods frozen and full): the head trains alone in epoch 1, then one more layer from the top
    joins each epoch, the embeddings last."""
    cache_features: bool = True
    """When nothing in the backbone trains, compute its features once and train the head on them."""
    solver: Literal["auto", "lbfgs", "sgd"] = "auto"
    """How a head on cached features learns. auto: a linear head on pooled features (classification) is solved to
    convergence by L-BFGS (its L2 chosen on the validation split; epochs and learning rate unused), an MLP head or a
    per-token head trains by epochs; sgd: train by epochs."""


@dataclass
class LoraConfig:
    r: int = 8
    """Rank of the low-rank update."""
    alpha: int = 16
    """Scaling: the update is multiplied by alpha / r."""
    dropout: float = 0.1
    """Dropout on the LoRA branch's input."""
    target_modules: list[str] | None = None
    """Module names to adapt (default: every linear layer of the transformer blocks, `all-linear`)."""
    merge: bool = False
    """Also write the adapter merged into the base weights, as a plain model, to output_dir/merged."""
    load_in_4bit: bool = False
    """QLoRA (task sft): load the base model in 4-bit NF4 (bitsandbytes, a CUDA GPU) and train LoRA adapters in
    bf16 on it; merge is refused (merge into an unquantised copy of the base after the run)."""


@dataclass
class SoftPromptConfig:
    num_virtual_tokens: int = 20
    """Length of the trained soft prompt."""
    init_text: str | None = None
    """prompt_tuning only: initialise the prompt from this text's token embeddings (default: random)."""
    encoder_hidden_size: int = 128
    """p_tuning only: hidden size of the prompt encoder (an MLP)."""


@dataclass
class PromptConfig:
    template: str | None = None
    """Cloze template over the data's columns with one {mask} slot, e.g. "{text} All in all, it was {mask}."
    ({text}/{text_pair} = data.text_column/text_pair_column; any other {name} is a column; {{ }} are braces)."""
    verbalizer: dict[str, Any] | None = None
    """label -> word or words, e.g. {positive: [great, good], negative: [terrible]}; words must be in the vocabulary."""
    kind: Literal["auto", "mlm", "clm"] = "auto"
    """How the slot is scored: masked LM (mask token in the slot) or causal LM (label words continue the prompt);
    auto = mlm when the model has a masked-LM head class and the tokenizer a mask token."""
    chat: Literal["auto", "on", "off"] = "auto"
    """Causal LMs: put the rendered prompt (the template up to {mask}) in a user turn of the tokenizer's chat
    template and score the label words where the assistant's answer starts. auto: on when the tokenizer has a chat
    template (an instruct model); off: the plain text continues."""
    calibrate: bool = False
    """zero_shot only: contextual calibration, dividing by the label-word probabilities of content-free inputs."""
    tune: Literal["full", "lora", "prompt_tuning", "p_tuning"] = "full"
    """pet only: which weights learn the cloze task (every weight, LoRA adapters, or a soft prompt before the
    template, which is P-tuning as its paper meant it). lora.* and soft_prompt.* configure them."""


@dataclass
class SftConfig:
    format: Literal["auto", "messages", "prompt_completion", "alpaca"] = "auto"
    """task sft: the data's shape. auto: from the columns (`messages`; `prompt` + `completion`; `instruction` +
    `output` + optional `input`, Alpaca)."""
    chat_template: str | None = None
    """The chat template that renders conversations: null = the tokenizer's own (chatml, logged, for a model without
    one); chatml, or a .jinja file, replaces it. It is saved with the run's tokenizer, so inference renders the same text."""
    system_prompt: str | None = None
    """A system turn put before every conversation that has none."""
    train_on_prompt: bool = False
    """false: only the assistant turns train (their text and end-of-turn token); true: every token."""
    packing: bool = False
    """Pack several conversations into each row of data.max_length tokens (best-fit decreasing); each attends only
    to itself (position ids restart; the model's attention reads them as separate sequences). false: batches of
    similar length (train.group_by_length)."""


# Peak rates per method, measured (benchmarks/defaults.py, MiniLM on three labelled sets of a few hundred rows, 3
# epochs): BERT's 2e-5..5e-5 is too low for a small model on a few hundred rows (at 3e-5, 51 steps left MiniLM at
# chance on movie sentences; 1e-4 reached 0.69). LoRA and soft prompts train few weights and take much larger rates.
DEFAULT_LEARNING_RATES = {"full": 2e-4, "frozen": 1e-3, "lora": 2e-3, "prompt_tuning": 3e-2, "prefix_tuning": 1e-2,
                          "p_tuning": 3e-3, "ia3": 3e-3, "zero_shot": 0.0}


@dataclass
class FinetuneConfig:
    task: str = "classification"
    """classification (one label per text or pair: single-label, multi-label, regression), token_classification
    (one tag per word: named entities, part-of-speech) or sft (a causal LM learns to answer: instructions, chats);
    `hfkit recipes` lists a recipe per task and method."""
    method: Literal["full", "frozen", "lora", "prompt_tuning", "prefix_tuning", "p_tuning", "ia3", "pet",
                    "zero_shot"] = "full"
    """How to adapt the model: every parameter, a head on frozen features, LoRA, soft prompts, IA3; or as a cloze
    (prompt.*): pet trains the LM head on it (few-shot), zero_shot only evaluates it."""
    output_dir: str = "runs/finetune"
    """The run directory: model or adapter, tokenizer, hfkit.yaml, metrics.json, checkpoints, logs."""
    multi_label: bool = False
    """Each row may have several labels (a list, or a string split on data.label_separator)."""
    regression: bool = False
    """Labels are numbers to predict (MSE loss; metrics mse, mae, pearson)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    frozen: FrozenConfig = field(default_factory=FrozenConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    soft_prompt: SoftPromptConfig = field(default_factory=SoftPromptConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3.0, batch_size=8, logging_steps=20))

    @property
    def prompted(self) -> bool:
        """The cloze head (classification): label words scored by the model's own LM head."""
        return self.method in ("pet", "zero_shot")

    @property
    def features_cached(self) -> bool:
        """Method frozen with nothing in the backbone training: its features are computed once."""
        f = self.frozen
        return (self.method == "frozen" and f.cache_features and not f.unfreeze_last
                and f.unfreeze_schedule == "none")

    @property
    def head_solved(self) -> bool:
        """The frozen linear head on cached pooled features (a task with one feature vector per example) is solved
        (solver.py), not trained by epochs."""
        from .tasks import TASKS, get_task

        return (self.features_cached and self.frozen.head == "linear" and self.frozen.solver != "sgd"
                and self.task in TASKS and get_task(self.task).pooled_features)

    @property
    def adaptation(self) -> str:
        """The method that decides which weights learn: prompt.tune for pet, else the method itself."""
        return self.prompt.tune if self.method == "pet" else self.method

    def fill_defaults(self) -> None:
        if self.train.learning_rate is None:
            self.train.learning_rate = DEFAULT_LEARNING_RATES[self.adaptation]

    def validate(self) -> list[str]:
        from .tasks import TASKS, get_task

        problems: list[str] = []
        if self.model.dtype in ("bfloat16", "float16"):
            if self.adaptation == "full":
                problems.append(f"model.dtype: {self.model.dtype} stores the weights that train; full fine-tuning "
                                "needs float32 weights (use train.precision=bf16 for 16-bit compute) or a method that "
                                "freezes the base (lora, ia3, frozen, prompt_tuning)")
            wanted = "bf16" if self.model.dtype == "bfloat16" else "fp16"
            if self.train.precision not in ("auto", wanted):
                problems.append(f"model.dtype: {self.model.dtype} needs train.precision={wanted} (16-bit weights "
                                f"compute in 16 bits), not {self.train.precision}")
        if self.task not in TASKS:
            problems.append(f"task: unknown task '{self.task}'{_suggest(self.task, list(TASKS))}; choose one of "
                            f"{', '.join(TASKS)}")
        else:
            task = get_task(self.task)
            if self.method not in task.methods:
                problems.append(f"method: {self.method} is not available for task {self.task}; use one of "
                                f"{', '.join(sorted(task.methods))}")
            problems += task.validate(self)
        if not self.model.path:
            problems.append("model.path: set the model to fine-tune (a run directory, a local model folder or a hub id)")
        if self.model.preset:
            problems.append("model.preset: fine-tuning starts from a trained model; set model.path instead")
        if self.multi_label and self.regression:
            problems.append("multi_label and regression: choose one")
        d = self.data
        if self.method == "zero_shot":
            if d.validation is None and d.test is None:
                problems.append("data.validation: zero_shot evaluates data.validation (or data.test); set one")
        elif d.train is None or d.train == [] or d.train == "":
            problems.append("data.train: no training data given; set data.train=PATH (csv/jsonl/parquet file, folder, glob or hub id)")
        if not 0.0 <= d.validation_split < 1.0:
            problems.append(f"data.validation_split: {d.validation_split} must be in [0, 1)")
        if d.max_length < 4:
            problems.append(f"data.max_length: {d.max_length} is too small; use >= 4 (128 is usual)")
        for name in ("max_train_samples", "shots_per_class", "num_proc"):
            value = getattr(d, name)
            if value is not None and value < 1:
                problems.append(f"data.{name}: must be >= 1 (or null)")
        if d.shots_per_class is not None and (self.multi_label or self.regression):
            problems.append("data.shots_per_class: few-shot sampling needs single-label classification")
        if d.label_separator is not None and not self.multi_label:
            problems.append("data.label_separator: only used with multi_label: true")
        if d.text_pair_column is not None and d.text_pair_column == d.text_column:
            problems.append("data.text_pair_column: must differ from data.text_column")
        f = self.frozen
        if f.unfreeze_last < 0:
            problems.append("frozen.unfreeze_last: must be >= 0")
        if f.unfreeze_schedule != "none" and self.method not in ("full", "frozen"):
            problems.append(f"frozen.unfreeze_schedule: unfreezes layers of method full or frozen, not {self.method}")
        if f.unfreeze_schedule != "none" and f.unfreeze_last:
            problems.append("frozen.unfreeze_schedule and frozen.unfreeze_last: choose one (a schedule, or a fixed "
                            "number of top layers)")
        if f.solver == "lbfgs" and self.method == "frozen" and not self.head_solved:
            problems.append("frozen.solver: lbfgs solves a linear head on cached features; it needs frozen.head=linear, "
                            "frozen.unfreeze_last=0, no unfreeze_schedule, frozen.cache_features=true and a task "
                            "with one feature vector per example (classification; a per-token head trains by epochs)")
        if self.train.class_weights == "balanced" and (self.multi_label or self.regression or self.prompted
                                                       or self.task != "classification"):
            problems.append("train.class_weights: balanced weights single-label classification (not multi_label, "
                            "regression, pet/zero_shot or token tasks)")
        if f.hidden_size < 1:
            problems.append("frozen.hidden_size: must be >= 1")
        if not 0.0 <= f.dropout < 1.0:
            problems.append(f"frozen.dropout: {f.dropout} must be in [0, 1)")
        if self.lora.r < 1 or self.lora.alpha < 1:
            problems.append("lora.r and lora.alpha: must be >= 1")
        if not 0.0 <= self.lora.dropout < 1.0:
            problems.append(f"lora.dropout: {self.lora.dropout} must be in [0, 1)")
        if self.soft_prompt.num_virtual_tokens < 1 or self.soft_prompt.encoder_hidden_size < 1:
            problems.append("soft_prompt.num_virtual_tokens and soft_prompt.encoder_hidden_size: must be >= 1")
        soft = self.prompt.tune if self.method == "pet" else self.method
        if self.soft_prompt.init_text is not None and soft != "prompt_tuning":
            problems.append("soft_prompt.init_text: only prompt_tuning initialises from text")
        if self.model.random_init and not (self.method in ("full", "frozen") or
                                           (self.method == "pet" and self.prompt.tune == "full")):
            problems.append(f"model.random_init: works with method full, frozen or pet (prompt.tune=full); a {self.method} "
                            "run would not save the random weights it was trained on")
        p = self.prompt
        if self.prompted:
            if not p.template:
                problems.append(f"prompt.template: method {self.method} needs a cloze template, "
                                "e.g. prompt.template='{text} All in all, it was {mask}.'")
            if not p.verbalizer:
                problems.append(f"prompt.verbalizer: method {self.method} needs label words, "
                                "e.g. prompt.verbalizer='{positive: [great], negative: [terrible]}'")
            if self.multi_label or self.regression:
                problems.append(f"method {self.method}: prompting classifies single labels; unset multi_label/regression")
        if p.calibrate and self.method != "zero_shot":
            problems.append("prompt.calibrate: contextual calibration is for method zero_shot (PET learns the bias)")
        if self.train.early_stopping_patience is not None and self.train.early_stopping_patience < 1:
            problems.append("train.early_stopping_patience: must be >= 1 (or null)")
        if self.train.early_stopping_patience and not self.train.load_best:
            problems.append("train.early_stopping_patience: stops on the best checkpoint's metric; it needs "
                            "train.load_best: true (or set early_stopping_patience: null)")
        problems += _validate_train(self.train)
        if not self.output_dir:
            problems.append("output_dir: must be set, e.g. output_dir=runs/my-classifier")
        return problems


CONFIG_KINDS: dict[str, type] = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}


# --------------------------------------------------------------------------------------------- conversion
class _Problem(Exception):
    pass


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return {list: "a list", dict: "a mapping"}[origin]
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, key: str, problems: list[str], root: type) -> Any:
    """Check/convert one YAML value against a field type. Raises _Problem with a message naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Problem(f"{key}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}, "
                           f"got {value!r}")
        return _build(tp, value, key + ".", problems, root)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, problems, root)
            except _Problem:
                continue
        raise _Problem(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise _Problem(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}"
                       f"{_suggest(str(value), [str(c) for c in choices])}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item_tp is str:
            return [str(value)]
        if not isinstance(value, list):
            raise _Problem(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]", problems, root) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Problem(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Problem(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Problem(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # PyYAML reads 5e-4 (no dot) as a string
                return float(value)
            except ValueError:
                pass
        raise _Problem(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Problem(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in hfkit, not user input


def _build(cls: type, data: dict, prefix: str, problems: list[str], root: type | None = None):
    root = root or cls
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            problems.append(f"unknown key '{prefix}{key}'{_suggest_key(str(key), cls, prefix, root)}")
            continue
        try:
            kwargs[key] = _convert(value, hints[key], prefix + key, problems, root)
        except _Problem as e:
            problems.append(str(e))
    return cls(**kwargs)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _all_keys(hints[f.name], prefix + f.name + ".")
    return keys


def _suggest(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _suggest_key(key: str, cls: type, prefix: str, root: type) -> str:
    local = [f.name for f in dataclasses.fields(cls)]
    match = difflib.get_close_matches(key, local, n=1, cutoff=0.6)
    if match:
        return f"; did you mean '{prefix}{match[0]}'?"
    # The key may belong to another section, e.g. `batch_size` at the top level -> `train.batch_size`.
    everywhere = _all_keys(root)
    leaf_matches = [k for k in everywhere if k.rsplit(".", 1)[-1] == key]
    if leaf_matches:
        return f"; did you mean '{leaf_matches[0]}'?"
    match = difflib.get_close_matches(key, [k.rsplit(".", 1)[-1] for k in everywhere], n=1, cutoff=0.75)
    if match:
        full = next(k for k in everywhere if k.rsplit(".", 1)[-1] == match[0])
        return f"; did you mean '{full}'?"
    return f"; valid keys here: {', '.join(local)}"


# --------------------------------------------------------------------------------------------- YAML and overrides
def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        hint = "; `hfkit recipes` lists the shipped recipes" if not p.exists() else ""
        raise ConfigError(f"recipe '{path}' not found{hint}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark, opened = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        if opened is not None and mark is not None and opened.line != mark.line:
            where += f" (in what opens on line {opened.line + 1})"
        raise ConfigError(f"recipe '{path}'{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"recipe '{path}': not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe '{path}': expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def _field_type(cls: type | None, dotted: str):
    """The annotated type of `dotted` ("prompt.template") in the config class, or None if there is no such key."""
    for part in dotted.split("."):
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
        cls = typing.get_type_hints(cls).get(part)
    return cls


def _is_text(tp) -> bool:
    """A plain string field (str or str | None), whose override text is kept as typed."""
    args = set(typing.get_args(tp)) if typing.get_origin(tp) in (Union, types.UnionType) else {tp}
    return str in args and args <= {str, type(None)}


def parse_overrides(items: list[str] | None, cls: type | None = None) -> dict:
    """`["train.max_steps=10", "output_dir=x"]` -> nested dict. Values are YAML-typed ("5e-4" stays a number), except
    for a plain string key of `cls`, which keeps the text as typed: `prompt.template=Review: {text} It was {mask}.`
    is that sentence, not a YAML mapping (null / ~ / nothing still mean null; a quoted value is unquoted)."""
    result: dict = {}
    problems = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"override '{item}' must look like section.key=value, e.g. train.max_steps=100")
            continue
        text = raw.strip()
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
        if _is_text(_field_type(cls, key)) and not quoted and text not in ("", "null", "~", "Null", "NULL"):
            _set_dotted(result, key, text)
            continue
        try:
            value = yaml.safe_load(raw) if text else None
        except yaml.YAMLError:
            value = raw
        _set_dotted(result, key, value)
    if problems:
        raise ConfigError(problems)
    return result


def _set_dotted(target: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


# Mappings that an override replaces whole: a new verbalizer's labels are the labels, not added to the recipe's.
REPLACED_WHOLE = {"prompt.verbalizer"}


def deep_merge(base: dict, update: dict, path: str = "") -> dict:
    """A new dict: `update` wins; mappings merge key by key, except free-form ones replaced whole by a non-mapping
    and those in REPLACED_WHOLE."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and f"{path}{key}" not in REPLACED_WHOLE:
            out[key] = deep_merge(out[key], value, f"{path}{key}.")
        else:
            out[key] = value
    return out


def _normalise_kwargs(overrides: dict) -> dict:
    """Python-API overrides: `train={"max_steps": 5}`, `**{"train.max_steps": 5}` or `train__max_steps=5`."""
    nested: dict = {}
    for key, value in overrides.items():
        dotted = key.replace("__", ".")
        if isinstance(value, dict) and "." not in dotted:
            nested = deep_merge(nested, {dotted: value})
        else:
            piece: dict = {}
            _set_dotted(piece, dotted, value)
            nested = deep_merge(nested, piece)
    return nested


def flatten_overrides(overrides: dict, kind: str = "finetune") -> list[str]:
    """Python-API overrides -> CLI `key=value` strings (values as JSON, which YAML reads back), for child runs.
    Config sections are flattened; a free-form mapping (model.overrides, prompt.verbalizer) stays one value."""
    import json

    nested = _normalise_kwargs(overrides)
    out: list[str] = []

    def walk(node: dict, cls: type | None, prefix: str) -> None:
        hints = typing.get_type_hints(cls) if cls is not None else {}
        for key, value in node.items():
            tp = hints.get(key)
            if isinstance(value, dict) and tp is not None and dataclasses.is_dataclass(tp):
                walk(value, tp, f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}={json.dumps(value)}")

    walk(nested, CONFIG_KINDS[kind], "")
    return out


def resolve(kind: str, recipe: str | Path | dict | Any | None = None, overrides: list[str] | dict | None = None):
    """Build a validated config of `kind` ("pretrain", ...): defaults < recipe < overrides.

    `recipe` is a YAML path, a dict, a config object, or None (defaults only). `overrides` is a list of
    "key=value" strings (CLI) or a dict (Python API). Raises ConfigError listing every problem.
    """
    cls = CONFIG_KINDS[kind]
    if recipe is None:
        raw: dict = {}
    elif isinstance(recipe, cls):
        raw = to_dict(recipe)
    elif isinstance(recipe, dict):
        raw = dict(recipe)
    elif isinstance(recipe, (str, Path)):
        raw = load_yaml(find_recipe(recipe))
    else:
        raise ConfigError(f"expected a recipe path, a dict or a {cls.__name__}, got {type(recipe).__name__}")
    _check_kind(kind, raw, recipe)
    if isinstance(overrides, dict):
        raw = deep_merge(raw, _normalise_kwargs(overrides))
    else:
        raw = deep_merge(raw, parse_overrides(overrides, cls))
    problems: list[str] = []
    cfg = _build(cls, raw, "", problems)
    if not problems:
        problems += cfg.validate()
    if problems:
        raise ConfigError(problems)
    cfg.fill_defaults()
    return cfg


def _check_kind(kind: str, raw: dict, recipe: Any) -> None:
    markers = {"pretrain": "objective", "finetune": "method"}
    for other, marker in markers.items():
        if other != kind and marker in raw and markers[kind] not in raw:
            raise ConfigError(f"recipe '{recipe}' is a {other} recipe (it sets '{marker}'); run it with `hfkit {other}`")


def recipe_kind(raw: dict) -> str:
    """pretrain for a recipe (or saved hfkit.yaml) that sets an objective, else finetune."""
    return "pretrain" if "objective" in raw else "finetune"


def read_run_config(run_dir: str | Path):
    """The typed config a run directory was made with (its hfkit.yaml), or None when it has none (a plain model
    folder). Not validated again: its paths may have moved since; keys are still checked."""
    saved = Path(run_dir) / "hfkit.yaml"
    if not saved.is_file():
        return None
    raw = load_yaml(saved)
    problems: list[str] = []
    cfg = _build(CONFIG_KINDS[recipe_kind(raw)], raw, "", problems)
    if problems:
        raise ConfigError(f"{saved}: " + "; ".join(problems))
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def save_yaml(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


# --------------------------------------------------------------------------------------------- shipped recipes
def recipes_dir() -> Path:
    """The `recipes/` folder next to the package (a source checkout or editable install)."""
    return Path(__file__).resolve().parent.parent / "recipes"


def list_recipes() -> list[Path]:
    root = recipes_dir()
    return sorted(p for p in root.rglob("*.yaml")) if root.is_dir() else []


def find_recipe(name: str | Path) -> Path:
    """A path as given if it exists; else a shipped recipe by name (`bert-mlm-tiny` or `pretrain/bert-mlm-tiny`)."""
    p = Path(name)
    if p.exists():
        return p
    stem = str(name).removesuffix(".yaml")
    for candidate in list_recipes():
        rel = candidate.relative_to(recipes_dir()).with_suffix("").as_posix()
        if stem in (rel, candidate.stem):
            return candidate
    return p
