"""Import Gradio without rewriting its type stubs: about a second off every start of the page on 2 cores.

At import, each of Gradio's ~80 component classes re-reads and parses its own source file and renders a template to
refresh a `.pyi` stub beside it in site-packages (`gradio.component_meta.create_or_modify_pyi`). The stubs only serve
type checkers, the installed package already holds them, and a read-only install cannot write them anyway.
Importing this module before Gradio is enough.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

MODULE = "gradio.component_meta"


class _SkipStubs(importlib.abc.MetaPathFinder):
    """Finds `gradio.component_meta` once, the usual way, and makes its stub writer do nothing once it has run."""

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module) -> None:
            run(module)
            if hasattr(module, "create_or_modify_pyi"):  # a later Gradio without it imports as it is
                module.create_or_modify_pyi = _unchanged

        spec.loader.exec_module = exec_module
        return spec


def _unchanged(*args, **kwargs) -> None:
    return None


if MODULE not in sys.modules:  # once Gradio is imported, its classes are made: nothing left to skip
    sys.meta_path.insert(0, _SkipStubs())
