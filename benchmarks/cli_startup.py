"""`hfkit --help` start-up time vs. a CLI that imports transformers at module top.

Runs both sides alternately, several times, in one invocation, and prints medians and the ratio.
    python benchmarks/cli_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

SIDES = {
    "hfkit --help": [sys.executable, "-m", "hfkit", "--help"],
    "import transformers + Trainer": [sys.executable, "-c", "import transformers; from transformers import Trainer"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in SIDES}
    for _ in range(args.repeats):
        for name, cmd in SIDES.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(v) for name, v in times.items()}
    print(f"| command | median s ({args.repeats} runs) |\n|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} |")
    print(f"\nratio (transformers import / hfkit --help): {medians['import transformers + Trainer'] / medians['hfkit --help']:.1f}x")


if __name__ == "__main__":
    main()
