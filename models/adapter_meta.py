"""What travels with an adapter or a merged model (`lora_studio.json`): typed, versioned records.

One writer and one reader each, the way peft's configs are dataclasses that load older files: a file of an
older version is migrated on reading (missing fields take their defaults), a field this version does not know
is kept as it was, and a file of a newer version is refused with a sentence instead of being misread.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from errors import UserError
from models import catalog

META_FILE = "lora_studio.json"
META_VERSION = 1
SERVER_ONLY = ("base_location", "owner", "job_id")  # where things live on this server and who trained it


def _known(cls, data: dict) -> tuple[dict, dict]:
    """data split into the record's own fields and the rest (kept, never lost on a rewrite)."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


def _checked_version(data: dict, what: str) -> None:
    version = data.get("version", 0)
    if not isinstance(version, int) or version > META_VERSION:
        raise UserError(f"This {what} was saved by a newer LoRA Studio (metadata version {version}); update the "
                        "app to use it.")


def _write_json(path: Path, data: dict) -> None:
    """Write data to path through a temporary file renamed into place (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


class _Record:
    """What both records share: JSON with the fields of other versions put back, and the file in a folder."""

    @classmethod
    def from_json(cls, data: dict):
        raise NotImplementedError

    def to_json(self) -> dict:
        data = asdict(self)
        return {**data.pop("extra"), **data}

    @classmethod
    def read(cls, folder: Path):
        return cls.from_json(json.loads((Path(folder) / META_FILE).read_text(encoding="utf-8")))

    def write(self, folder: Path) -> None:
        _write_json(Path(folder) / META_FILE, self.to_json())


@dataclass
class AdapterMeta(_Record):
    """A trained or imported adapter: its task, the base it fits, how it chats and how it was made."""

    task: str  # the task id it was trained for
    base_model: str  # the base's catalog name, else the name it was loaded by
    base_location: str = ""  # where this server loads the base from (a folder or hub id; stays on the server)
    base_fingerprint: str = ""  # models.lora.weights_fingerprint of the base: every use checks it
    base_hub_id: str = ""  # in an exported file: the base as others load it
    chat_template: str | None = None  # the template it was trained with (None: the base's own)
    system_prompt: str = ""
    labels: list[str] = field(default_factory=list)  # a classifier's labels, in the order of its head
    data_fingerprint: str = ""
    rows: dict = field(default_factory=dict)  # read, kept, train, validation
    settings: dict = field(default_factory=dict)  # the training settings (training.presets.TrainSettings)
    metrics: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # the "did it learn?" report
    duration_s: float = 0.0
    job_id: str = ""
    owner: str = ""
    imported: dict = field(default_factory=dict)  # file, trained_on, rank: for an adapter trained elsewhere
    created: float = 0.0
    version: int = META_VERSION
    extra: dict = field(default_factory=dict)  # fields of other versions, written back as they came

    @classmethod
    def from_json(cls, data: dict) -> AdapterMeta:
        """The record in a lora_studio.json of this or an older version."""
        if not isinstance(data, dict) or not isinstance(data.get("task"), str):
            raise UserError("The adapter's lora_studio.json is not LoRA Studio metadata.")
        _checked_version(data, "adapter")
        known, extra = _known(cls, data)
        known.setdefault("base_model", "")
        known["labels"] = list(known.get("labels") or [])  # version 0 wrote null for "no labels"
        return cls(**{**known, "version": META_VERSION}, extra=extra)

    def stamped(self) -> AdapterMeta:
        """The record as saved: this version, and its creation time (kept when it has one)."""
        return replace(self, version=META_VERSION, created=self.created or time.time())

    def portable(self, hub_id: str) -> dict:
        """What leaves the server in an export: without where things live here or who trained it."""
        data = {k: v for k, v in self.to_json().items() if k not in SERVER_ONLY}
        return {**data, "base_hub_id": hub_id}


@dataclass
class MergedMeta(_Record):
    """Where a merged model came from: the adapter, its task and base, and the family it is listed under."""

    merged_from: str
    task: str
    base_model: str
    family: str | None  # None: its config says (a classifier or span model is an encoder)
    base_hub_id: str = ""
    system_prompt: str = ""
    created: float = 0.0
    version: int = META_VERSION
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> MergedMeta:
        if not isinstance(data, dict):
            raise UserError("The merged model's lora_studio.json is not LoRA Studio metadata.")
        _checked_version(data, "model")
        known, extra = _known(cls, data)
        defaults = {"merged_from": "", "task": "chat", "base_model": "", "family": catalog.DECODER}
        return cls(**{**defaults, **known, "version": META_VERSION}, extra=extra)

