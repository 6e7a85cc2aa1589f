"""Helper for test_resume.py: the masks every example of one or two epochs gets through hfkit's real pretraining
data path (corpus -> packed blocks -> keyed rows -> the Trainer's data loader, sharded by Accelerate under torchrun)
-> collator, written as JSON {"epoch/index": labels} per process.

    python tests/mask_dump.py CONFIG.json OUT_PREFIX   (or under torchrun --nproc_per_node 2)
"""

from __future__ import annotations

import json
import sys


def main(config_path: str, out_prefix: str) -> None:
    import hfkit
    from hfkit import pretrain
    from hfkit.data import load_corpus
    from hfkit.randomness import KEY
    from hfkit.training import start_run

    cfg = hfkit.load_config("pretrain", json.loads(open(config_path).read()))
    _, state, _ = start_run(cfg, None)
    corpus = load_corpus(cfg.data, seed=cfg.train.seed)
    tokenizer = pretrain.build_tokenizer(cfg, corpus["train"])
    lm = pretrain.build_datasets(cfg, corpus, tokenizer)
    collator = pretrain.build_collator(cfg, tokenizer)
    seen: dict[str, list[int]] = {}

    def recording(examples):
        batch = collator(examples)
        for example, labels in zip(examples, batch["labels"].tolist()):
            seen["/".join(map(str, example[KEY]))] = labels[:len(example["input_ids"])]
        return batch

    trainer = pretrain.build_trainer(cfg, pretrain.build_model(cfg, tokenizer), tokenizer, lm, recording,
                                     cfg.output_dir)
    loader = trainer.get_train_dataloader()
    for epoch in range(2):
        trainer.train_dataset.epoch = epoch  # what the epoch callback does before each epoch
        loader.set_epoch(epoch)
        for _ in loader:
            pass
    with open(f"{out_prefix}-{state.process_index}.json", "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
