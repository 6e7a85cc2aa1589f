"""What every recipe shares: the run directory, TrainingArguments from our config, resume, and recorded results."""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import CHECKPOINT_PREFIX, checkpoints, resumable  # noqa: F401 (re-exported)
from .console import is_main_process, log  # noqa: F401 (re-exported: recipes log through training)
from .errors import OutputDirError



@dataclass
class RunResult:
    """What `hfkit.pretrain(...)` / `hfkit.finetune(...)` return."""

    output_dir: Path
    metrics: dict[str, Any]
    config: Any = field(repr=False, default=None)


def check_output_dir(output_dir: str | Path, *, overwrite: bool, resume: str | None) -> str | None:
    """Refuse to clobber a non-empty run directory; return the checkpoint to resume from (or None).

    Only checks: nothing is created or removed until `claim_output_dir`, so a run that fails on bad data or
    config leaves the folder as it found it.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output_dir: '{out}' is a file; choose a folder path")
    resume_from = resumable(resume, out)
    non_empty = out.is_dir() and any(out.iterdir())
    # resume=auto on a folder with no checkpoint and no final model: an earlier attempt that died early.
    restarting = resume == "auto" and not _has_model(out)
    if non_empty and resume_from is None and not restarting and not overwrite:
        raise OutputDirError(f"output_dir: '{out}' is not empty; pass --overwrite (train.overwrite=true) to replace it, "
                             f"train.resume=auto to continue it, or choose another output_dir")
    return resume_from


def claim_output_dir(output_dir: str | Path, *, overwrite: bool, resume_from: str | None) -> None:
    """Create the run directory; when overwriting (not resuming), drop its old checkpoints first; when resuming, drop
    the unfinished or damaged checkpoints newer than the one resumed (this run writes those steps again)."""
    from .checkpoints import drop_newer

    out = Path(output_dir)
    if overwrite and resume_from is None and is_main_process():
        for old in out.glob(CHECKPOINT_PREFIX + "*"):
            shutil.rmtree(old, ignore_errors=True)
    if not overwrite and is_main_process():  # resuming, or restarting after no checkpoint verified
        drop_newer(out, resume_from)
    out.mkdir(parents=True, exist_ok=True)


def _has_model(out: Path) -> bool:
    return (out / "config.json").exists() or (out / "adapter_config.json").exists()


def derive_accumulation(t, world_size: int) -> None:
    """Set t.gradient_accumulation_steps from t.global_batch_size (no-op when it is not set)."""
    if t.global_batch_size is None:
        return
    per_step = t.batch_size * world_size
    if t.global_batch_size % per_step:
        from .errors import ConfigError

        raise ConfigError(f"train.global_batch_size: {t.global_batch_size} is not a multiple of train.batch_size "
                          f"({t.batch_size}) x {world_size} process(es) = {per_step}; change one of them")
    t.gradient_accumulation_steps = t.global_batch_size // per_step


OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_torch_fused": "adamw_torch_fused", "adafactor": "adafactor",
              "adamw_8bit": "adamw_bnb_8bit"}


def slow_bf16_warning() -> None:
    """bf16 on a CPU without bf16 units (AVX2 only) runs its matmuls ~100x slower than fp32 (measured here: 0.0016
    vs 0.148 TFLOP/s): say so, from the cached matmul probe, before hours go by."""
    from .flops import measured_peak_tflops

    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    bf16, fp32 = measured_peak_tflops("bf16"), measured_peak_tflops("fp32")
    if bf16 < fp32:
        log(f"warning: train.precision=bf16 on this CPU: its bf16 matmul measures {bf16:.3g} TFLOP/s against "
            f"{fp32:.3g} in fp32 (no bf16 units); this run will be ~{fp32 / bf16:.0f}x slower than with "
            "train.precision=fp32")


def precision_flags(precision: str) -> dict:
    """TrainingArguments flags for train.precision. auto = bf16 on a GPU that supports it, else fp32."""
    import torch

    from .models import resolved_precision

    cuda = torch.cuda.is_available()
    precision = resolved_precision(precision)
    flags: dict = {"bf16": precision == "bf16", "fp16": precision == "fp16"}
    if not cuda:
        # Trainer refuses bf16 on CPU unless told it runs on the CPU on purpose.
        flags["use_cpu"] = True
        if precision == "bf16":
            slow_bf16_warning()
        if precision == "fp16":
            from .errors import ConfigError

            raise ConfigError("train.precision: fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    return flags


def training_arguments(t, output_dir: str | Path, *, has_eval: bool, save_with_eval: bool = False, args_class=None,
                       **extra):
    """TrainingArguments (or `args_class`, a subclass such as TRL's SFTConfig) from a TrainConfig; `extra` wins
    (recipe-specific settings).

    save_with_eval: write checkpoints when evaluating (needed to keep the best checkpoint by a metric).
    """
    import importlib.util

    from transformers import TrainingArguments

    if has_eval:
        if t.eval_steps:
            eval_kwargs = dict(eval_strategy="steps", eval_steps=t.eval_steps)
        elif t.max_steps:
            eval_kwargs = dict(eval_strategy="steps", eval_steps=max(1, t.max_steps // 5))
        else:
            eval_kwargs = dict(eval_strategy="epoch")
    else:
        eval_kwargs = dict(eval_strategy="no")
    report_to = [r for r in t.report_to if r != "tensorboard" or importlib.util.find_spec("tensorboard")]
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=0.0 if t.learning_rate == "auto" else t.learning_rate,  # auto: optim.set_up_optimization sets it
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5: a value below 1 is a fraction of the total steps
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps else -1,
        seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss must show in the logs, where the safety callback sees it
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        dataloader_num_workers=t.dataloader_num_workers,
        report_to=report_to or "none",
        ddp_find_unused_parameters=False,
        ddp_timeout=t.collective_timeout,
        optim=OPTIMIZERS[t.optimizer],
        torch_compile=getattr(t, "compile", False),
        **eval_kwargs,
        **precision_flags(t.precision),
    )
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    new_name = "activation_checkpointing" in inspect.signature(TrainingArguments).parameters
    kwargs["activation_checkpointing" if new_name else "gradient_checkpointing"] = t.gradient_checkpointing
    if getattr(t, "group_by_length", False):
        strategy = "train_sampling_strategy" in inspect.signature(TrainingArguments).parameters
        kwargs.update({"train_sampling_strategy": "group_by_length"} if strategy else {"group_by_length": True})
    if save_with_eval and has_eval:
        kwargs["save_strategy"] = eval_kwargs["eval_strategy"]
        kwargs["save_steps"] = eval_kwargs.get("eval_steps", t.save_steps)
    kwargs.update(extra)
    return (args_class or TrainingArguments)(**kwargs)


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_model_card(output_dir: str | Path, *, title: str, lines: list[str], metrics: dict, load_snippet: str) -> None:
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    table = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(shown.items()))
    text = (f"# {title}\n\nTrained with hfkit.\n\n" + "\n".join(f"- {line}" for line in lines) +
            f"\n\n## Metrics\n\n| metric | value |\n|---|---|\n{table}\n\n## Use\n\n```python\n{load_snippet}\n```\n\n"
            "The resolved configuration is in `hfkit.yaml`; rerun it with `hfkit pretrain hfkit.yaml` "
            "(or `hfkit finetune`).\n")
    Path(output_dir, "README.md").write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------- safety
FINAL_TMP = ".hfkit-final.tmp"
LOAD_MARKERS = ("config.json", "adapter_config.json", "prompt.json")  # a folder loads once one of these is present


def save_final(save: "callable", output_dir: str | Path) -> None:
    """Write the final model with `save(folder)` into a temporary folder, then move it into `output_dir`.

    Each move is an atomic rename and the files that make a folder loadable (config.json, adapter_config.json)
    move last, after any old ones are removed first: a crash at any point leaves either the previous state or
    an output_dir that does not load, never a half-written model that loads.
    """
    out = Path(output_dir)
    tmp = out / FINAL_TMP
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    for marker in LOAD_MARKERS:
        (out / marker).unlink(missing_ok=True)
    entries = sorted(tmp.iterdir(), key=lambda p: (p.name in LOAD_MARKERS, p.name))
    for entry in entries:
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    tmp.rmdir()


def disk_full_error(error: Exception, output_dir: str | Path, trainer=None, final: bool = False):
    """An HfkitError naming the path and the space needed when `error` is a full disk (ENOSPC) or a file-size limit
    (EFBIG), whichever way the writer reports it (OSError, safetensors' error, torch.save's RuntimeError), else None.
    The unfinished checkpoint (no manifest) is removed, freeing what it took; older checkpoints and a previous final
    model are not touched. final: the error came from writing the final model."""
    import errno

    from .checkpoints import checkpoint_folders, checkpoints, read_manifest
    from .errors import DiskFull

    code = getattr(error, "errno", None)
    text = str(error)
    if code == errno.ENOSPC or "No space left on device" in text:
        cause = "no space left on the device"
    elif code == errno.EFBIG or "File too large" in text:
        cause = "the file-size limit (ulimit -f) was hit"
    elif "file write failed" in text or "unexpected pos" in text:  # torch.save's zip writer hides the errno
        cause = None  # decided below from the free space
    else:
        return None
    complete = checkpoints(output_dir)
    unfinished = None
    for folder in checkpoint_folders(output_dir):
        if folder not in complete and is_main_process():
            unfinished = folder
            shutil.rmtree(folder, ignore_errors=True)
    path = output_dir if final else getattr(error, "filename", None) or unfinished or output_dir
    need = None
    if complete and not final:
        manifest = read_manifest(complete[-1]) or {}
        need = sum(f["bytes"] for f in manifest.get("files", {}).values())
        what = f"a checkpoint needs about {need / 2**20:,.1f} MiB (the size of {complete[-1].name})"
    elif trainer is not None:
        need = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
        what = f"the model's weights take {need / 2**20:,.1f} MiB"
    else:
        what = "more room is needed"
    free = shutil.disk_usage(Path(output_dir) if Path(output_dir).exists() else Path(output_dir).parent).free
    if cause is None:
        cause = "no space left on the device" if need is not None and free < need else \
            "the disk refused a write (full, or a file-size limit)"
    kept = f"; the last good checkpoint is {complete[-1]}" if complete else ""
    return DiskFull(f"{cause} writing {path}: {what}, {free / 2**20:,.1f} MiB are free there{kept}. Free space (or "
                    "lower train.save_total_limit) and continue with train.resume=auto")


def weights_sharded(trainer) -> bool:
    """Each rank holds only a shard of the weights (FSDP, DeepSpeed ZeRO-3)."""
    return bool(getattr(trainer, "is_fsdp_enabled", False)) or (
        bool(getattr(trainer, "is_deepspeed_enabled", False))
        and trainer.deepspeed.config.get("zero_optimization", {}).get("stage") == 3)


def retie(model, state_dict: dict | None) -> dict | None:
    """Gathering copies each weight, so tied ones (an LM head sharing the embedding) stop sharing storage and
    save_pretrained would write both. Point every tied name at the first one's tensor again."""
    if not state_dict:
        return state_dict
    first: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        owner = first.setdefault(id(tensor), name)
        if owner != name and owner in state_dict and name in state_dict:
            state_dict[name] = state_dict[owner]
    return state_dict


def final_weights(trainer):
    """(model, state_dict) for saving the trained model: the model without its DDP/FSDP/DeepSpeed wrapper and, when
    its weights are sharded across ranks (FSDP, DeepSpeed ZeRO-3), the full state dict gathered on the main process
    (None otherwise: the model holds all its weights). Every rank must call it: the gathering is a collective."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if getattr(trainer, "is_fsdp_enabled", False):  # Accelerate gathers a FULL_STATE_DICT whatever the config says
        return model, retie(model, trainer.accelerator.get_state_dict(trainer.model))
    if weights_sharded(trainer):  # DeepSpeed ZeRO-3
        # As Trainer.save_model does: the engine gathers (needs zero3_save_16bit_model: true, as our configs set);
        # a PEFT model needs only its trainable weights.
        if hasattr(model, "peft_config"):
            return model, trainer.deepspeed._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=True)
        return model, trainer.accelerator.get_state_dict(trainer.deepspeed)
    return model, None


def finish_run(trainer, output_dir: str | Path, *, save, metrics: dict, card: tuple[str, list[str], str],
               plot_metric: str | None = None) -> None:
    """The end of every run (pretraining and fine-tuning alike): gather the final weights (every rank: under FSDP /
    ZeRO-3 that is a collective), then on the main process save them atomically with `save(model, state_dict,
    folder)`, write metrics.json, log_history.json and loss.png, and the model card from `card` (title, bullet
    lines, load snippet)."""
    final, state_dict = final_weights(trainer)
    if trainer.is_world_process_zero():
        try:
            save_final(lambda folder: save(final, state_dict, folder), output_dir)
        except Exception as e:
            shutil.rmtree(Path(output_dir) / FINAL_TMP, ignore_errors=True)  # the half-written copy, never the old model
            full = disk_full_error(e, output_dir, trainer, final=True)
            if full is None:
                raise
            raise full from e
        write_json(Path(output_dir) / "metrics.json", metrics)
        draw_run(trainer, output_dir, plot_metric)
        title, lines, snippet = card
        write_model_card(output_dir, title=title, lines=lines, load_snippet=snippet,
                         metrics={k: v for k, v in metrics.items() if not k.endswith("_report")})
        from .ranks import FOLDER

        shutil.rmtree(Path(output_dir) / FOLDER, ignore_errors=True)  # heartbeats matter only while training
    log(f"done: {output_dir}")


def safety_callback():
    """A TrainerCallback that (1) on SIGTERM/SIGINT/SIGUSR1 saves a checkpoint at the end of the current step and stops,
    (2) stops when a logged loss is NaN/inf, and refuses to write a checkpoint of non-finite weights."""
    import signal

    import torch
    from transformers import TrainerCallback

    class Safety(TrainerCallback):
        def __init__(self):
            self.signal_name: str | None = None
            self.stopped = False  # stopped by a signal (on any rank), after saving a checkpoint
            self.bad_loss: tuple[int, float] | None = None
            self._previous: dict = {}

        def _handler(self, signum, frame):
            if self.signal_name:  # a second Ctrl-C / SIGTERM: stop now, without the checkpoint
                raise KeyboardInterrupt
            self.signal_name = signal.Signals(signum).name

        def on_train_begin(self, args, state, control, **kwargs):
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                try:
                    self._previous[sig] = signal.signal(sig, self._handler)
                except ValueError:  # not the main thread (e.g. some notebook runners): no handler
                    pass

        def on_train_end(self, args, state, control, **kwargs):
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            stop = self.signal_name is not None
            if args.world_size > 1 and torch.distributed.is_initialized():
                # A signal can reach the ranks a step apart (SLURM, torchrun forwarding it): all stop at the step
                # where the first one got it, else the others would wait forever in the next step's all-reduce.
                # Only the reduced flag decides: a signal landing during the all-reduce counts at the next step.
                flag = torch.tensor([int(stop)], device=args.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                stop = bool(flag.item())
                if stop and not self.signal_name:
                    self.signal_name = "a signal to another process of the run"
            if stop:
                self.stopped = True
                control.should_save = True
                control.should_training_stop = True
            if control.should_save and model is not None and not all(
                    torch.isfinite(p).all() for p in model.parameters() if p.requires_grad):
                self.bad_loss = self.bad_loss or (state.global_step, float("nan"))
                control.should_save = False
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                self.bad_loss = (state.global_step, loss)
                control.should_save = False
                control.should_training_stop = True
            return control

    return Safety()


def train_safely(trainer, resume_from: str | None, output_dir: str | Path, config: dict | None = None):
    """trainer.train with the safety callback and checkpoint manifests (`config`, the resolved recipe, goes into each
    one); raises HfkitError subclasses that say what was kept.

    train.save_total_limit is applied by the manifest callback, after the new checkpoint is complete, instead of by
    the Trainer (which removes old checkpoints before it returns from the save, when nothing yet says the new one is
    whole)."""
    from .checkpoints import manifest_callback
    from .errors import Interrupted, Preempted, ProcessLost, TrainingFailed
    from .ranks import collective_failure, diagnose, heartbeat_callback

    safety = safety_callback()
    trainer.add_callback(safety)
    trainer.add_callback(heartbeat_callback(output_dir))
    keep, trainer.args.save_total_limit = trainer.args.save_total_limit, None
    trainer.add_callback(manifest_callback(keep, config))  # last: after every callback that writes into checkpoints
    try:
        output = trainer.train(resume_from_checkpoint=resume_from)
    except Exception as e:
        kind = collective_failure(e) if trainer.args.world_size > 1 else None
        if kind:  # a peer died or went silent: name it, in one line
            raise ProcessLost(diagnose(output_dir, trainer.args.world_size, trainer.args.process_index, kind,
                                       trainer.args.ddp_timeout)) from e
        full = disk_full_error(e, output_dir, trainer)
        if full is None:
            raise
        raise full from e
    finally:
        trainer.args.save_total_limit = keep
    if safety.bad_loss:
        step, loss = safety.bad_loss
        kept = checkpoints(output_dir)
        where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written before it"
        raise TrainingFailed(f"the training loss became {loss} at step {step}; stopped, {where}. Lower "
                             "train.learning_rate, add warm-up (train.warmup_ratio) or use train.precision=fp32")
    if safety.stopped:
        trainer.accelerator.wait_for_everyone()  # every rank has written its part of the checkpoint before any exits
        kept = checkpoints(output_dir)
        if safety.signal_name == "SIGUSR1":
            raise Preempted(f"stopped by SIGUSR1 (a scheduler's warning before a time limit) at step "
                            f"{trainer.state.global_step}; checkpoint saved ({kept[-1] if kept else 'none'}); exit "
                            f"{Preempted.exit_code} to requeue: the same command with train.resume=auto continues")
        raise Interrupted(f"stopped by {safety.signal_name} at step {trainer.state.global_step}; checkpoint saved "
                          f"({kept[-1] if kept else 'none'}); continue with train.resume=auto (or --resume)")
    return output


# --------------------------------------------------------------------------------------------- distributed
def distributed_state(timeout_seconds: int | None = None):
    """Accelerate's process state (torchrun / accelerate launch set the env; one process otherwise).

    Created before TrainingArguments so that data preparation can run on the main process first; on a machine
    without CUDA it uses the gloo backend, as TrainingArguments(use_cpu=True) does.
    """
    import os

    import torch
    from accelerate import PartialState

    if not torch.cuda.is_available():  # what DeepSpeed (which Accelerate imports) picks anyway, without its warning
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    kwargs = {}
    if timeout_seconds:  # how long a collective waits for the other processes (train.collective_timeout)
        from datetime import timedelta

        kwargs["timeout"] = timedelta(seconds=timeout_seconds)
    return PartialState(cpu=not torch.cuda.is_available(), **kwargs)


def shared_folder(output_dir: str | Path, name: str) -> Path:
    """A folder every rank of this run can find: where the main process leaves what the others load."""
    import hashlib

    key = hashlib.sha256(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]
    from .data import default_cache_dir

    return default_cache_dir() / "shared" / f"{key}-{name}"


def parameter_digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def ranks_in_sync(trainer) -> bool | None:
    """Whether every rank ends with bit-identical parameters (None in a single process, and where each rank holds
    only its shard: FSDP, ZeRO-3)."""
    from accelerate.utils import gather_object

    if trainer.args.world_size <= 1 or weights_sharded(trainer):
        return None
    digests = gather_object([parameter_digest(trainer.accelerator.unwrap_model(trainer.model))])
    return len(set(digests)) == 1


def start_run(cfg, model_path: str | None):
    """What every recipe does first, cheapest checks before any data work: (resume_from, distributed state, the
    recipe as given: what checkpoints record, to compare a later resume with before the run derives settings).

    Checks the output directory and the model folder, seeds, and derives the accumulation steps from
    train.global_batch_size and the world size (hfkit.yaml later records the derived value).
    """
    from transformers import set_seed

    from dataclasses import asdict  # config.to_dict (config imports the recipes that import this module)

    from .checkpoints import lock_output_dir, recipe_changes
    from .errors import ConfigError
    from .models import check_local_model_dir, resolve_model_path

    lock_output_dir(cfg.output_dir, shared_folder(cfg.output_dir, f"lock-rank{os.environ.get('RANK', '0')}"))
    resume_from = check_output_dir(cfg.output_dir, overwrite=cfg.train.overwrite, resume=cfg.train.resume)
    if resume_from:
        log(f"resuming from {resume_from}")
    set_seed(cfg.train.seed)
    if model_path:
        check_local_model_dir(resolve_model_path(model_path))
    state = distributed_state(cfg.train.collective_timeout)
    check_sharding_possible(state)
    quiet_deepspeed()
    derive_accumulation(cfg.train, state.num_processes)
    recipe = asdict(cfg)
    if resume_from:
        t = cfg.train
        changes = recipe_changes(resume_from, recipe, t.batch_size * t.gradient_accumulation_steps * state.num_processes)
        if changes and not t.resume_changed:
            raise ConfigError(f"train.resume: the recipe changed since {Path(resume_from).name} was written: "
                              f"{'; '.join(changes)}; undo the changes, or pass train.resume_changed=true to resume "
                              "with them")
        if changes:
            log(f"train.resume_changed: resuming with {'; '.join(changes)}")
        check_zero_world(resume_from, state.num_processes)
    return resume_from, state, recipe


def check_zero_world(checkpoint: str, processes: int) -> None:
    """DeepSpeed ZeRO partitions the optimizer state by process and cannot re-partition it on load (0.19: "Automatic
    adjustment of ZeRO's optimizer state partitioning with a new world size is not currently supported"); its
    universal-checkpoint converter needs metadata only Megatron-DeepSpeed writes. Refuse in one line before any
    work, and say what can be done: the same process count, or the weights in a new run with a fresh optimizer."""
    from accelerate.utils import parse_flag_from_env

    from .checkpoints import read_manifest
    from .errors import ConfigError

    written = (read_manifest(checkpoint) or {}).get("world_size")
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") and written and written != processes:
        weights = ("model.path=" + checkpoint if (Path(checkpoint) / "model.safetensors").is_file() else
                   f"model.path=<the weights from python {checkpoint}/zero_to_fp32.py {checkpoint} <folder>>")
        raise ConfigError(f"train.resume: {Path(checkpoint).name} was written by {written} DeepSpeed process(es) and "
                          f"this launch has {processes}; ZeRO cannot re-partition its optimizer state for another count. "
                          f"Resume with {written} process(es), or start a new run from its weights ({weights}; the "
                          "optimizer and schedule start again), or use FSDP2 or DDP, which resume on any count")


def check_sharding_possible(state) -> None:
    """Make a sharded launch on CPU processes shard, or refuse it, rather than let Accelerate run it as DDP with every
    rank holding the whole model while the user believes it is sharded.

    FSDP: accelerate 1.15 (accelerate/state.py, AcceleratorState) turns its FSDP plugin on only for GPU-like device
    types, and CPU processes (MULTI_CPU) keep plain DDP. That is a gate, not a limit: FSDP2 (`fully_shard`) runs over
    gloo on CPU. `shard_cpu_processes_with_fsdp2` lets the plugin through. FSDP1 cannot run there: torch's
    `_init_utils._get_device_from_device_id` rejects the `device_id` Accelerate passes ("cpu vs cpu:0"), so it is
    refused. DeepSpeed: Accelerate takes it on CPU only when the launch did not ask for CPU (ACCELERATE_USE_CPU,
    `--cpu`); then the gloo group `distributed_state` made carries DeepSpeed's CPU accelerator, and ZeRO runs."""
    import os

    from accelerate.utils import DistributedType, parse_flag_from_env

    from .errors import ConfigError

    if state.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.NO) or state.num_processes < 2:
        return
    if parse_flag_from_env("ACCELERATE_USE_FSDP"):
        if os.environ.get("FSDP_VERSION", "1") != "2":
            raise ConfigError("FSDP version 1 cannot shard CPU processes (torch's FSDP1 rejects the CPU device_id "
                              "Accelerate gives it); use fsdp_version: 2, as recipes/accelerate/fsdp.yaml does")
        shard_cpu_processes_with_fsdp2()
        # With RAM-efficient loading the other ranks load checkpoints onto the meta device, whose tensors all have
        # data_ptr 0, and Accelerate maps the optimizer's parameters to the sharded ones by data_ptr
        # (accelerator._prepare_fsdp2): several map to one, and saving the optimizer fails (KeyError in torch's
        # get_optimizer_state_dict). Every rank loads the weights instead; CPU memory is what these runs have.
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") and parse_flag_from_env("ACCELERATE_USE_CPU"):
        raise ConfigError("DeepSpeed was asked for (ACCELERATE_USE_DEEPSPEED), but so were CPU processes "
                          "(ACCELERATE_USE_CPU or --cpu), which Accelerate 1.15 runs as plain DDP without ZeRO; drop "
                          "--cpu / unset ACCELERATE_USE_CPU: on a machine without GPUs DeepSpeed runs on the CPU by "
                          "itself")


def shard_cpu_processes_with_fsdp2() -> None:
    """Let Accelerate's FSDP2 plugin through on CPU processes: after AcceleratorState has set itself up as MULTI_CPU
    (dropping the plugin), switch it to FSDP with the plugin it was given. Everything after that is Accelerate's own
    FSDP2 path (`fully_shard` per transformer block, DTensor parameters, gathered or sharded state dicts), run over
    gloo. Idempotent; affects only this process."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    init = AcceleratorState.__init__
    if getattr(init, "_hfkit_fsdp_on_cpu", False):
        return

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    __init__._hfkit_fsdp_on_cpu = True
    AcceleratorState.__init__ = __init__


def fsdp_units(model) -> None:
    """Under FSDP, name the classes to shard as units (FSDP_TRANSFORMER_CLS_TO_WRAP) when the model's own list would
    break: accelerate 1.15's FSDP2 (utils/fsdp_utils.py, fsdp2_prepare_model) shards every class in
    `_no_split_modules`, then the input embedding as a unit of its own unless it is tied to the LM head. BERT lists
    BertEmbeddings, which holds that embedding, so an untied BERT (a classifier) has it sharded twice and
    `fully_shard` fails ("Invariant encountered: value was None"). The list minus such classes avoids it. A value
    the user set is kept. Call before the Trainer exists (its Accelerator reads the variable)."""
    import os

    from accelerate.utils import parse_flag_from_env

    if not parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    check_output_bias(base)
    if os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
        return
    listed = set(getattr(base, "_no_split_modules", None) or [])
    embedding = base.get_input_embeddings()
    holders = {type(m).__name__ for m in base.modules()
               if type(m).__name__ in listed and any(sub is embedding for sub in m.modules())}
    if holders and listed - holders:
        os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = ",".join(sorted(listed - holders))


def check_output_bias(model) -> None:
    """BERT-style masked-LM heads register the decoder's bias twice (cls.predictions.bias is
    cls.predictions.decoder.bias). accelerate 1.15's FSDP2 puts the decoder in one group with the tied embedding and
    leaves the head's name to the root group, and torch 2.13 refuses a parameter two groups share (a ValueError at
    the first step). Refused here in one line instead."""
    from .errors import ConfigError

    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    bias = getattr(out, "bias", None)
    if bias is None:
        return
    names = [n for n, p in model.named_parameters(remove_duplicate=False) if p is bias]
    if len(names) > 1:
        raise ConfigError(f"FSDP: {type(model).__name__} registers its output bias twice ({', '.join(names)}), which "
                          "accelerate's FSDP2 cannot shard (torch refuses a parameter shared by two groups); train it "
                          "with DDP or DeepSpeed ZeRO (recipes/accelerate/deepspeed-zero2.yaml)")


def quiet_deepspeed() -> None:
    """DeepSpeed 0.19.8 calls collectives that torch 2.13 deprecates, one FutureWarning per call and rank; nothing a
    user can act on."""
    import warnings

    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        warnings.filterwarnings("ignore", message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)`"
                                r" is deprecated", category=FutureWarning)


# --------------------------------------------------------------------------------------------- run statistics
def steps_this_session(trainer, resume_from: str | None) -> int:
    start = int(Path(resume_from).name.rsplit("-", 1)[-1]) if resume_from else 0
    return max(trainer.state.global_step - start, 0)


def run_stats(tokens: int, samples: int, wall: float) -> dict:
    """Throughput (real tokens, not padding) and peak memory of this process (and of the GPU, if one was used)."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    stats = {"train_tokens": int(tokens), "train_tokens_per_second": round(tokens / wall, 1) if wall > 0 else None,
             "train_real_samples_per_second": round(samples / wall, 2) if wall > 0 else None,
             "peak_memory_mb": round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        stats["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return stats


def draw_run(trainer, output_dir: str | Path, metric: str | None = None) -> None:
    """log_history.json and loss.png (train/eval loss and `metric` per step) in the run directory (rank 0)."""
    from .plots import loss_plot, write_log_history

    history = trainer.state.log_history
    write_log_history(output_dir, history)
    loss_plot(output_dir, history, metric)


def padding_fraction(lengths: list[int], batch_size: int, grouped: bool, seed: int) -> float:
    """Share of padding tokens in one epoch of batches padded to their longest row, for the run's sampler
    (random order, or transformers' length-grouped sampler), replayed on the rows' lengths."""
    import random

    if not lengths:
        return 0.0
    if grouped:
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        order = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    else:
        order = list(range(len(lengths)))
        random.Random(seed).shuffle(order)
    padded = sum(max(lengths[i] for i in order[s:s + batch_size]) * len(order[s:s + batch_size])
                 for s in range(0, len(order), batch_size))
    return round(1 - sum(lengths) / padded, 4)
