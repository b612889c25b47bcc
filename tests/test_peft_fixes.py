"""sine-LoRA fixes found by PEFT's own test suite (issue 13) and the eval-mode delta cache (issue 19).

- sine-DoRA on the meta device (low_cpu_mem_usage=True), lora_bias=True (merge / unmerge / save),
  add_weighted_adapter refused with the reason, and the cached delta W of an unmerged layer in eval
  mode, checked against the uncached path after every invalidation event.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("peft")
pytest.importorskip("transformers")

import sinelr.peft  # noqa: E402,F401  (registers the method)
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

from sinelr.functional import sine_lowrank_weight  # noqa: E402
from sinelr.peft import SineLoraConfig, SineLoraLinear  # noqa: E402


class _MLP(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.lin0 = nn.Linear(10, 20, bias=bias)
        self.act = nn.Tanh()
        self.lin1 = nn.Linear(20, 4, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin1(self.act(self.lin0(x)))


def _base(bias: bool = True) -> _MLP:
    torch.manual_seed(0)
    return _MLP(bias).eval()


X = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))


def _model(**kwargs) -> PeftModel:
    kwargs.setdefault("target_modules", ["lin0", "lin1"])
    kwargs.setdefault("omega", 30.0)
    kwargs.setdefault("init_lora_weights", False)  # random A and B: a non-trivial update
    return get_peft_model(_base(kwargs.pop("base_bias", True)), SineLoraConfig(**kwargs)).eval()


def _layers(model) -> list[SineLoraLinear]:
    return [m for m in model.modules() if isinstance(m, SineLoraLinear)]


def _out(model, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _uncached(model, x: torch.Tensor = X) -> torch.Tensor:
    """The output without the cache: with grad mode on and trainable factors nothing is reused."""
    with torch.enable_grad():
        return model(x).detach()


def _formula_layer(layer: SineLoraLinear, adapter: str, x: torch.Tensor) -> torch.Tensor:
    """x (W0 + sin(omega B A)/g * s)^T + b0 + s * b_B, written out."""
    A, B = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    s = layer.scaling[adapter]
    delta = sine_lowrank_weight(B, A.T, layer.sine_omega[adapter], layer.sine_gain[adapter]) * s
    base = layer.get_base_layer()
    y = x @ (base.weight + delta).T
    if base.bias is not None:
        y = y + base.bias
    if layer.lora_B[adapter].bias is not None:
        y = y + s * layer.lora_B[adapter].bias
    return y


# ---------------------------------------------------------------------------------------------
# meta device
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_dora", [False, True], ids=["sine-LoRA", "sine-DoRA"])
@pytest.mark.parametrize("start", [None, 1.0], ids=["B0=0", "offset start"])
def test_low_cpu_mem_usage_load_equals_normal_load(use_dora, start, tmp_path):
    if start is None:
        model = _model(use_dora=use_dora)
    else:  # the offset start draws A and B itself; move B off its start for a non-zero update
        model = _model(use_dora=use_dora, init_argument_rms=start, init_lora_weights=True)
        with torch.no_grad():
            for layer in _layers(model):
                layer.lora_B["default"].weight.add_(0.1)
    if use_dora:
        with torch.no_grad():
            for layer in _layers(model):
                layer.lora_magnitude_vector["default"].weight.mul_(1.1)
    expected = _out(model)
    assert not torch.allclose(expected, _out(_base()), atol=1e-3)
    model.save_pretrained(tmp_path)
    # creating on the meta device (was: RuntimeError unsupported scalarType from autocast("meta"))
    empty = get_peft_model(_base(), SineLoraConfig(target_modules=["lin0"], use_dora=use_dora,
                                                   init_argument_rms=start), low_cpu_mem_usage=True)
    assert empty.base_model.model.lin0.lora_A["default"].weight.is_meta
    if start is not None:
        assert empty.base_model.model.lin0.sine_start_B["default"].is_meta
    if use_dora:
        assert empty.base_model.model.lin0.lora_magnitude_vector["default"].weight.is_meta
    loaded = PeftModel.from_pretrained(_base(), tmp_path, low_cpu_mem_usage=True).eval()
    assert not any(p.is_meta for p in loaded.parameters()) and not any(b.is_meta for b in loaded.buffers())
    torch.testing.assert_close(_out(loaded), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# lora_bias
# ---------------------------------------------------------------------------------------------
def _with_lora_bias(**kwargs) -> PeftModel:
    model = _model(lora_bias=True, lora_alpha=32, r=4, **kwargs)
    with torch.no_grad():
        for i, layer in enumerate(_layers(model)):
            layer.lora_B["default"].bias.copy_(torch.linspace(-1, 1, layer.out_features) * (0.1 + i))
    return model


def test_lora_bias_forward_is_the_formula():
    model = _with_lora_bias()
    lin0, lin1 = model.base_model.model.lin0, model.base_model.model.lin1
    with torch.no_grad():
        expected = _formula_layer(lin1, "default", torch.tanh(_formula_layer(lin0, "default", X)))
    torch.testing.assert_close(_out(model), expected, rtol=1e-5, atol=1e-5)
    # scaling = lora_alpha / r = 8 multiplies the bias: the bias changes the output
    with torch.no_grad():
        lin1.lora_B["default"].bias.zero_()
    assert not torch.allclose(_out(model), expected, atol=1e-3)


@pytest.mark.parametrize("safe_merge", [False, True])
def test_lora_bias_merge_unmerge_and_save(safe_merge, tmp_path):
    model = _with_lora_bias()
    base_bias = model.base_model.model.lin0.get_base_layer().bias.detach().clone()
    expected = _out(model)
    model.merge_adapter(safe_merge=safe_merge)
    merged_bias = model.base_model.model.lin0.get_base_layer().bias.detach()
    lora_b = model.base_model.model.lin0.lora_B["default"].bias.detach()
    torch.testing.assert_close(merged_bias, base_bias + 8.0 * lora_b)
    torch.testing.assert_close(_out(model), expected, rtol=1e-5, atol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(model.base_model.model.lin0.get_base_layer().bias.detach(), base_bias, atol=1e-6, rtol=0)
    torch.testing.assert_close(_out(model), expected, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(_base(), tmp_path).eval()
    torch.testing.assert_close(_out(loaded), expected, rtol=0, atol=0)
    unloaded = loaded.merge_and_unload()
    torch.testing.assert_close(_out(unloaded), expected, rtol=1e-5, atol=1e-5)


def test_lora_bias_with_two_active_adapters_adds_both_biases():
    model = _with_lora_bias()
    model.add_adapter("other", SineLoraConfig(target_modules=["lin0"], lora_bias=True, init_lora_weights=False, omega=10.0))
    with torch.no_grad():
        model.base_model.model.lin0.lora_B["other"].bias.fill_(0.3)
    model.base_model.set_adapter(["default", "other"])
    model.eval()
    lin0 = model.base_model.model.lin0
    with torch.no_grad():
        h = _formula_layer(lin0, "default", X) + (_formula_layer(lin0, "other", X) - lin0.get_base_layer()(X))
        expected = _formula_layer(model.base_model.model.lin1, "default", torch.tanh(h))
    torch.testing.assert_close(_out(model), expected, rtol=1e-5, atol=1e-5)
    model.merge_adapter()
    torch.testing.assert_close(_out(model), expected, rtol=1e-5, atol=1e-5)


def test_lora_bias_merge_without_base_bias_raises():
    with pytest.warns(UserWarning, match="has no bias"):
        model = _model(lora_bias=True, base_bias=False)
    with pytest.raises(RuntimeError, match="lora_bias=True.*base layer has no bias"):
        model.merge_adapter()


# ---------------------------------------------------------------------------------------------
# add_weighted_adapter
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("combination_type", ["cat", "linear", "svd", "ties", "dare_linear"])
def test_add_weighted_adapter_is_refused_with_the_reason(combination_type):
    model = _model(target_modules=["lin0"])
    model.add_adapter("other", SineLoraConfig(target_modules=["lin0"], omega=30.0, init_lora_weights=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NotImplementedError, match=rf"combination_type='{combination_type}'.*sin\(omega"):
        model.add_weighted_adapter(["default", "other"], [1.0, 1.0], "merged", combination_type=combination_type)
    assert "merged" not in model.peft_config
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_why_cat_cannot_be_exact():
    """The function "cat" would build (sine of the summed products) differs from both adapters active."""
    model = _model(target_modules=["lin0"])
    model.add_adapter("other", SineLoraConfig(target_modules=["lin0"], omega=30.0, init_lora_weights=False))
    lin0 = model.base_model.model.lin0
    A = torch.cat([lin0.lora_A["default"].weight, lin0.lora_A["other"].weight])
    B = torch.cat([lin0.lora_B["default"].weight, lin0.lora_B["other"].weight], dim=1)
    g, s = lin0.sine_gain["default"], lin0.scaling["default"]
    with torch.no_grad():
        cat = sine_lowrank_weight(B, A.T, 30.0, g) * s
        both = lin0.get_delta_weight("default") + lin0.get_delta_weight("other")
    assert (cat - both).abs().max() > 0.1


# ---------------------------------------------------------------------------------------------
# cached delta in eval mode
# ---------------------------------------------------------------------------------------------
def _count_builds(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = SineLoraLinear.sine_delta_out_in

    def counting(self, adapter):
        calls.append(adapter)
        return original(self, adapter)

    monkeypatch.setattr(SineLoraLinear, "sine_delta_out_in", counting)
    return calls


@pytest.mark.parametrize("use_dora", [False, True], ids=["sine-LoRA", "sine-DoRA"])
def test_eval_reuses_the_delta_and_matches_the_uncached_path(use_dora, monkeypatch):
    model = _model(use_dora=use_dora)
    calls = _count_builds(monkeypatch)
    first = _out(model)
    n = len(calls)
    assert n >= 2  # one per layer (DoRA's norm reuses the same cached delta)
    second = _out(model)
    assert len(calls) == n  # nothing rebuilt
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, _uncached(model), rtol=1e-6, atol=1e-6)
    # train() drops the cache, and training mode never fills it
    assert all(layer._sine_delta_cache for layer in _layers(model))
    model.train()
    with torch.no_grad():
        model(X)
    assert not any(layer._sine_delta_cache for layer in _layers(model))


def _perturb_in_place(model):
    with torch.no_grad():
        model.base_model.model.lin0.lora_A["default"].weight.mul_(1.5)


def _perturb_through_data(model):
    model.base_model.model.lin1.lora_B["default"].weight.data.add_(0.05)


def _reassign(model):
    layer = model.base_model.model.lin0
    layer.lora_B["default"].weight = nn.Parameter(layer.lora_B["default"].weight.detach() * -1)


def _train_step(model):
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(X).pow(2).sum().backward()
    opt.step()
    model.eval()


def _set_scale(model):
    model.base_model.model.lin0.set_scale("default", 3.0)


@pytest.mark.parametrize(
    "event", [_perturb_in_place, _perturb_through_data, _reassign, _train_step, _set_scale],
    ids=["in-place", "via .data", "reassigned", "train step", "set_scale"],
)
@pytest.mark.parametrize("use_dora", [False, True], ids=["sine-LoRA", "sine-DoRA"])
def test_cache_follows_parameter_changes(event, use_dora):
    model = _model(use_dora=use_dora)
    before = _out(model)  # fills the cache
    event(model)
    after = _out(model)
    assert not torch.allclose(after, before, atol=1e-4)
    torch.testing.assert_close(after, _uncached(model), rtol=1e-6, atol=1e-6)


def test_cache_follows_merge_unmerge_adapter_switch_and_dtype():
    model = _model()
    model.add_adapter("other", SineLoraConfig(target_modules=["lin0", "lin1"], omega=5.0, init_lora_weights=False))
    model.eval()
    default = _out(model)
    model.set_adapter("other")
    model.eval()
    other = _out(model)
    assert not torch.allclose(default, other, atol=1e-3)
    torch.testing.assert_close(other, _uncached(model), rtol=1e-6, atol=1e-6)
    model.base_model.set_adapter(["default", "other"])
    model.eval()
    both = _out(model)
    torch.testing.assert_close(both, _uncached(model), rtol=1e-6, atol=1e-6)
    model.merge_adapter()
    torch.testing.assert_close(_out(model), both, rtol=1e-5, atol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(_out(model), both, rtol=1e-5, atol=1e-5)
    model.set_adapter("default")
    model.eval()
    torch.testing.assert_close(_out(model), default, rtol=1e-6, atol=1e-6)
    model.double()
    out64 = _out(model, X.double())
    assert out64.dtype == torch.float64
    assert model.base_model.model.lin0._sine_delta_cache["default"][3].dtype == torch.float64
    torch.testing.assert_close(out64, _uncached(model, X.double()), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out64.float(), default, rtol=1e-5, atol=1e-5)


def test_cache_is_skipped_when_gradients_are_needed():
    model = _model()
    model(X)  # eval, grad mode on, trainable factors: no cache, and the graph reaches A and B
    assert not model.base_model.model.lin0.__dict__.get("_sine_delta_cache")
    model(X).sum().backward()
    assert model.base_model.model.lin0.lora_A["default"].weight.grad is not None
    # frozen adapter in eval: cached even with grad mode on, and x still gets its gradient
    for p in model.parameters():
        p.requires_grad_(False)
    x = X.clone().requires_grad_(True)
    model(x).sum().backward()
    assert "default" in model.base_model.model.lin0._sine_delta_cache
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_cache_can_be_turned_off(monkeypatch):
    model = _model()
    expected = _out(model)
    model.train().eval()
    monkeypatch.setattr(SineLoraLinear, "cache_delta_in_eval", False)
    torch.testing.assert_close(_out(model), expected, rtol=1e-6, atol=1e-6)
    assert not any(layer._sine_delta_cache for layer in _layers(model))


def test_plain_lora_is_untouched_by_sine_fixes():
    """Sanity: PEFT's own LoRA with lora_bias still works in the same process (nothing patched globally)."""
    model = get_peft_model(_base(), LoraConfig(target_modules=["lin0"], lora_bias=True)).eval()
    assert type(model.base_model.model.lin0).__name__ == "Linear"
    _out(model)
