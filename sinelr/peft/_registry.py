"""The only module that touches PEFT internals: adds a `PeftType` member and registers sine-LoRA once.

PEFT's public `register_peft_method` only accepts names that already are members of its closed
`PeftType` enum, so this module first adds one member, `PeftType.SINE_LORA`, and then calls the public
function. Supported peft versions: >= 0.21, < 0.22 (checked at import; the tests in
tests/test_peft.py exercise every guarantee against the installed version).

Adapter files store the peft type as `STORED_PEFT_TYPE`, a string that itself tells the reader what to
do: PEFT echoes an unknown peft type verbatim in its KeyError, so a process that never imported
`sinelr.peft` fails with a message that says to import it.

It also installs a guard on PeftModel.from_pretrained / load_adapter (see `install_load_guard`).
"""
from __future__ import annotations

import enum
import functools
import json
import os
from typing import Any, Optional

import peft
from peft.utils.peft_types import PeftType, register_peft_method

__all__ = [
    "PEFT_METHOD_NAME",
    "PEFT_TYPE_NAME",
    "STORED_PEFT_TYPE",
    "SUPPORTED_PEFT",
    "check_peft_version",
    "sine_peft_type",
    "register",
    "is_registered",
    "check_adapter_folder",
    "install_load_guard",
]

PEFT_METHOD_NAME = "sine_lora"
PEFT_TYPE_NAME = "SINE_LORA"
# What adapter_config.json holds in "peft_type". Loaded without sinelr, PEFT raises KeyError(<this string>).
STORED_PEFT_TYPE = "SINE_LORA (a sinelr adapter: run `import sinelr.peft` before loading it)"
SUPPORTED_PEFT = ((0, 21), (0, 22))  # [lower, upper)


def _version_tuple(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError) as exc:
        raise ImportError(f"cannot parse the installed peft version {version!r}") from exc


def check_peft_version(version: str | None = None) -> str:
    """Raise ImportError unless peft is in the supported range [0.21, 0.22); return the version."""
    version = peft.__version__ if version is None else version
    lo, hi = SUPPORTED_PEFT
    if not lo <= _version_tuple(version) < hi:
        raise ImportError(
            f"sinelr.peft supports peft >= {lo[0]}.{lo[1]}, < {hi[0]}.{hi[1]} (it extends PEFT's PeftType enum, "
            f"whose internals change between releases); installed peft is {version}. "
            f"Install a supported version: pip install 'peft>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}'"
        )
    return version


def _add_enum_member(enum_cls: type[enum.Enum], name: str, value: str) -> enum.Enum:
    """Add member `name = value` to a str-mixin Enum after its creation (idempotent).

    CPython keeps an Enum's members in `_member_map_` (name -> member), `_value2member_map_`
    (value -> member) and `_member_names_` (definition order, used by iteration and len()); the
    member is also a class attribute. The result is checked, so an interpreter that stores members
    differently fails loudly here instead of misbehaving later.
    """
    existing = enum_cls._member_map_.get(name)
    if existing is not None:
        if existing.value != value:
            raise RuntimeError(f"{enum_cls.__name__}.{name} already exists with value {existing.value!r}, not {value!r}")
        return existing
    member = str.__new__(enum_cls, value)
    member._name_ = name
    member._value_ = value
    member.__objclass__ = enum_cls
    if hasattr(enum_cls, "_sort_order_") or any(hasattr(m, "_sort_order_") for m in enum_cls):
        member._sort_order_ = len(enum_cls._member_names_)
    enum_cls._member_names_.append(name)
    enum_cls._member_map_[name] = member
    enum_cls._value2member_map_[value] = member
    type.__setattr__(enum_cls, name, member)
    ok = (
        getattr(enum_cls, name) is member
        and enum_cls(value) is member
        and enum_cls[name] is member
        and member in list(enum_cls)
        and value in list(enum_cls)
    )
    if not ok:
        raise RuntimeError(f"could not add member {name!r} to {enum_cls.__qualname__}; this Python/peft is unsupported")
    return member


def sine_peft_type() -> Any:
    """The `PeftType` member of sine-LoRA (created on first use)."""
    return _add_enum_member(PeftType, PEFT_TYPE_NAME, PEFT_TYPE_NAME)


def is_registered() -> bool:
    """Whether sine-LoRA is registered with PEFT in this process."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    return PEFT_TYPE_NAME in PeftType._member_map_ and PeftType.SINE_LORA in PEFT_TYPE_TO_TUNER_MAPPING


def register(config_cls: type, model_cls: type) -> None:
    """Register sine-LoRA with PEFT once per process; a second call with the same classes does nothing."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    check_peft_version()
    member = sine_peft_type()
    if member in PEFT_TYPE_TO_TUNER_MAPPING:
        if PEFT_TYPE_TO_CONFIG_MAPPING.get(member) is config_cls and PEFT_TYPE_TO_TUNER_MAPPING[member] is model_cls:
            return
        raise RuntimeError(f"peft type {PEFT_TYPE_NAME} is already registered with other classes")
    # The prefix names the adapter parameters (lora_A, lora_B, lora_magnitude_vector): sine-LoRA reuses
    # LoRA's layer machinery, so it shares LoRA's parameter prefix (the tuner class declares the same).
    register_peft_method(name=PEFT_METHOD_NAME, config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix)
    # Adapter files carry STORED_PEFT_TYPE; let PEFT's lookups by that string find the config class and
    # PeftType(STORED_PEFT_TYPE) resolve to the member.
    PEFT_TYPE_TO_CONFIG_MAPPING[STORED_PEFT_TYPE] = config_cls
    PeftType._value2member_map_[STORED_PEFT_TYPE] = member


# ------------------------------------------------------------------ load guard
# Once sinelr.peft is imported, PeftModel.from_pretrained / load_adapter first look at a local adapter
# folder: a config file that is missing or not JSON, a folder without weights, and a sine-LoRA adapter
# about to be loaded as plain LoRA (a forced LoraConfig, or peft_type edited to LORA) raise a clear
# error before the base model is touched. Hub ids and well-formed folders go on to PEFT unchanged.

# Key suffix of the sine factors in saved adapters (sinelr.peft.model.SINE_KEY_SUFFIX).
_SINE_KEY_SUFFIX = ".sine_weight"
# Fields that only a sine-LoRA config has.
_SINE_FIELDS = ("omega", "gain")
_CONFIG_NAME = "adapter_config.json"
_WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")


def _adapter_error(message: str) -> Exception:
    from ..errors import AdapterError

    return AdapterError(message)


def _is_sine_config(config: Any) -> bool:
    peft_type = getattr(config, "peft_type", None)
    return str(getattr(peft_type, "value", peft_type)).startswith(PEFT_TYPE_NAME)


def _sine_keys(weights: str) -> list:
    """Keys of the sine factors in a safetensors file (reads the header only); [] when unreadable or .bin."""
    if not weights.endswith(".safetensors"):
        return []
    try:
        from safetensors import safe_open

        with safe_open(weights, framework="pt") as handle:
            return [k for k in handle.keys() if k.endswith(_SINE_KEY_SUFFIX)]
    except Exception:  # a corrupt file is reported by the loaders themselves, naming the file
        return []


def check_adapter_folder(model_id: Any, subfolder: Optional[str] = None, config: Any = None) -> None:
    """Raise AdapterError for a local adapter folder that PEFT would load wrongly or with an obscure error.

    `config` is the PeftConfig the adapter will be loaded with (None: the one stored in the folder).
    Does nothing for a path that is not a local directory (a hub id).
    """
    try:
        directory = os.path.join(os.fspath(model_id), subfolder) if subfolder else os.fspath(model_id)
    except TypeError:
        return
    if not os.path.isdir(directory):
        return
    config_file = os.path.join(directory, _CONFIG_NAME)
    stored: Any = None
    if os.path.isfile(config_file):
        try:
            with open(config_file, encoding="utf-8") as handle:
                stored = json.load(handle)
        except (OSError, ValueError) as exc:
            raise _adapter_error(f"{config_file} is not valid JSON: {exc}") from exc
        if not isinstance(stored, dict):
            raise _adapter_error(f"{config_file} must hold a JSON object, got {type(stored).__name__}")
    elif config is None:
        raise _adapter_error(f"no {_CONFIG_NAME} in the adapter folder {directory}")
    weights = [os.path.join(directory, n) for n in _WEIGHT_NAMES if os.path.isfile(os.path.join(directory, n))]
    if not weights:
        raise _adapter_error(f"no adapter weights in {directory}: expected {' or '.join(_WEIGHT_NAMES)}")
    stored_type = stored.get("peft_type") if isinstance(stored, dict) else None
    loads_as_sine = _is_sine_config(config) if config is not None else stored_type in (STORED_PEFT_TYPE, PEFT_TYPE_NAME)
    if loads_as_sine:
        return
    sine_fields = [f"{k}={stored[k]!r}" for k in _SINE_FIELDS if isinstance(stored, dict) and k in stored]
    sine_keys = _sine_keys(weights[0])
    if sine_fields or sine_keys:
        how = (f"with a forced {type(config).__name__}" if config is not None
               else f"as peft_type {stored_type!r}")
        evidence = ", ".join(filter(None, [
            f"{_CONFIG_NAME} has {', '.join(sine_fields)}" if sine_fields else "",
            f"{len(sine_keys)} sine factor tensors ({sine_keys[0]}, ...)" if sine_keys else "",
        ]))
        raise _adapter_error(
            f"{directory} holds a sine-LoRA adapter ({evidence}) but is being loaded {how}, which would give an "
            f"adapter that does nothing. Load it as saved: `import sinelr.peft`, then "
            f"PeftModel.from_pretrained(model, path) without config=, with peft_type {STORED_PEFT_TYPE!r}"
        )


def install_load_guard() -> None:
    """Wrap PeftModel.from_pretrained and PeftModel.load_adapter with `check_adapter_folder` (idempotent)."""
    from peft import PeftModel

    if getattr(PeftModel.from_pretrained, "_sinelr_guard", False):
        return
    original_from_pretrained = PeftModel.from_pretrained.__func__
    original_load_adapter = PeftModel.load_adapter

    @functools.wraps(original_from_pretrained)
    def from_pretrained(cls, model, model_id, *args, **kwargs):
        config = kwargs.get("config", args[2] if len(args) > 2 else None)
        check_adapter_folder(model_id, kwargs.get("subfolder"), config)
        return original_from_pretrained(cls, model, model_id, *args, **kwargs)

    @functools.wraps(original_load_adapter)
    def load_adapter(self, model_id, adapter_name, *args, **kwargs):
        config = self.peft_config.get(adapter_name)
        check_adapter_folder(model_id, kwargs.get("subfolder"), config)
        return original_load_adapter(self, model_id, adapter_name, *args, **kwargs)

    from_pretrained._sinelr_guard = True  # type: ignore[attr-defined]
    load_adapter._sinelr_guard = True  # type: ignore[attr-defined]
    PeftModel.from_pretrained = classmethod(from_pretrained)  # type: ignore[method-assign]
    PeftModel.load_adapter = load_adapter  # type: ignore[method-assign]
