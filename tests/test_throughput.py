"""The model-FLOPs formula (6 N + 12 L H T per training token) against PyTorch's own FLOP counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hfkit.flops import flops_per_token, matmul_params, mfu_metrics


def counted_training_flops_per_token(model, seq_len: int) -> float:
    """Forward FLOPs counted by torch on one sequence, x3 (backward = 2x forward), per token."""
    ids = torch.randint(5, 100, (1, seq_len))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    return 3 * counter.get_total_flops() / seq_len


@pytest.mark.parametrize("kind", ["bert-mlm", "gpt2-clm"])
def test_flop_formula_matches_torch_flop_counter(kind):
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if kind == "bert-mlm":
        config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=512, max_position_embeddings=128)
        model = BertForMaskedLM(config).eval()
        # by hand: per layer 4 H^2 (attention) + 2 H I (MLP); MLM head: H^2 transform + V H decoder (tied)
        h, i, v, layers = 128, 512, 1000, 2
        n_by_hand = layers * (4 * h * h + 2 * h * i) + h * h + v * h
    else:
        config = GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=2, n_positions=128)
        model = GPT2LMHeadModel(config).eval()
        h, v, layers = 128, 1000, 2
        n_by_hand = layers * (4 * h * h + 2 * h * 4 * h) + v * h
    model.config._attn_implementation = "eager"
    seq = 64
    # N also holds biases and LayerNorm weights (not matmuls): within 2% of the matmul weights counted by hand
    assert matmul_params(model) == pytest.approx(n_by_hand, rel=0.02)
    formula = flops_per_token(model, seq)
    assert formula == 6 * matmul_params(model) + 12 * 2 * 128 * seq
    assert formula == pytest.approx(counted_training_flops_per_token(model, seq), rel=0.03)


def test_mfu_against_a_given_peak():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=2, n_positions=64))
    m = mfu_metrics(model, 32, tokens_per_second=1e6, world_size=2, peak_tflops=10.0)
    assert m["train_model_tflops_per_second"] == pytest.approx(flops_per_token(model, 32) * 1e6 / 1e12, rel=1e-3)
    assert m["mfu"] == pytest.approx(m["train_model_tflops_per_second"] / 20.0, rel=1e-3)
    measured = mfu_metrics(model, 32, tokens_per_second=1e6, world_size=1, peak_tflops=None)
    assert measured["peak_source"] == "measured (fp32 matmul)" and measured["mfu"] == pytest.approx(
        measured["train_model_tflops_per_second"] / measured["peak_tflops_per_device"], rel=1e-2)


def test_peak_probe_measures_this_machine_and_is_cached(monkeypatch, tmp_path):
    """The probe's figure is a real matmul rate (between 1 GFLOP/s and 1 PFLOP/s), cached per machine and dtype,
    and a configured peak wins over it."""
    import json
    import time

    from hfkit.flops import device_peak_tflops, machine_key, measured_peak_tflops

    monkeypatch.setenv("HFKIT_CACHE", str(tmp_path))
    first = measured_peak_tflops("fp32")
    assert 1e-3 < first < 1e3
    table = json.loads((tmp_path / "peak.json").read_text())
    assert table == {machine_key("fp32"): first} and "torch" in machine_key("fp32")
    start = time.perf_counter()
    assert measured_peak_tflops("fp32") == first and time.perf_counter() - start < 0.05  # from the cache
    assert device_peak_tflops(7.0) == (7.0, "configured")
    monkeypatch.setenv("HFKIT_PEAK_TFLOPS", "3.5")
    assert device_peak_tflops(None) == (3.5, "HFKIT_PEAK_TFLOPS")


def test_padding_fraction_replays_the_sampler():
    from hfkit.training import padding_fraction

    assert padding_fraction([4, 4, 4, 4], 2, grouped=False, seed=0) == 0.0
    # one long row among short ones: random batches pad more than length-grouped ones
    lengths = [5] * 60 + [60] * 4
    random_order = padding_fraction(lengths, 8, grouped=False, seed=1)
    grouped = padding_fraction(lengths, 8, grouped=True, seed=1)
    assert 0 < grouped < random_order < 1
    # by hand: batches of 2 in the order [3, 1] [2]: (3 + 1 + 2) real / (3 + 3 + 2) padded
    assert padding_fraction([1, 2, 3], 2, grouped=False, seed=5) in {round(1 - 6 / 8, 4), round(1 - 6 / 7, 4),
                                                                    round(1 - 6 / 9, 4)}


def test_mlm_head_on_masked_positions_gives_the_stock_loss():
    import copy

    from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    from hfkit.models import head_on_masked_only

    for cls, config_cls in ((BertForMaskedLM, BertConfig), (RobertaForMaskedLM, RobertaConfig)):
        torch.manual_seed(0)
        model = cls(config_cls(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=128)).train()
        ids = torch.randint(5, 300, (3, 20))
        labels = torch.full_like(ids, -100)
        labels[:, ::4] = ids[:, ::4]
        fast = copy.deepcopy(model)
        assert head_on_masked_only(fast)
        torch.manual_seed(1)
        stock = model(input_ids=ids, labels=labels).loss
        stock.backward()
        torch.manual_seed(1)  # same dropout masks
        sparse = fast(input_ids=ids, labels=labels).loss
        sparse.backward()
        assert sparse.item() == pytest.approx(stock.item(), abs=1e-5)
        for (name, a), b in zip(model.named_parameters(), fast.parameters()):
            assert torch.allclose(a.grad, b.grad, atol=1e-5), name
        assert fast(input_ids=ids).logits.shape == (3, 20, 300)  # no labels: the stock forward, every position


def test_finetune_reports_throughput_padding_and_length_grouping(mlm_run, tmp_path):
    import json
    import random

    import pandas as pd

    import hfkit

    rng = random.Random(0)
    rows = [{"text": " ".join(["the cat sees the dog ."] * rng.choice([1, 1, 1, 8])), "label": rng.choice("ab")}
            for _ in range(96)]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    metrics = {}
    for grouped in (False, True):
        result = hfkit.finetune("classification-full", output_dir=str(tmp_path / f"run-{grouped}"),
                                model={"path": str(mlm_run.output_dir)},
                                data={"train": str(tmp_path / "train.csv"), "validation_split": 0.0},
                                train={"epochs": 1, "batch_size": 8, "report_to": [], "group_by_length": grouped,
                                       "learning_rate": 1e-4, "peak_tflops": 0.1})
        metrics[grouped] = result.metrics
        saved = json.loads((result.output_dir / "metrics.json").read_text())
        for key in ("train_tokens_per_second", "train_padding_fraction", "mfu", "model_flops_per_token",
                    "peak_memory_mb"):
            assert saved[key] is not None and saved[key] > 0, key
        assert saved["mfu"] < 1
    assert metrics[True]["train_padding_fraction"] < metrics[False]["train_padding_fraction"]
