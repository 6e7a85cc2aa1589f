"""The seams a new task or method plugs into: the registry, a recipe without task or method branches, no import
cycles, the Python API's names, and overrides typed by the key they set."""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import pytest

import hfkit
from hfkit.config import resolve

PACKAGE = Path(hfkit.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """hfkit module -> the hfkit modules it imports anywhere in its code (top level or inside functions)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rsplit(".", 1)[0]
                target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
                found = {target} | {f"{target}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found = {a.name for a in node.names}
            else:
                continue
            graph[name] |= {t for t in found if t in modules and t != name}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()

    def reachable(start):
        seen, stack = set(), [start]
        while stack:
            for nxt in graph[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    reach = {name: reachable(name) for name in graph}
    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in reach[a] if a in reach[b] and a != b
                     and not (b.startswith(a + ".") or a.startswith(b + "."))})  # a package and its own modules
    assert cycles == [], cycles
    assert "hfkit.finetune" not in reach["hfkit.prompting"] and "hfkit.inference" not in reach["hfkit.tasks.classification"]


def test_the_recipe_has_no_task_or_method_branches():
    from hfkit import finetune as module
    from hfkit.methods import METHODS
    from hfkit.tasks import TASKS

    source = inspect.getsource(module.run)
    named = [n for n in list(METHODS) + list(TASKS) + ["pet", "prompted"] if f'"{n}"' in source or f".{n}" in source]
    assert named == [], named
    assert len(source.splitlines()) <= 45


def test_pretraining_has_no_objective_branches_and_every_objective_loads():
    from hfkit import pretrain as module
    from hfkit.objectives import OBJECTIVES, Objective, get_objective

    for function in (module.run, module.build_model, module.build_collator, module.build_datasets):
        source = inspect.getsource(function)
        assert not [n for n in OBJECTIVES if f'"{n}"' in source], function.__name__
    for name in OBJECTIVES:
        objective = get_objective(name)
        assert isinstance(objective, Objective) and objective.name == name and objective.kind in ("mlm", "clm")


def test_every_registered_task_loads_with_methods_the_registry_knows():
    from hfkit.methods import METHODS
    from hfkit.tasks import TASKS, Task, get_task

    for name in TASKS:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.methods <= set(METHODS) | {"pet"}, name
        assert {"full", "lora"} <= task.methods
        assert "frozen" in task.methods or name == "sft"  # a causal LM's "head" is its LM head: nothing to freeze


def test_finetune_is_the_module_and_runs_a_recipe_when_called():
    import hfkit.finetune as module

    assert isinstance(module, types.ModuleType) and module is hfkit.finetune and callable(hfkit.finetune)
    assert callable(hfkit.pretrain) and isinstance(hfkit.pretrain, types.ModuleType) and hfkit.pretrain.run


def test_a_string_override_keeps_the_text_as_typed():
    base = ["model.path=m", "data.train=t.csv"]
    cfg = resolve("finetune", "classification-pet", base + ["prompt.template=Movie review: {text} ... {mask}",
                                                           "output_dir=runs/a: b", "data.text_pair_column=null",
                                                           "train.learning_rate=5e-4"])
    assert cfg.prompt.template == "Movie review: {text} ... {mask}"
    assert cfg.output_dir == "runs/a: b" and cfg.data.text_pair_column is None and cfg.train.learning_rate == 5e-4
    cfg = resolve("finetune", "classification-pet", base + ["prompt.template='{text} It was {mask}.'"])
    assert cfg.prompt.template == "{text} It was {mask}."
    assert resolve("finetune", "ner-lora", base + ["data.train=[a.conll, b.conll]"]).data.train == ["a.conll", "b.conll"]


def test_fsdp_refuses_a_head_that_registers_its_bias_twice(monkeypatch):
    """BERT's masked-LM head registers one bias under two names; accelerate's FSDP2 would fail at the first step
    (torch: "shared with a parameter already managed by another FSDP group"). GPT-2 has no output bias: allowed."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from hfkit.errors import ConfigError
    from hfkit.training import fsdp_units

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "GPT2Block")  # leaves the environment as it was
    fsdp_units(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)))
    bert = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64))
    with pytest.raises(ConfigError, match=r"registers its output bias twice \(cls.predictions.bias, "
                                          r"cls.predictions.decoder.bias\)"):
        fsdp_units(bert)
