"""Loading models by reference into the shared cache, on the chosen device and dtype."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from config import Settings
from errors import UserError
from models import catalog
from models.cache import ModelCache
from models.device import pick_device, pick_dtype
from models.engine import GenerationEngine, SamplingParams

log = logging.getLogger(__name__)


@dataclass
class LoadedLM:
    """A causal LM, its tokenizer and the engine that serves it."""

    source: catalog.ModelSource
    model: torch.nn.Module
    tokenizer: object
    engine: GenerationEngine

    @property
    def name(self) -> str:
        return self.source.name

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
        default = self.settings.chat_model if task in ("chat", "complete") else ""
        return catalog.resolve(reference, task, self.models_dir, default=default)

    def lm(self, reference: str = "", task: str = "chat") -> LoadedLM:
        """The loaded causal LM for reference ("" = the task's default), loading it on first use."""
        source = self.source(reference, task)
        return self.cache.get(source.key, lambda: self._load_lm(source))

    def _pretrained_kwargs(self, source: catalog.ModelSource) -> dict:
        return {"trust_remote_code": self.settings.trust_remote_code,
                "local_files_only": source.local or not catalog.hub_reachable()}

    def _load_lm(self, source: catalog.ModelSource) -> tuple[LoadedLM, int]:
        log.info("loading %s from %s", source.name, source.location)
        kwargs = self._pretrained_kwargs(source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=self.dtype, **kwargs)
        except ValueError as error:
            if "trust_remote_code" in str(error):
                raise UserError(f"The model '{source.name}' needs its own code to run; the operator can allow "
                                "that with --trust-remote-code if they trust it.") from error
            raise UserError(f"'{source.name}' is not a text-generation (GPT-family) model, so it cannot chat; "
                            "pick a decoder model such as SmolLM2 or GPT-2.") from error
        except OSError as error:
            raise UserError(f"Could not load the model '{source.name}': {str(error).splitlines()[0]}") from error
        model.to(self.device).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        engine = GenerationEngine(model, _eos_ids(model, tokenizer), tokenizer.pad_token_id or 0,
                                  _context_length(model.config, tokenizer))
        return LoadedLM(source, model, tokenizer, engine), model_bytes(model)

    def loaded(self) -> list[dict]:
        """Loaded models for the system panel."""
        return [{"model": key, "memory_mb": round(size / 2**20)} for key, size in self.cache.items()]
