"""The cost estimate printed before a paper-scale run (sinelr.train.RunEstimate, time_steps)."""
import pytest


def test_run_estimate_multiplies_steps_and_formats_durations(monkeypatch):
    from sinelr.train import RunEstimate, extrapolate_step_seconds, format_duration, time_steps

    assert [format_duration(s) for s in (45, 600, 5 * 3600, 3 * 86400)] == ["45 s", "10 min", "5.0 h", "3.0 days"]
    est = RunEstimate(models=4, steps_per_model=10_000, seconds_per_step=0.9, device="cpu", how="timed")
    assert est.seconds_per_model == pytest.approx(9000.0)
    assert est.line() == ("estimated 2.5 h per model on cpu (10,000 steps x 0.9 s per step, timed); "
                          "4 model(s): 10.0 h in all")
    calls = []
    assert time_steps(lambda: calls.append(1), steps=3, warmup=2) >= 0 and len(calls) == 5
    with pytest.raises(ValueError, match="steps >= 1"):
        time_steps(lambda: None, steps=0)

    # a step costing a fixed part plus a part per example is extrapolated along that line
    fake_clock = {"t": 0.0}
    seconds = {4: 1.0 + 0.5 * 4, 8: 1.0 + 0.5 * 8}  # per step at batch 4 and 8

    def make_step(b):
        return lambda: fake_clock.__setitem__("t", fake_clock["t"] + seconds.get(b, 99.0))

    import sinelr.train as train

    monkeypatch.setattr(train.time, "perf_counter", lambda: fake_clock["t"])
    assert extrapolate_step_seconds(make_step, 256, 4, 8) == pytest.approx(1.0 + 0.5 * 256)
    assert extrapolate_step_seconds(make_step, 8, 4, 8) == pytest.approx(5.0)  # timed directly
    monkeypatch.undo()
    with pytest.raises(ValueError, match="small < large"):
        extrapolate_step_seconds(make_step, 256, 8, 8)


def test_cpu_bf16_warning_names_the_slowdown_only_when_bf16_is_much_slower():
    import torch

    from sinelr.train import cpu_bf16_warning, matmul_gflops

    slow = cpu_bf16_warning(fp32_gflops=18.0, bf16_gflops=0.8)  # the AVX2 AMD EPYC of this project's machines
    assert slow is not None and "22x slower than fp32 (0.8 against 18.0 GFLOP/s)" in slow
    assert "--mixed-precision no" in slow and torch.backends.cpu.get_cpu_capability() in slow
    assert cpu_bf16_warning(fp32_gflops=76.0, bf16_gflops=325.0) is None  # native bf16 units: faster, no warning
    assert cpu_bf16_warning(fp32_gflops=20.0, bf16_gflops=10.0) is None  # at the limit (2x): no warning
    assert matmul_gflops(torch.float32, 64, 64, 64, repeats=1) > 0
