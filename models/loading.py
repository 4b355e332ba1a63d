"""Loading models by reference into the shared cache, on the chosen device and dtype."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from config import Settings
from errors import UserError
from models import catalog, decoder, kernels, lazy, lora
from models.cache import ModelCache, too_big
from models.device import fast_bf16, pick_device, pick_dtype
from models.embeddings import Embedder
from models.engine import EngineClosed, GenerationEngine, SamplingParams
from models.kinds import KINDS, CacheKey, ModelKind
from models.text_model import TextModel
from models.threads import in_own_thread

torch = lazy.module("torch")
transformers = lazy.module("transformers")
AutoModelForCausalLM = lazy.attribute("transformers", "AutoModelForCausalLM")
AutoTokenizer = lazy.attribute("transformers", "AutoTokenizer")

log = logging.getLogger(__name__)
T = TypeVar("T")


def unloaded(name: str) -> UserError:
    """The sentence for a request whose model was unloaded under it (the cache made room for another)."""
    return UserError(f"The model '{name}' was just unloaded to make room for another; please try again.")


@dataclass
class LoadedLM(TextModel):
    """A causal LM loaded here, its tokenizer and the engine that serves it; every use of the model goes through
    the engine's thread, and an engine closed under a request (the model unloaded) is one sentence, said here."""

    source: catalog.ModelSource
    model: torch.nn.Module
    tokenizer: object
    engine: GenerationEngine
    kernel: str = ""  # the product layout chosen for its decode steps (models/kernels.py), for the System panel
    _fingerprint: str = ""
    cache_key: CacheKey | None = None  # its key in the model cache (set by the hub)
    holds_weights = True

    @property
    def fingerprint(self) -> str:
        """The base weights' fingerprint (computed once; adapters check it before they attach)."""
        if not self._fingerprint:
            self._fingerprint = lora.weights_fingerprint(self.model)
        return self._fingerprint

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    def generate(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
                 caller: int | None = None):
        return self._engine(lambda: self.engine.submit(prompt_ids, params, adapter, caller))

    def run(self, command: Callable[[torch.nn.Module], T]) -> T:
        def run() -> T:
            with torch.inference_mode():
                return command(self.engine.model)
        return self.call(run)

    def call(self, command: Callable[[], T]) -> T:
        """command() in the engine's thread, between decode steps (with gradients: adapters attach here)."""
        return self._engine(lambda: self.engine.call(command))

    def token_logprobs(self, ids: list[int], adapters: list[str | None]) -> torch.Tensor:
        return self.run(lambda model: token_logprobs(model, ids, adapters))

    def _engine(self, command: Callable[[], T]) -> T:
        try:
            return command()
        except EngineClosed:
            raise unloaded(self.name) from None

    @property
    def busy(self) -> bool:
        return self.engine.busy

    def close(self) -> None:
        self.engine.close()


def token_logprobs(model: torch.nn.Module, ids: list[int], adapters: list[str | None]) -> torch.Tensor:
    """log p(ids[i] | ids[:i]) for i >= 1 under each adapter (None = the base), one row per adapter."""
    batch = torch.tensor([ids] * len(adapters), device=model.device)
    names = {"adapter_names": [a or lora.PEFT_BASE for a in adapters]} if hasattr(model, "peft_config") else {}
    logits = model(input_ids=batch, use_cache=False, **names).logits.float()
    return logits[:, :-1].log_softmax(-1).gather(-1, batch[:, 1:, None])[..., 0].cpu()


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

    def compute(self, work: Callable[[], T]) -> T:
        """work() holding the model, without gradients, in a thread that ends with it (see in_own_thread: the
        request thread would keep an OpenMP pool that slows the chat engine's steps for as long as it lives)."""
        with self.lock:
            return in_own_thread(work, inference=True)


def model_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


_POSITIONS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def token_limit(config, tokenizer=None, cap: int = 0, fallback: int = 2048) -> int:
    """How many tokens a model reads at once: the least of its position table and its tokenizer's limit (either
    may be unknown; fallback then), capped at cap when cap > 0. The one place a model's limit is computed."""
    limits = [v for v in (getattr(config, a, None) for a in _POSITIONS) if isinstance(v, int) and v > 0][:1]
    tokenizer_limit = getattr(tokenizer, "model_max_length", 0)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 1_000_000:  # "unknown" is a huge sentinel
        limits.append(tokenizer_limit)
    limit = min(limits) if limits else fallback
    return min(limit, cap) if cap > 0 else limit


def weights_on_disk(source: catalog.ModelSource) -> int:
    """Bytes of a local model's weight files (0 for a hub model not downloaded yet)."""
    if not source.local:
        return 0
    folder = Path(source.location)
    return sum(p.stat().st_size for pattern in ("*.safetensors", "*.bin", "*.gguf") for p in folder.glob(pattern))


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def operator_default(settings: Settings, family: str) -> str:
    """The backbone the operator chose for a family (--chat-model, --embedding-model), or ""."""
    return {catalog.DECODER: settings.chat_model, catalog.EMBEDDING: settings.embedding_model}.get(family, "")


def pretrained_options(settings: Settings, source: catalog.ModelSource) -> dict:
    """from_pretrained options for a source: remote code only if the operator allows it, no hub when offline."""
    return {"trust_remote_code": settings.trust_remote_code,
            "local_files_only": source.local or not catalog.hub_reachable()}


def load_error(source: catalog.ModelSource, error: Exception, wanted: str) -> UserError:
    """The sentence a failed load gives, wherever the model was loaded (server, worker, estimate)."""
    if "trust_remote_code" in str(error):
        return UserError(f"The model '{source.name}' needs its own code to run; the operator can allow "
                         "that with --trust-remote-code if they trust it.")
    if isinstance(error, OSError):
        return UserError(f"Could not load the model '{source.name}': {str(error).splitlines()[0]}")
    return UserError(f"'{source.name}' is not {wanted}; pick another model.")


def read_config(source: catalog.ModelSource, options: dict):
    """A model's configuration (architectures, sizes) without loading its weights."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.location, **options)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"Could not read the model '{source.name}': {str(error).splitlines()[0]}") from error


# transformers 5 builds a model on the meta device under a process-wide switch: two loads at once (two users,
# or an evaluation's variants) can leave one's weights on meta. Loads take turns; each is disk-bound anyway.
LOADING = threading.Lock()


def load_pretrained(source: catalog.ModelSource, model_class, options: dict, wanted: str,
                    dtype: torch.dtype | None = None, device: torch.device | None = None, **extra):
    """(model, tokenizer) of model_class from source on device (fp32 unless dtype), in eval mode: the one loader of
    the app."""
    dtype = torch.float32 if dtype is None else dtype
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **options)
        with LOADING:
            model = model_class.from_pretrained(source.location, dtype=dtype, **options, **extra)
    except (OSError, ValueError, KeyError) as error:
        raise load_error(source, error, wanted) from error
    return model.to(device or pick_device()).eval(), tokenizer


def load_sentence_transformer(source: catalog.ModelSource, options: dict, device: torch.device | None = None):
    """A sentence-transformers model from source (its pooling and normalisation as its folder says)."""
    from sentence_transformers import SentenceTransformer

    try:
        with LOADING:
            return SentenceTransformer(source.location, device=str(device or pick_device()),
                                       trust_remote_code=options["trust_remote_code"],
                                       local_files_only=options["local_files_only"])
    except (OSError, ValueError, KeyError) as error:
        raise load_error(source, error, KINDS["embedder"].wanted) from error


class ModelHub:
    """The app's models: resolves references, loads each once, and keeps them under a memory budget."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache = ModelCache(int(settings.memory_budget_gb * 2**30))

    # Asked on first use: torch loads then, after the page is up, not while the app starts.
    @functools.cached_property
    def device(self) -> torch.device:
        return pick_device()

    @functools.cached_property
    def dtype(self) -> torch.dtype:
        return pick_dtype(self.device, self.settings.dtype)

    @property
    def models_dir(self) -> Path:
        return self.settings.path("models")

    def operator_default(self, family: str) -> str:
        return operator_default(self.settings, family)

    def default(self, family: str) -> str:
        """The backbone of a family used when nothing else is named: the operator's choice, else the catalog's."""
        return self.operator_default(family) or catalog.DEFAULTS[family]

    def source(self, reference: str | catalog.ModelSource, default: str = "") -> catalog.ModelSource:
        """What reference names ("" = default, itself "" = the default chat model); a ModelSource (an owner's
        merged model, found by models.adapters) is already resolved.

        A typed folder inside the data directory is refused like an unknown name, except the converted offline
        models: users' merged models and adapters are reached by their owner's names only."""
        lazy.settled()  # every model's work starts here: after a warm-up's imports, never beside them
        if isinstance(reference, catalog.ModelSource):
            return reference
        try:
            source = catalog.resolve(reference, self.models_dir, default or self.default(catalog.DECODER))
        except UserError:
            # "holds no model" would tell a stranger that a folder of someone's data (a collection, a job) is there
            typed = os.path.expanduser(str(reference).strip())
            if os.path.isdir(typed) and self.private(typed):
                raise catalog.unknown_model(str(reference).strip()) from None
            raise
        if source.local and self.private(source.location):
            raise catalog.unknown_model(str(reference).strip())  # the very sentence a name that is nothing gets
        return source

    def private(self, location: str) -> bool:
        """Whether a folder holds users' data (under the data directory, outside its shared models folder)."""
        real = Path(os.path.realpath(location))
        return real.is_relative_to(os.path.realpath(self.settings.data_dir)) and not real.is_relative_to(
            os.path.realpath(self.models_dir))

    def get(self, kind: str, reference: str = "", default: str = "", adapter: lora.AdapterFiles | None = None):
        """The loaded model of a kind (models.kinds.KINDS) for reference ("" = default, itself "" = the kind's
        family default), loaded once. An adapter (encoder kinds only) gives a separate copy with the adapter merged
        in."""
        source = self.source(reference, default or self.default(KINDS[kind].family))
        loader = LOADERS[kind]
        on_disk = weights_on_disk(source)
        if on_disk > self.cache.budget:  # refused before loading: a load alone could exhaust the machine
            raise too_big(source.name, on_disk, self.cache.budget)
        key = CacheKey(kind, source.key, adapter.key if adapter else "")
        extra = [adapter] if adapter else []
        value = self.cache.get(key, lambda: in_own_thread(lambda: loader(self, source, *extra)), source.name)
        if isinstance(value, LoadedLM):
            value.cache_key = key  # adapters attached to it count towards its size
        return value

    def lm(self, reference: str = "", default: str = "") -> LoadedLM:
        return self.get("lm", reference, default)

    def embedder(self, reference: str = "", default: str = "") -> Embedder:
        return self.get("embedder", reference, default)

    def options(self, source: catalog.ModelSource) -> dict:
        return pretrained_options(self.settings, source)

    def loaded_sources(self, kind: str) -> list[catalog.ModelSource]:
        """What the loaded models of a kind were loaded from (copies with an adapter merged in left out)."""
        return [value.source for key, value in self.cache.values() if key.kind == kind and not key.adapter
                and not self.private(value.source.location)]  # an owner's merged model is theirs to list

    def loaded(self) -> list[dict]:
        """Loaded models for the system panel, with how a language model decodes (layout chosen, drafts kept)."""
        values = dict(self.cache.values())
        return [{"model": str(key), "memory_mb": round(size / 2**20), "decoding": decoding(values.get(key))}
                for key, size in self.cache.items()]


def decoding(value) -> str:
    """One line on how a loaded LM decodes; empty for other models."""
    if not isinstance(value, LoadedLM):
        return ""
    engine = value.engine
    if not engine.speculate:
        return f"{value.kernel}; speculative drafts off"
    kept = f"{engine.accepted:,} of {engine.drafted:,} draft tokens kept" if engine.drafted else "no drafts yet"
    return f"{value.kernel}; speculative drafts on ({kept})"


def load_lm(hub: ModelHub, source: catalog.ModelSource) -> tuple[LoadedLM, int]:
    log.info("loading %s from %s", source.name, source.location)
    model, tokenizer = load_pretrained(source, AutoModelForCausalLM, hub.options(source), KINDS["lm"].wanted,
                                       hub.dtype, hub.device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    context = token_limit(model.config, tokenizer, hub.settings.context_limit)
    fast = hub.settings.decode_kernels == "auto"
    measured = kernels.Measured(hub.models_dir / "kernels.json")  # a second start skips the measurement
    kernel = kernels.tune(model, fast, measured)
    lean = decoder.build(model, fast, measured)
    measured.save()
    engine = GenerationEngine(model, _eos_ids(model, tokenizer), tokenizer.pad_token_id or 0, context,
                              speculate=hub.settings.speculative, decoder=lean)
    described = kernel.text if lean is None else f"{kernel.text}; {lean.describe()}"
    size = model_bytes(model) + kernel.extra_bytes + (lean.extra_bytes if lean else 0)
    return LoadedLM(source, model, tokenizer, engine, described), size


def load_embedder(hub: ModelHub, source: catalog.ModelSource,
                  adapter: lora.AdapterFiles | None = None) -> tuple[Embedder, int]:
    log.info("loading embeddings %s from %s", source.name, source.location)
    model = load_sentence_transformer(source, hub.options(source), hub.device)
    if adapter is not None:
        model[0].model = lora.merged(model[0].auto_model, adapter, source.name)
    fast = hub.dtype == torch.bfloat16 or (hub.settings.dtype == "auto" and fast_bf16(hub.device))
    return Embedder(source, model, adapter, bf16=fast), model_bytes(model)


def _loaded_with(kind: ModelKind):
    """The loader of a kind that is its transformers class and nothing more."""
    def load(hub: ModelHub, source: catalog.ModelSource,
             adapter: lora.AdapterFiles | None = None) -> tuple[LoadedModel, int]:
        log.info("loading %s from %s", source.name, source.location)
        extra = lora.head_options(adapter) if adapter else {}
        model, tokenizer = load_pretrained(source, getattr(transformers, kind.auto_class), hub.options(source),
                                           kind.wanted, hub.dtype, hub.device, **extra)
        if adapter is not None:
            model = lora.merged(model, adapter, source.name)
        return LoadedModel(source, model, tokenizer), model_bytes(model)
    return load


# How each kind in models.kinds loads: language and embedding models their own way, the rest by their class.
SPECIAL = {"lm": load_lm, "embedder": load_embedder}
LOADERS = {name: SPECIAL.get(name) or _loaded_with(kind) for name, kind in KINDS.items()}
