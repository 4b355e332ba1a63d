"""Loading models by reference into the shared cache, on the chosen device and dtype."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM,
                          AutoModelForSequenceClassification, AutoTokenizer)

from config import Settings
from errors import UserError
from models import catalog, lora
from models.cache import ModelCache
from models.device import fast_bf16, pick_device, pick_dtype
from models.embeddings import Embedder
from models.engine import GenerationEngine, SamplingParams

log = logging.getLogger(__name__)


@dataclass
class LoadedLM:
    """A causal LM, its tokenizer and the engine that serves it."""

    source: catalog.ModelSource
    model: torch.nn.Module
    tokenizer: object
    engine: GenerationEngine
    _fingerprint: str = ""

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def fingerprint(self) -> str:
        """The base weights' fingerprint (computed once; adapters check it before they attach)."""
        if not self._fingerprint:
            from models.lora import fingerprint
            self._fingerprint = fingerprint(self.model)
        return self._fingerprint

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def generate(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None):
        """Submit a prompt to the engine; iterate the returned request's token_ids()."""
        return self.engine.submit(prompt_ids, params, adapter)

    def close(self) -> None:
        self.engine.close()


@dataclass
class LoadedModel:
    """A model and its tokenizer; lock serialises use by concurrent requests (a model is not re-entrant)."""

    source: catalog.ModelSource
    model: torch.nn.Module
    tokenizer: object
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.source.name


def model_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _context_length(config, tokenizer) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return limit if 0 < limit < 1_000_000 else 2048


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


class ModelHub:
    """The app's models: resolves references, loads each once, and keeps them under a memory budget."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = pick_device()
        self.dtype = pick_dtype(self.device, settings.dtype)
        self.cache = ModelCache(int(settings.memory_budget_gb * 2**30))

    @property
    def models_dir(self) -> Path:
        return self.settings.path("models")

    def source(self, reference: str, task: str) -> catalog.ModelSource:
        defaults = {"chat": self.settings.chat_model, "complete": self.settings.chat_model,
                    "embedding": self.settings.embedding_model, "search": self.settings.embedding_model}
        return catalog.resolve(reference, task, self.models_dir, default=defaults.get(task, ""))

    def get(self, kind: str, reference: str = "", task: str = "chat", adapter: lora.AdapterFiles | None = None):
        """The loaded model of a kind (see LOADERS) for reference ("" = the task's default), loaded once.

        An adapter (encoder kinds only) gives a separate copy with the adapter merged in.
        """
        source = self.source(reference, task)
        loader = LOADERS[kind]
        if adapter is None:
            return self.cache.get(f"{kind}:{source.key}", lambda: loader(self, source))
        return self.cache.get(f"{kind}:{source.key}+{adapter.key}", lambda: loader(self, source, adapter))

    def lm(self, reference: str = "", task: str = "chat") -> LoadedLM:
        return self.get("lm", reference, task)

    def embedder(self, reference: str = "", task: str = "embedding") -> Embedder:
        return self.get("embedder", reference, task)

    def pretrained_kwargs(self, source: catalog.ModelSource) -> dict:
        return {"trust_remote_code": self.settings.trust_remote_code,
                "local_files_only": source.local or not catalog.hub_reachable()}

    def loaded(self) -> list[dict]:
        """Loaded models for the system panel."""
        return [{"model": key, "memory_mb": round(size / 2**20)} for key, size in self.cache.items()]


def _load_error(source: catalog.ModelSource, error: Exception, wanted: str) -> UserError:
    if "trust_remote_code" in str(error):
        return UserError(f"The model '{source.name}' needs its own code to run; the operator can allow "
                         "that with --trust-remote-code if they trust it.")
    if isinstance(error, OSError):
        return UserError(f"Could not load the model '{source.name}': {str(error).splitlines()[0]}")
    return UserError(f"'{source.name}' is not {wanted}; pick another model.")


def load_pretrained(hub: ModelHub, source: catalog.ModelSource, model_class, wanted: str, **extra):
    """(model, tokenizer) of model_class from source, on the hub's device and dtype, in eval mode."""
    kwargs = hub.pretrained_kwargs(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = model_class.from_pretrained(source.location, dtype=hub.dtype, **kwargs, **extra)
    except (OSError, ValueError, KeyError) as error:
        raise _load_error(source, error, wanted) from error
    return model.to(hub.device).eval(), tokenizer


def load_lm(hub: ModelHub, source: catalog.ModelSource) -> tuple[LoadedLM, int]:
    log.info("loading %s from %s", source.name, source.location)
    model, tokenizer = load_pretrained(hub, source, AutoModelForCausalLM,
                                       "a text-generation (GPT-family) model, so it cannot chat")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    context = _context_length(model.config, tokenizer)
    if hub.settings.context_limit > 0:
        context = min(context, hub.settings.context_limit)
    engine = GenerationEngine(model, _eos_ids(model, tokenizer), tokenizer.pad_token_id or 0, context)
    return LoadedLM(source, model, tokenizer, engine), model_bytes(model)


def load_embedder(hub: ModelHub, source: catalog.ModelSource,
                  adapter: lora.AdapterFiles | None = None) -> tuple[Embedder, int]:
    log.info("loading embeddings %s from %s", source.name, source.location)
    from sentence_transformers import SentenceTransformer

    kwargs = hub.pretrained_kwargs(source)
    try:
        model = SentenceTransformer(source.location, device=str(hub.device),
                                    trust_remote_code=kwargs["trust_remote_code"],
                                    local_files_only=kwargs["local_files_only"])
    except (OSError, ValueError, KeyError) as error:
        raise _load_error(source, error, "a sentence-embedding model") from error
    if adapter is not None:
        model[0].model = lora.merged(model[0].auto_model, adapter, source.name)
    fast = hub.dtype == torch.bfloat16 or (hub.settings.dtype == "auto" and fast_bf16(hub.device))
    return Embedder(source, model, adapter, bf16=fast), model_bytes(model)


def _loaded_with(model_class, wanted: str):
    def load(hub: ModelHub, source: catalog.ModelSource,
             adapter: lora.AdapterFiles | None = None) -> tuple[LoadedModel, int]:
        log.info("loading %s from %s", source.name, source.location)
        extra = lora.head_options(adapter) if adapter else {}
        model, tokenizer = load_pretrained(hub, source, model_class, wanted, **extra)
        if adapter is not None:
            model = lora.merged(model, adapter, source.name)
        return LoadedModel(source, model, tokenizer), model_bytes(model)
    return load


# One loader per kind of loaded model; a new kind is one entry here.
LOADERS = {
    "lm": load_lm,
    "embedder": load_embedder,
    "seq2seq": _loaded_with(AutoModelForSeq2SeqLM, "a sequence-to-sequence model (BART, T5, Marian)"),
    "classifier": _loaded_with(AutoModelForSequenceClassification, "a text-classification model"),
    "span": _loaded_with(AutoModelForQuestionAnswering, "an extractive question-answering model"),
}
