"""Text generation with a causal LM run (`hfkit generate`, `hfkit chat`): the run's own chat template renders the
conversation, as in training, and generation stops at the template's end-of-turn token."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, ModelError


def load_causal_lm(run_dir: str | Path):
    """(model, tokenizer) of an sft run (full weights, or a PEFT adapter on its base), a pretraining run, or any
    causal-LM folder / builtin:NAME / hub id. The tokenizer comes from the run, so its chat template is the one
    trained with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .config import read_run_config
    from .models import load_pretrained, resolve_model_path

    path = resolve_model_path(str(run_dir))
    run = Path(path)
    if run.is_dir():
        cfg = read_run_config(run)
        task = getattr(cfg, "task", None)
        if task is not None and task != "sft":
            raise ModelError(f"'{run}' is a {task} run; generate and chat take a causal LM (an sft or causal-LM "
                             "pretraining run, or a model folder)")
        if cfg is not None and getattr(cfg, "objective", "clm") != "clm":
            raise ModelError(f"'{run}' is a {cfg.objective} pretraining run, not a causal LM")
    elif str(run_dir).startswith((".", "/", "~")):
        raise ModelError(f"run directory '{run_dir}' does not exist")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (run / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path)
    else:
        model = load_pretrained(AutoModelForCausalLM, path)
    return model.eval(), tokenizer


def prompt_ids(tokenizer, turns: list[dict]):
    """Token ids (a 1 x n tensor) of the conversation so far plus the assistant's generation prompt; a tokenizer
    without a chat template gets the last user turn as plain text."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    return tokenizer(turns[-1]["content"], return_tensors="pt")["input_ids"]


def generate(model, tokenizer, turns: list[dict], *, max_new_tokens: int = 128, temperature: float = 0.0,
             top_p: float = 1.0, seed: int | None = None) -> str:
    """The assistant's reply to `turns`: greedy at temperature 0, else sampled (temperature, nucleus top_p)."""
    import torch

    sampling = _sampling(temperature, top_p, max_new_tokens)
    ids = prompt_ids(tokenizer, turns).to(model.device)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, **sampling)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def _sampling(temperature: float, top_p: float, max_new_tokens: int) -> dict:
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens: {max_new_tokens}; give a number >= 1")
    if temperature < 0:
        raise ConfigError(f"--temperature: {temperature}; give 0 (greedy) or more")
    if not 0 < top_p <= 1:
        raise ConfigError(f"--top-p: {top_p}; give a value in (0, 1]")
    return dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else \
        dict(do_sample=False, temperature=None, top_p=None, top_k=None)


def generate_batch(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 128,
                   temperature: float = 0.0, top_p: float = 1.0, stop: list[str] | None = None,
                   batch_size: int = 16) -> list[str]:
    """The assistant's reply to each conversation, in order. Batches of similar prompt length, padded on the left
    (so every prompt ends where generation starts), with the KV cache; a reply ends at the template's end-of-turn
    token, at max_new_tokens, or just before the first of `stop`."""
    import torch

    sampling = _sampling(temperature, top_p, max_new_tokens)
    ids = [prompt_ids(tokenizer, turns)[0].tolist() for turns in conversations]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    replies: list[str] = [""] * len(ids)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(ids[i]) for i in idx)
        input_ids = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in idx], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, **({"stop_strings": stop, "tokenizer": tokenizer} if stop else {}),
                                 **sampling)
        for row, i in enumerate(idx):
            text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
            for s in stop or []:
                text = text.split(s, 1)[0]
            replies[i] = text.strip()
    return replies


def generate_file(run_dir, path: str, output=None, *, column: str = "prompt", system: str | None = None,
                  max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                  stop: list[str] | None = None, batch_size: int = 16, chunk_rows: int | None = None,
                  resume: bool = False, overwrite: bool = False, progress: bool = True, emit=None) -> dict:
    """Answer every row of a file (its `column`, or each line of a .txt) into `output` ({"prompt", "text"} per
    row, in input order), a chunk at a time, resumable and shared between processes like predict_file. Sampling
    is seeded per chunk (seed + chunk number), so a resumed or multi-process job samples what one process would."""
    import torch

    from .batch import CHUNK_ROWS, input_format, place, run_file, text_of

    _sampling(temperature, top_p, max_new_tokens)
    fmt = input_format(path)
    model, tokenizer = load_causal_lm(run_dir)
    model = place(model)
    key = "text" if fmt == "text" else column

    def answer(rows: list[dict], k: int) -> list[dict]:
        prompts = [text_of(r, key, path) for r in rows]
        turns = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
                 for p in prompts]
        torch.manual_seed(seed + k)
        replies = generate_batch(model, tokenizer, turns, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_p=top_p, stop=stop, batch_size=batch_size)
        return [{"prompt": p, "text": r} for p, r in zip(prompts, replies)]

    identity = {"kind": "generate", "column": key, "system": system, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "top_p": top_p, "seed": seed, "stop": stop}
    return run_file(path, output, answer, run_dir, identity, chunk_rows=chunk_rows or CHUNK_ROWS, resume=resume,
                    overwrite=overwrite, progress=progress, emit=emit, desc="Generating")
