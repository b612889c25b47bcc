"""Swap the nn.Linear layers of any nn.Module for (sine) low-rank layers by name, and count parameters."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Literal, Optional, Sequence, Union

import torch.nn as nn

from .errors import ConfigError
from .functional import check_omega
from .kinds import FACTORED_CLASSES, canonical_kind
from .layers import DEFAULT_OMEGA_FROM_SCRATCH, LowRankLinear, SineLowRankLinear, _FactoredLinear

__all__ = ["convert", "parameter_report", "ParameterReport", "LAYER_KINDS", "matching_linear_names"]

Kind = Literal["sine", "lowrank"]
# One lookup table from the names configs use to the layer classes.
LAYER_KINDS: Dict[str, type] = FACTORED_CLASSES  # the one lookup, in sinelr.kinds


def _close(name: str, candidates: Sequence[str]) -> str:
    """Close matches of `name`, or the first candidates when none is close."""
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.4)
    if close:
        return "close names: " + ", ".join(close)
    return "nn.Linear layers present: " + (", ".join(list(candidates)[:12]) or "(none)") + (" ..." if len(candidates) > 12 else "")


def matching_linear_names(model: nn.Module, targets: Union[str, Iterable[str]]) -> List[str]:
    """Qualified names of the nn.Linear modules that `targets` selects, with the errors of `convert`.

    `targets` is a regular expression matched with re.fullmatch against each module's qualified name,
    or a list of exact names. A list name that does not exist, or names a module that is not an
    nn.Linear, is an error; so is a pattern that selects no nn.Linear, or one that selects a leaf layer
    with weights of another type (Conv, Embedding, ...). Parameter-free leaves (activations) and
    containers a pattern happens to match are left alone.
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as exc:
            raise ValueError(f"targets {targets!r} is not a valid regular expression: {exc}") from None
        matched = [n for n, m in modules.items() if n and pattern.fullmatch(n)]
        bad_leaves = [
            f"{n} ({type(modules[n]).__name__})" for n in matched
            if not isinstance(modules[n], nn.Linear) and not isinstance(modules[n], _FactoredLinear)
            and len(list(modules[n].children())) == 0 and any(True for _ in modules[n].parameters())
        ]
        if bad_leaves:
            raise TypeError(f"targets {targets!r} selects layers that are not nn.Linear: {', '.join(bad_leaves)}")
        names = [n for n in matched if isinstance(modules[n], nn.Linear)]
        if not names:
            done = [f"{n} is already a {type(modules[n]).__name__}" for n in matched
                    if isinstance(modules[n], _FactoredLinear)]
            if done:
                raise ValueError(f"targets {targets!r} selects only layers converted before: {'; '.join(done[:12])}"
                                 f"{' ...' if len(done) > 12 else ''}")
            raise ValueError(
                f"targets {targets!r} matches no nn.Linear in {type(model).__name__} "
                f"(patterns are matched in full against qualified names). nn.Linear layers present: "
                f"{', '.join(linears[:12]) or '(none)'}{' ...' if len(linears) > 12 else ''}"
            )
        return names
    names = list(targets)
    if not names:
        raise ValueError("targets is an empty list: name at least one nn.Linear to convert")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"targets must be a regex string or a list of module names, got element {n!r}")
        if n not in modules:
            raise ValueError(f"no module named {n!r} in {type(model).__name__}; {_close(n, linears)}")
        if isinstance(modules[n], _FactoredLinear):
            raise ValueError(f"module {n!r} is already a {type(modules[n]).__name__} (converted before); "
                             "convert each nn.Linear once")
        if not isinstance(modules[n], nn.Linear):
            raise TypeError(f"module {n!r} is a {type(modules[n]).__name__}, not an nn.Linear")
    return names


def convert(
    model: nn.Module,
    targets: Union[str, Iterable[str]],
    rank: int,
    kind: Kind = "sine",
    omega: float = DEFAULT_OMEGA_FROM_SCRATCH,
    gain: Optional[float] = None,
    init: str = "fresh",
) -> nn.Module:
    """Replace every nn.Linear of `model` selected by `targets` with a rank-`rank` layer, in place.

    kind="sine" gives SineLowRankLinear(omega, gain), kind="lowrank" gives LowRankLinear. init="fresh"
    is the paper's Kaiming init for training from scratch; init="svd" starts from the dense weight.
    Returns the model; the replaced names are in `model.sinelr_converted` (nothing is skipped silently).
    """
    try:
        kind = canonical_kind(kind)
    except ValueError:
        raise ConfigError(f"kind must be one of {sorted(LAYER_KINDS)}, got {kind!r}") from None
    if kind not in LAYER_KINDS:  # 'dense' / 'full': nothing to convert to
        raise ConfigError(f"kind must be one of {sorted(LAYER_KINDS)}, got {kind!r}")
    if kind == "sine":
        omega = check_omega(omega)
    names = matching_linear_names(model, targets)
    modules = dict(model.named_modules(remove_duplicate=False))
    # Every name under which each selected module is reachable: a module shared by two parents is
    # converted once and the new layer is shared the same way.
    aliases: Dict[int, List[str]] = {}
    for n, m in modules.items():
        if n:
            aliases.setdefault(id(m), []).append(n)
    owners: Dict[int, List[str]] = {}  # parameter id -> "module.param" names (tied weights across modules)
    for n, m in modules.items():
        for pname, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{n}.{pname}" if n else pname)
    # Build every replacement before touching the model: a layer that cannot be converted leaves it unchanged.
    plan: List[tuple] = []
    seen: set = set()
    for name in names:
        linear = modules[name]
        if id(linear) in seen:
            continue
        seen.add(id(linear))
        for pname, p in linear.named_parameters(recurse=False):
            others = [o for o in owners[id(p)] if o.rpartition(".")[0] not in aliases[id(linear)]]
            if others:
                raise ValueError(
                    f"cannot convert {name!r}: its {pname} is tied to {', '.join(others)}; converting it would "
                    "untie them (untie the weights first, or leave this layer out of targets)"
                )
        try:
            if kind == "sine":
                new = SineLowRankLinear.from_linear(linear, rank, omega=omega, gain=gain, init=init)
            else:
                new = LowRankLinear.from_linear(linear, rank, init=init)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"cannot convert {name!r} ({linear.out_features}x{linear.in_features}): {exc}") from None
        plan.append((aliases[id(linear)], new))
    converted = list(getattr(model, "sinelr_converted", []))
    for all_names, new in plan:
        for alias in all_names:
            parent_name, _, child = alias.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            setattr(parent, child, new)
        converted.extend(all_names)
    model.sinelr_converted = converted  # type: ignore[attr-defined]
    return model


@dataclass
class ParameterReport:
    """Parameter counts as the paper's tables report them."""

    total: int
    trainable: int
    dense_total: int
    factored_layers: List[str] = field(default_factory=list)

    @property
    def compression(self) -> float:
        """Parameters of this model as a fraction of the full-rank (dense) model's."""
        return self.total / self.dense_total if self.dense_total else float("nan")

    def as_dict(self) -> dict:
        return {"params": self.total, "trainable": self.trainable, "dense_params": self.dense_total,
                "compression": self.compression}

    def __str__(self) -> str:
        return (f"params {self.total:,} (trainable {self.trainable:,}) vs dense {self.dense_total:,}: "
                f"compression {100 * self.compression:.2f}% ({len(self.factored_layers)} factored layers)")


def parameter_report(model: nn.Module, reference: Optional[nn.Module] = None) -> ParameterReport:
    """Total / trainable parameters of `model`, and its compression rate against the dense model.

    The dense count comes from `reference` when given; otherwise each factored layer counts as the
    out x in (+ bias) dense layer it stands for. Shared parameters are counted once.
    """
    seen = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    factored = [n for n, m in model.named_modules() if isinstance(m, _FactoredLinear)]
    if reference is not None:
        dense_total = sum(p.numel() for p in {id(p): p for p in reference.parameters()}.values())
    else:
        dense_total = total
        for n, m in model.named_modules():
            if isinstance(m, _FactoredLinear):
                dense_total += m.in_features * m.out_features - m.U.numel() - m.V.numel()
    return ParameterReport(total=total, trainable=trainable, dense_total=dense_total, factored_layers=factored)
