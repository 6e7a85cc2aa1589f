"""What hfkit does on a GPU, in one prepared script (under 8 minutes on one 80 GB card).

    python benchmarks/gpu_check.py            # on a GPU: writes benchmarks/results/gpu/<card>.json, prints a table
    python benchmarks/gpu_check.py --smoke    # tiny shapes on any device (the CPU in CI): the script cannot rot

Each section is an ordinary hfkit run (`hfkit.pretrain`, `hfkit.finetune`, `hfkit.inference.predict_file`), so
the figures are the ones metrics.json gives a user:

1. pretrain: a causal LM of about 100M parameters (GPT-2 small's shape, 124M with its vocabulary) on the shipped
   news articles, bf16 (train.precision auto): tokens/s and MFU against the card's data-sheet peak.
2. compile: the same with train.compile=true (the first steps pay for compiling; the run is long enough to show
   the steady rate in tokens/s only roughly: the figure is whole-run).
3. sft-lora: SmolLM2-135M-Instruct, LoRA, sdpa, packed Alpaca rows: tokens/s, MFU, peak GPU memory, and the
   memory `hfkit plan` computes for the same run on one GPU beside it.
4. qlora: the same with lora.load_in_4bit=true (bitsandbytes); skipped, with the reason, where it cannot run.
5. predict: `predict_file` of MiniLM with a 2-class head over repeated movie-review sentences: rows/s.

The smoke mode runs sections 1, 3 and 5 with 2-layer models on a few hundred rows (section 2 compiles for tens of
seconds on a CPU, and 4 needs CUDA: both are reported as skipped) and writes to --out (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "gpu"
SMOKE_CHATS = [{"messages": [{"role": "user", "content": f"where is the {n} ?"},
                             {"role": "assistant", "content": f"the {n} is here ."}]}
               for n in ["cat", "dog", "bird", "horse", "farmer", "teacher", "child", "doctor"] * 25]


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def peak_gpu_reset() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def news_file(folder: Path, articles: int) -> Path:
    from hfkit.data import BUILTIN_CORPORA

    path = folder / "news.txt"
    ds = BUILTIN_CORPORA["news-articles"]()
    with open(path, "w", encoding="utf-8") as fh:
        for text in ds.select(range(min(articles, len(ds))))["text"]:
            fh.write(" ".join(text.split()) + "\n")
    return path


def section_pretrain(tmp: Path, smoke: bool, compile_: bool = False) -> dict:
    import hfkit

    corpus = news_file(tmp, 200 if smoke else 4000)
    shape = {"preset": "gpt2-tiny"} if smoke else {"preset": "gpt2-small"}
    result = hfkit.pretrain({
        "objective": "clm", "output_dir": str(tmp / ("clm-compiled" if compile_ else "clm")), "model": shape,
        "tokenizer": {"vocab_size": 2000 if smoke else 32000},
        "data": {"train": str(corpus), "validation_split": 0.01, "block_size": 64 if smoke else 1024},
        "train": {"max_steps": 6 if smoke else 120, "batch_size": 4 if smoke else 16, "learning_rate": 6e-4,
                  "report_to": [], "save_steps": 10_000, "eval_steps": 10_000, "logging_steps": 10,
                  "compile": compile_}})
    m = result.metrics
    return {"tokens_per_second": m.get("train_tokens_per_second"), "mfu": m.get("mfu"),
            "peak_tflops": m.get("peak_tflops_per_device"), "peak_source": m.get("peak_source"),
            "model_tflops_per_second": m.get("train_model_tflops_per_second"),
            "params": m.get("total_params"), "wall_seconds": m.get("train_wall_seconds"),
            "peak_gpu_memory_mb": m.get("peak_gpu_memory_mb"), "output_dir": str(result.output_dir)}


def chat_ready(run_dir: str, target: Path) -> str:
    """Smoke mode: the tiny pretraining run with ChatML's tokens and template added (a LoRA cannot train new
    embeddings), saved as a plain folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfkit.chat import set_up_template

    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    set_up_template(tokenizer, "chatml")
    model = AutoModelForCausalLM.from_pretrained(run_dir)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


def sft_config(tmp: Path, smoke: bool, base: str | None, four_bit: bool = False) -> dict:
    if smoke:
        chats = tmp / "chats.jsonl"
        chats.write_text("".join(json.dumps(c) + "\n" for c in SMOKE_CHATS), encoding="utf-8")
        data = {"train": str(chats), "validation_split": 0.1, "max_length": 64}
        model = {"path": base}
    else:
        data = {"train": "builtin:alpaca-en-demo", "validation_split": 0.05, "max_length": 512}
        model = {"path": "builtin:smollm2-135m-instruct", "attn_implementation": "sdpa"}
    return {"task": "sft", "method": "lora", "output_dir": str(tmp / ("qlora" if four_bit else "sft-lora")),
            "model": model, "data": data,
            "sft": {"packing": True},
            "lora": {"r": 16, "alpha": 32, "merge": False, "load_in_4bit": four_bit},
            "train": {"max_steps": 4 if smoke else 60, "batch_size": 2 if smoke else 8, "learning_rate": 2e-4,
                      "report_to": [], "save_steps": 10_000, "logging_steps": 10}}


def planned_gb(cfg_dict: dict) -> float:
    """hfkit plan's memory for this run on one GPU (weights + gradients + optimizer + activations), GB."""
    from hfkit.config import resolve
    from hfkit.plan import memory, model_shape

    cfg = resolve("finetune", cfg_dict, [])
    shape, _ = model_shape(cfg, "finetune")
    return round(sum(memory(shape, "DDP", 1, cfg.train.gradient_checkpointing)[:4]), 3)


def section_sft(tmp: Path, smoke: bool, base: str | None, four_bit: bool = False) -> dict:
    import torch

    import hfkit

    if four_bit:
        if not torch.cuda.is_available():
            return {"skipped": "4-bit loading (bitsandbytes) needs a CUDA GPU"}
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            return {"skipped": "bitsandbytes is not installed (pip install bitsandbytes)"}
    cfg = sft_config(tmp, smoke, base, four_bit)
    peak_gpu_reset()
    m = hfkit.finetune(cfg).metrics
    out = {"tokens_per_second": m.get("train_tokens_per_second"), "mfu": m.get("mfu"),
           "wall_seconds": m.get("train_wall_seconds"), "peak_gpu_memory_mb": m.get("peak_gpu_memory_mb"),
           "peak_process_memory_mb": m.get("peak_memory_mb"), "eval_loss": m.get("eval_loss")}
    if not four_bit:
        out["plan_gb"] = planned_gb(cfg)
    return out


def section_predict(tmp: Path, smoke: bool) -> dict:
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                              BertForSequenceClassification)

    from hfkit.data import _movie_review_frame
    from hfkit.inference import predict_file
    from hfkit.models import resolve_model_path

    path = resolve_model_path("builtin:all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    if smoke:
        model = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64,
                                                         num_hidden_layers=2, num_attention_heads=2,
                                                         intermediate_size=128, num_labels=2, **labels))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **labels)
    folder = tmp / "classifier"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    texts = _movie_review_frame()["text"].tolist()
    rows = 300 if smoke else 100_000
    data = tmp / "rows.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"text": texts[i % len(texts)]}) + "\n")
    summary = predict_file(str(folder), str(data), str(tmp / "predictions.jsonl"), batch_size=32 if smoke else 256,
                           progress=False)
    assert summary["rows"] == rows
    return {"rows": rows, "rows_per_second": summary["rows_per_second"], "seconds": summary["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on any device (CI)")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default: results/gpu/<card>.json; "
                                                 "smoke: a temporary folder)")
    parser.add_argument("--only", default="pretrain,compile,sft-lora,qlora,predict")
    args = parser.parse_args()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU is visible; run with --smoke for the CPU smoke test")
    wanted = set(args.only.split(","))
    card = device_name()
    report: dict = {"device": card, "smoke": args.smoke, "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d"), "sections": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sections = report["sections"]
        base = None
        if "pretrain" in wanted or args.smoke:
            sections["pretrain"] = section_pretrain(tmp, args.smoke)
            base = sections["pretrain"].pop("output_dir")
            if args.smoke:
                base = chat_ready(base, tmp / "chat-base")
        if "compile" in wanted:
            sections["compile"] = ({"skipped": "smoke mode: compiling costs tens of seconds on a CPU"} if args.smoke
                                   else section_pretrain(tmp, args.smoke, compile_=True))
            sections["compile"].pop("output_dir", None)
        if "sft-lora" in wanted:
            sections["sft-lora"] = section_sft(tmp, args.smoke, base)
        if "qlora" in wanted:
            sections["qlora"] = section_sft(tmp, args.smoke, base, four_bit=True)
        if "predict" in wanted:
            sections["predict"] = section_predict(tmp, args.smoke)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = args.out
    if out is None:
        out = (Path(tempfile.gettempdir()) if args.smoke else RESULTS) / \
            f"{re.sub(r'[^A-Za-z0-9]+', '-', card).strip('-').lower()}{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{card}, {report['seconds']:.0f} s ({'smoke' if args.smoke else 'full'}); written to {out}\n")
    print("| section | tokens/s or rows/s | MFU | peak GPU MB | plan GB | note |")
    print("|---|---|---|---|---|---|")
    for name, s in report["sections"].items():
        rate = s.get("tokens_per_second") or s.get("rows_per_second")
        print(f"| {name} | {rate if rate is not None else ''} | {s.get('mfu') if s.get('mfu') is not None else ''} | "
              f"{s.get('peak_gpu_memory_mb') or ''} | {s.get('plan_gb') or ''} | {s.get('skipped', '')} |")


if __name__ == "__main__":
    main()
