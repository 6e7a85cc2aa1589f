"""train.compile on the 2x128 BERT preset: wall time of short runs with and without torch.compile (compile included).

    python benchmarks/compile_cost.py
"""
import tempfile

import hfkit
from pathlib import Path
from hfkit.data import BUILTIN_CORPORA
work = Path(tempfile.mkdtemp())
texts = BUILTIN_CORPORA["news-articles"]()["text"][:600]
(work / "news.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
tok = hfkit.pretrain("bert-mlm-tiny", output_dir=str(work / "tok"), data={"train": str(work / "news.txt")},
                     train={"max_steps": 1, "report_to": [], "eval_before_training": False}).output_dir
for steps in (40, 160):
    for compile_ in (False, True):
        r = hfkit.pretrain("bert-mlm-tiny", output_dir=str(work / f"r{steps}{compile_}"), tokenizer={"path": str(tok)},
                           data={"train": str(work / "news.txt"), "validation_split": 0.0},
                           train={"max_steps": steps, "batch_size": 32, "report_to": [], "save_steps": 10**6,
                                  "eval_before_training": False, "compile": compile_})
        m = r.metrics
        print(f"RESULT steps={steps} compile={compile_} wall={m['train_wall_seconds']:.1f}s tokens/s={m['train_tokens_per_second']:,.0f}", flush=True)
