"""Model naming for /v1: which model a request's `model` names and what /v1/models lists. `model` is a base model,
one of the caller's adapters (listed in /v1/models with `parent` = its base, as vLLM does) or `base:adapter` (as
SGLang also accepts); bases are listed by the name clients see, never a server path. Which adapters a caller may use
is AdapterService.usable's answer, as in the UI's pickers.
"""

from __future__ import annotations

import os

from errors import NotFound, UserError
from models import catalog, offline
from models.adapters import sanitize_name
from server.edge import ApiError
from tasks.base import Context


class ModelNames:
    """The models a caller may name, and what each name loads."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def is_adapter(self, owner: str, name: str) -> bool:
        """Whether name is one of the adapters owner may use (a hub id such as org/name never is)."""
        try:
            return name == sanitize_name(name) and name in self.ctx.adapters.names(owner)
        except UserError:  # not even a possible adapter name
            return False

    def choose(self, owner: str, model: object, family: str) -> tuple[str | catalog.ModelSource, str]:
        """(base reference, adapter) that a request's `model` names: one of the caller's adapters,
        `base:adapter` or a base ("" = the default); an unknown one is a NotFound (404)."""
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "'model' must be a string.", param="model")
        model = (model or "").strip()
        if model and self.is_adapter(owner, model):
            return "", model
        base, adapter = model, ""
        if ":" in model and not os.path.isdir(model):
            base, _, adapter = model.rpartition(":")
            if not self.is_adapter(owner, adapter):
                raise NotFound(f"There is no adapter named '{adapter[:80]}'.")
        return self.base_reference(owner, base, family), adapter

    def base_reference(self, owner: str, base: str, family: str) -> str | catalog.ModelSource:
        """What loads the base a request names: the caller's merged model by its name, the model as typed, or
        the folder a listed name stands for; an unknown one is refused before anything loads."""
        merged = self.ctx.adapters.reference(owner, base)
        if merged is not base:
            return merged
        try:
            self.ctx.hub.source(base, self.ctx.hub.default(family))
            return base
        except NotFound:
            listed = self.bases(family).get(base)  # a loaded model is listed by its name, not its folder
            if listed is None:
                raise
            return listed

    def bases(self, family: str) -> dict[str, str]:
        """The base models of a family to list, by the name clients see (never a server path): the default,
        the catalog's offline ones and the loaded ones; each with the reference that loads it."""
        kind = "lm" if family == catalog.DECODER else "embedder"
        default = self.ctx.hub.default(family)
        try:
            named = {self.ctx.hub.source(default).name: default}
        except UserError:  # the operator's default is not reachable now: not listed
            named = {}
        for backbone in catalog.CATALOG.values():
            if backbone.family == family and backbone.offline is not None and offline.installed(backbone.offline):
                named.setdefault(backbone.name, backbone.name)
        for source in self.ctx.hub.loaded_sources(kind):
            named.setdefault(source.name, source.location)
        return named

    def model_list(self, owner: str) -> list[dict]:
        """The bases that are loaded or available offline, the embedding models, and the caller's adapters."""
        entries: dict[str, dict] = {}

        def add(name: str, task: str, owned_by: str = "lora-studio", created: float = 0, parent: str | None = None):
            entries.setdefault(name, {"id": name, "object": "model", "created": int(created), "owned_by": owned_by,
                                      "parent": parent, "task": task})

        for family in (catalog.DECODER, catalog.EMBEDDING):
            for name in self.bases(family):
                add(name, self._base_task(name, family))
        for name, merged in self.ctx.adapters.merged.list(owner):  # language and embedding models (no classifiers)
            task = {catalog.DECODER: "chat" if merged.task == "chat" else "completion",
                    catalog.EMBEDDING: "embeddings"}.get(merged.family)
            if task:
                add(name, task, owner, merged.created, merged.base_model)
        for adapter in self.ctx.adapters.usable(owner):
            task = {"chat": "chat", "search": "embeddings"}.get(adapter["task"])
            if task:
                add(adapter["name"], task, adapter["owner"], adapter["created"], adapter["base"])
        return list(entries.values())

    def _base_task(self, name: str, family: str) -> str:
        if family == catalog.EMBEDDING:
            return "embeddings"
        backbone = catalog.find(name)
        if backbone is not None:
            return "chat" if backbone.chat else "completion"
        loaded = next((v for k, v in self.ctx.hub.cache.values() if k.kind == "lm" and v.name == name), None)
        return "chat" if loaded is not None and loaded.has_chat_template else "completion"

    def served_base(self, owner: str, name: object) -> str:
        """The base a loaded adapter goes on: the one named (as /v1/models lists it), else the default."""
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "'base_model_name' must be a string.", param="base_model_name")
        reference = self.base_reference(owner, (name or "").strip() or self.ctx.hub.default(catalog.DECODER),
                                        catalog.DECODER)
        return reference.location if isinstance(reference, catalog.ModelSource) else reference
