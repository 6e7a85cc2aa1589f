"""Config: precedence, validation messages, overrides, YAML round trip, and every shipped recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hfkit.config import PretrainConfig, list_recipes, parse_overrides, recipes_dir, resolve, save_yaml
from hfkit.errors import ConfigError

BASE = {"model": {"preset": "bert-tiny"}, "data": {"train": "corpus.txt"}}


def problems_of(recipe=None, overrides=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        resolve("pretrain", recipe if recipe is not None else dict(BASE), overrides)
    return info.value.problems


def test_precedence_defaults_then_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**BASE, "train": {"batch_size": 8, "learning_rate": 1e-3}}))
    cfg = resolve("pretrain", recipe, ["train.learning_rate=5e-4"])
    assert cfg.train.batch_size == 8            # recipe beats the default (16)
    assert cfg.train.learning_rate == 5e-4      # override beats the recipe; "5e-4" read as a number
    assert cfg.train.seed == PretrainConfig().train.seed  # untouched default
    assert cfg.data.block_size == 128


def test_python_kwargs_forms_agree():
    a = resolve("pretrain", dict(BASE), {"train": {"max_steps": 7}})
    b = resolve("pretrain", dict(BASE), {"train.max_steps": 7})
    c = resolve("pretrain", dict(BASE), {"train__max_steps": 7})
    assert a.train.max_steps == b.train.max_steps == c.train.max_steps == 7


def test_override_values_are_yaml():
    parsed = parse_overrides(["data.train=[a.txt, b.txt]", "model.overrides={num_hidden_layers: 4}", "train.seed=3"])
    assert parsed == {"data": {"train": ["a.txt", "b.txt"]}, "model": {"overrides": {"num_hidden_layers": 4}},
                      "train": {"seed": 3}}


@pytest.mark.parametrize("overrides, expected", [
    (["train.lerning_rate=1e-3"], "unknown key 'train.lerning_rate'; did you mean 'train.learning_rate'?"),
    (["batch_size=4"], "unknown key 'batch_size'; did you mean 'train.batch_size'?"),
    (["train.batch_size=abc"], "train.batch_size: expected an integer, got 'abc'"),
    (["train.learning_rate=-1e-3"], "train.learning_rate: -0.001 must be > 0"),
    (["objective=mlmm"], "objective: 'mlmm' is not one of mlm, clm, electra, nsp, sop, contrastive (did you mean 'mlm'?)"),
    (["model.preset=bert-tiney"], "model.preset: unknown preset 'bert-tiney' (did you mean 'bert-tiny'?)"),
    (["model.preset=gpt2-tiny"], "objective: 'mlm' needs a masked-LM model but preset 'gpt2-tiny' is causal"),
    (["objective=clm"], "objective: 'clm' needs a causal-LM model but preset 'bert-tiny' is an encoder"),
    (["model.path=some/model"], "set exactly one of model.preset"),
    (["data.block_size=1024"], "data.block_size: 1024 exceeds the 512 positions of preset 'bert-tiny'"),
    (["data.block_size=4"], "data.block_size: 4 is too small"),
    (["data.train=null"], "data.train: no training data given"),
    (["data.validation_split=1.5"], "data.validation_split: 1.5 must be in [0, 1)"),
    (["mlm.probability=0"], "mlm.probability: 0.0 must be between 0 and 1"),
    (["train.warmup_ratio=2"], "train.warmup_ratio: 2.0 must be in [0, 1)"),
    (["train.resume=no/such/checkpoint"], "train.resume: 'no/such/checkpoint' is not a checkpoint folder"),
    (["train.max_steps=0"], "train.max_steps: 0 must be > 0"),
    (["tokenizer.vocab_size=10"], "tokenizer.vocab_size: 10 is too small"),
    (["train.overwrite=maybe"], "train.overwrite: expected true or false, got 'maybe'"),
    (["train=5"], "train: expected a mapping of"),
    (["nokey"], "override 'nokey' must look like section.key=value"),
])
def test_validation_messages_name_the_key(overrides, expected):
    problems = problems_of(overrides=overrides)
    assert any(expected in p for p in problems), problems


def test_every_problem_is_reported_at_once():
    problems = problems_of(overrides=["train.batch_size=abc", "train.lerning_rate=1", "data.block_size=2"])
    assert len(problems) == 2  # type + unknown key found while building; range checks wait for a well-typed config
    problems = problems_of(overrides=["train.batch_size=0", "data.block_size=2", "mlm.probability=2"])
    assert len(problems) == 3


def test_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match="recipe 'nope.yaml' not found"):
        resolve("pretrain", "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: mlm\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml' line \d+ \(in what opens on line 2\): not valid YAML"):
        resolve("pretrain", bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of keys at the top level"):
        resolve("pretrain", listy)
    finetune = tmp_path / "ft.yaml"
    finetune.write_text("method: lora\n")
    with pytest.raises(ConfigError, match="is a finetune recipe"):
        resolve("pretrain", finetune)


def test_saved_config_reruns_as_recipe(tmp_path):
    cfg = resolve("pretrain", dict(BASE), ["train.max_steps=9", "model.overrides={hidden_dropout_prob: 0.0}"])
    save_yaml(cfg, tmp_path / "hfkit.yaml")
    again = resolve("pretrain", tmp_path / "hfkit.yaml")
    assert again == cfg


def test_every_shipped_recipe_loads_and_validates():
    found = list_recipes()
    pretrain = [p for p in found if p.relative_to(recipes_dir()).parts[0] == "pretrain"]
    assert len(pretrain) == 10, [p.name for p in pretrain]  # recursive glob: recipes/**/*.yaml
    for path in pretrain:
        cfg = resolve("pretrain", path)
        assert cfg.output_dir.startswith("runs/"), path
        assert cfg.data.train, path


def test_every_shipped_finetune_recipe_loads_and_validates():
    finetune = [p for p in list_recipes() if p.relative_to(recipes_dir()).parts[0] == "finetune"]
    assert len(finetune) == 15, [p.name for p in finetune]
    for path in finetune:
        cfg = resolve("finetune", path)
        if path.stem == "compare-demo":
            assert cfg.prompt.verbalizer and not cfg.train.load_best
            continue
        if cfg.method == "zero_shot":
            assert path.stem == "zero-shot" and cfg.prompt.template and cfg.prompt.verbalizer
            continue
        prefix = {"classification": "classification", "token_classification": "ner", "sft": "sft"}[cfg.task]
        assert path.stem == f"{prefix}-{cfg.method}"
        assert cfg.train.learning_rate > 0 and cfg.model.path


def test_finetune_learning_rate_defaults_per_method():
    base = {"model": {"path": "m"}, "data": {"train": "t.csv"}}
    assert resolve("finetune", {**base, "method": "full"}).train.learning_rate == 2e-4
    assert resolve("finetune", {**base, "method": "lora"}).train.learning_rate == 2e-3
    assert resolve("finetune", {**base, "method": "lora"}, ["train.learning_rate=1e-4"]).train.learning_rate == 1e-4
    assert resolve("finetune", {**base, "method": "lora"}, ["train.learning_rate=auto"]).train.learning_rate == "auto"
    # the selection metric waits for the data (macro-F1 when classes are unbalanced); the task's own measure else
    assert resolve("finetune", base).train.metric_for_best is None
    from hfkit.tasks import get_task

    assert get_task("classification").metric_for_best(resolve("finetune", {**base, "regression": True})) == "mse"


@pytest.mark.parametrize("overrides, expected", [
    (["method=lorra"], "method: 'lorra' is not one of"),
    (["multi_label=true", "regression=true"], "multi_label and regression: choose one"),
    (["model.path=null"], "model.path: set the model to fine-tune"),
    (["data.shots_per_class=0"], "data.shots_per_class: must be >= 1"),
    (["soft_prompt.init_text=hello"], "soft_prompt.init_text: only prompt_tuning initialises from text"),
    (["data.label_separator=,"], "data.label_separator: only used with multi_label: true"),
    (["frozen.pooling=max"], "frozen.pooling: 'max' is not one of cls, mean"),
])
def test_finetune_validation_messages(overrides, expected):
    with pytest.raises(ConfigError) as info:
        resolve("finetune", {"method": "full", "model": {"path": "m"}, "data": {"train": "t.csv"}}, overrides)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_recipe_found_by_name():
    cfg = resolve("pretrain", "gpt2-clm-tiny")
    assert cfg.objective == "clm" and cfg.model.preset == "gpt2-tiny"
    assert Path(recipes_dir(), "pretrain", "gpt2-clm-tiny.yaml").is_file()


def test_recipes_are_safe_loaded(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("objective: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve("pretrain", evil)
    assert not Path("pwned.txt").exists()
    cfg = resolve("pretrain", dict(BASE))
    assert cfg.model.trust_remote_code is False  # a hub model's own code runs only when the user asks for it
