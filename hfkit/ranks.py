"""Which process of a run was lost or stalled, when a collective fails or times out.

Every process writes a heartbeat (its step, pid, host and the time) into output_dir/.hfkit-heartbeats/ at most once a
second. When an all-reduce or barrier fails (a peer's connection closed: the process died) or times out
(train.collective_timeout: a peer stopped answering), the survivors read the heartbeats and name the process that
fell behind, in one line, instead of a page of backend errors or a hang.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

FOLDER = ".hfkit-heartbeats"
EVERY_SECONDS = 1.0

# How the collective backends (gloo, NCCL) word a lost or silent peer.
LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "ECONNRESET", "EPIPE",
             "Connection refused", "NCCL communicator was aborted", "remote process exited")
TIMED_OUT = ("Timed out", "timed out", "Timeout", "DistBackendError: Watchdog caught collective operation timeout")


def heartbeat_callback(output_dir: str | Path):
    from transformers import TrainerCallback

    folder = Path(output_dir) / FOLDER

    class Heartbeat(TrainerCallback):
        def __init__(self):
            self.last = 0.0

        def beat(self, args, step: int, force: bool = False):
            now = time.time()
            if not force and now - self.last < EVERY_SECONDS:
                return
            self.last = now
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"rank-{args.process_index}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"rank": args.process_index, "pid": os.getpid(), "host": socket.gethostname(),
                                       "step": step, "time": now}))
            os.replace(tmp, path)

        def on_train_begin(self, args, state, control, **kwargs):
            if args.world_size > 1:
                self.beat(args, state.global_step, force=True)

        def on_step_end(self, args, state, control, **kwargs):
            if args.world_size > 1:
                self.beat(args, state.global_step)

    return Heartbeat()


def collective_failure(error: BaseException) -> str | None:
    """'lost' or 'timed out' when `error` is a collective failing for want of a peer, else None."""
    text = f"{type(error).__name__}: {error}"
    if any(marker in text for marker in TIMED_OUT):
        return "timed out"
    if any(marker in text for marker in LOST_PEER) or type(error).__name__ == "DistBackendError":
        return "lost"
    return None


def _alive(beat: dict) -> bool | None:
    if beat.get("host") != socket.gethostname():
        return None  # another node: cannot tell from here
    try:
        os.kill(int(beat["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, ValueError):
        return None
    status = Path(f"/proc/{beat['pid']}/status")
    state = status.read_text(errors="replace") if status.is_file() else ""
    if "\nState:\tZ" in state or "\nState:\tX" in state:
        return False  # dead, not yet reaped by its launcher
    if "\nState:\tT" in state:
        return None  # stopped (SIGSTOP): alive, but not answering
    return True


def diagnose(output_dir: str | Path, world_size: int, rank: int, kind: str, timeout: int) -> str:
    """One line naming the process(es) that fell behind, from the heartbeats."""
    folder = Path(output_dir) / FOLDER
    beats = {}
    for r in range(world_size):
        try:
            beats[r] = json.loads((folder / f"rank-{r}.json").read_text())
        except (OSError, ValueError):
            pass
    now = time.time()
    dead = [r for r, b in beats.items() if r != rank and _alive(b) is False]
    if dead:
        suspects, how = dead, "was lost (its process is gone)"
    else:
        others = {r: b for r, b in beats.items() if r != rank}
        silent = [r for r in range(world_size) if r != rank and r not in beats]
        if others:
            newest = max(b["time"] for b in beats.values())
            behind = [r for r, b in others.items() if newest - b["time"] > max(2 * EVERY_SECONDS, 5)]
        else:
            behind = []
        suspects = silent + behind or [r for r in range(world_size) if r != rank]
        how = "stopped answering" if kind == "timed out" else "was lost"
    parts = []
    for r in suspects:
        b = beats.get(r)
        parts.append(f"process {r} of {world_size}" + (
            f" (pid {b['pid']} on {b['host']}, last at step {b['step']}, {now - b['time']:.0f} s ago)" if b else ""))
    waited = f" after the {timeout} s collective timeout (train.collective_timeout)" if kind == "timed out" else ""
    return (f"{' and '.join(parts)} {how}; process {rank} stopped{waited}. Checkpoints written before it are kept: "
            "run the same command again with train.resume=auto")
