"""gc.* stays the DSL: importing every graphc submodule must not replace a public DSL function
(a submodule named like one, graphc/log.py, once turned gc.log into a module)."""
from __future__ import annotations

import importlib
import pkgutil

import graphc as gc
from graphc import dsl


def test_no_submodule_shadows_a_dsl_function():
    for m in pkgutil.walk_packages(gc.__path__, "graphc."):
        if ".cuda" in m.name or m.name.endswith("distributed"):
            continue  # need a GPU / MPI to import cleanly; their names are checked below anyway
        importlib.import_module(m.name)
    subs = {m.name.split(".")[1] for m in pkgutil.iter_modules(gc.__path__, "graphc.")}
    clash = sorted(subs & set(dsl.__all__))
    assert not clash, f"graphc submodules named like DSL functions: {clash}"
    for name in dsl.__all__:
        assert getattr(gc, name) is getattr(dsl, name), name
