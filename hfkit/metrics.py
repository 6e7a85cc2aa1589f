"""Metrics that work offline through `evaluate`.

`evaluate.load("accuracy")` fetches a script from the hub and fails offline, so hfkit ships its own local
evaluate module (metric_modules/hfkit_classification.py) and loads it by path; evaluate copies it into its
module cache under HF_HOME.
"""

from __future__ import annotations

from pathlib import Path

MODULE = Path(__file__).resolve().parent / "metric_modules" / "hfkit_classification.py"


def classification_metric(config_name: str):
    """config_name: single_label | multi_label | regression."""
    import evaluate

    return evaluate.load(str(MODULE), config_name)


SEQEVAL_MODULE = Path(__file__).resolve().parent / "metric_modules" / "hfkit_seqeval.py"


def sequence_metric(config_name: str):
    """config_name: iob2 (entity-level, strict) | tags (per-tag, e.g. part-of-speech)."""
    import evaluate

    return evaluate.load(str(SEQEVAL_MODULE), config_name)
