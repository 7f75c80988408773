"""The recipe registry: built-ins, then user recipes from ``RUNYARD_RECIPES`` modules and the
``runyard.recipes`` entry-point group.

A user module registers recipes by calling :func:`register` at import time, or by defining
``RECIPES = [Recipe(...), ...]``. An entry point may name such a module or a ``Recipe``
object (or a list of them). ``get_registry()`` is what the API serves and the worker runs;
nothing outside it can run.
"""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points

from worker.recipes.registry import (
    Built,
    Recipe,
    RecipeContext,
    TrainerArgs,
    trainer_schema,
    validate_trainer,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "runyard.recipes"

_registry: dict[str, Recipe] = {}
_loaded_from: tuple[str, ...] | None = None
_lock = threading.RLock()


class UnknownRecipe(KeyError):
    def __str__(self) -> str:
        return f"unknown recipe {self.args[0]!r}; known: {', '.join(sorted(_registry))}"


def register(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Add ``recipe`` under its name (a second recipe of the same name is an error unless ``replace``)."""
    with _lock:
        if recipe.name in _registry and _registry[recipe.name] is not recipe and not replace:
            raise ValueError(f"a recipe named {recipe.name!r} is already registered")
        _registry[recipe.name] = recipe
    return recipe


def _add(obj: object, origin: str) -> None:
    if isinstance(obj, Recipe):
        register(obj, replace=True)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _add(item, origin)
    elif hasattr(obj, "RECIPES"):
        _add(obj.RECIPES, origin)
    elif callable(obj):
        _add(obj(), origin)


def _load(user_modules: tuple[str, ...]) -> None:
    from worker.recipes.builtin import BUILTIN_RECIPES

    for recipe in BUILTIN_RECIPES:
        register(recipe, replace=True)
    for name in user_modules:
        # Errors propagate: a worker started with a broken RUNYARD_RECIPES should say so at once.
        module = importlib.import_module(name)
        if hasattr(module, "RECIPES"):
            _add(module.RECIPES, name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _add(ep.load(), ep.value)
        except Exception:  # one broken plugin must not hide the other recipes
            log.exception("could not load recipes from entry point %s = %s", ep.name, ep.value)


def get_registry(user_modules: str | None = None) -> dict[str, Recipe]:
    """``name -> Recipe``. ``user_modules`` (comma-separated) defaults to ``RUNYARD_RECIPES``."""
    global _loaded_from
    if user_modules is None:
        from server.settings import get_settings

        user_modules = get_settings().recipes
    modules = tuple(m.strip() for m in user_modules.split(",") if m.strip())
    with _lock:
        if _loaded_from is None or not set(modules) <= set(_loaded_from):
            _load(modules)
            _loaded_from = tuple(sorted(set(modules) | set(_loaded_from or ())))
        return dict(_registry)


def get_recipe(name: str) -> Recipe:
    registry = get_registry()
    if name not in registry:
        raise UnknownRecipe(name)
    return registry[name]


__all__ = [
    "ENTRY_POINT_GROUP",
    "Built",
    "Recipe",
    "RecipeContext",
    "TrainerArgs",
    "UnknownRecipe",
    "get_recipe",
    "get_registry",
    "register",
    "trainer_schema",
    "validate_trainer",
]
