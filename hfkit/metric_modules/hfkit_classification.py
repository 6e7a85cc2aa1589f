"""Classification and regression metrics as a local `evaluate` module (works offline; no hub script).

Configurations: `single_label` (accuracy, macro precision/recall/F1), `multi_label` (exact-match accuracy,
micro and macro F1 over labels, from multi-hot rows), `regression` (MSE, MAE, Pearson r).
Load with `evaluate.load(path_to_this_file, config_name)`; implemented with numpy only.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy, precision, recall and F1 (macro/micro), or MSE/MAE/Pearson for regression."
_KWARGS = """
Args:
    predictions: class ids (single_label), 0/1 rows (multi_label) or floats (regression).
    references: the same shape as predictions.
    num_labels: number of classes (single_label/multi_label); labels absent from both sides count as F1 0 only
        if they occur in references or predictions.
"""


def _prf(tp, fp, fn):
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype=float), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp, dtype=float), where=(tp + fn) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=(precision + recall) > 0)
    return precision, recall, f1


class HfkitClassification(evaluate.Metric):
    def _info(self):
        if self.config_name == "multi_label":
            features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("int32")),
                                          "references": datasets.Sequence(datasets.Value("int32"))})
        elif self.config_name == "regression":
            features = datasets.Features({"predictions": datasets.Value("float64"),
                                          "references": datasets.Value("float64")})
        else:
            features = datasets.Features({"predictions": datasets.Value("int64"),
                                          "references": datasets.Value("int64")})
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=features)

    def _compute(self, predictions, references, num_labels=None):
        p, r = np.asarray(predictions), np.asarray(references)
        if self.config_name == "regression":
            mse = float(np.mean((p - r) ** 2))
            pearson = float(np.corrcoef(p, r)[0, 1]) if p.std() > 0 and r.std() > 0 else 0.0
            return {"mse": mse, "mae": float(np.mean(np.abs(p - r))), "pearson": pearson}
        if self.config_name == "multi_label":
            tp = (p * r).sum(0).astype(float)
            fp = (p * (1 - r)).sum(0).astype(float)
            fn = ((1 - p) * r).sum(0).astype(float)
            present = (r.sum(0) + p.sum(0)) > 0
            _, _, f1 = _prf(tp, fp, fn)
            _, _, micro = _prf(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))
            return {"accuracy": float(np.mean(np.all(p == r, axis=1))), "f1": float(micro[0]),
                    "f1_micro": float(micro[0]), "f1_macro": float(f1[present].mean()) if present.any() else 0.0}
        n = int(num_labels) if num_labels else int(max(p.max(initial=0), r.max(initial=0)) + 1)
        labels = np.arange(n)
        tp = np.array([np.sum((p == c) & (r == c)) for c in labels], dtype=float)
        fp = np.array([np.sum((p == c) & (r != c)) for c in labels], dtype=float)
        fn = np.array([np.sum((p != c) & (r == c)) for c in labels], dtype=float)
        precision, recall, f1 = _prf(tp, fp, fn)
        present = (tp + fp + fn) > 0
        return {"accuracy": float(np.mean(p == r)), "f1": float(f1[present].mean()),
                "precision": float(precision[present].mean()), "recall": float(recall[present].mean())}
