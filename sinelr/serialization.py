"""Save, load and merge whole converted models: the factors (never the m x n weights) in safetensors,
plus a JSON record of every (sine) low-rank layer, from which `from_pretrained` rebuilds the model.

A saved directory holds two files:

- `model.safetensors`: the model's whole state dict (factors U, V and biases of each factored layer,
  and every other parameter and persistent buffer), one copy of each tied tensor;
- `sinelr_model.json`: the record: format version, library versions, for each factored layer its
  module name(s), kind, shapes, rank, omega and gain as resolved, bias and dtype; the tied tensor
  names; and the weights file's size and SHA-256, so a truncated or altered file is refused.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .convert import LAYER_KINDS
from .layers import LowRankLinear, SineLowRankLinear, _FactoredLinear

__all__ = [
    "save_pretrained",
    "from_pretrained",
    "merge_and_unload",
    "merge",
    "conversion_record",
    "RECORD_NAME",
    "WEIGHTS_NAME",
    "FORMAT_VERSION",
]

RECORD_NAME = "sinelr_model.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "sinelr.converted_model"
# Bump when a record written by this version could not be read correctly by an older reader.
FORMAT_VERSION = 1

PathLike = Union[str, os.PathLike]
ModelOrBuilder = Union[nn.Module, Callable[[], nn.Module]]

_KIND_OF: Dict[type, str] = {cls: kind for kind, cls in LAYER_KINDS.items()}


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:  # pragma: no cover - safetensors comes with every extra
        raise ImportError("saving and loading models needs the safetensors package: pip install safetensors") from None
    return st


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _layer_entry(names: List[str], module: _FactoredLinear) -> dict:
    kind = _KIND_OF.get(type(module))
    if kind is None:
        raise TypeError(
            f"cannot record module {names[0]!r} of type {type(module).__name__}: only "
            f"{', '.join(c.__name__ for c in LAYER_KINDS.values())} are known to the conversion record"
        )
    sine = kind == "sine"
    return {
        "name": names[0],
        "aliases": names[1:],
        "kind": kind,
        "in_features": module.in_features,
        "out_features": module.out_features,
        "rank": module.rank,
        "omega": module.omega if sine else None,
        "gain": module.gain if sine else None,
        "bias": module.bias is not None,
        "dtype": _dtype_name(module.U.dtype),
    }


def _factored_groups(model: nn.Module) -> List[Tuple[List[str], _FactoredLinear]]:
    """Each factored layer of `model` once, with every name it is registered under (shared modules)."""
    groups: Dict[int, Tuple[List[str], _FactoredLinear]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, _FactoredLinear):
            groups.setdefault(id(module), ([], module))[0].append(name)
    return list(groups.values())


def conversion_record(model: nn.Module) -> List[dict]:
    """One entry per (sine) low-rank layer of `model`: name, aliases (other names of a shared module),
    kind, in/out features, rank, omega and gain as resolved (None for "lowrank"), bias, dtype."""
    return [_layer_entry(names, module) for names, module in _factored_groups(model)]


def _tie_groups(state: Dict[str, torch.Tensor]) -> List[List[str]]:
    """Names of the state-dict entries that are one tensor object (tied weights), groups of 2 or more."""
    by_id: Dict[int, List[str]] = {}
    for key, value in state.items():
        by_id.setdefault(id(value), []).append(key)
    return [keys for keys in by_id.values() if len(keys) > 1]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file, so a reader never sees half a file; usual permissions (umask)."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates its files 0600
    os.replace(tmp, path)


def save_pretrained(model: nn.Module, directory: PathLike) -> int:
    """Save `model` to `directory` (created if needed); return the size in bytes of the weights file.

    Writes `model.safetensors` (the whole state dict: for each factored layer its k (m + n) factor
    entries and bias, never the m x n weight; tied tensors once) and `sinelr_model.json` (the
    conversion record, see the module docstring). A model without factored layers saves too, with an
    empty record. The returned number is the "model file bytes" of a results table.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_pretrained expects an nn.Module, got {type(model).__name__}")
    st = _safetensors()
    from . import __version__

    layers = conversion_record(model)
    state = model.state_dict(keep_vars=True)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor; it cannot be saved")
        if value.device.type == "meta":
            raise ValueError(f"state dict entry {key!r} is on the meta device (no data to save)")
    ties = _tie_groups(state)
    aliases = {key: keys[0] for keys in ties for key in keys[1:]}
    tensors: Dict[str, torch.Tensor] = {}
    storages = set()
    for key, value in state.items():
        if key in aliases:
            continue
        t = value.detach()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        # Distinct tensors that view one storage (not a tie: two objects) must be written separately.
        t = t.clone() if ptr in storages else t.contiguous()
        if ptr is not None:
            storages.add(ptr)
        tensors[key] = t

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_NAME
    _write_atomic(weights, lambda p: st.save_file(tensors, str(p), metadata={"format": "pt"}))
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sinelr_version": __version__,
        "torch_version": torch.__version__,
        "model_class": type(model).__qualname__,
        "layers": layers,
        "tied": aliases,
        "weights": {"file": WEIGHTS_NAME, "bytes": weights.stat().st_size, "sha256": _sha256(weights)},
    }
    _write_atomic(directory / RECORD_NAME, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    return weights.stat().st_size


# ----------------------------------------------------------------------------------------------------
# Loading


def _read_record(directory: Path) -> dict:
    path = directory / RECORD_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no saved sinelr model in {directory}: {RECORD_NAME} is missing")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"conversion record {path} is corrupt or truncated: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path} is not a sinelr model record (format {got!r}, expected {FORMAT!r})")
    version = record.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} has an invalid format_version {version!r}, expected an integer >= 1")
    if version > FORMAT_VERSION:
        from . import __version__

        raise ValueError(
            f"{path} was written by sinelr {record.get('sinelr_version', '?')} in record format version {version}; "
            f"this sinelr {__version__} reads format versions up to {FORMAT_VERSION}: upgrade sinelr to load it"
        )
    for key, kind in (("layers", list), ("tied", dict), ("weights", dict)):
        if not isinstance(record.get(key), kind):
            raise ValueError(f"{path} is missing {key!r} (a {kind.__name__}); the record is damaged")
    return record


def _read_weights(directory: Path, record: dict) -> Dict[str, torch.Tensor]:
    st = _safetensors()
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing")
    size, expected = path.stat().st_size, record["weights"].get("bytes")
    if size != expected:
        raise ValueError(f"weights file {path} is truncated or was replaced: {size} bytes, the record says {expected}")
    digest = record["weights"].get("sha256")
    if digest is not None and _sha256(path) != digest:
        raise ValueError(f"weights file {path} is corrupt: its SHA-256 differs from the record's")
    try:
        return st.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for bad headers and short files
        raise ValueError(f"weights file {path} could not be read ({type(exc).__name__}: {exc})") from None


def _close(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.4)
    return ("close names: " + ", ".join(close)) if close else "no module with a close name"


def _describe(entry: dict) -> str:
    extra = f", omega={entry['omega']:g}, gain={entry['gain']:.6g}" if entry["kind"] == "sine" else ""
    return (f"{entry['kind']} (in={entry['in_features']}, out={entry['out_features']}, rank={entry['rank']}"
            f"{extra}, bias={entry['bias']})")


def _matches_entry(module: _FactoredLinear, entry: dict) -> bool:
    if LAYER_KINDS[entry["kind"]] is not type(module):
        return False
    same = (module.in_features, module.out_features, module.rank, module.bias is not None) == (
        entry["in_features"], entry["out_features"], entry["rank"], entry["bias"])
    if entry["kind"] == "sine":
        same = same and module.omega == entry["omega"] and module.gain == entry["gain"]
    return same


def _check_entry(entry: object, index: int) -> dict:
    required = {"name": str, "aliases": list, "kind": str, "in_features": int, "out_features": int,
                "rank": int, "bias": bool, "dtype": str}
    if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in required.items()):
        raise ValueError(f"layer entry {index} of the record is damaged: {entry!r}")
    if entry["kind"] not in LAYER_KINDS:
        raise ValueError(f"layer {entry['name']!r} has kind {entry['kind']!r}, expected one of {sorted(LAYER_KINDS)}")
    if entry["kind"] == "sine" and not all(isinstance(entry.get(k), (int, float)) for k in ("omega", "gain")):
        raise ValueError(f"sine layer {entry['name']!r} of the record has no numeric omega / gain: {entry!r}")
    return entry


_Step = Tuple[dict, nn.Linear, torch.dtype]  # (record entry, the fresh nn.Linear it replaces, dtype of the new layer)


def _plan_layers(model: nn.Module, layers: List[dict], weights: Dict[str, torch.Tensor]) -> List[_Step]:
    """Check every recorded layer against `model` (nothing changes); return the steps for those that
    must be replaced. A fresh nn.Linear of the same shape and bias is replaced; a fresh
    factored layer identical to the entry (a model built with sinelr layers) is kept as it is."""
    modules = dict(model.named_modules(remove_duplicate=False))
    plan = []
    for index, raw in enumerate(layers):
        entry = _check_entry(raw, index)
        names = [entry["name"], *entry["aliases"]]
        for name in names:
            if name not in modules:
                raise ValueError(
                    f"the record converts module {name!r}, but the {type(model).__name__} given has no module of "
                    f"that name ({_close(name, [n for n in modules if n])}); build the same base model that was saved"
                )
        fresh = modules[entry["name"]]
        shared_elsewhere = [n for n in names[1:] if modules[n] is not fresh]
        if shared_elsewhere:
            raise ValueError(
                f"the record has module {entry['name']!r} shared (one module) with {', '.join(names[1:])}, but in the "
                f"given {type(model).__name__} {', '.join(shared_elsewhere)} is a separate module; build the model "
                f"with the same sharing"
            )
        if isinstance(fresh, _FactoredLinear):
            if not _matches_entry(fresh, entry):
                raise ValueError(
                    f"module {entry['name']!r} is already a {fresh!r} in the given model, but the record has "
                    f"{_describe(entry)}"
                )
            continue
        if not isinstance(fresh, nn.Linear):
            raise TypeError(
                f"the record converts module {entry['name']!r} from an nn.Linear, but in the given model it is a "
                f"{type(fresh).__name__}"
            )
        got = (fresh.in_features, fresh.out_features, fresh.bias is not None)
        want = (entry["in_features"], entry["out_features"], entry["bias"])
        if got != want:
            raise ValueError(
                f"shape mismatch at module {entry['name']!r}: the given model has nn.Linear(in_features={got[0]}, "
                f"out_features={got[1]}, bias={got[2]}), the record has in_features={want[0]}, "
                f"out_features={want[1]}, bias={want[2]}"
            )
        if entry["name"] == "":
            raise ValueError("the record converts the root module itself; build it as a sinelr layer to load it")
        u = weights.get(f"{entry['name']}.U")
        dtype = u.dtype if u is not None else fresh.weight.dtype
        plan.append((entry, fresh, dtype))
    return plan


def _new_layer(entry: dict, dtype: torch.dtype) -> _FactoredLinear:
    """The layer an entry describes, allocated on the meta device (no init cost, no RNG draws)."""
    kw = dict(bias=entry["bias"], device="meta", dtype=dtype)
    if entry["kind"] == "sine":
        return SineLowRankLinear(entry["in_features"], entry["out_features"], entry["rank"],
                                 omega=entry["omega"], gain=entry["gain"], **kw)
    return LowRankLinear(entry["in_features"], entry["out_features"], entry["rank"], **kw)


def _list(names: Sequence[str], limit: int = 8) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _expected_state(model: nn.Module, plan: List[_Step]) -> Tuple[Dict[str, torch.Size], List[frozenset]]:
    """Shape of every state-dict entry `model` will have once `plan` is applied, and its tied groups."""
    state = model.state_dict(keep_vars=True)
    entries: Dict[str, torch.Tensor] = dict(state)
    for entry, fresh, dtype in plan:
        new_state = _new_layer(entry, dtype).state_dict(keep_vars=True)  # meta tensors, kept alive in `entries`
        for name in [entry["name"], *entry["aliases"]]:
            for key in fresh.state_dict():
                entries.pop(f"{name}.{key}", None)
            entries.update({f"{name}.{key}": value for key, value in new_state.items()})
    return {key: value.shape for key, value in entries.items()}, [frozenset(k) for k in _tie_groups(entries)]


def _check_state(model: nn.Module, plan: List[_Step], record: dict, weights: Dict[str, torch.Tensor]) -> None:
    expected, ties = _expected_state(model, plan)
    aliases = record["tied"]
    dangling = sorted(a for a, c in aliases.items() if c not in weights)
    if dangling:
        raise ValueError(f"the record ties {_list(dangling)} to tensors that are not in the weights file; the record is damaged")
    recorded: Dict[str, set] = {}
    for alias, canonical in aliases.items():
        recorded.setdefault(canonical, {canonical}).add(alias)
    recorded_ties = {frozenset(keys) for keys in recorded.values()}
    if recorded_ties != set(ties):
        saved = [sorted(t) for t in recorded_ties - set(ties)]
        fresh = [sorted(t) for t in set(ties) - recorded_ties]
        raise ValueError(
            f"tied weights differ: the saved model ties {saved or 'nothing else'}, the given model ties "
            f"{fresh or 'nothing else'}; build the model with the same ties"
        )
    available = set(weights) | set(aliases)
    missing = set(expected) - available
    unexpected = available - set(expected)
    if missing or unexpected:
        raise ValueError(
            f"the saved weights do not fit the given {type(model).__name__}: "
            + (f"missing from the file: {_list(missing)}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"in the file but not in the model: {_list(unexpected)}" if unexpected else "")
        )
    for key, shape in expected.items():
        got = weights[aliases.get(key, key)].shape
        if got != shape:
            raise ValueError(f"shape mismatch at {key!r}: {tuple(got)} in the file, {tuple(shape)} in the model")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def from_pretrained(model_or_builder: ModelOrBuilder, directory: PathLike) -> nn.Module:
    """Rebuild and load a model saved by `save_pretrained`; return it.

    `model_or_builder` is the freshly built base model (dense nn.Linear layers where the record has
    factored ones, or already the same sinelr layers) or a callable that builds it, e.g.
    `lambda: BertModel(config)`. Each recorded nn.Linear is replaced by the recorded layer (kind,
    rank, omega, gain), and the whole state dict is loaded, in the dtypes it was saved in. Everything
    is checked before the model is touched: a missing module, another shape, other tied weights, a
    truncated or altered file, or a record from a newer format raise, and the model is unchanged.
    """
    directory = Path(directory)
    record = _read_record(directory)
    weights = _read_weights(directory, record)
    if isinstance(model_or_builder, nn.Module):
        model = model_or_builder
    elif callable(model_or_builder):
        model = model_or_builder()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the builder returned a {type(model).__name__}, expected an nn.Module")
    else:
        raise TypeError(f"from_pretrained expects an nn.Module or a callable that builds one, got {type(model_or_builder).__name__}")

    plan = _plan_layers(model, record["layers"], weights)
    _check_state(model, plan, record, weights)

    # Checked: from here on only allocations and copies of matching shapes.
    replaced: List[Tuple[str, nn.Module]] = []
    try:
        for entry, fresh, dtype in plan:
            device = fresh.weight.device
            new = _new_layer(entry, dtype).to_empty(device=device)
            new.train(fresh.training)
            for name in [entry["name"], *entry["aliases"]]:
                _set_module(model, name, new)
                replaced.append((name, fresh))
        full = dict(weights)
        for alias, canonical in record["tied"].items():
            full[alias] = weights[canonical]
        with torch.no_grad():
            seen = set()
            for key, value in model.state_dict(keep_vars=True).items():
                src = full[key]
                if id(value) not in seen and value.dtype != src.dtype:
                    value.data = value.data.to(src.dtype)  # restore the saved dtype; keeps Parameter identity (ties)
                seen.add(id(value))
        model.load_state_dict(full, strict=True)
    except BaseException:
        for name, fresh in reversed(replaced):
            _set_module(model, name, fresh)
        raise
    if plan:
        converted = list(getattr(model, "sinelr_converted", []))
        model.sinelr_converted = converted + [e["name"] for e, _, _ in plan if e["name"] not in converted]
    return model


# ----------------------------------------------------------------------------------------------------
# Merging


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every (sine) low-rank layer of `model` by the nn.Linear with the same function, in place.

    Each factored layer becomes `layer.to_linear()` (weight sin(omega U V^T) / g or U V^T, in the
    factors' dtype, bias copied); a module shared under several names stays one module. The result
    holds no sinelr class, so it runs, pickles and exports (torch.export, ONNX) without sinelr. A bare
    factored layer passed as `model` is returned as its nn.Linear.
    """
    if isinstance(model, _FactoredLinear):
        linear = model.to_linear()
        return linear.train(model.training)
    for names, module in _factored_groups(model):
        linear = module.to_linear().train(module.training)
        for name in names:
            _set_module(model, name, linear)
    if hasattr(model, "sinelr_converted"):
        del model.sinelr_converted
    return model


merge = merge_and_unload
