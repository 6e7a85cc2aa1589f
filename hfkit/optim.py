"""How the weights learn, beyond the Trainer's defaults: class-weighted loss, discriminative (layer-wise) learning
rates, gradual unfreezing, and the learning-rate range test behind `train.learning_rate: auto`.

- `train.class_weights: balanced`: cross-entropy weighted by inverse class frequency (`weighted_loss`).
- `train.layer_lr_decay: d`: the head trains at the peak rate, the top transformer layer at rate x d, the next
  at x d^2, ..., the embeddings last (ULMFiT's discriminative fine-tuning, Howard & Ruder 2018; ELECTRA's layer-wise
  decay).
- `frozen.unfreeze_schedule: gradual`: the head trains alone in the first epoch, then one more layer from the top
  joins each epoch, the embeddings last (ULMFiT's gradual unfreezing).
- `train.learning_rate: auto`: a short run with the rate rising exponentially (Smith 2017; fastai's lr_find, as
  ULMFiT used it) on the run's own model, data and optimizer settings; the weights are restored afterwards and
  the run trains at the rate read off the curve (`suggest_rate`: a tenth of the rate at the lowest loss; a flat
  curve, where nothing is learnt yet, gives the method's default rate).

Parameter depth (`parameter_depths`) is what the last three share: 0 for the head and anything outside the
transformer blocks that is not an embedding, k for the k-th block from the top, and blocks + 1 for embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .console import log
from .errors import ConfigError


# --------------------------------------------------------------------------------------------- class weights
def weighted_loss(weights: torch.Tensor):
    """A Trainer `compute_loss_func`: cross-entropy with per-class weights, summed and divided by the number of
    labels in the whole (accumulated, all-process) batch when the Trainer gives it, so gradient accumulation and
    DDP see the same loss as one big batch."""

    def compute(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        w = weights.to(device=logits.device, dtype=logits.dtype)
        losses = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1).long(),
                                                   weight=w, reduction="sum", ignore_index=-100)
        count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum()
        if torch.is_tensor(count):
            count = count.to(losses.device)
        return losses / count

    return compute


# --------------------------------------------------------------------------------------------- parameter depth
def transformer_layers(model) -> torch.nn.ModuleList | None:
    """The stack of transformer blocks: the longest ModuleList in the model (encoder.layer, h, layers, ...)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=len) if lists else None


def parameter_depths(model) -> tuple[dict[str, int], int]:
    """({parameter name: depth}, number of blocks); see the module's docstring."""
    layers = transformer_layers(model)
    count = len(layers) if layers is not None else 0
    block_of = {}
    for index, layer in enumerate(layers or []):
        for p in layer.parameters():
            block_of[id(p)] = index
    depths = {}
    for name, p in model.named_parameters():
        if id(p) in block_of:
            depths[name] = count - block_of[id(p)]
        elif any(part in name for part in ("embed", "wte", "wpe", "word_embeddings", "position_embeddings")):
            depths[name] = count + 1
        else:
            depths[name] = 0
    return depths, count


def build_optimizer(trainer, learning_rate: float, decay: float = 1.0, include_frozen: bool = False):
    """AdamW (the Trainer's betas, eps and weight-decay rule) with one parameter group per (depth, decays): the
    peak rate times `decay` ** depth. `include_frozen`: also hold the parameters that do not train yet (gradual
    unfreezing turns them on later; AdamW skips a parameter while its gradient is None)."""
    args = trainer.args
    model = trainer.model
    depths, _ = parameter_depths(model)
    no_decay = set(n for n, _ in model.named_parameters()) - set(trainer.get_decay_parameter_names(model))
    groups: dict[tuple[int, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad or include_frozen:
            groups.setdefault((depths[name], name in no_decay), []).append(p)
    params = [{"params": ps, "lr": learning_rate * decay ** depth, "weight_decay": 0.0 if nd else args.weight_decay}
              for (depth, nd), ps in sorted(groups.items())]
    return torch.optim.AdamW(params, lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


def gradual_unfreezing(model):
    """A TrainerCallback: at the start of epoch e (from 0), parameters of depth <= e train, the rest are frozen
    (ULMFiT: the head first, then one more block from the top each epoch, the embeddings last)."""
    from transformers import TrainerCallback

    depths, count = parameter_depths(model)
    params = dict(model.named_parameters())

    class GradualUnfreeze(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            reach = int(math.floor((state.epoch or 0) + 1e-6))
            for name, p in params.items():
                p.requires_grad = depths[name] <= reach
            top = min(reach, count)
            log(f"gradual unfreezing, epoch {int(state.epoch or 0) + 1}: head"
                + (f" + top {top} of {count} layers" if top else "") + (" + embeddings" if reach > count else ""))

    return GradualUnfreeze()


# --------------------------------------------------------------------------------------------- range test
# A range test whose smoothed loss never falls this far below its start has found nothing to read a rate from.
MIN_FALL = 0.05


@dataclass
class RangeTest:
    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed, debiased
    raw: list[float] = field(default_factory=list)
    suggestion: float | None = None
    minimum: float | None = None  # rate at the lowest smoothed loss
    steepest: float | None = None  # rate at the steepest fall before it
    stopped: str = ""


def suggest_rate(rates: list[float], losses: list[float], divisor: float = 10.0
                 ) -> tuple[float | None, float | None, float | None]:
    """(suggestion, rate at the minimum, rate of the steepest fall) of a smoothed range-test curve.

    The suggestion is the rate where the loss bottoms out divided by `divisor`: 10 by default (fastai's
    `lr_min / 10`), the method's `lr_find_divisor` in fine-tuning (LoRA: 2). The loss at a rate reflects the steps
    taken at the lower rates before it, so the curve lags: measured on TREC, full fine-tuning at the steepest fall
    (6.6e-4) trained to 0.73 where a tenth of the minimum (1.5e-4) is next to the grid's best (2e-4: 0.84). LoRA's
    adapters start at zero and its curve bottoms out at about twice its best rate (TREC 3.9e-3 against 2e-3; SMS
    1.3e-3 against 1e-3..2e-3), where a tenth trained to chance; see benchmarks/defaults.py. The steepest fall is reported beside it, past the curve's first tenth (where the
    smoothing settles) and over a window of a twentieth of the curve."""
    if len(losses) < 10:
        return None, None, None
    low = min(range(len(losses)), key=losses.__getitem__)
    logs = [math.log10(r) for r in rates]
    first, k = max(1, len(losses) // 10), max(1, len(losses) // 20)
    slopes = {i: (losses[i + k] - losses[i - k]) / (logs[i + k] - logs[i - k])
              for i in range(max(first, k), low) if i + k < len(losses)}
    steepest = rates[min(slopes, key=slopes.__getitem__)] if slopes else None
    return rates[low] / divisor, rates[low], steepest


def range_test(trainer, optimizer_factory, *, start: float = 1e-7, end: float = 1.0, steps: int = 100,
               beta: float = 0.9, diverge: float = 4.0, divisor: float = 10.0) -> RangeTest:
    """Train for up to `steps` batches with the peak rate rising from `start` to `end` exponentially, recording
    the smoothed loss; stop when it exceeds `diverge` x its minimum. Every weight, and the model's train/eval
    mode, is restored afterwards. `optimizer_factory(rate)` builds the optimizer (its group ratios are kept)."""
    from tqdm.auto import tqdm

    model = trainer.model
    saved = {name: p.detach().clone() for name, p in model.named_parameters()}
    training = model.training
    optimizer = optimizer_factory(start)
    ratios = [g["lr"] / start for g in optimizer.param_groups]
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    loader = trainer.get_train_dataloader()
    result = RangeTest()
    average, best = 0.0, math.inf
    model.train()
    batches = iter(loader)
    try:
        for step in tqdm(range(steps), desc="Learning-rate range test"):
            rate = start * (end / start) ** (step / max(steps - 1, 1))
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = rate * ratio
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            loss = trainer.compute_loss(model, trainer._prepare_inputs(batch))
            value = float(loss.detach())
            if not math.isfinite(value):
                result.stopped = f"the loss became {value} at rate {rate:.2e}"
                break
            loss.backward()
            if trainer.args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, trainer.args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            average = beta * average + (1 - beta) * value
            smoothed = average / (1 - beta ** (step + 1))
            result.rates.append(rate)
            result.raw.append(value)
            result.losses.append(smoothed)
            best = min(best, smoothed)
            if step > 5 and smoothed > diverge * best:
                result.stopped = f"the loss passed {diverge:g}x its minimum at rate {rate:.2e}"
                break
    finally:
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(saved[name])
        model.train(training)
    result.suggestion, result.minimum, result.steepest = suggest_rate(result.rates, result.losses, divisor)
    return result


def range_test_plot(path: str | Path, result: RangeTest, title: str) -> Path | None:
    """lr_find.png: the smoothed loss against the rate (log scale), the raw loss faintly, the suggestion marked."""
    from .plots import _pyplot

    plt = _pyplot()
    if plt is None or not result.rates:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(result.rates, result.raw, color="tab:blue", alpha=0.25, label="loss per batch")
    ax.plot(result.rates, result.losses, color="tab:blue", label="smoothed")
    if result.suggestion:
        ax.axvline(result.suggestion, color="tab:red", ls="--", label=f"chosen {result.suggestion:.2e}")
    if result.minimum:
        ax.axvline(result.minimum, color="tab:gray", ls=":", label=f"minimum {result.minimum:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_ylim(top=min(max(result.losses) * 1.05, 3 * min(result.losses) + 1e-9) if result.losses else None)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Description": f"suggestion {result.suggestion}"})
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------- wiring
def set_up_optimization(trainer, cfg, *, resume_from: str | None = None, find_only: bool = False,
                        default_rate: float = 5e-4, divisor: float = 10.0) -> dict:
    """Apply the run's optimisation options to a built Trainer, before it trains: the learning-rate range test
    (train.learning_rate auto, or `find_only`), then the optimizer with layer-wise rates and the gradual-unfreezing
    callback. Returns entries for metrics.json. The rate found is written into cfg.train.learning_rate.
    `default_rate`: what a flat range-test curve falls back to; `divisor`: see suggest_rate (both the method's)."""
    t = cfg.train
    frozen = getattr(cfg, "frozen", None)
    gradual = frozen is not None and frozen.unfreeze_schedule == "gradual" and cfg.method in ("full", "frozen")
    facts: dict = {}
    if (t.layer_lr_decay != 1.0 or gradual or t.learning_rate == "auto" or find_only) and \
            (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        raise ConfigError("train.learning_rate=auto, train.layer_lr_decay and frozen.unfreeze_schedule build their "
                          "own optimizer, which FSDP and DeepSpeed do not take; find the rate on one process "
                          "(hfkit finetune ... --find-lr) and pass it as train.learning_rate")
    if gradual:
        depths, _ = parameter_depths(trainer.model)
        for name, p in trainer.model.named_parameters():  # the first epoch's state, for the range test too
            p.requires_grad = depths[name] == 0

    def factory(rate):
        return build_optimizer(trainer, rate, t.layer_lr_decay, include_frozen=False)

    if t.learning_rate == "auto" or find_only:
        previous = _rate_found_before(cfg.output_dir) if resume_from else None
        if previous is not None:
            log(f"learning_rate auto: resuming, so the rate found before is kept ({previous:.3g})")
            rate = previous
        else:
            rate, found = find_rate(trainer, cfg, factory, default_rate, divisor)
            facts.update(found)
        t.learning_rate = rate
        trainer.args.learning_rate = rate
        if find_only:
            return facts
    if gradual:
        trainer.add_callback(gradual_unfreezing(trainer.model))
    if t.layer_lr_decay != 1.0 or gradual:
        trainer.optimizer = build_optimizer(trainer, t.learning_rate, t.layer_lr_decay, include_frozen=gradual)
    return facts


def find_rate(trainer, cfg, factory, default_rate: float, divisor: float) -> tuple[float, dict]:
    """Run the range test on one process, write lr_find.png / lr_find.json into the output directory, log and
    return (rate, metrics.json entries). A flat curve (the loss falls under MIN_FALL) gives `default_rate`."""
    import json

    if trainer.args.world_size > 1:
        raise ConfigError("train.learning_rate=auto runs its range test on one process; find the rate with "
                          "`hfkit finetune ... --find-lr` (or pretrain) and pass it as train.learning_rate")
    result = range_test(trainer, factory, steps=cfg.train.lr_find_steps, divisor=divisor)
    if result.suggestion is None:
        raise ConfigError(f"train.learning_rate=auto: the range test ran only {len(result.losses)} steps "
                          f"({result.stopped or 'too little data'}); set train.learning_rate")
    fall = 1 - min(result.losses) / result.losses[0] if result.losses[0] > 0 else 1.0
    inconclusive = fall < MIN_FALL  # a flat curve: its minimum is noise, and so would be a rate read off it
    if inconclusive:
        result.suggestion = default_rate
        result.stopped += f"; inconclusive (the loss fell {100 * fall:.1f}%)"
    rate = float(f"{result.suggestion:.2g}")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    range_test_plot(out / "lr_find.png", result, f"{out.name}: learning-rate range test, chosen {rate:.2g}")
    (out / "lr_find.json").write_text(json.dumps(
        {"suggestion": rate, "inconclusive": inconclusive, "minimum": result.minimum, "steepest": result.steepest,
         "stopped": result.stopped, "rates": result.rates, "losses": result.losses, "raw": result.raw},
        indent=1) + "\n", encoding="utf-8")
    if inconclusive:
        log(f"learning-rate range test: inconclusive, the smoothed loss fell only {100 * fall:.1f}% over "
            f"{len(result.rates)} steps (the task is not yet being learnt within them), so the method's default rate "
            f"{rate:g} is used; raise train.lr_find_steps to look further (curve: {out / 'lr_find.png'})")
    else:
        log(f"learning-rate range test: {len(result.rates)} steps, loss lowest at {result.minimum:.2e}, steepest "
            f"fall at {result.steepest or float('nan'):.2e} -> learning rate {rate:.2g} (curve: {out / 'lr_find.png'})")
    return rate, {"learning_rate_found": rate, "lr_find_inconclusive": inconclusive}


def _rate_found_before(output_dir) -> float | None:
    path = Path(output_dir) / "lr_find.json"
    try:
        import json

        return float(json.loads(path.read_text(encoding="utf-8"))["suggestion"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
