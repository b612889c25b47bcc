"""Recipes are programs, not modules of the library: run them with `sinelr <recipe>`.

Like torchtune's recipes, this package cannot be imported, so no library code or test can come to
depend on a recipe's internals; code that two recipes need lives below them (sinelr.sweep, report,
metrics, train, data, models). Tests load a recipe file through `sinelr.cli.load_recipe(name)`.
"""
raise ModuleNotFoundError(
    "sinelr.recipes is not importable: run a recipe with `sinelr <recipe>` (or load it in a test with "
    "sinelr.cli.load_recipe(name)); shared code belongs in the library modules",
    name="sinelr.recipes",
)
