"""Checkpoints that are complete or ignored, and one run per output_dir.

A checkpoint counts once its manifest (every file's size and xxh3 checksum, the step, the world size, the global
batch and the resolved recipe) is written, last and atomically, after every process has written its files. A save
cut short (SIGKILL, a node lost, a full disk) leaves a folder without one; a file truncated or corrupted later no
longer matches it. `train.resume=auto` takes the newest checkpoint that verifies and says which newer ones it
skipped and why. Old checkpoints are removed (train.save_total_limit) only after the new one's manifest is written,
never the newest good one, never the best one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .console import is_main_process, log

CHECKPOINT_PREFIX = "checkpoint-"
MANIFEST = "hfkit-manifest.json"
CHUNK = 16 * 2**20

# Keys a resumed run may change without being asked: how long it runs, how often it saves / logs / evaluates, where
# it reports, how the data loader and processes are arranged (the global batch is compared instead).
SESSION_KEYS = {"output_dir", "train.resume", "train.resume_changed", "train.overwrite", "train.max_steps",
                "train.epochs", "train.save_steps", "train.save_total_limit", "train.logging_steps", "train.eval_steps",
                "train.report_to", "train.eval_before_training", "train.dataloader_num_workers",
                "train.collective_timeout", "train.batch_size", "train.gradient_accumulation_steps",
                "train.global_batch_size", "train.eval_batch_size", "data.num_proc", "data.cache_dir",
                "train.early_stopping_patience",
                "data.on_error"}  # a run stopped at a malformed row (error) goes on past it (skip): same rows before it


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """Every checkpoint-N folder, complete or not, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        step = p.name.removeprefix(CHECKPOINT_PREFIX)
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and step.isdigit():
            found.append((int(step), p))
    return [p for _, p in sorted(found)]


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints whose manifest was written (their save finished), oldest first; not checksummed (see verify)."""
    return [p for p in checkpoint_folders(output_dir) if (p / MANIFEST).is_file()]


def _checksum(path: Path, sync: bool = False) -> str:
    import xxhash

    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
        if sync:  # on Linux fsync on a read-only descriptor flushes the file's dirty pages too
            os.fsync(f.fileno())
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, MANIFEST + ".tmp"))


def write_manifest(folder: str | Path, **facts) -> dict:
    """Checksum every file of `folder` (flushed to disk first), then write the manifest atomically, last."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "xxh3": _checksum(p, sync=True)}
             for p in _files(folder)}
    manifest = dict(facts, files=files)
    tmp = folder / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    fd = os.open(folder, os.O_RDONLY)  # the rename itself reaches the disk
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return manifest


def read_manifest(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def verify(folder: str | Path) -> str | None:
    """None when every file the manifest lists is there with its size and checksum; else why not, in a few words."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return "no manifest (its save did not finish)"
    manifest = read_manifest(folder)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        return f"its {MANIFEST} is unreadable"
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return f"{rel} has {size:,} bytes where {entry['bytes']:,} were written (truncated or replaced)"
        if _checksum(path) != entry["xxh3"]:
            return f"{rel} does not match its checksum (corrupted)"
    return None


def newest_good(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint that verifies, [(newer checkpoint, why it was skipped)])."""
    skipped = []
    for folder in reversed(checkpoint_folders(output_dir)):
        problem = verify(folder)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def drop_newer(output_dir: str | Path, resume_from: str | Path | None) -> None:
    """Remove checkpoints newer than the one being resumed (None: all; unfinished or damaged ones that resume=auto
    skipped): the run writes those steps again, and a stale file must not end up in a new manifest."""
    step = int(Path(resume_from).name.removeprefix(CHECKPOINT_PREFIX)) if resume_from else -1
    for folder in checkpoint_folders(output_dir):
        if int(folder.name.removeprefix(CHECKPOINT_PREFIX)) > step:
            shutil.rmtree(folder, ignore_errors=True)


def rotate(output_dir: str | Path, keep: int | None, best: str | None) -> None:
    """Keep the newest `keep` complete checkpoints (and the best one); remove older complete ones. Unfinished
    folders older than the newest complete one are removed too (nothing can resume from them)."""
    complete = checkpoints(output_dir)
    if not complete:
        return
    newest = complete[-1]
    protected = {newest.resolve()} | ({Path(best).resolve()} if best else set())
    doomed = list(complete[:-keep]) if keep else []
    doomed += [p for p in checkpoint_folders(output_dir) if not (p / MANIFEST).is_file()
               and int(p.name.removeprefix(CHECKPOINT_PREFIX)) < int(newest.name.removeprefix(CHECKPOINT_PREFIX))]
    for folder in doomed:
        if folder.resolve() not in protected:
            shutil.rmtree(folder, ignore_errors=True)


def manifest_callback(keep: int | None, config: dict | None):
    """Writes each checkpoint's manifest once every process has written its part, then rotates old checkpoints.
    Add it after every callback that writes into checkpoints (it must run last in on_save)."""
    from transformers import TrainerCallback

    class Manifest(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            import torch

            distributed = args.world_size > 1 and torch.distributed.is_initialized()
            if distributed:
                torch.distributed.barrier()  # every rank's files (RNG state, shards, stream position) are written
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
                write_manifest(folder, step=state.global_step, world_size=args.world_size,
                               global_batch=args.per_device_train_batch_size * args.gradient_accumulation_steps
                               * args.world_size, config=config)
                rotate(args.output_dir, keep, state.best_model_checkpoint)
            if distributed:
                torch.distributed.barrier()  # nobody moves on (or is killed) believing a checkpoint exists before it does

    return Manifest()


# --------------------------------------------------------------------------------------------- resuming a changed recipe
def flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "overrides":
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_changes(checkpoint: str | Path, config: dict, global_batch: int) -> list[str]:
    """What differs between the recipe a checkpoint was written by and `config` (resolved, flattened by `flat`),
    leaving out SESSION_KEYS; the global batch (per process x accumulation x processes) is compared as one number."""
    manifest = read_manifest(checkpoint) or {}
    before = manifest.get("config")
    changes = []
    if before:
        old, new = flat(before), flat(config)
        for key in sorted(set(old) | set(new)):
            if key not in SESSION_KEYS and old.get(key) != new.get(key):
                changes.append(f"{key} ({old.get(key)!r} -> {new.get(key)!r})")
    if manifest.get("global_batch") and manifest["global_batch"] != global_batch:
        changes.append(f"the global batch ({manifest['global_batch']} -> {global_batch} examples per step)")
    return changes


# --------------------------------------------------------------------------------------------- one run per output_dir
_held: list = []  # the open lock files of this process (released when it exits, however it exits)


def lock_output_dir(output_dir: str | Path, path: Path) -> None:
    """Hold an exclusive lock on the file `path` (one per output_dir and rank: training.shared_folder) until this
    process ends: a second run on the same output_dir is refused at once instead of interleaving its checkpoints with
    the first one's. Nothing is written into output_dir; the kernel releases the lock when the process dies, even by
    SIGKILL."""
    import fcntl

    from .errors import OutputDirError

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise OutputDirError(f"output_dir: '{output_dir}' is in use by another hfkit run ({holder}); wait for it to "
                             "end, stop it, or choose another output_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    _held.append(handle)


def release_locks() -> None:
    while _held:
        _held.pop().close()


def holds_output_dir(run):
    """Decorator for a recipe's run(cfg): the output_dir lock taken by start_run is released when it returns or
    fails (a notebook runs the next recipe in the same process)."""
    import functools

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            release_locks()

    return wrapper


def resumable(resume: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint to resume from for train.resume (auto: the newest that verifies, with one line per newer one
    skipped); an explicit path must verify, or carry no manifest at all (an hfkit before manifests: a warning)."""
    from .errors import OutputDirError

    if resume == "auto":
        good, skipped = newest_good(output_dir)
        for folder, why in skipped:
            if is_main_process():
                log(f"train.resume=auto: skipping {folder.name}: {why}")
        if good is None and not skipped:
            log(f"train.resume=auto: no checkpoint in {output_dir} yet; starting from scratch")
        elif good is None:
            log("train.resume=auto: no checkpoint verifies; starting from scratch")
        return str(good) if good else None
    if not resume:
        return None
    if not (Path(resume) / "trainer_state.json").is_file():
        raise OutputDirError(f"train.resume: '{resume}' is not a complete Trainer checkpoint (no trainer_state.json)")
    if (Path(resume) / MANIFEST).is_file():
        problem = verify(resume)
        if problem:
            raise OutputDirError(f"train.resume: '{resume}' is damaged: {problem}; use an earlier checkpoint or "
                                 "train.resume=auto")
    else:
        log(f"warning: {resume} has no {MANIFEST} (written before hfkit checked checkpoints, or its save was cut "
            "short): resuming from it as asked, unverified")
    return resume
