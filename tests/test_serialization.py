"""sinelr.save_pretrained / from_pretrained / merge_and_unload: exact round trips, file size, refusals."""
import json
import struct

import pytest
import torch
import torch.nn as nn

import sinelr
from sinelr import LowRankLinear, SineLowRankLinear, convert, from_pretrained, merge_and_unload, save_pretrained
from sinelr.serialization import FORMAT_VERSION, RECORD_NAME, WEIGHTS_NAME

SAFETENSORS_DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8, "I64": 8}


class Net(nn.Module):
    """Dense layers to convert, plus state that is never converted: LayerNorm, BatchNorm (buffers), an Embedding."""

    def __init__(self, d: int = 16, h: int = 32, out: int = 5):
        super().__init__()
        self.emb = nn.Embedding(10, d)
        self.fc1 = nn.Linear(d, h)
        self.bn = nn.BatchNorm1d(h)
        self.fc2 = nn.Linear(h, d, bias=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, out)

    def forward(self, tokens):
        x = self.emb(tokens).mean(1)
        x = self.norm(self.fc2(torch.relu(self.bn(self.fc1(x)))) + x)
        return self.head(x)


def converted_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    model = Net()
    convert(model, ["fc1"], rank=3, kind="sine", omega=50.0, gain=2.5)
    convert(model, ["fc2"], rank=2, kind="lowrank")
    return model


def train_a_little(model: nn.Module, steps: int = 3) -> nn.Module:
    """A few optimizer steps so every parameter and the BatchNorm statistics differ from a fresh init."""
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        tokens = torch.randint(0, 10, (8, 4), generator=gen)
        loss = model(tokens).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def tokens(n: int = 6) -> torch.Tensor:
    return torch.randint(0, 10, (n, 4), generator=torch.Generator().manual_seed(2))


def snapshot(model: nn.Module):
    """Module objects and a copy of every state-dict tensor: what 'unchanged' means."""
    return ([(n, m) for n, m in model.named_modules()],
            {k: v.detach().clone() for k, v in model.state_dict().items()})


def assert_unchanged(model: nn.Module, snap) -> None:
    modules, state = snap
    assert [(n, m) for n, m in model.named_modules()] == modules
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k


def read_header(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    raw = data[8:8 + n]
    return len(data), n, raw, json.loads(raw)


# ---------------------------------------------------------------------------------------------------
# Round trips


def test_save_then_load_into_a_fresh_base_gives_the_trained_model_exactly(tmp_path):
    model = train_a_little(converted_net())
    save_pretrained(model, tmp_path)
    loaded = from_pretrained(lambda: Net(), tmp_path).eval()
    assert isinstance(loaded.fc1, SineLowRankLinear) and isinstance(loaded.fc2, LowRankLinear)
    assert isinstance(loaded.head, nn.Linear) and not isinstance(loaded.head, SineLowRankLinear)
    assert (loaded.fc1.rank, loaded.fc1.omega, loaded.fc1.gain) == (3, 50.0, 2.5)
    assert (loaded.fc2.rank, loaded.fc2.bias) == (2, None)
    saved, got = model.state_dict(), loaded.state_dict()
    assert list(saved) == list(got)  # BatchNorm buffers, LayerNorm, Embedding and head included
    for k in saved:
        assert torch.equal(saved[k], got[k]), k
    with torch.no_grad():
        assert torch.equal(model(tokens()), loaded(tokens()))
    assert loaded.sinelr_converted == ["fc1", "fc2"]


def test_record_states_each_conversion_as_resolved(tmp_path):
    model = converted_net()
    convert(model, ["head"], rank=2, kind="sine", omega=7)  # gain resolved to sqrt(16) = 4
    save_pretrained(model, tmp_path)
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert record["format_version"] == FORMAT_VERSION and record["sinelr_version"] == sinelr.__version__
    layers = {e["name"]: e for e in record["layers"]}
    assert layers["fc1"] == {"name": "fc1", "aliases": [], "kind": "sine", "in_features": 16, "out_features": 32,
                             "rank": 3, "omega": 50.0, "gain": 2.5, "bias": True, "dtype": "float32"}
    assert layers["fc2"]["kind"] == "lowrank" and layers["fc2"]["omega"] is None and layers["fc2"]["bias"] is False
    assert layers["head"]["omega"] == 7.0 and layers["head"]["gain"] == 4.0
    assert record["tied"] == {}


def test_model_built_with_sinelr_layers_loads_without_replacing_them(tmp_path):
    def build():
        torch.manual_seed(3)
        return nn.Sequential(SineLowRankLinear(8, 12, rank=2, omega=30.0), nn.Tanh(), nn.Linear(12, 3))

    model = train_a_little_seq(build())
    save_pretrained(model, tmp_path)
    fresh = build()
    layer = fresh[0]
    loaded = from_pretrained(fresh, tmp_path)
    assert loaded is fresh and loaded[0] is layer  # kept, only its values were loaded
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.eval()(x))


def train_a_little_seq(model: nn.Module) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, model[0].in_features, generator=torch.Generator().manual_seed(4))
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return model


def test_never_converted_model_saves_with_an_empty_record(tmp_path):
    torch.manual_seed(0)
    model = train_a_little(Net())
    nbytes = save_pretrained(model, tmp_path)
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert record["layers"] == []
    assert nbytes == (tmp_path / WEIGHTS_NAME).stat().st_size == record["weights"]["bytes"]
    loaded = from_pretrained(Net(), tmp_path).eval()
    assert not hasattr(loaded, "sinelr_converted")
    with torch.no_grad():
        assert torch.equal(model(tokens()), loaded(tokens()))


def test_bf16_factors_round_trip_in_bf16(tmp_path):
    model = train_a_little(converted_net()).to(torch.bfloat16)
    nbytes = save_pretrained(model, tmp_path)
    _, n, _, header = read_header(tmp_path / WEIGHTS_NAME)
    assert header["fc1.U"]["dtype"] == "BF16"
    assert nbytes == 8 + n + sum(t.numel() * 2 for t in model.state_dict().values() if t.is_floating_point()) + \
        sum(t.numel() * 8 for t in model.state_dict().values() if not t.is_floating_point())
    assert json.loads((tmp_path / RECORD_NAME).read_text())["layers"][0]["dtype"] == "bfloat16"
    loaded = from_pretrained(Net, tmp_path).eval()  # the base is built in fp32: the saved dtypes are restored
    assert loaded.fc1.U.dtype == torch.bfloat16 and loaded.head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(model(tokens()), loaded(tokens()))


# ---------------------------------------------------------------------------------------------------
# File size: the factors' bytes plus the safetensors header, never an m x n weight


def test_file_is_the_factor_bytes_plus_a_header_that_holds_nothing_else(tmp_path):
    m, n, k = 384, 256, 4
    model = nn.Sequential(nn.Linear(n, m), nn.ReLU(), nn.Linear(m, 10))
    convert(model, ["0"], rank=k, kind="sine")
    nbytes = save_pretrained(model, tmp_path)
    size, header_len, raw, header = read_header(tmp_path / WEIGHTS_NAME)
    assert nbytes == size
    expected = {"0.U": [m, k], "0.V": [n, k], "0.bias": [m], "2.weight": [10, m], "2.bias": [10]}
    assert {key: v["shape"] for key, v in header.items() if key != "__metadata__"} == expected
    data_bytes = 4 * (k * (m + n) + m + 10 * m + 10)
    assert size == 8 + header_len + data_bytes
    # The header is the compact JSON of its own entries, padded with spaces to a multiple of 8.
    compact = json.dumps(header, separators=(",", ":")).encode()
    assert raw.rstrip(b" ") == compact and header_len == -(-len(compact) // 8) * 8
    assert header_len <= 32 + 96 * len(expected)  # ~70-90 bytes per tensor entry
    assert size < 4 * m * n  # smaller than the dense weight of the converted layer alone


# ---------------------------------------------------------------------------------------------------
# Refusals: clear messages, and the given model is left exactly as it was


def test_missing_module_is_refused_and_the_model_is_unchanged(tmp_path):
    save_pretrained(converted_net(), tmp_path)

    class Other(Net):
        def __init__(self):
            super().__init__()
            del self.fc1
            self.fc_1 = nn.Linear(16, 32)

    other = Other()
    snap = snapshot(other)
    with pytest.raises(ValueError, match=r"module 'fc1'.*close names: fc_1"):
        from_pretrained(other, tmp_path)
    assert_unchanged(other, snap)


def test_shape_mismatch_of_a_converted_layer_is_refused_after_earlier_layers_fit(tmp_path):
    save_pretrained(converted_net(), tmp_path)
    fresh = Net()
    fresh.fc2 = nn.Linear(48, 16, bias=False)  # fc1 fits, fc2 (recorded second) does not
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=r"shape mismatch at module 'fc2'.*in_features=48.*in_features=32"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)  # fc1 was not replaced either


def test_shape_mismatch_of_a_non_converted_tensor_is_refused(tmp_path):
    save_pretrained(converted_net(), tmp_path)
    fresh = Net(out=7)
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=r"shape mismatch at 'head.weight': \(5, 16\) in the file, \(7, 16\) in the model"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)


def test_missing_and_extra_tensors_are_named(tmp_path):
    save_pretrained(converted_net(), tmp_path)
    fresh = Net()
    fresh.extra = nn.Linear(2, 2)
    del fresh.norm
    fresh.norm = nn.Identity()
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=r"missing from the file: extra.bias, extra.weight; in the file but not in the model: norm.bias, norm.weight"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)


@pytest.mark.parametrize("cut", [1, 100, 10_000])
def test_truncated_weights_file_is_refused(tmp_path, cut):
    save_pretrained(converted_net(), tmp_path)
    path = tmp_path / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[: max(0, len(data) - cut)])
    fresh = Net()
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=rf"truncated.*{len(data) - cut if cut < len(data) else 0} bytes, the record says {len(data)}"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)


def test_truncated_file_with_a_matching_record_is_refused_by_the_reader(tmp_path):
    """Even with the size and checksum fields removed from the record, a short file never half-loads."""
    save_pretrained(converted_net(), tmp_path)
    path = tmp_path / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[:-10])
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    record["weights"].update(bytes=path.stat().st_size, sha256=None)
    (tmp_path / RECORD_NAME).write_text(json.dumps(record))
    fresh = Net()
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=r"could not be read"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)


def test_altered_weights_file_is_refused(tmp_path):
    save_pretrained(converted_net(), tmp_path)
    path = tmp_path / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 differs"):
        from_pretrained(Net(), tmp_path)


def test_truncated_record_is_refused(tmp_path):
    save_pretrained(converted_net(), tmp_path)
    path = tmp_path / RECORD_NAME
    path.write_text(path.read_text()[:50])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        from_pretrained(Net(), tmp_path)


def test_record_from_a_future_format_version_is_refused(tmp_path):
    save_pretrained(converted_net(), tmp_path)
    path = tmp_path / RECORD_NAME
    record = json.loads(path.read_text())
    record.update(format_version=FORMAT_VERSION + 1, sinelr_version="9.0.0")
    path.write_text(json.dumps(record))
    fresh = Net()
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=rf"sinelr 9.0.0 in record format version {FORMAT_VERSION + 1}.*up to {FORMAT_VERSION}"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)


def test_missing_directory_and_wrong_builder_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=RECORD_NAME):
        from_pretrained(Net(), tmp_path / "nowhere")
    save_pretrained(converted_net(), tmp_path)
    with pytest.raises(TypeError, match="builder returned a dict"):
        from_pretrained(lambda: {}, tmp_path)


def test_sinelr_layer_with_another_omega_is_refused(tmp_path):
    model = nn.Sequential(SineLowRankLinear(8, 12, rank=2, omega=30.0))
    save_pretrained(model, tmp_path)
    fresh = nn.Sequential(SineLowRankLinear(8, 12, rank=2, omega=31.0))
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=r"module '0' is already .*omega=31.*the record has sine .*omega=30"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)


# ---------------------------------------------------------------------------------------------------
# Shared modules and tied weights


class Tied(nn.Module):
    """An encoder layer used twice (one module under two names) and an output layer tied to the embedding."""

    def __init__(self, tie: bool = True):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.enc = nn.Linear(8, 8)
        self.again = self.enc
        self.out = nn.Linear(8, 10, bias=False)
        if tie:
            self.out.weight = self.emb.weight

    def forward(self, t):
        return self.out(torch.tanh(self.again(torch.tanh(self.enc(self.emb(t))))))


def converted_tied() -> Tied:
    torch.manual_seed(5)
    model = Tied()
    layer = SineLowRankLinear.from_linear(model.enc, rank=2, omega=20.0)
    model.enc = model.again = layer  # convert() sees a shared module once; keep it shared
    return train_a_little_seq_tokens(model)


def train_a_little_seq_tokens(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    t = tokens(8)
    for _ in range(3):
        opt.zero_grad()
        model(t).square().mean().backward()
        opt.step()
    return model.eval()


def test_shared_module_and_tied_weight_keep_their_ties(tmp_path):
    model = converted_tied()
    save_pretrained(model, tmp_path)
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert [(e["name"], e["aliases"]) for e in record["layers"]] == [("enc", ["again"])]
    _, _, _, header = read_header(tmp_path / WEIGHTS_NAME)
    assert "out.weight" not in header and "again.U" not in header  # one copy of each tied tensor
    assert record["tied"] == {"again.U": "enc.U", "again.V": "enc.V", "again.bias": "enc.bias", "out.weight": "emb.weight"}
    loaded = from_pretrained(Tied, tmp_path).eval()
    assert loaded.enc is loaded.again and isinstance(loaded.enc, SineLowRankLinear)
    assert loaded.out.weight is loaded.emb.weight
    with torch.no_grad():
        assert torch.equal(model(tokens()), loaded(tokens()))


def test_a_base_without_the_tie_is_refused(tmp_path):
    save_pretrained(converted_tied(), tmp_path)
    fresh = Tied(tie=False)
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=r"tied weights differ.*'emb.weight', 'out.weight'"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)


def test_a_base_with_separate_modules_where_one_was_shared_is_refused(tmp_path):
    save_pretrained(converted_tied(), tmp_path)
    fresh = Tied()
    fresh.again = nn.Linear(8, 8)
    snap = snapshot(fresh)
    with pytest.raises(ValueError, match=r"'enc' shared .* with again.*again is a separate module"):
        from_pretrained(fresh, tmp_path)
    assert_unchanged(fresh, snap)


# ---------------------------------------------------------------------------------------------------
# Merge


def test_merge_gives_plain_linears_with_the_same_outputs():
    model = train_a_little(converted_net())
    with torch.no_grad():
        before = model(tokens())
        sine_before = model.fc1(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)))
    fc1 = model.fc1
    merged = merge_and_unload(model)
    assert merged is model and not hasattr(merged, "sinelr_converted")
    assert all(not type(m).__module__.startswith("sinelr") for m in merged.modules())
    assert type(merged.fc1) is nn.Linear and type(merged.fc2) is nn.Linear and merged.fc2.bias is None
    assert torch.equal(merged.fc1.weight, fc1.dense_weight())
    with torch.no_grad():
        # the sine layer merges exactly; the two thin GEMMs of LowRankLinear become one (rounding only)
        assert torch.equal(merged.fc1(torch.randn(3, 16, generator=torch.Generator().manual_seed(0))), sine_before)
        torch.testing.assert_close(merged(tokens()), before, rtol=1e-5, atol=1e-6)
    assert not merged.training  # eval mode is kept


def test_merge_of_a_sine_model_is_exact_in_bf16_and_keeps_shared_modules():
    model = converted_tied()
    with torch.no_grad():
        before = model(tokens())
    merged = merge_and_unload(model)
    assert type(merged.enc) is nn.Linear and merged.enc is merged.again
    with torch.no_grad():
        assert torch.equal(merged(tokens()), before)
    bf = train_a_little(converted_net()).to(torch.bfloat16)
    convert(bf, ["head"], rank=2, kind="sine")
    bf = bf.to(torch.bfloat16).eval()
    with torch.no_grad():
        x = torch.randn(5, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
        before = bf.head(x)
        merged = merge_and_unload(bf)
        assert merged.head.weight.dtype == torch.bfloat16
        assert torch.equal(merged.head(x), before)


def test_merged_model_exports_with_torch_export_and_has_no_sine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))
    convert(model, r"\d", rank=2, kind="sine", omega=100.0)
    model.eval()
    x = torch.randn(3, 16)
    with torch.no_grad():
        before = model(x)
    merged = merge_and_unload(model)
    exported = torch.export.export(merged, (x,))
    graph = str(exported.graph)
    assert "linear" in graph and "sin" not in graph
    with torch.no_grad():
        assert torch.equal(exported.module()(x), before)


@pytest.mark.slow  # importing onnxscript and exporting take ~40 s on this machine
def test_merged_model_exports_to_onnx_without_a_sine(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")  # torch.onnx's exporter
    from onnx.reference import ReferenceEvaluator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))
    convert(model, r"\d", rank=2, kind="sine", omega=100.0)
    model.eval()
    x = torch.randn(3, 16)
    with torch.no_grad():
        before = model(x)
    torch.onnx.export(merge_and_unload(model), (x,), str(tmp_path / "m.onnx"))
    graph = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(graph)
    assert [node.op_type for node in graph.graph.node] == ["Gemm", "Gelu", "Gemm"]
    out = ReferenceEvaluator(graph).run(None, {graph.graph.input[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), before, rtol=1e-5, atol=1e-6)  # another backend's rounding


def test_merge_of_a_bare_layer_returns_its_linear():
    layer = SineLowRankLinear(6, 4, rank=2)
    lin = merge_and_unload(layer)
    assert type(lin) is nn.Linear and torch.equal(lin.weight, layer.dense_weight())


# ---------------------------------------------------------------------------------------------------
# transformers models built from a config (offline, tiny)


def perturb(model: nn.Module, seed: int = 7) -> nn.Module:
    """Stand-in for training: move every parameter away from the builder's init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return model.eval()


def test_bert_from_config_round_trips_and_merges(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)

    def build():
        return transformers.BertModel(cfg)

    model = build()
    convert(model, r".*attention\.self\.(query|value)", rank=2, kind="sine", omega=30.0)
    convert(model, r".*intermediate\.dense", rank=4, kind="lowrank")
    perturb(model)
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).last_hidden_state
    nbytes = save_pretrained(model, tmp_path)
    assert nbytes < sum(p.numel() * 4 for p in build().parameters())  # smaller than the dense model's weights
    loaded = from_pretrained(build, tmp_path).eval()
    assert isinstance(loaded.encoder.layer[1].attention.self.value, SineLowRankLinear)
    assert isinstance(loaded.encoder.layer[0].intermediate.dense, LowRankLinear)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).last_hidden_state, before)
        merged = merge_and_unload(loaded)
        assert not any(isinstance(m, (SineLowRankLinear, LowRankLinear)) for m in merged.modules())
        torch.testing.assert_close(merged(input_ids=ids).last_hidden_state, before, rtol=1e-5, atol=1e-5)


def test_llama_from_config_with_tied_embeddings_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=True)

    def build():
        return transformers.LlamaForCausalLM(cfg)

    model = build()
    convert(model, r"model\.layers\.\d+\.mlp\.(gate|up|down)_proj", rank=4, kind="sine", omega=30.0)
    perturb(model)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    save_pretrained(model, tmp_path)
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert record["tied"] == {"lm_head.weight": "model.embed_tokens.weight"} and len(record["layers"]) == 6
    loaded = from_pretrained(build, tmp_path).eval()
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, before)
        merged = merge_and_unload(loaded)
        assert torch.equal(merged(input_ids=ids).logits, before)  # sine layers merge exactly


def test_readme_example_runs_and_its_byte_counts_hold(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    i = next(j for j, b in enumerate(blocks) if "sinelr.save_pretrained(model" in b)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(blocks[i - 1], ns)  # builds and converts `model`
    converted = ns["model"]
    exec(blocks[i], ns)
    assert ns["nbytes"] == (tmp_path / "sine_mlp" / WEIGHTS_NAME).stat().st_size
    assert f"size: {ns['nbytes']} bytes" in blocks[i]
    x = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(ns["dense"](x), converted.eval()(x))
    assert f"{save_pretrained(ns['dense'], tmp_path / 'dense')} bytes (dense weights)" in blocks[i]
