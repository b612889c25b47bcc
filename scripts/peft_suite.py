"""Run PEFT's own custom-model tests on sine-LoRA rows put into its case tables.

Fetches the sdist of the *installed* peft version from PyPI (cached under runs/peft_suite/, git-ignored;
nothing of PEFT's code is committed here), writes a copy of its `tests/test_custom_models.py` with our
rows in `TEST_CASES` and `MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES`, plus sine copies of the
LoRA tests of `TestLayerRepr` and `TestRequiresGrad`, and runs only the tests that involve
`SineLoraConfig` (our rows replace PEFT's in the generated copy, so PEFT's other ~20k cases are not
even collected). Prints the pytest summary and exits with pytest's status.

    OMP_NUM_THREADS=1 python scripts/peft_suite.py            # all sine tests
    OMP_NUM_THREADS=1 python scripts/peft_suite.py -k DoRA    # extra args go to pytest

Harness details (not sinelr behaviour): PEFT's `set_init_weights_false` maps `init_lora_weights=False`
only for `LoraConfig` itself, so the generated module wraps it to do the same for `SineLoraConfig`; the
repr copies expect the prefix `sinelr.lora.SineLoraLinear` (our layer's repr) instead of `lora.Linear`;
`testing_common.py` is copied with its `diffusers` import made optional (used only in isinstance
checks); the multi-adapter rows use tuner_method "sine_lora" (see MULTI_ROWS). Needs `datasets`
(PEFT's testing_utils imports it); scripts/peft_suite.sh installs it when missing.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SINELR_PEFT_SUITE_CACHE", REPO / "runs" / "peft_suite"))

# Single-adapter rows on PEFT's tiny models (MLP: lin0 10->20, lin1 20->2; EmbConv1D: emb + Conv1D).
SINGLE_ROWS = '''[
    ("Vanilla MLP 1 SineLoRA", "MLP", SineLoraConfig, {"target_modules": ["lin0"]}),
    ("Vanilla MLP 2 SineLoRA", "MLP", SineLoraConfig, {"target_modules": ["lin0", "lin1"], "omega": 30.0}),
    ("Vanilla MLP 3 SineLoRA", "MLP", SineLoraConfig, {"target_modules": ["lin0"], "modules_to_save": ["lin1"]}),
    ("Vanilla MLP 4 SineLoRA", "MLP", SineLoraConfig, {"target_modules": ["lin0"], "lora_alpha": 4, "lora_dropout": 0.1}),
    ("Vanilla MLP 5 SineLoRA with DoRA", "MLP", SineLoraConfig, {"target_modules": ["lin0", "lin1"], "use_dora": True}),
    ("Vanilla MLP 6 SineLoRA with lora_b bias", "MLP", SineLoraConfig,
     {"target_modules": ["lin0", "lin1"], "lora_bias": True, "lora_alpha": 32}),
    ("Embedding + transformers Conv1D 1 SineLoRA", "EmbConv1D", SineLoraConfig, {"target_modules": ["conv1d"]}),
]'''

# tuner_method "sine_lora": PEFT's test_multiple_active_adapters_forward checks add_weighted_adapter(
# combination_type="cat") only for tuner_method == "lora". sine-LoRA refuses add_weighted_adapter (no
# combination of sine factors is the sum of the adapters' updates; tested in tests/test_peft_fixes.py),
# so that one branch does not apply; everything else runs as for LoRA (MLP with bias, same asserts).
MULTI_ROWS = '''[
    ("SineLoRA Same", "sine_lora", SineLoraConfig,
     {"target_modules": ["lin0"], "init_lora_weights": False},
     {"target_modules": ["lin0"], "init_lora_weights": False}),
    ("SineLoRA Different", "sine_lora", SineLoraConfig,
     {"target_modules": ["lin0"], "init_lora_weights": False},
     {"target_modules": ["lin1"], "init_lora_weights": False}),
    ("SineDoRA Same", "sine_lora", SineLoraConfig,
     {"target_modules": ["lin0"], "init_lora_weights": False, "use_dora": True},
     {"target_modules": ["lin0"], "init_lora_weights": False, "use_dora": True}),
]'''

HEADER = '''
# ---- added by sinelr scripts/peft_suite.py -------------------------------------------------------
import sinelr.peft  # noqa: E402,F401  (registers sine-LoRA with PEFT)
from sinelr.peft import SineLoraConfig  # noqa: E402

_peft_set_init_weights_false = set_init_weights_false


def set_init_weights_false(config_cls, kwargs):  # noqa: F811
    """PEFT's helper maps init_lora_weights=False only for LoraConfig itself; do the same for sine-LoRA."""
    if isinstance(config_cls, type) and issubclass(config_cls, SineLoraConfig):
        kwargs = dict(kwargs)
        kwargs["init_lora_weights"] = False
        return kwargs
    return _peft_set_init_weights_false(config_cls, kwargs)
# ---------------------------------------------------------------------------------------------------
'''

# LoRA tests hard-wired to LoraConfig that apply to layer types sine-LoRA supports (Linear, Conv1D).
REPR_TESTS = ("test_repr_lora_linear", "test_repr_lora_conv1d")
REQUIRES_GRAD_TESTS = (
    "test_requires_grad_modules_to_save_default",
    "test_requires_grad_modules_to_save_disabling",
    "test_requires_grad_modules_to_save_multiple_adapters",
    "test_requires_grad_follows_inference_mode_modules_to_save",
    "test_requires_grad_lora_different_targets",
    "test_requires_grad_lora_same_targets",
    "test_loading_adapter_preserves_custom_requires_grad",
)

SELECT_PLUGIN = '''"""pytest plugin written by sinelr scripts/peft_suite.py: keep only tests that involve SineLoraConfig."""
from sinelr.peft import SineLoraConfig


def _involves_sine(item):
    if item.cls is not None and item.cls.__name__.startswith("TestSine"):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    for value in callspec.params.values():
        if value is SineLoraConfig:
            return True
        if isinstance(value, (tuple, list)) and any(v is SineLoraConfig for v in value):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if _involves_sine(item)]
    drop = [item for item in items if not _involves_sine(item)]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
'''


def peft_version() -> str:
    """The installed peft version, read from its metadata (importing peft here would cost seconds)."""
    from importlib.metadata import version

    return version("peft")


def fetch_sdist(version: str) -> Path:
    """The extracted peft-<version> sdist (downloaded with pip once, then reused from the cache)."""
    root = CACHE / f"peft-{version}"
    if (root / "tests" / "test_custom_models.py").is_file():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"peft-{version}.tar.gz"
    if not archive.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"peft=={version}", "--no-binary", ":all:", "--no-deps",
             "--no-build-isolation", "-q", "-d", str(CACHE)],
            check=True,
        )
    if not archive.is_file():
        raise FileNotFoundError(f"pip did not produce {archive}")
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    if not (root / "tests" / "test_custom_models.py").is_file():
        raise FileNotFoundError(f"{archive} has no tests/test_custom_models.py; this peft version is unsupported")
    return root


def _method_sources(tree: ast.Module, lines: list[str], class_name: str, names: tuple[str, ...]) -> list[str]:
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if cls is None:
        raise ValueError(f"class {class_name} not found in PEFT's test_custom_models.py")
    found = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            found[node.name] = "".join(lines[start:node.end_lineno])
    missing = set(names) - set(found)
    if missing:
        raise ValueError(f"{class_name} has no tests {sorted(missing)} in this peft version")
    return [found[name] for name in names]


def _to_sine(source: str) -> str:
    return (
        source.replace("LoraConfig(", "SineLoraConfig(")
        .replace('startswith("lora.Linear")', 'startswith("sinelr.lora.SineLoraLinear")')
    )


def write_test_module(root: Path) -> Path:
    """Write tests/test_sinelr_custom_models.py: PEFT's module with our rows and sine copies added."""
    tests = root / "tests"
    (tests / "__init__.py").touch()  # the sdist omits it; its modules import each other relatively
    source = (tests / "test_custom_models.py").read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)

    def line_of(predicate) -> int:
        for node in tree.body:
            if predicate(node):
                return node.lineno - 1
        raise ValueError("PEFT's test_custom_models.py changed layout; update scripts/peft_suite.py")

    def assigns(name: str):
        return lambda n: isinstance(n, ast.Assign) and any(getattr(t, "id", None) == name for t in n.targets)

    last_import = max(n.end_lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    all_classes = line_of(assigns("ALL_PEFT_CONFIG_CLASSES"))
    multi_class = line_of(lambda n: isinstance(n, ast.ClassDef) and n.name == "TestMultipleActiveAdapters")
    inserts = {
        last_import: HEADER,
        # Our rows replace PEFT's (only tests involving SineLoraConfig run anyway): collecting PEFT's ~20k
        # parametrized items only to deselect them costs minutes on a busy machine.
        all_classes: f"TEST_CASES[:] = {SINGLE_ROWS}\n",
        multi_class: f"MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES[:] = {MULTI_ROWS}\n\n\n",
    }
    out = []
    for i, line in enumerate(lines):
        if i in inserts:
            out.append(inserts[i])
        out.append(line)
    repr_src = _method_sources(tree, lines, "TestLayerRepr", REPR_TESTS)
    grad_src = _method_sources(tree, lines, "TestRequiresGrad", REQUIRES_GRAD_TESTS)
    out.append("\n\nclass TestSineLayerRepr:\n    \"\"\"PEFT's LoRA repr tests with SineLoraConfig.\"\"\"\n\n")
    out.extend(_to_sine(s) + "\n" for s in repr_src)
    out.append("\n\nclass TestSineRequiresGrad:\n    \"\"\"PEFT's LoRA requires_grad tests with SineLoraConfig.\"\"\"\n\n")
    out.append("    check_requires_grad = TestRequiresGrad.check_requires_grad\n\n")
    out.extend(_to_sine(s) + "\n" for s in grad_src)
    # testing_common imports diffusers only for isinstance checks of StableDiffusionPipeline: a copy
    # with that import made optional spares installing diffusers.
    common = (tests / "testing_common.py").read_text(encoding="utf-8")
    line = "from diffusers import StableDiffusionPipeline\n"
    if line not in common:
        raise ValueError("PEFT's testing_common.py changed layout; update scripts/peft_suite.py")
    stub = "try:\n    " + line + "except ImportError:\n    class StableDiffusionPipeline:  # diffusers not installed\n        pass\n"
    (tests / "sinelr_testing_common.py").write_text(common.replace(line, stub), encoding="utf-8")
    text = "".join(out)
    if "from .testing_common import" not in text:
        raise ValueError("PEFT's test_custom_models.py changed layout; update scripts/peft_suite.py")
    text = text.replace("from .testing_common import", "from .sinelr_testing_common import")
    target = tests / "test_sinelr_custom_models.py"
    target.write_text(text, encoding="utf-8")
    (tests / "sinelr_select.py").write_text(SELECT_PLUGIN, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    pytest_args = list(sys.argv[1:] if argv is None else argv)  # all of them go to pytest
    if pytest_args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    import importlib.util

    if importlib.util.find_spec("datasets") is None:  # PEFT's tests/testing_utils.py imports it
        print("PEFT's test helpers need the `datasets` package: pip install datasets", file=sys.stderr)
        return 2
    version = peft_version()
    root = fetch_sdist(version)
    module = write_test_module(root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(root / "tests")] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [
        sys.executable, "-m", "pytest", str(module.relative_to(root)), "-q", "-p", "no:cacheprovider",
        "-p", "sinelr_select", "--rootdir", str(root), "-o", "addopts=", "-W", "ignore::DeprecationWarning",
        *pytest_args,
    ]
    print(f"peft {version}: {' '.join(cmd[1:])}  (in {root})", flush=True)
    return subprocess.run(cmd, cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
