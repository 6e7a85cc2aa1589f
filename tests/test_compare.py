"""`hfkit compare` on a tiny model: the three files, numbers equal to the runs' own metrics.json, and loss.png."""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import hfkit
from hfkit.cli import app
from hfkit.errors import ConfigError


def png_text(path: Path) -> dict:
    """The PNG's tEXt chunks, after checking its signature and every chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, text, kinds = 8, {}, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc
        kinds.append(kind)
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            text[key.decode()] = value.decode("latin-1")
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    return text


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare-data")
    rng = random.Random(0)
    animals, people = ["cat", "dog", "bird", "horse"], ["farmer", "teacher", "child", "doctor"]
    for name, n in (("train", 160), ("dev", 60)):
        rows = []
        for _ in range(n):
            label = rng.choice(["animal", "person"])
            rows.append({"text": f"the {rng.choice(animals if label == 'animal' else people)} sees the "
                                 f"{rng.choice(animals + people)} .", "label": label})
        pd.DataFrame(rows).to_csv(d / f"{name}.csv", index=False)
    return d


def test_compare_two_methods_writes_consistent_table_and_plots(task, mlm_run, tmp_path):
    out = tmp_path / "cmp"
    rows = hfkit.compare("classification-full", methods="full,lora", output_dir=str(out),
                         model={"path": str(mlm_run.output_dir)},
                         data={"train": str(task / "train.csv"), "validation": str(task / "dev.csv"), "max_length": 32},
                         train={"epochs": 2, "batch_size": 16, "report_to": [], "logging_steps": 5},
                         **{"full:train.learning_rate": 1e-3})
    assert [r["run"] for r in rows] == ["full", "lora"] and all(r["status"] == "ok" for r in rows)
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    for row in saved["rows"]:
        metrics = json.loads((out / row["run"] / "metrics.json").read_text())
        assert row["metrics"] == {k: v for k, v in metrics.items() if not k.endswith("_report")}
        assert row["accuracy"] == metrics["eval_accuracy"] and row["f1"] == metrics["eval_f1"]
        assert row["trainable_params"] == metrics["trainable_params"]
        assert row["wall_seconds"] == metrics["train_wall_seconds"] and row["peak_memory_mb"] == metrics["peak_memory_mb"]
        assert row["tokens_per_second"] == metrics["train_tokens_per_second"] > 0
        config = (out / row["run"] / "hfkit.yaml").read_text()
        assert f"method: {row['method']}" in config
        assert metrics["method"] == row["method"]
        # loss.png shows the run's whole step range
        text = png_text(out / row["run"] / "loss.png")
        history = json.loads((out / row["run"] / "log_history.json").read_text())
        steps = [h["step"] for h in history if "loss" in h or "eval_loss" in h]
        assert text["Description"] == f"steps {min(steps)}-{max(steps)}"
        assert max(steps) == metrics["global_step"]
    lrs = {r["run"]: yaml.safe_load((out / r["run"] / "hfkit.yaml").read_text())["train"]["learning_rate"] for r in rows}
    assert lrs == {"full": 1e-3, "lora": 2e-3}  # aimed at full; lora's own default (the recipe's 2e-4 dropped)
    assert rows[0]["trainable_params"] > rows[1]["trainable_params"]
    table = (out / "comparison.md").read_text()
    for row in rows:
        assert f"| {row['run']} |" in table and f"{row['accuracy']:.3f}" in table and f"{row['trainable_params']:,}" in table
    assert png_text(out / "comparison.png")["Description"] == "2 runs"


def test_compare_refuses_bad_input_before_any_run(task, mlm_run, tmp_path):
    out = tmp_path / "cmp"
    common = [f"model.path={mlm_run.output_dir}", f"data.train={task / 'train.csv'}", f"output_dir={out}"]
    result = CliRunner().invoke(app, ["compare", "classification-full", "--methods", "full,lorra", *common])
    assert result.exit_code == 2 and "method: 'lorra' is not one of" in result.output
    result = CliRunner().invoke(app, ["compare", "classification-full", "--methods", "full", "ful:train.epochs=1", *common])
    assert result.exit_code == 2 and "'ful' is neither a method nor a model label" in result.output
    assert not out.exists()
    with pytest.raises(ConfigError, match="labels must differ"):
        hfkit.compare("classification-full", "full", models=["a=x", "a=random:y"], output_dir=str(out))
