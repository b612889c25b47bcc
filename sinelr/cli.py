"""`sinelr <command> [--config file.yaml] [--key value ...]`: one explicit list of recipes, loaded lazily.

A recipe module provides a `Config` dataclass and `run(config)`; the CLI turns every field into a
`--key` option (or a positional argument when the module names it in `POSITIONAL`).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

from . import __version__
from .config import ConfigError, add_config_arguments, config_from_args
from .train import NonFiniteLossError

__all__ = ["main", "RECIPES", "Recipe", "load_recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    module: str
    summary: str


# The one list the CLI reads; no globbing. Modules are imported only when their command runs.
RECIPES: List[Recipe] = [
    Recipe("quickstart", "sinelr.recipes.quickstart", "fit a real photo with dense / low-rank / sine low-rank MLPs (CPU, < 3 min)"),
    Recipe("spectra", "sinelr.recipes.spectra", "reproduce the paper's Figs. 1-3: spectra and rank of sin(omega U V^T)"),
    Recipe("occupancy", "sinelr.recipes.occupancy_3d", "3D occupancy fields on real meshes (paper Tab. 6, Figs. 6, 8)"),
    Recipe("glue", "sinelr.recipes.lora_glue", "LoRA vs sine-LoRA (DoRA vs sine-DoRA) on GLUE (paper Tab. 3)"),
    Recipe("nerf", "sinelr.recipes.nerf_llff", "NeRF on LLFF with low-rank vs sine low-rank MLPs (paper Tab. 4)"),
    Recipe("bdrate", "sinelr.recipes.bdrate", "BD-rate / BD-PSNR and the rate-distortion plot of NeRF results (paper Fig. 5)"),
    Recipe("vit", "sinelr.recipes.vit_cifar100", "ViT from scratch with low-rank vs sine low-rank MLPs (paper Tabs. 1, 2, 5)"),
]

# Raised for bad input or a diverging run: printed as one line (exit code 2). SINELR_DEBUG=1 shows the traceback.
USER_ERRORS = (ConfigError, ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError, NonFiniteLossError)


def load_recipe(name: str):
    """The module of recipe `name` (its Config, run); only the CLI and tests load recipes."""
    by_name = {r.name: r for r in RECIPES}
    if name not in by_name:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(by_name)}")
    return importlib.import_module(by_name[name].module)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinelr",
        description="Sine-activated low-rank matrices: layers, PEFT adapters and the paper's experiments.",
        epilog="Run `sinelr <command> --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"sinelr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for r in RECIPES:
        sub.add_parser(r.name, help=r.summary, add_help=False)
    return parser


def _recipe_parser(recipe: Recipe, module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"sinelr {recipe.name}", description=(module.__doc__ or recipe.summary).strip())
    positional = getattr(module, "POSITIONAL", None)
    if positional:
        meta = {f.name: f.metadata for f in dataclasses.fields(module.Config)}.get(positional, {})
        parser.add_argument(positional, nargs="*", default=None, help=meta.get("help", f"{positional} (see the recipe's docs)"))
    add_config_arguments(parser, module.Config)
    if positional:  # the positional replaces the option of the same name
        for action in list(parser._actions):
            if action.dest == positional and action.option_strings:
                parser._remove_action(action)
                for group in parser._action_groups:  # and from the help listing
                    if action in group._group_actions:
                        group._group_actions.remove(action)
                for s in action.option_strings:
                    parser._option_string_actions.pop(s, None)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    if not argv or argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(argv or ["--help"])
        return 0
    name, rest = argv[0], argv[1:]
    by_name = {r.name: r for r in RECIPES}
    if name not in by_name:
        parser.error(f"unknown command {name!r}; choose from {', '.join(by_name)}")
    recipe = by_name[name]
    try:
        module = load_recipe(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("sinelr"):
            print(f"sinelr {name}: this recipe is not available in this version ({exc.name} missing)", file=sys.stderr)
        else:
            print(f"sinelr {name}: needs the package {exc.name!r}; install the extra, e.g. "
                  f"pip install 'sinelr[all]'", file=sys.stderr)
        return 2
    rparser = _recipe_parser(recipe, module)
    args = rparser.parse_args(rest)
    try:
        config = config_from_args(module.Config, args)
        module.run(config)
    except USER_ERRORS as exc:
        if os.environ.get("SINELR_DEBUG") == "1":
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"sinelr {name}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
