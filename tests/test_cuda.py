"""The op and the sine-LoRA layer on a CUDA device, in fp32 and under bf16 autocast (marker `cuda`).

Skipped without a GPU; `benchmarks/device_check.sh` runs them. SINELR_TEST_DEVICE=cpu runs the same
checks on the CPU (to test the tests on a machine without a GPU).
"""
from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sinelr.functional as fn

DEVICE = os.environ.get("SINELR_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 GEMMs in true fp32 (TF32 would round the sine's argument to 10 bits)."""
    if not torch.cuda.is_available():
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _case(m=96, n=80, k=4, lead=(4, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.rand(m, k, generator=g) * 2 - 1
    V = torch.rand(n, k, generator=g) * 2 - 1
    x = torch.randn(*lead, n, generator=g)
    b = torch.randn(m, generator=g)
    W0 = torch.randn(m, n, generator=g) / math.sqrt(n)
    return x, U, V, b, W0


def _on(device, *tensors, grad=True):
    return [t.to(device).requires_grad_(grad) for t in tensors]


def _reference(x, U, V, b, W0, omega, gain, scale):
    """float64 formula on the CPU: output and gradients of sum(y * G)."""
    x, U, V, b = _on("cpu", *(t.double() for t in (x, U, V, b)))
    y = F.linear(x, W0.double() + scale * torch.sin(omega * (U @ V.T)) / gain, b)
    G = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
    (y * G).sum().backward()
    return y.detach(), G, [t.grad for t in (x, U, V, b)]


@pytest.mark.parametrize("compile_mode", ["0", pytest.param("1", marks=pytest.mark.compile)])
def test_op_fp32_on_device_equals_the_formula(monkeypatch, compile_mode):
    monkeypatch.setenv("SINELR_COMPILE", compile_mode)
    x, U, V, b, W0 = _case()
    omega, gain, scale = 30.0, math.sqrt(80), 0.5
    y_ref, G, g_ref = _reference(x, U, V, b, W0, omega, gain, scale)
    xd, Ud, Vd, bd = _on(DEVICE, x, U, V, b)
    y = fn.sine_lowrank_linear(xd, Ud, Vd, bd, omega, gain, base_weight=W0.to(DEVICE), scale=scale)
    assert y.device.type == torch.device(DEVICE).type and y.dtype == torch.float32
    (y * G.float().to(DEVICE)).sum().backward()
    assert (y.double().cpu() - y_ref).abs().max() < 1e-4
    for t, want in zip((xd, Ud, Vd, bd), g_ref):
        got = t.grad.double().cpu()
        assert (got - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())


def test_op_under_bf16_autocast_on_device_keeps_the_sine_fp32():
    x, U, V, b, W0 = _case()
    omega, gain, scale = 300.0, math.sqrt(80), 1.0  # argument in the hundreds: bf16 would be off by periods
    y_ref, G, g_ref = _reference(x, U, V, b, W0, omega, gain, scale)
    xd, Ud, Vd, bd = _on(DEVICE, x, U, V, b)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        y = fn.sine_lowrank_linear(xd, Ud, Vd, bd, omega, gain, base_weight=W0.to(DEVICE), scale=scale)
    assert y.dtype == torch.bfloat16
    W = W0.double() + torch.sin(omega * (U.double() @ V.double().T)) / gain
    bound = 3 * 2.0**-8 * F.linear(x.double().abs(), W.abs(), b.double().abs())  # bf16 roundings of x, W, y
    assert ((y.double().cpu() - y_ref).abs() <= bound + 1e-6).all()
    (y.float() * G.float().to(DEVICE)).sum().backward()
    for t, want in zip((xd, Ud, Vd), g_ref[:3]):
        assert t.grad.dtype == torch.float32
        rel = (t.grad.double().cpu() - want).norm() / want.norm()
        assert rel < 2e-2, rel  # bf16 GEMMs of dL/dW and grad_x (measured ~3e-3); a bf16 argument gives O(1)
    # dL/db sums bf16-rounded upstream gradients, which cancel here: bound by the sum of their magnitudes
    bias_bound = 2.0**-7 * G.abs().reshape(-1, G.shape[-1]).sum(0)
    assert ((bd.grad.double().cpu() - g_ref[3]).abs() <= bias_bound).all()


def _peft_pair():
    peft = pytest.importorskip("peft")
    import sinelr.peft  # noqa: F401  (registers the method)
    from sinelr.peft import SineLoraConfig

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(48, 64), nn.GELU(), nn.Linear(64, 32))
    model = peft.get_peft_model(copy.deepcopy(base), SineLoraConfig(r=4, omega=30.0, target_modules=["0", "2"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model


def _peft_grads(model, x):
    model.zero_grad(set_to_none=True)
    y = model(x)
    y.float().square().mean().backward()
    return y.detach(), {n: p.grad.detach() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
def test_sine_lora_layer_on_device_matches_cpu(amp):
    cpu_model = _peft_pair().train()
    dev_model = copy.deepcopy(cpu_model).to(DEVICE)
    x = torch.randn(6, 10, 48, generator=torch.Generator().manual_seed(2))
    y_cpu, g_cpu = _peft_grads(cpu_model, x)
    ctx = torch.autocast(torch.device(DEVICE).type, dtype=amp) if amp else torch.autocast("cpu", enabled=False)
    with ctx:
        y_dev, g_dev = _peft_grads(dev_model, x.to(DEVICE))
    assert y_dev.dtype == (amp or torch.float32)
    tol = 1e-4 if amp is None else 3e-2
    assert ((y_dev.float().cpu() - y_cpu).norm() / y_cpu.norm()) < tol
    assert set(g_dev) == set(g_cpu) and all("lora_" in n for n in g_dev)
    for name, want in g_cpu.items():
        got = g_dev[name].float().cpu()
        assert g_dev[name].dtype == torch.float32
        assert ((got - want).norm() / want.norm()) < tol, name


def test_sine_lora_merge_on_device_equals_unmerged():
    model = _peft_pair().eval().to(DEVICE)
    x = torch.randn(3, 48, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    with torch.no_grad():
        unmerged = model(x)
        merged = model.merge_and_unload()(x)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
