"""hfkit plan: memory per GPU by strategy from a model built on the meta device, the recommendation, the launch
command, and one-line errors for impossible requests."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hfkit.cli import app
from hfkit.config import resolve
from hfkit.plan import GB, memory, model_shape, plan, recommend

SEVEN_B = str(Path(__file__).resolve().parent.parent / "recipes" / "models" / "llama-2-7b-shape")


def test_a_7b_model_plans_in_seconds_from_a_config_alone():
    cfg = resolve("finetune", "sft-full", [f"model.path={SEVEN_B}", "data.max_length=2048"])
    start = time.perf_counter()
    shape, _ = model_shape(cfg, "finetune")
    assert time.perf_counter() - start < 30
    assert abs(shape.total - 6.738e9) < 0.01e9  # Llama-2-7B's published size
    w, g, o, a, host = memory(shape, "DDP", 8, checkpointing=False)
    assert (w + g + o) * GB == pytest.approx(16 * shape.total)  # the ZeRO paper's 16 bytes per parameter
    w2, g2, o2, _, _ = memory(shape, "ZeRO-2", 8, checkpointing=False)  # bf16 module, fp32 master in the optimizer
    assert w2 * GB == pytest.approx(2 * shape.total) and (g2 + o2) * GB == pytest.approx(14 * shape.total / 8)
    w3, g3, o3, _, _ = memory(shape, "ZeRO-3", 8, checkpointing=False)
    assert g3 == pytest.approx(g2) and o3 == pytest.approx(o2)
    assert w2 / 8 < w3 <= w2 / 8 + 4 * shape.largest_layer / GB + 1e-9  # its shard plus the blocks being gathered
    wf, gf, of, _, _ = memory(shape, "FSDP full shard", 8, checkpointing=False)  # fp32 shards, torch autocast
    assert (wf + gf + of) * GB == pytest.approx(16 * shape.total / 8 + 8 * shape.largest_layer)
    _, _, _, a_ckpt, _ = memory(shape, "DDP", 8, checkpointing=True)
    assert a_ckpt < a / 4
    # traced in bf16: each Llama block saves more than Korthikanti's fused 34 s b h (RMSNorm upcasts to fp32), and
    # no s x s scores (FlashAttention)
    per_token_and_width = shape.saved.per_block / (shape.seq * shape.hidden)
    assert 34 < per_token_and_width < 34 + 5 * 32 * shape.seq / shape.hidden
    assert shape.saved.block_input == 2 * shape.seq * shape.hidden


def test_the_formula_without_a_trace():
    from hfkit.plan import Shape

    shape = Shape(total=10**6, trained=10**6, matmul=10**6, layers=4, hidden=64, vocab=100, seq=32, batch=2,
                  largest_layer=0)
    _, _, _, a16, _ = memory(shape, "DDP", 1, checkpointing=False)
    _, _, _, a32, _ = memory(shape, "DDP", 1, checkpointing=False, activation_bytes=4)
    assert (a32 - a16) * GB == pytest.approx(34 * 32 * 2 * 64 * 4)  # fp32 doubles the layers' activations


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_traced_activations_match_what_autograd_saves_on_cpu(attention):
    """The meta-device trace against the same model's real forward on this CPU: the bytes autograd saves for the
    backward pass, counted by saved-tensor hooks (each storage once). Eager attention runs the same code on both
    devices: equal to the byte. sdpa runs the trace's FlashAttention stand-in against torch's CPU flash kernel."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from hfkit.plan import trace_saved

    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    config._attn_implementation = attention
    with torch.device("meta"):
        traced = trace_saved(GPT2LMHeadModel(config), 64, labels=True)
    model = GPT2LMHeadModel(config)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, 300, (1, 64))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    planned = 2 * traced.per_block + traced.outside
    if attention == "eager":  # the s x s scores are saved on both
        assert planned == sum(saved.values())
    else:
        assert planned == pytest.approx(sum(saved.values()), rel=0.05)  # measured: 3% over


def test_lora_count_matches_peft(clm_run):
    """The adapter size the plan assumes is what PEFT builds (r x (in + out) per linear layer, no LM head)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = resolve("finetune", "sft-lora", [f"model.path={clm_run.output_dir}", "lora.r=4", "data.max_length=32"])
    shape, _ = model_shape(cfg, "finetune")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(clm_run.output_dir),
                           LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert shape.trained == trainable


def test_recommends_the_cheapest_strategy_that_fits():
    cfg = resolve("finetune", "sft-full", [f"model.path={SEVEN_B}", "data.max_length=2048"])
    shape, _ = model_shape(cfg, "finetune")
    roomy = recommend(plan(shape, 8, 80, 989, 100, 64, 0.4))
    tight = recommend(plan(shape, 8, 24, 121, 100, 64, 0.4))
    assert roomy.strategy == "ZeRO-2" and not roomy.checkpointing  # DDP's 16 B/param (108 GB) is over 80 GB
    assert tight.strategy in ("FSDP full shard", "ZeRO-3") and tight.checkpointing
    hours = [r.hours for r in plan(shape, 8, 141, 989, 100, 64, 0.4) if r.strategy == "DDP"]
    tokens = 100 * 64 * 2048
    per_token = 6 * shape.matmul + 12 * shape.layers * shape.hidden * 2048
    assert hours[0] == pytest.approx(tokens * per_token / (8 * 989e12 * 0.4) / 3600)
    assert hours[1] == pytest.approx(hours[0] * 4 / 3)  # checkpointing recomputes the forward


def test_cli_prints_the_table_and_the_launch_command():
    result = CliRunner().invoke(app, ["plan", "recipes/pretrain/llama-clm-small.yaml", "--gpus", "8", "--gpu",
                                      "h100-80gb"])
    assert result.exit_code == 0, result.output
    assert result.output.count("| ZeRO-3 |") == 2 and "recommended: DDP" in result.output
    assert "accelerate launch \\\n    --config_file recipes/accelerate/multi-gpu-ddp.yaml" in result.output
    assert "-m hfkit pretrain recipes/pretrain/llama-clm-small.yaml train.global_batch_size=1024" in result.output


@pytest.mark.parametrize("args, expected", [
    (["--gpus", "16", "--gpu", "h100-80gb"], "--gpus 16: 1 node(s) x 8 GPUs per node hold 8; use --nodes 2"),
    (["--gpus", "8", "--gpu", "h1000"], "--gpu: unknown GPU 'h1000'; known: h200-141gb, h100-80gb"),
    (["--gpus", "1", "--gpu", "t4-16gb", "data.max_length=4096", "train.batch_size=16"],
     "fits no strategy on 1 x t4-16gb: the smallest, ZeRO-3 + offload with activation checkpointing, needs"),
])
def test_impossible_requests_are_one_line(args, expected):
    overrides = [a for a in args if "=" in a]
    options = [a for a in args if "=" not in a]
    result = CliRunner().invoke(app, ["plan", "sft-full", f"model.path={SEVEN_B}", *overrides, *options])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and expected in errors[0], result.output
    assert "Traceback" not in result.output


def test_a_model_without_blocks_is_not_traced():
    """No `_no_split_modules`: trace_saved says so, and model_shape falls back to the formula (with a log line)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from hfkit.plan import trace_saved

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100))
    model._no_split_modules = None
    with pytest.raises(ValueError, match="names no transformer blocks"):
        trace_saved(model, 16, labels=True)
