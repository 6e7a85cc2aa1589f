"""Pretraining objectives, each behind the same seam (`Objective`), found by name in `OBJECTIVES`.

An objective owns what is specific to it: which kind of model it needs (an encoder or a decoder: presets, the
tokenizer's special tokens and how blocks are packed follow from that), the model it trains, the collator, the
metrics beyond the evaluation loss, and what the run directory's root holds. `pretrain.run` calls only this
interface, so a new objective is one module here and one line in OBJECTIVES.

Importing this package imports neither torch nor transformers: config validation stays fast.
"""

from __future__ import annotations

import importlib

# name -> "module:class" of the Objective, imported on first use.
OBJECTIVES: dict[str, str] = {
    "mlm": "hfkit.objectives.language_model:MaskedLM",
    "clm": "hfkit.objectives.language_model:CausalLM",
    "electra": "hfkit.objectives.electra:Electra",
    "nsp": "hfkit.objectives.sentence_pairs:NextSentence",
    "sop": "hfkit.objectives.sentence_pairs:SentenceOrder",
    "contrastive": "hfkit.objectives.contrastive:Contrastive",
}


def get_objective(name: str) -> "Objective":
    from ..errors import ConfigError

    if name not in OBJECTIVES:
        raise ConfigError(f"objective: unknown objective '{name}'; choose one of {', '.join(OBJECTIVES)}")
    module, attribute = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), attribute)()


def summed_over_batches(trainer, dataset, counts) -> list[float]:
    """Sum `counts(model, batch)` (a 1-d tensor of counts or summed losses) over the evaluation batches of
    `dataset`, without gradients and with the model in eval mode, then across processes."""
    import torch

    model = trainer.model
    was_training = model.training
    model.eval()
    totals = None
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader(dataset):
            values = counts(model, trainer._prepare_inputs(batch)).to(torch.float64)
            totals = values if totals is None else totals + values
    model.train(was_training)
    return trainer.accelerator.reduce(totals, "sum").tolist()


def sampled_lengths(dataset, sample: int = 10_000) -> list[int]:
    """Token counts of the first `sample` examples of a tokenized dataset."""
    return [len(ids) for ids in dataset.select(range(min(sample, len(dataset))))["input_ids"]]


class Objective:
    """The interface `pretrain.run` relies on."""

    name: str = ""
    title: str = ""  # for the model card, e.g. "masked-LM"
    kind: str = "mlm"  # the model it needs: "mlm" (an encoder; [CLS] ... [SEP] blocks) or "clm" (a decoder)
    auto_class: str = "AutoModelForMaskedLM"  # what loads the run directory's root in plain transformers
    perplexity: bool = True  # the evaluation loss is a language model's: report exp(loss) as perplexity
    packed: bool = True  # trains on packed blocks (tokenize_and_pack), so a corpus may be streamed

    def validate(self, cfg) -> list[str]:
        """Problems with the objective's own settings of a PretrainConfig, each naming its key."""
        return []

    def build_datasets(self, cfg, corpus, tokenizer, log) -> dict:
        """Tokenized splits of `corpus` (a dict of text datasets): packed blocks unless the objective needs other
        examples (sentence pairs, single sentences)."""
        from ..data import tokenize_and_pack

        return dict(tokenize_and_pack(corpus, tokenizer, objective=self.kind, block_size=cfg.data.block_size,
                                      whole_word=cfg.mlm.whole_word, num_proc=cfg.data.num_proc,
                                      cache_dir=cfg.data.cache_dir, log=log))

    def example_length(self, cfg, dataset) -> float:
        """Tokens the model reads per training example, for tokens/s and MFU: a full block when packed (blocks are
        full), else the mean length over the first 10,000 examples."""
        if self.packed:
            return cfg.data.block_size
        lengths = sampled_lengths(dataset)
        return sum(lengths) / max(len(lengths), 1)

    def keyed(self, cfg) -> bool:
        """Whether the collator draws random numbers (masks, crops): then every row carries its (epoch, index) key
        and the collator draws from a generator seeded by it (hfkit/randomness.py)."""
        return self.kind == "mlm"

    def build_model(self, cfg, tokenizer):
        """The module the Trainer trains (a transformers model, or a module holding several)."""
        raise NotImplementedError

    def collator(self, cfg, tokenizer):
        raise NotImplementedError

    def callbacks(self, cfg, tokenizer) -> list:
        """Trainer callbacks the objective needs (e.g. to write plain models into each checkpoint)."""
        return []

    def evaluate(self, trainer, dataset, cfg) -> dict:
        """Metrics beyond the evaluation loss (`dataset`: the validation examples, or None)."""
        return {}

    def save(self, model, state_dict, folder, tokenizer) -> None:
        """The final model(s) at the run directory's root (`state_dict`: the gathered weights, or None)."""
        model.save_pretrained(folder, state_dict=state_dict)
        tokenizer.save_pretrained(folder)

    def load_snippet(self, output_dir: str) -> str:
        return (f"from transformers import {self.auto_class}, AutoTokenizer\n"
                f"model = {self.auto_class}.from_pretrained('{output_dir}')\n"
                f"tokenizer = AutoTokenizer.from_pretrained('{output_dir}')")
