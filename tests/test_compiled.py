"""The fused (torch.compile) elementwise chain of sine_lowrank_linear: switch, fallback, and equality.

Compiling takes seconds to a minute on a small CPU, so the suite runs with SINELR_COMPILE=0
(tests/conftest.py); only the tests marked `compile` turn it on, on small shapes
(deselect them with `-m "not compile"`).
"""
import math

import pytest
import torch
import torch.nn.functional as F

import sinelr.functional as fn


@pytest.fixture
def fresh_compile_state(monkeypatch):
    """Each test starts with no compiled chain and no recorded failure."""
    monkeypatch.setattr(fn, "_COMPILED", None)
    monkeypatch.setattr(fn, "_COMPILE_BROKEN", False)
    monkeypatch.setattr(fn, "_COMPILE_OK_KEYS", set())


def _case(m=24, n=20, k=3, lead=(3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    U = (torch.rand(m, k, generator=g) * 2 - 1).requires_grad_()
    V = (torch.rand(n, k, generator=g) * 2 - 1).requires_grad_()
    x = torch.randn(*lead, n, generator=g).requires_grad_()
    b = torch.randn(m, generator=g).requires_grad_()
    W0 = torch.randn(m, n, generator=g)
    return x, U, V, b, W0


def _run(x, U, V, b, W0, omega=40.0, gain=math.sqrt(20), scale=0.5, grad=None):
    for t in (x, U, V, b):
        t.grad = None
    y = fn.sine_lowrank_linear(x, U, V, b, omega, gain, base_weight=W0, scale=scale)
    y.backward(grad if grad is not None else torch.ones_like(y))
    return y.detach().clone(), [t.grad.clone() for t in (x, U, V, b)]


@pytest.mark.parametrize(
    "value, mode",
    [("0", "off"), ("off", "off"), ("1", "on"), ("ON", "on"), ("auto", "auto"), ("", "auto"), (None, "auto")],
)
def test_compile_switch_reads_the_environment(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv("SINELR_COMPILE", raising=False)
    else:
        monkeypatch.setenv("SINELR_COMPILE", value)
    assert fn.compile_mode() == mode


def test_bad_compile_switch_names_the_value(monkeypatch):
    monkeypatch.setenv("SINELR_COMPILE", "maybe")
    with pytest.raises(ValueError, match="'maybe'"):
        fn.compile_mode()


def test_auto_compiles_only_large_weights(monkeypatch, fresh_compile_state):
    monkeypatch.setenv("SINELR_COMPILE", "auto")
    cpu = torch.device("cpu")
    assert not fn._want_fused(fn._COMPILE_MIN_NUMEL - 1, cpu)
    assert fn._want_fused(fn._COMPILE_MIN_NUMEL, cpu)
    monkeypatch.setenv("SINELR_COMPILE", "0")
    assert not fn._want_fused(10 * fn._COMPILE_MIN_NUMEL, cpu)
    monkeypatch.setenv("SINELR_COMPILE", "1")
    assert fn._want_fused(1, cpu)


def test_small_layers_never_compile_in_auto_mode(monkeypatch, fresh_compile_state):
    monkeypatch.setenv("SINELR_COMPILE", "auto")

    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile must not be called for a small weight in auto mode")

    monkeypatch.setattr(torch, "compile", no_compile)
    _run(*_case())
    assert fn._COMPILED is None


def test_failed_compile_falls_back_to_eager_with_one_warning(monkeypatch, fresh_compile_state):
    x, U, V, b, W0 = _case()
    monkeypatch.setenv("SINELR_COMPILE", "0")
    y_ref, g_ref = _run(x, U, V, b, W0)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(fn, "_compiled_chain", lambda: broken)
    monkeypatch.setenv("SINELR_COMPILE", "1")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here") as record:
        y, grads = _run(x, U, V, b, W0)
        _run(x, U, V, b, W0)  # a second call does not warn again
    assert len([w for w in record if "torch.compile" in str(w.message)]) == 1
    assert fn._COMPILE_BROKEN
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)  # the inputs were left untouched by the failure
    for got, want in zip(grads, g_ref):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.compile
def test_compiled_chain_equals_eager_and_the_formula_fp32(monkeypatch, fresh_compile_state):
    x, U, V, b, W0 = _case()
    omega, gain, scale = 40.0, math.sqrt(20), 0.5
    grad = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(5))
    monkeypatch.setenv("SINELR_COMPILE", "0")
    y_eager, g_eager = _run(x, U, V, b, W0, omega, gain, scale, grad)
    monkeypatch.setenv("SINELR_COMPILE", "1")
    y_comp, g_comp = _run(x, U, V, b, W0, omega, gain, scale, grad)
    assert fn._COMPILE_OK_KEYS and not fn._COMPILE_BROKEN  # the compiled path really ran

    # forward: the formula in fp32, elementwise error of the fused sin at most a few ulp
    formula = F.linear(x, W0 + scale * torch.sin(omega * (U @ V.T)) / gain, b)
    assert (y_comp - formula).abs().max() < 1e-6
    assert (y_comp - y_eager).abs().max() < 1e-6
    # backward: naive autograd of the formula
    xs, Us, Vs, bs = (t.detach().clone().requires_grad_() for t in (x, U, V, b))
    F.linear(xs, W0 + scale * torch.sin(omega * (Us @ Vs.T)) / gain, bs).backward(grad)
    for got, eager, naive in zip(g_comp, g_eager, (xs.grad, Us.grad, Vs.grad, bs.grad)):
        scale_ = naive.abs().max().item()
        assert (got - eager).abs().max() <= 1e-6 * max(1.0, scale_)
        assert (got - naive).abs().max() <= 1e-5 * max(1.0, scale_)


@pytest.mark.compile
def test_compiled_chain_keeps_the_sine_fp32_under_bf16_autocast(monkeypatch, fresh_compile_state):
    # omega U V^T in the hundreds: a bf16 argument would be off by whole periods.
    monkeypatch.setattr(fn, "_GRAD_BLOCK", 64)  # 3 rows per block: the blocked CPU loop with the fused chain
    x, U, V, b, W0 = _case()
    omega, gain = 300.0, math.sqrt(20)
    outs = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("SINELR_COMPILE", mode)
        for t in (x, U, V, b):
            t.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn.sine_lowrank_linear(x, U, V, b, omega, gain, base_weight=W0, scale=0.5)
        y.float().sum().backward()
        outs[mode] = (y.detach(), [t.grad.clone() for t in (x, U, V, b)])
    assert fn._COMPILE_OK_KEYS and not fn._COMPILE_BROKEN
    y0, g0 = outs["0"]
    y1, g1 = outs["1"]
    assert y1.dtype == torch.bfloat16
    # Against the float64 formula: only bf16 roundings of x, W and y (rel. 2^-8 each) are allowed;
    # a sine argument rounded to bf16 would be off by ~1 rad at omega U V^T ~ 300.
    W = W0.double() + 0.5 * torch.sin(omega * (U.double() @ V.double().T)) / gain
    ref = F.linear(x.double(), W, b.double())
    bound = 3 * 2.0**-8 * (F.linear(x.double().abs(), W.abs(), b.double().abs()))
    assert ((y1.double() - ref).abs() <= bound + 1e-6).all()
    # Same fp32 weight, then the same bf16 GEMM: equal up to one bf16 rounding of the output.
    torch.testing.assert_close(y1.float(), y0.float(), rtol=1e-2, atol=1e-2)
    for got, want in zip(g1, g0):
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2 * want.abs().max().item())
