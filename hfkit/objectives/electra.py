"""ELECTRA (Clark et al. 2020): replaced-token detection.

A small masked-LM generator fills the masked positions with its own samples; the discriminator, the model kept,
learns to tell for *every* token whether it was replaced, so each token gives a training signal instead of the 15%
masked-LM learns from. Both train jointly (loss = generator MLM + weight x discriminator), sharing their token,
position and type embeddings; the generator is a fraction of the discriminator's width and equally deep.

The run directory's root holds the discriminator (ElectraForPreTraining: `AutoModel`,
`AutoModelForSequenceClassification` and `AutoModelForTokenClassification` load it in plain transformers), the
generator sits in `generator/` (`AutoModelForMaskedLM`); every checkpoint carries a plain copy of the
discriminator in `checkpoint-N/discriminator/`, so an intermediate budget can be fine-tuned as it is.
"""

from __future__ import annotations

import math
from pathlib import Path

from . import Objective

# Parameters of the generator that are the discriminator's (shared embeddings; the generator's output layer is
# tied to the word embeddings): kept once in checkpoints, filled back in on load.
SHARED = {"generator.electra.embeddings.": "discriminator.electra.embeddings.",
          "generator.generator_lm_head.weight": "discriminator.electra.embeddings.word_embeddings.weight"}


def generator_shape(hidden: int, heads: int, intermediate: int, fraction: float) -> tuple[int, int, int]:
    """(hidden, heads, intermediate) of a generator `fraction` as wide as the discriminator; the width stays a
    multiple of the heads (ELECTRA-Small: 256 wide, 4 heads -> 64 wide, 1 head at 1/4)."""
    gen_heads = max(1, round(heads * fraction))
    gen_hidden = max(gen_heads, round(hidden * fraction / gen_heads) * gen_heads)
    return gen_hidden, gen_heads, max(1, round(intermediate * fraction))


def _shared_key(key: str, prefix: str) -> str | None:
    """The discriminator key a generator key aliases (both under `prefix`), or None."""
    local = key[len(prefix):]
    for generator_part, discriminator_part in SHARED.items():
        if local.startswith(generator_part):
            return prefix + discriminator_part + local[len(generator_part):]
    return None


def fill_shared(state_dict: dict, names, prefix: str = "") -> None:
    """Put back, under the generator's names, the shared parameters a state dict holds once (discriminator's)."""
    for key in (prefix + n for n in names):
        source = _shared_key(key, prefix)
        if source is not None and key not in state_dict and source in state_dict:
            state_dict[key] = state_dict[source]


def electra_pair_class():
    import torch
    import torch.nn.functional as F

    class ElectraPretraining(torch.nn.Module):
        """Generator + discriminator trained jointly; forward returns the loss and the counts behind the metrics."""

        accepts_loss_kwargs = False  # the loss is a mean over this batch's tokens: let Trainer scale it

        def __init__(self, generator, discriminator, weight: float):
            super().__init__()
            generator.electra.embeddings = discriminator.electra.embeddings
            generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
            self.generator, self.discriminator, self.weight = generator, discriminator, weight
            self.config = discriminator.config
            self._register_state_dict_hook(self._drop_shared)
            self._register_load_state_dict_pre_hook(self._fill_shared)

        @staticmethod
        def _drop_shared(module, state_dict, prefix, local_metadata):
            for key in [k for k in state_dict if k.startswith(prefix) and _shared_key(k, prefix)]:
                del state_dict[key]
            return state_dict

        def _fill_shared(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
            names = [n for n, _ in self.named_parameters(remove_duplicate=False)]
            fill_shared(state_dict, names + [n for n, _ in self.named_buffers(remove_duplicate=False)], prefix)

        def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            masked = labels != -100
            hidden = self.generator.electra(input_ids, attention_mask=attention_mask)[0]
            # The vocabulary projection only where a token was masked: the loss needs no other position.
            logits = self.generator.generator_lm_head(self.generator.generator_predictions(hidden[masked])).float()
            generator_loss = F.cross_entropy(logits, labels[masked], reduction="sum")
            with torch.no_grad():
                sampled = torch.distributions.Categorical(logits=logits.detach()).sample()
                original = torch.where(masked, labels, input_ids)
                corrupted = original.clone()
                corrupted[masked] = sampled
                replaced = (corrupted != original).float()
            scores = self.discriminator(corrupted, attention_mask=attention_mask).logits.float()
            real = attention_mask.bool()
            discriminator_loss = F.binary_cross_entropy_with_logits(scores[real], replaced[real], reduction="sum")
            n_masked, n_tokens = masked.sum().clamp(min=1), real.sum().clamp(min=1)
            loss = generator_loss / n_masked + self.weight * discriminator_loss / n_tokens
            with torch.no_grad():
                correct = ((scores[real] > 0).float() == replaced[real]).sum()
            return {"loss": loss, "generator_nll": generator_loss.detach(), "masked": masked.sum(),
                    "rtd_correct": correct, "tokens": real.sum(), "replaced": replaced[real].sum()}

    return ElectraPretraining


class Electra(Objective):
    name, title, kind, auto_class = "electra", "ELECTRA", "mlm", "AutoModelForPreTraining"
    perplexity = False  # its loss mixes two: the generator's perplexity is reported on its own

    def validate(self, cfg) -> list[str]:
        from ..models import PRESETS

        e, problems = cfg.electra, []
        if cfg.model.path is not None:
            problems.append("model.path: objective electra trains its generator and discriminator from scratch; "
                            "set model.preset (a bert-* or roberta-* size) instead")
        elif cfg.model.preset in PRESETS and PRESETS[cfg.model.preset]["family"] not in ("bert", "roberta"):
            problems.append(f"model.preset: objective electra builds ELECTRA's own BERT-block generator and "
                            f"discriminator from a bert-* or roberta-* size; '{cfg.model.preset}' is not one")
        if e.generator_size > 1:
            problems.append(f"electra.generator_size: {e.generator_size} makes the generator wider than the "
                            "discriminator (it must learn slower than it); use 0.25-0.5 of its width")
        elif e.generator_size <= 0:
            problems.append(f"electra.generator_size: {e.generator_size} must be a fraction of the discriminator's "
                            "width in (0, 1]; ELECTRA uses 0.25-0.5")
        if e.discriminator_weight <= 0:
            problems.append(f"electra.discriminator_weight: {e.discriminator_weight} must be > 0 (ELECTRA uses 50)")
        if cfg.mlm.whole_word:
            problems.append("mlm.whole_word: not supported with objective electra; unset it")
        return problems

    def configs(self, cfg, tokenizer):
        """(generator, discriminator) ElectraConfigs from the preset's sizes and model.overrides."""
        from transformers import ElectraConfig

        from ..models import PRESETS, check_overrides

        spec = PRESETS[cfg.model.preset]
        size = spec["config"]
        hidden, layers = size["hidden_size"], size["num_hidden_layers"]
        heads, intermediate = size["num_attention_heads"], size["intermediate_size"]
        overrides = dict(cfg.model.overrides)
        check_overrides(ElectraConfig, overrides)
        hidden, layers = overrides.pop("hidden_size", hidden), overrides.pop("num_hidden_layers", layers)
        heads = overrides.pop("num_attention_heads", heads)
        intermediate = overrides.pop("intermediate_size", intermediate)
        common = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, embedding_size=hidden,
                      num_hidden_layers=layers, max_position_embeddings=spec["max_positions"], **overrides)
        g_hidden, g_heads, g_intermediate = generator_shape(hidden, heads, intermediate, cfg.electra.generator_size)
        generator = ElectraConfig(hidden_size=g_hidden, num_attention_heads=g_heads, intermediate_size=g_intermediate,
                                  **common)
        discriminator = ElectraConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=intermediate,
                                      **common)
        for c in (generator, discriminator):
            c._attn_implementation = cfg.model.attn_implementation
        return generator, discriminator

    def build_model(self, cfg, tokenizer):
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        from .language_model import check_block_size

        generator, discriminator = self.configs(cfg, tokenizer)
        check_block_size(cfg, discriminator)
        return electra_pair_class()(ElectraForMaskedLM(generator), ElectraForPreTraining(discriminator),
                                    cfg.electra.discriminator_weight)

    def collator(self, cfg, tokenizer):
        from ..collators import MaskedLMCollator

        return MaskedLMCollator(tokenizer, probability=cfg.mlm.probability, seed=cfg.train.seed)

    def callbacks(self, cfg, tokenizer) -> list:
        from transformers import TrainerCallback

        class DiscriminatorInCheckpoints(TrainerCallback):
            def on_save(self, args, state, control, model=None, **kwargs):
                if state.is_world_process_zero and model is not None:
                    folder = Path(args.output_dir) / f"checkpoint-{state.global_step}" / "discriminator"
                    model.discriminator.save_pretrained(folder)
                    tokenizer.save_pretrained(folder)

        return [DiscriminatorInCheckpoints()]

    def evaluate(self, trainer, dataset, cfg) -> dict:
        """Replaced-token detection accuracy (and what always answering "original" scores) and the generator's
        masked-LM perplexity, over the validation blocks."""
        import torch

        from . import summed_over_batches

        if dataset is None:
            return {}
        keys = ("generator_nll", "masked", "rtd_correct", "tokens", "replaced")

        def counts(model, batch):
            out = model(**batch)
            return torch.stack([out[k].double() for k in keys])

        nll, masked, correct, tokens, replaced = summed_over_batches(trainer, dataset, counts)
        return {"rtd_accuracy": correct / max(tokens, 1), "rtd_accuracy_all_original": 1 - replaced / max(tokens, 1),
                "generator_perplexity": math.exp(min(nll / max(masked, 1), 700.0))}

    def save(self, model, state_dict, folder, tokenizer) -> None:
        parts: dict = {"discriminator": None, "generator": None}
        if state_dict is not None:  # gathered weights (FSDP / ZeRO-3): the shared ones are stored once
            full = dict(state_dict)
            fill_shared(full, [n for n, _ in model.named_parameters(remove_duplicate=False)])
            parts = {name: {k[len(name) + 1:]: v for k, v in full.items() if k.startswith(name + ".")} for name in parts}
        model.discriminator.save_pretrained(folder, state_dict=parts["discriminator"])
        tokenizer.save_pretrained(folder)
        model.generator.save_pretrained(Path(folder) / "generator", state_dict=parts["generator"])
        tokenizer.save_pretrained(Path(folder) / "generator")

    def load_snippet(self, output_dir: str) -> str:
        return ("from transformers import AutoModelForPreTraining, AutoModelForSequenceClassification, AutoTokenizer\n"
                f"discriminator = AutoModelForPreTraining.from_pretrained('{output_dir}')\n"
                f"classifier = AutoModelForSequenceClassification.from_pretrained('{output_dir}', num_labels=2)\n"
                f"tokenizer = AutoTokenizer.from_pretrained('{output_dir}')")
