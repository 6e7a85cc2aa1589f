"""Masked-LM (BERT-style encoders) and causal-LM (GPT-style decoders): the transformers head trained as is."""

from __future__ import annotations

from . import Objective


def load_or_build(cfg, tokenizer, auto_cls):
    """A fresh model from model.preset, or the checkpoint at model.path with its head; embeddings grown to the
    tokenizer's vocabulary; data.block_size checked against the model's positions."""
    from ..models import fix_loss_scaling, load_pretrained, preset_config, resolve_model_path

    m = cfg.model
    if m.preset:
        model = auto_cls.from_config(preset_config(m.preset, tokenizer, m.overrides, m.attn_implementation))
    else:
        model = load_pretrained(auto_cls, resolve_model_path(m.path), revision=m.revision,
                                trust_remote_code=m.trust_remote_code, attn_implementation=m.attn_implementation,
                                **m.overrides)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    check_block_size(cfg, model.config)
    fix_loss_scaling(model)
    return model


def check_block_size(cfg, model_config) -> None:
    """Refuse a data.block_size beyond the model's positions."""
    from ..errors import ConfigError
    from ..models import max_positions

    limit = max_positions(model_config)
    if limit is not None and cfg.data.block_size > limit:
        raise ConfigError(f"data.block_size: {cfg.data.block_size} exceeds the model's {limit} positions; "
                          f"set data.block_size={limit} or less")


class MaskedLM(Objective):
    name, title, kind, auto_class = "mlm", "masked-LM", "mlm", "AutoModelForMaskedLM"

    def build_model(self, cfg, tokenizer):
        from transformers import AutoModelForMaskedLM

        from ..models import head_on_masked_only

        model = load_or_build(cfg, tokenizer, AutoModelForMaskedLM)
        head_on_masked_only(model, cfg.mlm.head_on_masked_only)
        return model

    def collator(self, cfg, tokenizer):
        from ..collators import MaskedLMCollator

        return MaskedLMCollator(tokenizer, probability=cfg.mlm.probability, whole_word=cfg.mlm.whole_word,
                                seed=cfg.train.seed)


class CausalLM(Objective):
    name, title, kind, auto_class = "clm", "causal-LM", "clm", "AutoModelForCausalLM"

    def validate(self, cfg) -> list[str]:
        if cfg.mlm.whole_word:
            return ["mlm.whole_word: whole-word masking applies to masked objectives (mlm, electra) only"]
        return []

    def build_model(self, cfg, tokenizer):
        from transformers import AutoModelForCausalLM

        return load_or_build(cfg, tokenizer, AutoModelForCausalLM)

    def collator(self, cfg, tokenizer):
        from ..collators import CausalLMCollator

        return CausalLMCollator(tokenizer.pad_token_id)
