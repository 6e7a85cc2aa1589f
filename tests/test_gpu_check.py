"""benchmarks/gpu_check.py, the script prepared for a lent GPU, runs end to end in its smoke mode (tiny shapes on
the CPU), so it cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_gpu_check_smoke_mode(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    s = report["sections"]
    assert report["smoke"] is True and set(s) == {"pretrain", "compile", "sft-lora", "qlora", "predict"}
    assert s["pretrain"]["tokens_per_second"] > 0 and 0 < s["pretrain"]["mfu"] < 1
    assert s["pretrain"]["peak_source"].startswith("measured")
    assert s["sft-lora"]["tokens_per_second"] > 0 and s["sft-lora"]["plan_gb"] > 0
    assert "skipped" in s["compile"] and "skipped" in s["qlora"]
    assert s["predict"]["rows"] == 300 and s["predict"]["rows_per_second"] > 0
    assert "| pretrain |" in done.stdout
