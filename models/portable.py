"""Adapters that travel: reading a LoRA adapter someone uploaded (a zip or a folder's files) without trusting it,
checking it fits a base model, and the export bundle with its model card.

An upload is untrusted: only safetensors weights are read (a pickle `.bin` is refused), every zip member is
checked (no absolute paths, no `..`, no links, bounded count and size, read with a byte limit so a zip bomb stops
early), and nothing outside a temporary folder is written until the adapter is accepted.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from errors import TooLarge, UserError
from models import catalog
from models.kinds import KINDS
from models.speculation import DRAFTS_FILE as DRAFTS
from models.adapter_meta import META_FILE as META, AdapterMeta

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLED = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
CARD = "README.md"
KEPT = (CONFIG, WEIGHTS, META)  # what an import keeps; anything else in the upload is never written
MAX_MEMBERS = 64
MAX_CONFIG_BYTES = 1 << 20
# peft initialisations that replace the base layers' weights on load (the adapter needs the changed base)
REWRITES_BASE = ("pissa", "olora", "corda", "loftq")
MAX_RATIO = 200  # uncompressed / compressed size above this (and above 1 MB) is a zip bomb
LORA_TENSOR = re.compile(r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B)(?:\.[^.]+)?\.weight$")


def unpack(paths: list[tuple[str, str]], folder: Path, max_bytes: int) -> None:
    """Put the adapter files of an upload (one zip, or the files of an adapter folder) into folder, checked."""
    if len(paths) == 1 and paths[0][1].lower().endswith(".zip"):
        _unzip(Path(paths[0][0]), folder, max_bytes)
    else:
        for path, name in paths:
            base = PurePosixPath(name.replace("\\", "/")).name
            if base in PICKLED:
                _refuse_pickle()
            if base in KEPT:
                _copy_limited(Path(path), folder / base, max_bytes)
    if not (folder / WEIGHTS).exists() or not (folder / CONFIG).exists():
        raise UserError(f"An adapter needs {CONFIG} and {WEIGHTS}: upload a zip of the adapter's folder, or both "
                        "files.")


def _refuse_pickle() -> None:
    raise UserError("The adapter's weights are a .bin (pickle) file, which can run code when loaded: save it "
                    "as safetensors (model.save_pretrained(folder, safe_serialization=True)) and upload that.")


def _copy_limited(source: Path, target: Path, max_bytes: int) -> None:
    if source.stat().st_size > max_bytes:
        raise TooLarge(f"The file '{target.name}' is larger than {max_bytes / 2**20:.0f} MB.")
    shutil.copyfile(source, target)


def _unzip(archive: Path, folder: Path, max_bytes: int) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            if len(members) > MAX_MEMBERS:
                raise TooLarge(f"The zip holds {len(members)} entries; an adapter has a few (at most "
                               f"{MAX_MEMBERS}).")
            wanted = {}
            for member in members:
                path = _checked_member(member)
                if path.name in PICKLED:
                    _refuse_pickle()
                if member.file_size > max_bytes or (
                        member.file_size > 2**20 and member.file_size > MAX_RATIO * max(1, member.compress_size)):
                    raise TooLarge(f"The zip entry '{path}' unpacks to {member.file_size / 2**20:.0f} MB, more "
                                   "than an adapter can be; it was not unpacked.")
                if path.name in KEPT and not member.is_dir():
                    if path.name in wanted:
                        raise UserError(f"The zip holds more than one {path.name}: zip one adapter's folder.")
                    wanted[path.name] = member
            total = 0
            for name, member in wanted.items():
                total += _extract_limited(zipped, member, folder / name, max_bytes - total)
    except zipfile.BadZipFile:
        raise UserError("The file is not a readable zip archive.") from None


def _checked_member(member: zipfile.ZipInfo) -> PurePosixPath:
    name = member.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in path.parts or "\x00" in name:
        raise UserError(f"The zip entry '{name[:80]}' points outside the adapter's folder; the zip was refused.")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise UserError(f"The zip entry '{name[:80]}' is a link; the zip was refused.")
    return path


def _extract_limited(zipped: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, budget: int) -> int:
    """Write member to target, reading at most budget bytes whatever its header claims; the bytes written."""
    written = 0
    with zipped.open(member) as source, open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > budget:
                raise TooLarge("The zip unpacks to more than an adapter can be; it was not unpacked.")
            out.write(chunk)
    return written


def read_config(folder: Path) -> dict:
    """The adapter's adapter_config.json, checked to be a LoRA config peft can read."""
    from peft import LoraConfig

    path = folder / CONFIG
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise TooLarge(f"{CONFIG} is too large to be an adapter's configuration.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{CONFIG} is not valid JSON.") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise UserError(f"{CONFIG} is not a LoRA adapter's configuration (peft_type must be LORA).")
    known = set(LoraConfig.__dataclass_fields__)
    try:
        LoraConfig(**{k: v for k, v in config.items() if k in known and k not in ("peft_type", "auto_mapping")})
    except (TypeError, ValueError) as error:
        raise UserError(f"{CONFIG} is not a valid LoRA configuration: {str(error)[:200]}") from None
    if config.get("use_dora") or config.get("layer_replication"):
        raise UserError("DoRA and layer-replicating adapters are not supported; upload a plain LoRA adapter.")
    if str(config.get("init_lora_weights", True)).lower().startswith(REWRITES_BASE):
        raise UserError(f"This adapter was initialised with {config['init_lora_weights']}, which rewrites the base "
                        "model's weights when it loads (and would change them for everyone using the model); "
                        "convert it to a plain LoRA adapter first (peft: path_initial_model_for_weight_conversion).")
    return config


def weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape in the adapter's safetensors file (the header only: nothing is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except Exception:  # noqa: BLE001  (any unreadable file is the same mistake)
        raise UserError(f"{WEIGHTS} is not a readable safetensors file.") from None


def check_fits(shapes: dict[str, tuple[int, ...]], model, base_name: str) -> int:
    """That each LoRA matrix sits on a layer of model with matching sizes; returns the rank (largest r)."""
    import torch

    if hasattr(model, "get_base_model"):  # a peft model already serving other adapters: look at its base
        model = model.get_base_model()
    layers = dict(model.named_modules())
    ranks = []
    for name, shape in shapes.items():
        match = LORA_TENSOR.match(name)
        if not match:
            continue
        path, part = match.groups()
        module = layers.get(path) or layers.get(path.removeprefix("model.")) or layers.get(f"model.{path}")
        if module is None:
            raise UserError(f"The adapter changes a layer '{path}' that {base_name} does not have: it was trained "
                            "on another model. Choose its base model.")
        module = getattr(module, "base_layer", module)  # a layer peft wrapped for another adapter
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or len(shape) != 2:
            raise UserError(f"The adapter's layer '{path}' is not a linear layer in {base_name}.")
        # A Linear stores (out, in); GPT-2's Conv1D stores (in, out).
        out_features, in_features = (weight.shape[1], weight.shape[0]) if type(module).__name__ == "Conv1D" \
            else weight.shape
        size = in_features if part == "lora_A" else out_features
        if shape[1 if part == "lora_A" else 0] != size:
            raise UserError(f"The adapter does not fit {base_name}: its layer '{path}' expects size "
                            f"{shape[1 if part == 'lora_A' else 0]}, the model's has {size}. Choose its base model.")
        ranks.append(shape[0] if part == "lora_A" else shape[1])
    if not ranks:
        raise UserError(f"{WEIGHTS} holds no LoRA matrices.")
    return max(ranks)


def hub_id(meta: AdapterMeta) -> str:
    """The base as others can load it: its hub id for a catalog model, else its name (never a server path)."""
    backbone = catalog.find(meta.base_model)
    return backbone.hub_id if backbone else meta.base_model




def model_card(name: str, meta: AdapterMeta, kind: str = "lm") -> str:
    """The README.md of an exported adapter: what it is, how it was trained, how well, and how to load it."""
    task, base, rows, settings, metrics = meta.task, hub_id(meta), meta.rows, meta.settings, meta.metrics
    model_class = KINDS[kind].auto_class
    lines = ["---", f"base_model: {base}", "library_name: peft", "tags:", "- lora", "- lora-studio", f"- {task}",
             "---", "", f"# {name}", "",
             f"A LoRA adapter for **{task}** on `{base}`, made with LoRA Studio.", ""]
    if rows:
        lines += ["## Training data", "", f"{rows.get('kept', '?')} rows kept of {rows.get('read', '?')} read: "
                  f"{rows.get('train', '?')} to train on, {rows.get('validation', 0)} held out to check.", ""]
    if settings:
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in settings.items() if k != "system_prompt"] + [""]
    pairs = [key.removesuffix("_after") for key in metrics if key.endswith("_after")]
    if pairs:
        lines += ["## Results", "", "Measured on the held-out rows (or the training rows when too few were held "
                  "out), by the base model and with the adapter.", "", "| metric | base | adapter |", "|---|---|---|"]
        lines += [f"| {key.replace('_', ' ')} | {metrics.get(f'{key}_before', '')} | {metrics[f'{key}_after']} |"
                  for key in pairs] + [""]
    lines += ["## Use it", "", "```python", f"from transformers import {model_class}", "from peft import PeftModel",
              "", f"base = {model_class}.from_pretrained(\"{base}\")",
              f"model = PeftModel.from_pretrained(base, \"path/to/{name}\")", "```", ""]
    if kind in ("classifier", "span"):
        lines += ["The task's head is saved with the adapter (`modules_to_save`); for sentiment, pass the label map "
                  "in `lora_studio.json` (`labels`) as `num_labels`/`id2label` when loading the base.", ""]
    return "\n".join(lines)


def bundle_files(folder: Path, name: str, meta: AdapterMeta, kind: str) -> list[tuple[str, Path | str]]:
    """What an export holds, as (file name, source file or text): the PEFT files, the portable metadata and the
    model card. The training answers kept for drafts stay here: they are the user's data, not the adapter."""
    files: list[tuple[str, Path | str]] = [(f.name, f) for f in sorted(folder.iterdir()) if f.is_file()
                                           and f.suffix in (".json", ".safetensors") and f.name not in (META, DRAFTS)]
    return files + [(META, json.dumps(meta.portable(hub_id(meta)), indent=2, ensure_ascii=False)),
                    (CARD, model_card(name, meta, kind))]


def write_bundle(folder: Path, name: str, meta: AdapterMeta, target: Path, kind: str = "lm") -> Path:
    """An export zip at target, its files in a folder `name/` (as zipping the adapter's folder would)."""
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for file_name, content in bundle_files(folder, name, meta, kind):
            if isinstance(content, Path):
                bundle.write(content, f"{name}/{file_name}")
            else:
                bundle.writestr(f"{name}/{file_name}", content)
    tmp.replace(target)
    return target


def write_bundle_folder(folder: Path, name: str, meta: AdapterMeta, target: Path, kind: str = "lm") -> Path:
    """The export's files in the folder target (what a push uploads)."""
    for file_name, content in bundle_files(folder, name, meta, kind):
        if isinstance(content, Path):
            shutil.copyfile(content, target / file_name)
        else:
            (target / file_name).write_text(content, encoding="utf-8")
    return target
