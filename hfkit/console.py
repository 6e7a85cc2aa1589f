"""What hfkit says while it runs: one `[hfkit]` line on stderr, from the main process only."""

from __future__ import annotations

import os
import sys


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def log(message: str) -> None:
    if is_main_process():
        print(f"[hfkit] {message}", file=sys.stderr, flush=True)
