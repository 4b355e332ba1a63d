"""What every task shares: the app's services, input checks, the shape of a public endpoint, and the Task base
class that turns a request's model and adapter choice into a loaded model."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

from accounts import Accounts
from config import LOCAL_USER, Settings
from errors import TooLarge, UserError
from models import catalog
from models.adapter_meta import AdapterMeta
from models.adapters import AdapterService, adapter_store, selected
from models.text_model import TextModel
from models.loading import ModelHub, read_config
from models.remote import ServingBackend
from tasks.spec import TaskSpec
from tasks.text import is_chinese


@dataclass
class Context:
    """The shared services a task is built with (never per-user state)."""

    settings: Settings
    hub: ModelHub
    adapters: AdapterService | None = None  # built from the settings when not given
    accounts: Accounts | None = None  # who may log in and who is an admin (built from the settings)
    backend: ServingBackend | None = None  # where chat and completion run when not here (--serve-backend)

    def __post_init__(self) -> None:
        if self.adapters is None:
            self.adapters = AdapterService(adapter_store(self.settings), self.hub)
        if self.accounts is None:
            self.accounts = Accounts(self.settings)
        if self.backend is None and self.settings.serve_backend:
            self.backend = ServingBackend(self.settings.serve_backend, self.settings.serve_api_key,
                                          self.settings.serve_adapter_dir)


@dataclass(frozen=True)
class Endpoint:
    api_name: str  # fixed public name, without the slash
    fn: Callable  # a fully typed function: JSON in, JSON out (a generator for streams)
    generates: bool = False  # served by a generation engine, which batches: many run at once, apart from the rest


class Upload(NamedTuple):
    """A file a user uploaded: where the server keeps it, and the name it had on the user's machine.

    A public endpoint's parameter typed Upload (or a list of them) takes a file upload; the API edge checks it is
    one (ui/api.py) and hands the task this plain pair."""

    path: str
    name: str


DOWNLOADS_KEPT_S = 3600  # Gradio copies a returned file at once; older downloads are only leftovers


def download_folder() -> Path:
    """A fresh folder for a file an endpoint returns (an export, a training file): in the system's temp folder,
    where Gradio may serve files from; the downloads older than an hour are cleared on the way."""
    root = Path(tempfile.gettempdir()) / "lora-studio-exports"
    root.mkdir(exist_ok=True)
    for old in root.glob("bundle-*"):
        if time.time() - old.stat().st_mtime > DOWNLOADS_KEPT_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="bundle-", dir=root))


def require_text(value: object, what: str = "text", limit: int = 100_000) -> str:
    """The stripped text, or a UserError when it is missing, blank or too long."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"Please enter some {what}: it is empty.")
    if len(value) > limit:
        raise TooLarge(f"The {what} is too long ({len(value):,} characters); the limit is {limit:,}.")
    return value.strip()


def require_range(value: float, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise UserError(f"{name} must be between {low} and {high}, not {value!r}.")
    return value


class Task:
    """A task's logic: built with the app's services, described by its class's spec."""

    spec: ClassVar[TaskSpec]

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def title(self) -> str:
        return self.spec.title

    def endpoints(self) -> list[Endpoint]:
        raise NotImplementedError

    def default(self, family: str | None = None) -> str:
        """The model used when the box is empty: the operator's choice for the family, else the spec's."""
        family = family or self.spec.families[0]
        return self.ctx.hub.operator_default(family) or self.spec.defaults.get(family) or catalog.DEFAULTS[family]

    def language_notice(self, texts: str | list[str], model_name: str) -> str:
        """One line when the text is Chinese and the catalog marks the model in use English-first (as the offline
        models are), naming the multilingual model to pick instead; "" otherwise (or for a model it lacks)."""
        text = texts if isinstance(texts, str) else "\n".join(texts)
        if catalog.handles(model_name, "zh") is not False or not is_chinese(text):
            return ""
        better = catalog.SUGGESTIONS["zh"].get(self.id)
        instead = f"; {better} handles Chinese when the Hugging Face hub is reachable" if better else ""
        return f"This text is Chinese, but {model_name} is an English-first model, so expect weaker results{instead}."

    def source(self, model: str, family: str | None = None) -> catalog.ModelSource:
        return self.ctx.hub.source(model, self.default(family))

    def model_for(self, model: str, adapter: str, owner: str = LOCAL_USER) -> str:
        """The model asked for, or, when only an adapter is chosen, the base it was trained on."""
        return self.ctx.adapters.model_for(owner, model, adapter)

    def adapter_names(self, model: str, owner: str = LOCAL_USER) -> list[str]:
        """The owner's adapters for this task trained on model ("" = the task's default); [] for a bad model.

        A catalog model is matched by name, so listing never loads or converts it."""
        backbone = catalog.find(model or self.default())
        if backbone is not None:
            return self.ctx.adapters.names(owner, self.id, {backbone.name})
        try:
            source = self.source(model)
        except UserError:
            return []
        return self.ctx.adapters.names(owner, self.id, {source.name, source.location})

    def lm(self, model: str, adapter: str, owner: str = LOCAL_USER) -> tuple[TextModel, str | None,
                                                                          AdapterMeta | None]:
        """The loaded language model (the adapter's base when only an adapter is chosen), the adapter's engine key
        on it and its metadata (the system prompt and chat template it was trained with); None without one."""
        reference = self.model_for(model, adapter, owner)
        backend = self.ctx.backend
        if backend is not None:  # the tokens come from the serving backend; the prompt is built here all the same
            lm = backend.lm(self.ctx.hub, self.ctx.hub.source(reference, self.default(catalog.DECODER)))
            key, defaults = backend.attach(self.ctx.adapters, owner, lm, adapter, self.id)
            return lm, key, defaults
        lm = self.ctx.hub.lm(reference, self.default(catalog.DECODER))
        key, defaults = self.ctx.adapters.attach(owner, lm, adapter, self.id)
        return lm, key, defaults

    def encoder(self, kind: str, model: str, adapter: str, owner: str = LOCAL_USER, family: str | None = None):
        """The loaded encoder of kind, with the adapter's LoRA and head merged in when one is chosen."""
        return self.ctx.adapters.encoder(owner, kind, model, adapter, self.id, self.default(family))

    def has_head(self, model: str, adapter: str, head: str, owner: str = LOCAL_USER) -> bool:
        """Whether model runs a trained head (an architecture name ending in head); False means embeddings.

        A bare encoder (e.g. BertModel, or any sentence-transformers folder) is used through its embeddings; a
        model with some other head (a masked or causal LM) cannot do the task, which is a UserError.
        """
        if selected(adapter):
            return True  # a trained adapter carries the head
        source = self.ctx.hub.source(self.ctx.adapters.reference(owner, model), self.default())  # or a merged one
        if source.family == catalog.EMBEDDING:
            return False
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        config = read_config(source, self.ctx.hub.options(source))
        names = list(config.architectures or [])
        if any(name.endswith(head) for name in names):
            return True
        bare = {n for value in MODEL_MAPPING_NAMES.values() for n in ([value] if isinstance(value, str) else value)}
        if all(name in bare for name in names) and not config.is_encoder_decoder:
            return False
        kind = {"ForSequenceClassification": "text classifier", "ForQuestionAnswering": "question-answering head"}
        raise UserError(f"'{source.name}' has no {kind.get(head, head)}: pick a model that has one, train an "
                        "adapter for it, or leave the model empty to use the offline method.")
