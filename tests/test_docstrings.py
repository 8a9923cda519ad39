"""Every public function and class documents a short example, and every example runs."""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
import types

import pytest

import statefulnlp as snlp
from statefulnlp import datasets, solvers, traits

FENCE = re.compile(r"```python\n(.*?)```", re.S)


def _public():
    objects = {}
    for name in snlp.__all__:
        obj = getattr(snlp, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            objects[f"statefulnlp.{name}"] = obj
    for module, prefix in ((solvers, "solvers"), (traits, "traits"), (datasets, "datasets")):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                objects[f"statefulnlp.{prefix}.{name}"] = obj
    return objects


PUBLIC = _public()


def _examples(obj):
    return [textwrap.dedent(block) for block in FENCE.findall(inspect.getdoc(obj) or "")]


def test_every_public_object_has_an_example():
    missing = [name for name, obj in PUBLIC.items() if not _examples(obj)]
    assert not missing, f"no example in the docstring of: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_examples_run(name):
    if name == "statefulnlp.FlaxNLPModel":
        pytest.importorskip("flax")
    for code in _examples(PUBLIC[name]):
        # A real module, so that dataclasses (equinox modules) defined there resolve.
        module = types.ModuleType("_doc_example")
        sys.modules[module.__name__] = module
        registry = dict(traits._REGISTRY)  # examples may register solvers of their own
        try:
            exec(compile(code, f"<docstring of {name}>", "exec"), module.__dict__)
        finally:
            del sys.modules[module.__name__]
            traits._REGISTRY.clear()
            traits._REGISTRY.update(registry)
