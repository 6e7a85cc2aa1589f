"""Random choices keyed by (seed, epoch, example index), so that they do not depend on where a run was cut.

A collator that draws masks, replacements or crops from torch's global generator makes them depend on everything
that touched that generator before: the batch size, the number of processes, the data loader collating one batch
ahead of the step a checkpoint saves. A resumed run then draws other masks (measured: 0.0085 max weight difference
ten steps after the resume point for masked-LM). Here each example carries its key, and its draws come from a
generator seeded by that key alone: the same example gets the same mask in epoch e whatever the batch, the process
count, the prefetching or the resume point. Model-side randomness (dropout, ELECTRA's sampled replacements) stays on
the global generator, whose state the Trainer saves in every checkpoint.

    KeyedExamples(dataset, seed)  rows gain KEY = [epoch, index]; the epoch is set by `epoch_callback`
    example_generator(seed, key)  a torch.Generator for one example
"""

from __future__ import annotations

import math

KEY = "hfkit_key"  # [epoch, example index] in a row; collators that draw random numbers read it, and drop it
EVAL_EPOCH = -1  # evaluation examples: one fixed draw per example, the same at every evaluation
_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a bijection of 64-bit ints that spreads every input bit over the output."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def example_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed from (run seed, epoch, example index, stream); `stream` separates independent draws of one
    example (e.g. two views)."""
    x = _mix(seed & _MASK64)
    for part in (epoch, index, stream):
        x = _mix(x ^ (part & _MASK64))
    return x >> 1


def example_generator(seed: int, key, stream: int = 0):
    """torch.Generator for the example whose row carries `key` ([epoch, index])."""
    import torch

    epoch, index = key
    return torch.Generator().manual_seed(example_seed(seed, int(epoch), int(index), stream))


def batch_keys(examples: list[dict]) -> list:
    """The keys of a batch's rows. Rows without one (a collator called outside a training run) get keys drawn from
    torch's global generator: such a batch still repeats under the same global seed, as before keys existed."""
    if examples and KEY in examples[0]:
        return [e[KEY] for e in examples]
    import torch

    base = int(torch.randint(0, 2**62, ()))
    return [(EVAL_EPOCH - 1, base + i) for i in range(len(examples))]


class KeyedExamples:
    """A map-style view of `dataset` (a datasets.Dataset) whose rows also carry KEY = [epoch, index], with the index
    into `dataset`, the same on every process. `epoch` is set before each epoch's data loader is iterated (the
    callback below); EVAL_EPOCH for evaluation sets."""

    def __init__(self, dataset, epoch: int = 0):
        self.dataset, self.epoch = dataset, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return dict(self.dataset[int(index)], **{KEY: [self.epoch, int(index)]})

    def __getitems__(self, indices: list[int]) -> list[dict]:  # one Arrow read per batch (torch's DataLoader)
        columns = self.dataset[[int(i) for i in indices]]
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        for row, index in zip(rows, indices):
            row[KEY] = [self.epoch, int(index)]
        return rows

    @property
    def column_names(self) -> list[str]:
        return list(self.dataset.column_names) + [KEY]


def epoch_callback(dataset: KeyedExamples):
    """Sets `dataset.epoch` to the epoch the Trainer is about to iterate. The Trainer calls on_epoch_begin before it
    creates the epoch's iterator (so data loader workers copy the new value), and after loading the checkpoint's state
    when resuming: floor(state.epoch) is the epoch being resumed (a checkpoint at an epoch's end holds a whole number)."""
    from transformers import TrainerCallback

    class EpochForKeys(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            dataset.epoch = int(math.floor(state.epoch + 1e-9)) if state.epoch else 0

    return EpochForKeys()
