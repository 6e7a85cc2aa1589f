"""Sequence-labelling metrics as a local `evaluate` module (works offline; no hub script), on words, not sub-words.

Configurations: `iob2` (entity-level precision / recall / F1 from seqeval in strict IOB2 mode: an entity counts only
when its type and its exact span match; micro over entities, plus word accuracy and a per-type report) and `tags`
(tag sets that are not IOB, e.g. part-of-speech: word accuracy and F1 averaged over tags, plus a per-tag report).
Load with `evaluate.load(path_to_this_file, config_name)`.
"""

import datasets
import evaluate

_DESCRIPTION = "Entity-level (strict IOB2, seqeval) or per-tag precision, recall and F1, and word accuracy."
_KWARGS = """
Args:
    predictions: one list of tag strings per sentence (one tag per word).
    references: the same shape as predictions.
Returns: accuracy, precision, recall, f1 and `report` ({type: {precision, recall, f1, support}}).
"""


def _per_tag(predictions, references):
    flat_p = [t for s in predictions for t in s]
    flat_r = [t for s in references for t in s]
    report = {}
    for tag in sorted(set(flat_r) | set(flat_p)):
        tp = sum(p == tag and r == tag for p, r in zip(flat_p, flat_r))
        fp = sum(p == tag and r != tag for p, r in zip(flat_p, flat_r))
        fn = sum(p != tag and r == tag for p, r in zip(flat_p, flat_r))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        report[tag] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return report


class HfkitSeqeval(evaluate.Metric):
    def _info(self):
        features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                      "references": datasets.Sequence(datasets.Value("string"))})
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=features)

    def _compute(self, predictions, references):
        words = sum(len(s) for s in references)
        correct = sum(p == r for ps, rs in zip(predictions, references) for p, r in zip(ps, rs))
        accuracy = correct / words if words else 0.0
        if self.config_name == "tags":
            report = _per_tag(predictions, references)
            present = [v for tag, v in report.items() if v["support"] > 0]
            mean = lambda key: sum(v[key] for v in present) / len(present) if present else 0.0  # noqa: E731
            return {"accuracy": accuracy, "precision": mean("precision"), "recall": mean("recall"), "f1": mean("f1"),
                    "report": report}
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
        from seqeval.scheme import IOB2

        strict = dict(mode="strict", scheme=IOB2, zero_division=0)
        raw = classification_report(references, predictions, output_dict=True, **strict)
        report = {name: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                         "support": int(v["support"])}
                  for name, v in raw.items() if not name.endswith(" avg")}
        return {"accuracy": accuracy, "precision": float(precision_score(references, predictions, **strict)),
                "recall": float(recall_score(references, predictions, **strict)),
                "f1": float(f1_score(references, predictions, **strict)), "report": report}
