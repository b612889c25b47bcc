"""Bad input as a new user meets it (issue 12): no silent wrong answers, one-line errors instead of tracebacks.

Each test names the case of the issue it covers; every message asserted here names the bad value or file.
"""
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sinelr
from sinelr.cli import load_recipe, main
from sinelr.config import ConfigError, load_config
from sinelr.errors import AdapterError, DataError, SinelrError
from sinelr.layers import LowRankLinear, SineLowRankLinear

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ 1. dtypes of layer inputs
@pytest.mark.parametrize("cls", [SineLowRankLinear, LowRankLinear])
@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool])
def test_integer_inputs_raise_naming_the_dtype(cls, dtype):
    layer = cls(16, 32, 2)
    with pytest.raises(TypeError, match=f"floating-point input, got dtype {dtype}"):
        layer(torch.ones(2, 16, dtype=dtype))
    layer.eval()  # the cached-weight path of SineLowRankLinear too
    with torch.no_grad(), pytest.raises(TypeError, match=str(dtype)):
        layer(torch.ones(2, 16, dtype=dtype))


@pytest.mark.parametrize("cls", [SineLowRankLinear, LowRankLinear, nn.Linear])
@pytest.mark.parametrize("train", [True, False])
def test_float64_input_into_fp32_layer_raises_like_nn_linear(cls, train):
    """nn.Linear refuses a float64 input with fp32 weights; both factored layers do the same."""
    layer = cls(16, 32, 2) if cls is not nn.Linear else nn.Linear(16, 32)
    layer.train(train)
    with pytest.raises((TypeError, RuntimeError), match="float64|Double"):
        layer(torch.ones(2, 16, dtype=torch.float64))
    # the matching dtype works, and autocast is still allowed to mix dtypes as with nn.Linear
    assert layer.double()(torch.ones(2, 16, dtype=torch.float64)).dtype == torch.float64


def test_functional_entry_rejects_integer_inputs():
    U, V = torch.randn(4, 2), torch.randn(3, 2)
    with pytest.raises(TypeError, match="torch.int64"):
        sinelr.sine_lowrank_linear(torch.ones(2, 3, dtype=torch.long), U, V)


# ------------------------------------------------------------------ 2. numeric fields validated
@pytest.mark.parametrize("kwargs,match", [
    ({"lora_alpha": float("nan")}, "lora_alpha must be a finite number > 0, got nan"),
    ({"lora_alpha": float("inf")}, "lora_alpha.*inf"),
    ({"lora_alpha": 0}, "lora_alpha.*got 0"),
    ({"lora_alpha": -8}, "lora_alpha.*got -8"),
    ({"lora_alpha": True}, "lora_alpha must be a real number"),
    ({"alpha_pattern": {"0": float("nan")}}, r"alpha_pattern\['0'\]"),
    ({"lora_dropout": float("nan")}, "lora_dropout.*nan"),
    ({"lora_dropout": True}, "lora_dropout.*True"),
    ({"omega": float("nan")}, "omega.*nan"),
    ({"gain": 0}, "gain.*got 0"),
    ({"r": True}, "r must be an integer"),
])
def test_sine_lora_config_refuses_bad_numbers(kwargs, match):
    from sinelr.peft import SineLoraConfig

    with pytest.raises((ValueError, TypeError), match=match):
        SineLoraConfig(**{"target_modules": ["0"], **kwargs})


def test_sine_lora_config_keeps_good_alpha():
    from sinelr.peft import SineLoraConfig

    assert SineLoraConfig(target_modules=["0"], lora_alpha=16).lora_alpha == 16
    assert SineLoraConfig(target_modules=["0"], lora_alpha=0.5).lora_alpha == 0.5


@pytest.mark.parametrize("kwargs,match", [
    ({"omega": float("nan")}, "omega must be a finite number > 0, got nan"),
    ({"omega": -1.0}, "omega.*-1"),
    ({"gain": 0}, "gain must be a finite number > 0, got 0"),
    ({"gain": float("inf")}, "gain.*inf"),
])
def test_public_functions_validate_omega_and_gain(kwargs, match):
    x, U, V = torch.randn(2, 3), torch.randn(4, 2), torch.randn(3, 2)
    args = {"omega": 2.0, "gain": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        sinelr.sine_lowrank_linear(x, U, V, None, args["omega"], args["gain"])
    with pytest.raises(ValueError, match=match):
        sinelr.sine_lowrank_weight(U, V, args["omega"], args["gain"])
    with pytest.raises(ValueError, match="scale must be a finite"):
        sinelr.sine_lowrank_linear(x, U, V, None, 2.0, 1.0, scale=float("nan"))


# ------------------------------------------------------------------ 3. convert: all or nothing, ties, twice
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 2)  # rank 4 does not fit here

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_convert_is_all_or_nothing():
    net = _Net()
    before = {n: p.clone() for n, p in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"cannot convert 'c' \(2x8\).*\[1, 2\].*got 4"):
        sinelr.convert(net, ".*", rank=4)
    assert all(type(m) is nn.Linear for m in (net.a, net.b, net.c))  # a and b were not replaced either
    assert not hasattr(net, "sinelr_converted")
    for n, p in net.state_dict().items():
        assert torch.equal(p, before[n])


def test_convert_keeps_a_shared_module_shared():
    net = _Net()
    net.shared = net.a  # the same module under two names
    sinelr.convert(net, ["a"], rank=2)
    assert isinstance(net.a, SineLowRankLinear) and net.shared is net.a
    assert sorted(net.sinelr_converted) == ["a", "shared"]
    x = torch.randn(3, 8)
    torch.testing.assert_close(net.shared(x), net.a(x))


def test_convert_refuses_to_untie_tied_weights():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    with pytest.raises(ValueError, match="'head': its weight is tied to embed.weight"):
        sinelr.convert(model, ["head"], rank=2)
    assert type(model.head) is nn.Linear and model.head.weight is model.embed.weight


def test_converting_twice_says_already_converted():
    net = _Net()
    sinelr.convert(net, "a|b", rank=2)
    with pytest.raises(ValueError, match="a is already a SineLowRankLinear"):
        sinelr.convert(net, "a", rank=2)
    with pytest.raises(ValueError, match="'b' is already a SineLowRankLinear"):
        sinelr.convert(net, ["b"], rank=2)


# ------------------------------------------------------------------ 4. sine adapter loaded as plain LoRA
class _MLP(nn.Sequential):
    def forward(self, x):  # type: ignore[override]  (PEFT passes inputs by keyword)
        return super().forward(x)


def _mlp():
    torch.manual_seed(0)
    return _MLP(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8)).eval()


@pytest.fixture
def adapters(tmp_path):
    from sinelr.peft import LoraConfig, SineLoraConfig, get_peft_model

    sine = get_peft_model(_mlp(), SineLoraConfig(r=2, omega=30.0, target_modules=["0", "2"]))
    sine.save_pretrained(tmp_path / "sine")
    lora = get_peft_model(_mlp(), LoraConfig(r=2, target_modules=["0", "2"]))
    lora.save_pretrained(tmp_path / "lora")
    return tmp_path


def _untouched(model):
    return not any("lora_" in n for n, _ in model.named_parameters())


def test_sine_adapter_with_forced_lora_config_raises(adapters):
    from sinelr.peft import LoraConfig, PeftModel

    base = _mlp()
    with pytest.raises(AdapterError, match="holds a sine-LoRA adapter .*omega=30.0.*forced LoraConfig"):
        PeftModel.from_pretrained(base, adapters / "sine", config=LoraConfig(r=2, target_modules=["0", "2"]))
    assert _untouched(base)


def test_sine_adapter_with_peft_type_edited_to_lora_raises(adapters):
    from sinelr.peft import PeftModel

    edited = adapters / "edited"
    shutil.copytree(adapters / "sine", edited)
    cfg = json.loads((edited / "adapter_config.json").read_text())
    cfg["peft_type"] = "LORA"
    (edited / "adapter_config.json").write_text(json.dumps(cfg))
    base = _mlp()
    with pytest.raises(AdapterError, match="sine-LoRA adapter .*sine factor tensors.*peft_type 'LORA'"):
        PeftModel.from_pretrained(base, edited)
    assert _untouched(base)
    # the same through load_adapter on a model that already has a plain LoRA adapter
    model = PeftModel.from_pretrained(_mlp(), adapters / "lora")
    with pytest.raises(AdapterError, match="sine-LoRA adapter"):
        model.load_adapter(edited, adapter_name="other")
    # only the sine fields, no sine tensors (weights of a plain LoRA): still refused, from the config
    (edited / "adapter_model.safetensors").write_bytes((adapters / "lora" / "adapter_model.safetensors").read_bytes())
    with pytest.raises(AdapterError, match="adapter_config.json has omega=30.0"):
        PeftModel.from_pretrained(_mlp(), edited)


def test_plain_lora_and_sine_adapters_still_load(adapters):
    from sinelr.peft import LoraConfig, PeftModel, SineLoraConfig

    lora = PeftModel.from_pretrained(_mlp(), adapters / "lora")
    assert type(lora.peft_config["default"]) is LoraConfig
    forced = PeftModel.from_pretrained(_mlp(), adapters / "lora", config=LoraConfig(r=2, target_modules=["0", "2"]))
    assert type(forced.peft_config["default"]) is LoraConfig
    lora.load_adapter(adapters / "lora", adapter_name="second")
    assert set(lora.peft_config) == {"default", "second"}
    sine = PeftModel.from_pretrained(_mlp(), adapters / "sine")
    assert type(sine.peft_config["default"]) is SineLoraConfig


# ------------------------------------------------------------------ 5. rank above min(in, out) of a target
@pytest.mark.parametrize("method", ["lora", "sine-lora"])
def test_glue_rank_above_the_layer_size_is_refused(method):
    from transformers import BertConfig, BertForSequenceClassification

    from sinelr.models.encoder_classifier import build_peft_model

    base = BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=2))
    with pytest.raises(ConfigError, match=r"rank 1000 is larger than min\(out, in\) = 16 of the adapted layer "
                                          r"\S+query \(16x16\)"):
        build_peft_model(base, method, 1000, 8.0, 0.0, 200.0, None)
    assert _untouched(base)
    assert build_peft_model(base, method, 16, 8.0, 0.0, 200.0, None) is not None  # min(in, out) itself is fine


# ------------------------------------------------------------------ 6. booleans and negative counts
@dataclass
class _Cfg:
    steps: int = 3
    warmup: int = 0
    lr: float = 0.1
    ranks: tuple = (1,)


@pytest.mark.parametrize("key,value,match", [
    ("steps", True, "'steps' expects int, got True"),
    ("lr", False, "'lr' expects float, got False"),
    ("warmup", -10, "'warmup' must be >= 0, got -10"),
    ("steps", "-1", "'steps' must be >= 0, got -1"),
])
def test_config_refuses_booleans_for_numbers_and_negative_counts(key, value, match, tmp_path):
    (tmp_path / "c.yaml").write_text(f"{key}: {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(_Cfg, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=match):
        load_config(_Cfg, overrides={key: value})


def test_cli_refuses_negative_warmup(tmp_path, capsys):
    assert main(["occupancy", "--warmup", "-10"]) == 2
    assert "'warmup' must be >= 0, got -10" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. LLFF poses with NaN
def _scene(root, n=4, h=12, w=16):
    from PIL import Image

    base = root / "nerf_llff" / "tiny"
    (base / "images_8").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(base / "images_8" / f"img{i:03d}.png")
    rows = [np.concatenate([np.array([[0.0, 1, 0, 0.1 * i, h * 8], [1, 0, 0, 0, w * 8], [0, 0, 1, 0, w * 6.4]]).ravel(),
                            [2.0, 10.0]]) for i in range(n)]
    np.save(base / "poses_bounds.npy", np.array(rows))
    return root / "nerf_llff"


def test_llff_poses_with_nan_say_where(tmp_path):
    from sinelr.data.llff import load_llff

    root = _scene(tmp_path)
    poses = np.load(root / "tiny" / "poses_bounds.npy")
    poses[2, 7] = np.nan
    np.save(root / "tiny" / "poses_bounds.npy", poses)
    with pytest.raises(DataError, match=r"poses_bounds.npy holds 1 non-finite values .* \[2, 7\]=nan"):
        load_llff("tiny", root)
    poses[2, 7], poses[1, 16] = 0.0, 0.0
    np.save(root / "tiny" / "poses_bounds.npy", poses)
    with pytest.raises(DataError, match=r"depth bounds .* must be > 0, image 1"):
        load_llff("tiny", root)


# ------------------------------------------------------------------ tracebacks -> one line
def test_quickstart_corrupt_image_is_one_line(tmp_path, capsys):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    assert main(["quickstart", "--image", str(bad), "--steps", "1", "--output-dir", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert f"image {str(bad)!r} could not be read as an image" in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()


def test_quickstart_out_dir_naming_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    assert main(["quickstart", "--steps", "1", "--output-dir", str(f)]) == 2
    assert f"output_dir {str(f)!r} is an existing file, not a folder" in capsys.readouterr().err
    assert f.read_text() == "x"  # the file is left as it was


def test_nerf_downscale_larger_than_the_images_is_one_line(tmp_path, capsys):
    root = _scene(tmp_path)
    assert main(["nerf", "--data-dir", str(root), "--scene", "tiny", "--downscale", "1000", "--steps", "2",
                 "--device", "cpu", "--output-dir", str(tmp_path / "r"), "--run-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "downscale 1000 leaves no pixels" in err and "16x12" in err and "<= 12" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_spectra_size_too_large_is_refused_before_allocating(tmp_path, capsys):
    assert main(["spectra", "--size", "10000000", "--ranks", "1", "--fig-rank", "1",
                 "--output-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "size=10000000 needs about" in err and "GiB" in err
    assert not (tmp_path / "s").exists()


def test_adapter_folder_without_weights(adapters):
    from sinelr.peft import PeftModel

    for kind in ("sine", "lora"):
        (adapters / kind / "adapter_model.safetensors").unlink()
        base = _mlp()
        with pytest.raises(AdapterError, match=f"no adapter weights in {adapters / kind}: expected adapter_model"):
            PeftModel.from_pretrained(base, adapters / kind)
        assert _untouched(base)


def test_adapter_config_that_is_not_json_names_the_file(adapters):
    from sinelr.peft import PeftModel

    for kind in ("sine", "lora"):
        cfg = adapters / kind / "adapter_config.json"
        cfg.write_text("{not json")
        with pytest.raises(AdapterError, match=f"{cfg} is not valid JSON"):
            PeftModel.from_pretrained(_mlp(), adapters / kind)


def _fake_recipe(monkeypatch, run):
    import types

    import sinelr.cli as cli

    @dataclass
    class Cfg:
        steps: int = 3

    fake = types.SimpleNamespace(Config=Cfg, run=run, __doc__="a fake recipe")
    monkeypatch.setattr(cli, "load_recipe", lambda name: fake)


def test_cli_prints_file_errors_in_one_line_with_the_file_name(monkeypatch, capsys, tmp_path):
    def run(config):
        open(tmp_path / "missing.txt")

    _fake_recipe(monkeypatch, run)
    assert main(["quickstart"]) == 2
    err = capsys.readouterr().err
    assert "No such file or directory" in err and str(tmp_path / "missing.txt") in err and "Traceback" not in err


@pytest.mark.parametrize("bug", [KeyError("oops"), TypeError("unsupported operand"), ValueError("internal")])
def test_cli_lets_a_bug_show_its_traceback(monkeypatch, bug):
    def run(config):
        raise bug

    _fake_recipe(monkeypatch, run)
    with pytest.raises(type(bug)):
        main(["quickstart"])


def test_library_errors_are_also_builtin_errors():
    from sinelr.errors import DataNotFoundError, NonFiniteLossError

    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(DataNotFoundError, FileNotFoundError) and issubclass(NonFiniteLossError, RuntimeError)
    assert all(issubclass(t, SinelrError) for t in (ConfigError, DataError, AdapterError, DataNotFoundError,
                                                     NonFiniteLossError))


# ------------------------------------------------------------------ smaller things a user meets first
@pytest.mark.parametrize("command,cpu_config", [("nerf", "configs/nerf_cpu_v2.yaml"),
                                                ("vit", "configs/vit_fashion_mnist_cpu_v3_e30.yaml")])
def test_paper_scale_default_on_cpu_asks_for_yes(command, cpu_config, monkeypatch, capsys):
    import importlib

    module = load_recipe(command)
    calls = []
    monkeypatch.setattr(module, "run", lambda config: calls.append(config))
    assert main([command, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "paper-scale run" in err and "device cpu" in err and cpu_config in err and "--yes" in err
    # the time per model, from a few timed steps of the paper-scale model: steps x seconds per step
    est = re.search(r"estimated .* per model on cpu \(([\d,]+) steps x ([\d.e+-]+) s per step", err)
    assert est, err
    paper_steps = 200_000 if command == "nerf" else round(200 * (50_000 // 256))
    assert int(est.group(1).replace(",", "")) == paper_steps and float(est.group(2)) > 0
    assert calls == []
    from sinelr.train import RunEstimate

    monkeypatch.setattr(module, "estimate", lambda config: RunEstimate(1, 1, 1.0, "cpu", "timed"))  # timed above
    assert main([command, "--device", "cpu", "--yes"]) == 0 and len(calls) == 1
    capsys.readouterr()
    small = ["--steps", "100"] if command == "nerf" else ["--epochs", "1"]
    assert main([command, "--device", "cpu"] + small) == 0 and len(calls) == 2  # not paper-scale: no question


def test_help_shows_true_false_flags_one_default_and_example_lines(capsys):
    with pytest.raises(SystemExit):
        main(["bdrate", "--help"])
    out = capsys.readouterr().out
    assert "--plot [{true,false}]" in out and "(default: true)" in out
    assert "--paths" not in out and "paths" in out
    with pytest.raises(SystemExit):
        main(["glue", "--help"])
    out = capsys.readouterr().out
    assert "(default: None)" not in out
    with pytest.raises(SystemExit):
        main(["nerf", "--help"])
    out = capsys.readouterr().out
    assert "\n  sinelr nerf --scene fern --methods sine --ranks 5 --steps 500 --output-dir runs/nerf/try\n" in out


def test_boolean_option_alone_means_true_and_takes_true_false():
    import argparse

    from sinelr.config import add_config_arguments, config_from_args

    Config = load_recipe("quickstart").Config
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Config)
    assert config_from_args(Config, parser.parse_args(["--render-only"])).render_only is True
    assert config_from_args(Config, parser.parse_args(["--render-only", "false", "--size", "32"])).render_only is False
    assert config_from_args(Config, parser.parse_args([])).render_only is False
    with pytest.raises(ConfigError, match="render_only"):
        config_from_args(Config, parser.parse_args(["--render-only", "maybe"]))


def test_no_command_exits_2(capsys):
    assert main([]) == 2
    assert "no command given" in capsys.readouterr().err


def test_cli_help_does_not_import_torch():
    code = "import sys, sinelr.cli; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
    assert sinelr.convert.__name__ == "convert" and callable(sinelr.SineLowRankLinear)  # lazy names still resolve


def test_one_data_dir_variable_with_a_deprecated_alias(monkeypatch, tmp_path):
    from sinelr.data import data_root_from_env, resolve_data_dir

    monkeypatch.delenv("SINELR_DATA_DIR", raising=False)
    monkeypatch.setenv("SINELR_SHARED_DATA", str(tmp_path))
    with pytest.warns(DeprecationWarning, match="SINELR_DATA_DIR"):
        assert data_root_from_env() == tmp_path
    monkeypatch.setenv("SINELR_DATA_DIR", str(tmp_path / "new"))
    assert data_root_from_env() == tmp_path / "new"
    (tmp_path / "new" / "glue").mkdir(parents=True)
    assert resolve_data_dir(None, "glue", "GLUE") == tmp_path / "new" / "glue"


def test_quickstart_rerun_is_byte_stable(tmp_path):
    qs = load_recipe("quickstart")
    cfg = qs.Config(size=12, ranks=[1], width=16, depth=1, num_frequencies=2, steps=3, seeds=[0],
                    output_dir=str(tmp_path / "q"), run_dir=str(tmp_path / "r"))
    qs.run(cfg)
    first = {p.name: p.read_bytes() for p in (tmp_path / "q").iterdir()}
    qs.run(cfg)  # every point is done: nothing is trained or rewritten
    second = {p.name: p.read_bytes() for p in (tmp_path / "q").iterdir()}
    assert first == second
    assert "seconds" not in first["summary.csv"].decode()
    # the main job's default output is git-ignored (the committed copy is results/quickstart/)
    assert qs.Config().output_dir.startswith("runs/")
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/quickstart/summary.csv"], cwd=ROOT)
    assert ignored.returncode == 0


def test_sine_lora_rank_above_a_target_layer_warns_naming_its_shape():
    import torch.nn as nn

    from sinelr.peft import SineLoraConfig, get_peft_model

    base = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.warns(UserWarning, match=r"r=6 is larger than min\(out, in\) = 4 of the target layer 2 \(4x8\)"):
        get_peft_model(base, SineLoraConfig(r=6, target_modules=["0", "2"]))
