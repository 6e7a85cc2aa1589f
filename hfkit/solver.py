"""A linear head on cached features, solved rather than trained: full-batch L-BFGS to convergence on the
L2-regularised loss (softmax cross-entropy, per-label logistic, or squared error), the L2 strength chosen by the
loss on the validation split.

With the backbone frozen and its features cached, a linear head is a convex problem (multinomial logistic
regression). A fixed number of SGD epochs stops somewhere short of its optimum, and how far short depends on the
learning rate and the epochs; a quasi-Newton solver reaches the optimum in a few hundred iterations over all rows
at once, so `train.epochs` and `train.learning_rate` stop mattering. Features are standardised for the solve (the
problem is then well conditioned) and the scaling is folded back into the saved weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

# L2 strengths tried on the validation split, strongest first (the path is warm-started from each solution).
L2_GRID = tuple(10.0 ** (1 - k / 2) for k in range(13))  # 10 .. 1e-5, half a decade apart


@dataclass
class Solution:
    weight: torch.Tensor  # [num_outputs, features], for the raw (unstandardised) features
    bias: torch.Tensor  # [num_outputs]
    l2: float
    iterations: int
    train_loss: float
    scores: dict  # l2 -> validation loss, for the strengths tried (empty when there was no validation split)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """'balanced' weights, n / (classes x count): every class weighs the same in total (scikit-learn's rule); a
    class missing from the training rows gets weight 1."""
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    weights = labels.numel() / (num_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.ones_like(weights))


def _data_loss(logits, y, problem: str, sample_weights):
    if problem == "regression":
        per_row = (logits.squeeze(-1) - y) ** 2
    elif problem == "multi_label_classification":
        per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)
    else:
        per_row = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    return (per_row * sample_weights).mean() if sample_weights is not None else per_row.mean()


def _solve(x, y, problem, l2, sample_weights, start, max_iter, tol) -> tuple[torch.Tensor, torch.Tensor, int]:
    weight = start[0].clone().requires_grad_(True)
    bias = start[1].clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _data_loss(x @ weight.T + bias, y, problem, sample_weights) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    iterations = optimizer.state[optimizer._params[0]].get("n_iter", 0)
    return weight.detach(), bias.detach(), int(iterations)


def solve_linear_head(train_x, train_y, num_outputs: int, problem: str, *, val_x=None, val_y=None,
                      balanced: bool = False, max_iter: int = 500, tol: float = 1e-6, patience: int = 2) -> Solution:
    """The L2-regularised linear head on features `train_x` [n, d] (float) with targets `train_y` (class ids, a
    multi-hot matrix, or numbers for `problem` regression).

    With a validation split (`val_x`, `val_y`) the strengths in L2_GRID are solved strongest first, each warm-started
    from the last, and the one with the lowest validation loss wins (the same loss as training: cross-entropy,
    per-label logistic or squared error; a proper score, far steadier than accuracy on a few dozen rows). The path
    stops once the validation loss has risen `patience` strengths in a row (the weakest strengths are the slow
    ones). Without a validation split the strength is 1 / n, scikit-learn's LogisticRegression default (C=1).
    `balanced`: weight rows by their class's 'balanced' weight (single-label only), in training and selection."""
    x = train_x.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mean) / std
    single = problem == "single_label_classification"
    y = train_y.long() if single else train_y.double()
    weights = class_weights(y, num_outputs) if balanced else None
    sample_weights = weights[y] if balanced else None
    start = (torch.zeros(num_outputs, x.shape[1], dtype=torch.float64), torch.zeros(num_outputs, dtype=torch.float64))
    if single and not balanced:  # start from the class priors
        prior = torch.bincount(y, minlength=num_outputs).double().clamp(min=1)
        start = (start[0], (prior / prior.sum()).log())

    if val_x is None:
        l2 = 1.0 / len(x)
        weight, bias, iterations = _solve(xs, y, problem, l2, sample_weights, start, max_iter, tol)
        best, scores = (weight, bias, l2), {}
    else:
        vxs = (val_x.double() - mean) / std
        vy = val_y.long() if single else val_y.double()
        val_weights = weights[vy] if balanced else None
        best, best_loss, scores, iterations, worse = None, math.inf, {}, 0, 0
        for l2 in L2_GRID:
            weight, bias, n = _solve(xs, y, problem, l2, sample_weights, start, max_iter, tol)
            iterations += n
            start = (weight, bias)
            with torch.no_grad():
                loss = float(_data_loss(vxs @ weight.T + bias, vy, problem, val_weights))
            worse = worse + 1 if scores and loss > scores[list(scores)[-1]] else 0
            scores[l2] = loss
            if loss < best_loss:
                best, best_loss = (weight, bias, l2), loss
            if worse >= patience:
                break
    weight, bias, l2 = best
    with torch.no_grad():
        train_loss = float(_data_loss(xs @ weight.T + bias, y, problem, sample_weights))
    raw = weight / std  # fold the standardisation into the weights: x @ raw.T + b' == xs @ weight.T + bias
    return Solution(raw.float(), (bias - raw @ mean).float(), l2, iterations, train_loss, scores)


def stack_features(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [n, d], labels) from a heads.FeatureDataset of pooled features."""
    features = torch.stack(list(dataset.features)).float()
    labels = torch.tensor(dataset.labels)
    return features, labels


def solve_frozen_head(trainer, cfg) -> "object":
    """Method frozen's training step when the head is linear and the features are cached: solve the head (see
    `solve_linear_head`), write it into the model's head, and return a transformers TrainOutput."""
    from transformers.trainer_utils import TrainOutput

    from .console import log

    model = trainer.model
    problem = model.head_config["problem_type"]
    start = time.perf_counter()
    x, y = stack_features(trainer.train_dataset)
    val_x = val_y = None
    # train.load_best: false says the validation rows must not pick the model (e.g. they are what gets reported)
    if trainer.eval_dataset is not None and cfg.train.load_best:
        val_x, val_y = stack_features(trainer.eval_dataset)
    solution = solve_linear_head(x, y, model.head_config["num_labels"], problem, val_x=val_x, val_y=val_y,
                                 balanced=cfg.train.class_weights == "balanced")
    linear = model.head.net[-1]
    with torch.no_grad():
        linear.weight.copy_(solution.weight.to(linear.weight.dtype))
        linear.bias.copy_(solution.bias.to(linear.bias.dtype))
    wall = time.perf_counter() - start
    chosen = (f"L2 {solution.l2:.3g} chosen by validation loss ({len(solution.scores)} strengths "
              f"tried)" if solution.scores else f"L2 {solution.l2:.3g} (1/n: no validation split to choose on, or "
              "train.load_best false)")
    log(f"frozen linear head: solved by L-BFGS in {wall:.1f}s ({solution.iterations} iterations), {chosen}; "
        "train.epochs and train.learning_rate are not used (frozen.solver=sgd trains it by epochs instead)")
    trainer.state.log_history.append({"step": 0, "loss": solution.train_loss, "frozen_l2": solution.l2})
    return TrainOutput(global_step=0, training_loss=solution.train_loss,
                       metrics={"train_runtime": round(wall, 3), "solver_iterations": solution.iterations,
                                "frozen_l2": solution.l2})
