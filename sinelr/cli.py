"""`sinelr <command> [--config file.yaml] [--key value ...]`: one explicit list of recipes, loaded lazily.

A recipe module provides a `Config` dataclass and `run(config)`; the CLI turns every field into a
`--key` option (or a positional argument when the module names it in `POSITIONAL`). Bad input ends
in one line on stderr and exit code 2: the library's own errors (`sinelr.errors.SinelrError`), a
recipe's config check (`_validate(config)`, run before anything else) and file-system errors naming
their file. Any other exception is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from . import __version__
from .config import add_config_arguments, config_from_args
from .errors import ConfigError, SinelrError, StopRequested

__all__ = ["main", "RECIPES", "Recipe", "load_recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    file: str  # under sinelr/recipes/
    summary: str


# The one list the CLI reads; no globbing. A recipe is a program, not a module of the library:
# `sinelr.recipes` cannot be imported (as torchtune's recipes), and a recipe file is loaded from its
# path only when its command runs (or by a test, through load_recipe).
RECIPES: List[Recipe] = [
    Recipe("quickstart", "quickstart.py", "fit a real photo with dense / low-rank / sine low-rank MLPs (CPU, < 3 min)"),
    Recipe("spectra", "spectra.py", "reproduce the paper's Figs. 1-3: spectra and rank of sin(omega U V^T)"),
    Recipe("occupancy", "occupancy_3d.py", "3D occupancy fields on real meshes (paper Tab. 6, Figs. 6, 8)"),
    Recipe("glue", "lora_glue.py", "LoRA vs sine-LoRA (DoRA vs sine-DoRA) on GLUE (paper Tab. 3)"),
    Recipe("nerf", "nerf_llff.py", "NeRF on LLFF with low-rank vs sine low-rank MLPs (paper Tab. 4)"),
    Recipe("bdrate", "bdrate.py", "BD-rate / BD-PSNR and the rate-distortion plot of NeRF results (paper Fig. 5)"),
    Recipe("vit", "vit_cifar100.py", "ViT from scratch with low-rank vs sine low-rank MLPs (paper Tabs. 1, 2, 5)"),
]

# File-system errors: printed with their file name. (SinelrError covers the library's own types,
# including NonFiniteLossError and DataNotFoundError.)
FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)

# Commands whose defaults are the paper's GPU-scale runs: (config field, value from which a run counts as
# paper-scale, what it counts, the CPU-sized config to use instead).
PAPER_SCALE = {
    "nerf": ("steps", 20_000, "optimisation steps per model", "configs/nerf_cpu_v2.yaml"),
    "vit": ("epochs", 20, "epochs", "configs/vit_fashion_mnist_cpu_v3_e30.yaml"),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of a recipe's docstring (its examples stay one per line)."""


def load_recipe(name: str):
    """The module of recipe `name` (its Config, run), loaded from its file; only the CLI and tests call this."""
    by_name = {r.name: r for r in RECIPES}
    if name not in by_name:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(by_name)}")
    module_name = f"sinelr_recipe_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = Path(__file__).resolve().parent / "recipes" / by_name[name].file
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


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
    parser = argparse.ArgumentParser(prog=f"sinelr {recipe.name}", description=(module.__doc__ or recipe.summary).strip(),
                                     formatter_class=_HelpFormatter)
    add_config_arguments(parser, module.Config, positional=getattr(module, "POSITIONAL", None))
    if recipe.name in PAPER_SCALE:
        parser.add_argument("--yes", action="store_true",
                            help="start a paper-scale run on CPU without asking (see the CPU config named in the message)")
    return parser


def _file_error_message(exc: OSError) -> str:
    """'<what>: <file>' for an OSError, or its own message when it carries no file name."""
    if exc.filename is None:
        return str(exc)
    what = exc.strerror or type(exc).__name__
    target = f"{exc.filename!s}" + (f" -> {exc.filename2!s}" if exc.filename2 else "")
    return f"{what}: {target}"


def _paper_scale_check(name: str, module, config: Any, args: argparse.Namespace) -> bool:
    """Print what a paper-scale default run will do, with the time per model estimated from a few timed
    steps (the recipe's `estimate`); on CPU without --yes, refuse it. True = go on."""
    if name not in PAPER_SCALE or getattr(args, "config", None):
        return True
    key, threshold, what, cpu_config = PAPER_SCALE[name]
    amount = getattr(config, key)
    if amount < threshold:
        return True
    device = getattr(config, "device", "auto")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"sinelr {name}: no --config given: this is the paper-scale run ({amount:g} {what}, device {device}).",
          file=sys.stderr)
    if hasattr(module, "estimate"):
        print(f"sinelr {name}: timing a few training steps ...", file=sys.stderr, flush=True)
        print(f"sinelr {name}: {module.estimate(config).line()}", file=sys.stderr)
    if device == "cpu" and not args.yes:
        print(f"sinelr {name}: that takes days on a CPU. Use the CPU-sized config: sinelr {name} --config {cpu_config} "
              f"(or lower --{key.replace('_', '-')}), or pass --yes to start it anyway.", file=sys.stderr)
        return False
    return True


def _close_process_group() -> None:
    """Destroy the torch.distributed process group a multi-process run (torchrun + accelerate) opened.

    The command owns the process, so it closes what the recipe opened. Left open, gloo's worker threads are torn
    down with the interpreter and a rank can abort at exit ("terminate called without an active exception", SIGABRT)
    after every row was written. Called only after a normal return: a rank that failed must not wait on the others.
    """
    dist = sys.modules.get("torch.distributed")  # never imported here if the recipe did not
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        print("\nsinelr: error: no command given", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "--version"):
        parser.parse_args(argv)
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
        validate = getattr(module, "_validate", None)
        if validate is not None:
            # The recipe's config check: whatever it raises is about the values the user gave.
            try:
                validate(config)
            except (ValueError, TypeError) as exc:
                if isinstance(exc, SinelrError):
                    raise
                raise ConfigError(str(exc)) from exc
        if not _paper_scale_check(name, module, config, args):
            return 2
        try:
            module.run(config)
            _close_process_group()
        except StopRequested as stop:  # Ctrl-C / kill: the step under way was finished and checkpointed
            print(f"sinelr {name}: {stop}", file=sys.stderr)
            return 130
    except (SinelrError, *FILE_ERRORS) as exc:
        if os.environ.get("SINELR_DEBUG") == "1":
            raise
        msg = _file_error_message(exc) if isinstance(exc, OSError) and not isinstance(exc, SinelrError) else exc
        print(f"sinelr {name}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
