"""Streaming corpora for pretraining: text read lazily, tokenized and packed on the fly, split by rank, resumable.

    files / hub / builtin --(datasets, streaming=True)--> clean --> shuffle (buffer) --> this rank's share
        --> chunks of documents --> packed blocks (shuffled within the chunk) --> Trainer

Nothing is materialised: no Arrow copy of the training text and no tokenized cache are written. The stream never
ends for the Trainer; when a rank's share of the data runs out, its next epoch starts (reshuffled), so
`train.max_steps` sets the length of the run, and within an epoch every block is used at most once.

A position in the stream is (epoch, documents already read in that epoch, index of the next chunk's first block).
Every checkpoint gets one `stream_state-rankN.json` per rank with the position of the first block not yet trained
on; a resumed run skips raw documents up to it without tokenizing them again.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from torch.utils.data import IterableDataset

from .errors import ConfigError, DataError
from .objectives import get_objective
from .randomness import KEY

CHUNK_DOCUMENTS = 1000  # documents tokenized together (one tokenizer call); blocks are shuffled within a chunk
STATE_FILE = "stream_state-rank{rank}.json"
TOKENIZER_DOCUMENTS = 100_000  # documents a tokenizer is trained on from a stream when tokenizer.max_documents is unset


# --------------------------------------------------------------------------------------------- the text stream
def open_text_stream(d, *, seed: int, rank: int = 0, world_size: int = 1):
    """This rank's share of data.train as a `datasets.IterableDataset` with one column, `text`, cleaned."""
    from datasets import concatenate_datasets
    from datasets.distributed import split_dataset_by_node

    from .data import _long_enough, _strip_batch, expand_paths

    parts = [_select_text(_open_part(builder, items, d), d.text_column, builder, items)
             for builder, items in expand_paths(d.train, "data.train")]
    ds = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    ds = ds.map(_strip_batch, batched=True).filter(_long_enough, batched=True, fn_kwargs={"min_chars": d.min_chars})
    if next(iter(ds), None) is None:  # checked before anything is written (reads until the first kept document)
        raise DataError(f"data.train: no text left after dropping empty documents (min_chars={d.min_chars}); "
                        "check the files and data.text_column")
    if d.max_documents is not None:
        ds = ds.take(d.max_documents)
    if d.shuffle_buffer > 1:
        # The same seed on every rank: shards (or examples) are permuted alike, so the split below is a partition.
        ds = ds.shuffle(seed=seed, buffer_size=d.shuffle_buffer)
    if world_size > 1:
        from .training import log

        shards = ds.n_shards
        how = (f"{shards // world_size} of its {shards} shards to each" if shards % world_size == 0 else
               f"one document in {world_size} to each (give a multiple of {world_size} files to split by file)")
        log(f"data.train: the stream gives {how} of {world_size} processes")
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
    return ds


def _open_part(builder: str, items: list[str], d):
    from datasets import load_dataset

    from .data import BUILTIN_CORPORA

    if builder == "builtin":  # small corpora a pip package ships: read whole, served as a stream of 16 shards
        from datasets import concatenate_datasets

        parts = [BUILTIN_CORPORA[name]() for name in items]
        return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)).to_iterable_dataset(num_shards=16)
    if builder == "hub":
        try:
            return load_dataset(items[0], d.dataset_config, split="train", streaming=True)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"data.train: '{items[0]}' is neither a local path nor a streamable hub dataset "
                            f"({first[:200]})") from None
    from .rows import line_readable, rows_stream

    if line_readable(builder, d.sample_by):  # read line by line: a malformed row is named or skipped, never a crash
        return rows_stream(builder, items, key="data.train", on_error=d.on_error, text_column=d.text_column)
    kwargs: dict = {"sample_by": d.sample_by} if builder == "text" else {}
    if builder == "tsv":
        builder, kwargs["delimiter"] = "csv", "\t"
    return load_dataset(builder, data_files=items, split="train", streaming=True, **kwargs)


def _select_text(ds, text_column: str, builder: str, items: list[str]):
    """data._select_text on a stream, whose columns are known once its first row is read; reading it now also makes
    bad files fail before training."""
    from .data import _select_text as select_text

    try:
        first = next(iter(ds), None)
    except DataError:
        raise
    except Exception as e:  # datasets raises parser errors of many types, lazily, while streaming
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"data.train: cannot read {builder} data {', '.join(items[:3])}: {reason[:300]}") from None
    if first is None:
        raise DataError(f"data.train: {', '.join(items[:3])} holds no documents")
    return select_text(ds, text_column, "data.train", columns=list(first))


def tokenizer_sample(stream, max_documents: int | None):
    """The documents a tokenizer is trained on: the first `max_documents` (default 100,000) of the stream."""
    n = max_documents or TOKENIZER_DOCUMENTS
    return (row["text"] for row in stream.take(n)), n


# --------------------------------------------------------------------------------------------- packed blocks
class PackedStream(IterableDataset):
    """An endless stream of packed blocks from one rank's share of the text.

    `start` resumes: {"epoch", "documents", "first_block", "blocks_consumed"}: skip `documents` raw documents of
    `epoch` (they are not tokenized), then drop blocks until block index `blocks_consumed` is reached (`first_block`
    is the index of the first block after the skipped documents).
    """

    def __init__(self, texts, tokenizer, *, objective: str, block_size: int, whole_word: bool, seed: int,
                 start: dict | None = None, chunk_documents: int | None = None, rank: int = 0, world_size: int = 1):
        from .data import block_layout

        super().__init__()
        self.texts, self.tokenizer, self.seed = texts, tokenizer, seed
        self.objective, self.block_size, self.whole_word = objective, block_size, whole_word
        self.chunk_documents, self.rank, self.world_size = chunk_documents or CHUNK_DOCUMENTS, rank, world_size
        self.prefix, self.suffix, self.separator = block_layout(tokenizer, objective)
        if self.separator is None:
            raise DataError("the tokenizer has no token to separate documents (eos or sep)")
        self.start = start or {"epoch": 0, "documents": 0, "first_block": 0, "blocks_consumed": 0}
        self.marks: list[tuple[int, int, int]] = []  # (index of a chunk's first block, epoch, documents before it)

    def pack(self, documents: list[str]) -> list[dict]:
        from .data import _pack_batch

        out = _pack_batch({"text": documents}, self.tokenizer, self.block_size, self.prefix, self.suffix,
                          self.separator, list(self.tokenizer.all_special_ids), self.objective, self.whole_word)
        return [dict(zip(out, row)) for row in zip(*out.values())]

    def __iter__(self):
        epoch, skip, index = self.start["epoch"], self.start["documents"], self.start["first_block"]
        wanted = self.start["blocks_consumed"]
        while True:
            self.texts.set_epoch(epoch)  # reshuffles shards and buffer for this epoch
            documents = iter(self.texts)
            read = sum(1 for _ in itertools.islice(documents, skip))
            if read < skip:
                raise DataError(f"data.train: the checkpoint's stream position ({skip:,} documents into epoch {epoch}) "
                                "is past the end of the data; was data.train changed since?")
            while chunk := [row["text"] for row in itertools.islice(documents, self.chunk_documents)]:
                blocks = self.pack(chunk)
                random.Random(f"{self.seed}/{epoch}/{read}").shuffle(blocks)
                self.marks.append((index, epoch, read))
                read += len(chunk)
                for block in blocks:
                    index += 1
                    if index > wanted:
                        # Keyed by this rank's block count: masks repeat wherever the run is resumed (randomness.py).
                        block[KEY] = [epoch, (index - 1) * self.world_size + self.rank]
                        yield block
            if read == 0:
                raise DataError(f"data.train: process {self.rank} of {self.world_size} received no documents; "
                                "give more files (or shards) than processes, or use fewer processes")
            epoch, skip = epoch + 1, 0

    def position(self, blocks_consumed: int) -> dict:
        """Where the block with index `blocks_consumed` (0-based, counted from the start of training) comes from."""
        known = [m for m in self.marks if m[0] <= blocks_consumed]
        if not known:  # nothing read yet in this session: the position it started from is still right
            return dict(self.start, blocks_consumed=max(blocks_consumed, self.start["blocks_consumed"]))
        first_block, epoch, documents = known[-1]
        self.marks = self.marks[len(known) - 1:]  # older chunks can never be asked for again
        return {"epoch": epoch, "documents": documents, "first_block": first_block, "blocks_consumed": blocks_consumed}


# --------------------------------------------------------------------------------------------- checkpoints
def load_position(checkpoint: str | Path, rank: int, world_size: int, blocks_per_step: int,
                  respread: bool = False) -> dict:
    """The stream position saved in a checkpoint for this rank; without one, count blocks from the start.
    respread: a checkpoint written by another number of processes (or another batch per process) continues from
    about the same place in the data (`_respread`) instead of being refused."""
    from .training import log

    path = Path(checkpoint) / STATE_FILE.format(rank=rank)
    step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]
    consumed = step * blocks_per_step
    states = {p.name: json.loads(p.read_text()) for p in sorted(Path(checkpoint).glob(STATE_FILE.format(rank="*")))}
    if not states:
        log(f"{path.name} is missing in {checkpoint}: re-reading the stream from the start to block {consumed:,}")
        return {"epoch": 0, "documents": 0, "first_block": 0, "blocks_consumed": consumed}
    saved = states.get(path.name, {})
    if saved.get("world_size") != world_size or saved.get("blocks_per_step") != blocks_per_step:
        if respread:
            return _respread(list(states.values()), rank, world_size, consumed)
        old = next(iter(states.values()))
        raise ConfigError(f"train.resume: {checkpoint} was written by {old.get('world_size')} process(es) taking "
                          f"{old.get('blocks_per_step')} blocks per step each (now {world_size} x {blocks_per_step}); "
                          "a stream's split depends on both, so it resumes exactly only with the same, or pass "
                          "train.resume_changed=true to go on from about the same place in the data")
    if saved["blocks_consumed"] != consumed:
        raise DataError(f"train.resume: {path} does not match the checkpoint's step {step}")
    return {k: saved[k] for k in ("epoch", "documents", "first_block", "blocks_consumed")}


def _respread(states: list[dict], rank: int, world_size: int, consumed: int) -> dict:
    """A position for this rank of `world_size` from the positions (`states`) of the processes that wrote the
    checkpoint.

    The stream is shuffled before it is split (the same seed on every process), so the processes that wrote it
    read about the first D documents of the epoch's order between them, D the sum of their counts; each new process
    skips D / world_size documents of its own share. Not exact: the old processes read their shares at slightly
    different rates, and the documents of each one's unfinished chunk (up to CHUNK_DOCUMENTS) are read again."""
    from .training import log

    epoch = min(s["epoch"] for s in states)
    documents = sum(s["documents"] for s in states if s["epoch"] == epoch)
    if rank == 0:
        log(f"train.resume_changed: the stream was split across {states[0]['world_size']} process(es), now "
            f"{world_size}: each goes on after {documents // world_size:,} documents of its share of epoch {epoch} "
            f"({documents:,} were read in all; up to {len(states) * CHUNK_DOCUMENTS:,} documents of unfinished chunks "
            "are read again)")
    return {"epoch": epoch, "documents": documents // world_size, "first_block": consumed, "blocks_consumed": consumed}


def position_callback(stream: PackedStream, blocks_per_step: int):
    """Writes this rank's stream position into every checkpoint the Trainer saves."""
    from transformers import TrainerCallback

    from .training import CHECKPOINT_PREFIX, write_json

    class StreamPosition(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            position = stream.position(state.global_step * blocks_per_step)
            write_json(folder / STATE_FILE.format(rank=args.process_index),
                       dict(position, world_size=args.world_size, blocks_per_step=blocks_per_step))

    return StreamPosition()


def streaming_trainer(**kwargs):
    """A Trainer that reads the stream as it is: each rank already holds its own share, so the DataLoader is not
    split again by Accelerate, and the Trainer does not fast-forward it on resume (the stream starts at its position)."""
    from accelerate.data_loader import DataLoaderShard
    from transformers import Trainer, TrainerCallback

    class RestoreRandomState(TrainerCallback):
        """The Trainer restores the saved RNG states only when it fast-forwards the data (not here): restore them
        at the first step, after the data loader's iterator has drawn its base seed from the global generator, so
        dropout continues the interrupted run's draws."""

        def __init__(self, trainer):
            self.trainer = trainer

        def on_step_begin(self, args, state, control, **kwargs):
            if self.trainer.resuming_from:
                self.trainer._load_rng_state(self.trainer.resuming_from)
                self.trainer.resuming_from = None

    class StreamingTrainer(Trainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.resuming_from = None
            self.add_callback(RestoreRandomState(self))

        def train(self, resume_from_checkpoint=None, *a, **kw):
            self.resuming_from = resume_from_checkpoint
            return super().train(resume_from_checkpoint, *a, **kw)

        def get_train_dataloader(self):
            return DataLoaderShard(self.train_dataset, batch_size=self._train_batch_size, collate_fn=self.data_collator,
                                   num_workers=0, pin_memory=self.args.dataloader_pin_memory)

    return StreamingTrainer(**kwargs)


# --------------------------------------------------------------------------------------------- for the recipe
def load_stream_corpus(d, *, seed: int, rank: int, world_size: int, log) -> dict:
    """{"train": this rank's text stream, "validation": a (small, materialised) Dataset when data.validation is set}."""
    from .data import load_validation

    out = {"train": open_text_stream(d, seed=seed, rank=rank, world_size=world_size)}
    log(f"corpus: data.train streamed, shuffle buffer {d.shuffle_buffer:,} documents")
    validation = load_validation(d)
    if validation is not None:
        out["validation"] = validation
        log(f"validation: {len(validation):,} documents")
    elif d.validation_split > 0:
        log("no validation set: data.validation_split does not apply to a stream; set data.validation to evaluate")
    return out


def build_stream(cfg, texts, tokenizer, *, resume_from: str | None, rank: int, world_size: int, blocks_per_step: int):
    """The packed training stream and the callback that records its position in checkpoints."""
    start = load_position(resume_from, rank, world_size, blocks_per_step, respread=cfg.train.resume_changed) \
        if resume_from else None
    stream = PackedStream(texts, tokenizer, objective=get_objective(cfg.objective).kind, block_size=cfg.data.block_size,
                          whole_word=cfg.mlm.whole_word, seed=cfg.train.seed, start=start, rank=rank,
                          world_size=world_size)
    return stream, position_callback(stream, blocks_per_step)
