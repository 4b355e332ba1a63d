"""The adapter library: rename, export as a standard PEFT zip with a model card, import one trained anywhere,
merge one into its base as a new local model, export a chat adapter or merged model as GGUF for llama.cpp and
Ollama, and push one to the Hugging Face Hub.

Not a task (it has no spec): the app publishes these beside the training endpoints. Every operation acts on the
caller's own adapters (a shared one can be exported and merged, not renamed); an import is checked completely in
a temporary folder before anything is written to the store (models/portable.py).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from config import LOCAL_USER
from errors import UserError
from models import catalog, engines, gguf_export, lazy, lora, ollama, portable
from models.adapter_meta import AdapterMeta, MergedMeta
from models.adapters import sanitize_name
from models.cache import too_big
from models.kinds import KINDS
from models.loading import load_pretrained, load_sentence_transformer, read_config, weights_on_disk
from tasks.base import Context, Endpoint, Upload, download_folder
from tasks.spec import spec as task_spec, trainable_spec

torch = lazy.module("torch")
transformers = lazy.module("transformers")

CARRIED = {"chat_template": str, "system_prompt": str, "labels": list, "metrics": dict, "settings": dict,
           "rows": dict}  # what an imported lora_studio.json may bring (anything else in it is ignored)


class AdapterLibrary:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.adapters = ctx.adapters  # models.adapters.AdapterService
        self.store = ctx.adapters.store

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("rename_adapter", self.rename_adapter), Endpoint("export_adapter", self.export_adapter),
                Endpoint("import_adapter", self.import_adapter), Endpoint("merge_adapter", self.merge_adapter),
                Endpoint("push_adapter", self.push_adapter), Endpoint("serve_commands", self.serve_commands),
                Endpoint("export_gguf", self.export_gguf)]

    # ---- serving at scale ----------------------------------------------------------------------------------
    def serve_commands(self, names: list[str], *, owner: str = LOCAL_USER) -> list[dict]:
        """The vLLM and SGLang command lines that serve these chat adapters (one per base model they were trained
        on): each names the adapters, the folders they are read from and their largest rank. The operator sees
        this server's folders; another user sees ./<name>, where their exported zips unpack."""
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise UserError("Pick one or more chat adapters to serve.")
        operator = self.ctx.accounts.is_admin(owner)
        groups: dict[str, list[engines.Served]] = {}
        for name in dict.fromkeys(n.strip() for n in names):
            meta = self.store.meta(owner, name)
            if _kind(meta) != "lm":
                raise UserError(f"The adapter '{name}' is a {meta.task} adapter: vLLM and SGLang serve the "
                                "adapters of language models (chat).")
            folder = self.store.locate(owner, name)[1]
            served = engines.Served(folder.name, str(folder) if operator else f"./{folder.name}",
                                    engines.adapter_rank(folder))
            groups.setdefault(self._served_base(meta, operator), []).append(served)
        return [engines.commands(base, adapters) for base, adapters in groups.items()]

    @staticmethod
    def _served_base(meta: AdapterMeta, operator: bool) -> str:
        """The base as an engine loads it: its hub id (a GPU box downloads it), else its folder (by name only
        for a user who is not the operator)."""
        backbone = catalog.find(meta.base_model) or catalog.find(meta.base_hub_id)
        if backbone is not None:
            return backbone.hub_id
        location = meta.base_location or meta.base_model
        return location if operator else f"./{Path(location).name}"

    # ---- rename, export ------------------------------------------------------------------------------------
    def rename_adapter(self, name: str, new_name: str = "", *, owner: str = LOCAL_USER) -> dict:
        """Rename one of your adapters; returns {name, old_name}."""
        old = name if isinstance(name, str) else ""
        return {"name": self.store.rename(owner, old, new_name if isinstance(new_name, str) else ""),
                "old_name": old}

    def export_adapter(self, name: str, *, owner: str = LOCAL_USER) -> Upload:
        """A zip of the adapter: adapter_config.json, adapter_model.safetensors, lora_studio.json and a model
        card (README.md); it loads with plain peft."""
        _, folder = self.store.locate(owner, name if isinstance(name, str) else "")
        meta = AdapterMeta.read(folder)
        target = download_folder() / f"{folder.name}.zip"
        return Upload(str(portable.write_bundle(folder, folder.name, meta, target, _kind(meta))), target.name)

    # ---- import ----------------------------------------------------------------------------------------------
    def import_adapter(self, data: Upload | list[Upload], name: str = "", task: str = "", base: str = "", *,
                       owner: str = LOCAL_USER) -> dict:
        """Import a LoRA adapter trained anywhere (a zip of its folder, or its files) on a base this app can load.

        task "" takes the one in its lora_studio.json, else chat; base "" takes the one it names."""
        files = [data] if isinstance(data, Upload) else list(data or [])
        if not files:
            raise UserError("Upload the adapter: a zip of its folder, or its adapter_config.json and "
                            "adapter_model.safetensors.")
        wanted = sanitize_name(name if isinstance(name, str) and name.strip() else Path(files[0].name).stem)
        with tempfile.TemporaryDirectory(prefix="lora-studio-import-") as tmp:
            folder = Path(tmp)
            portable.unpack([(f.path, f.name) for f in files], folder, self._max_bytes())
            config = portable.read_config(folder)
            carried = _carried(folder)
            task = (task or "").strip() if isinstance(task, str) else ""
            task = trainable_spec(task or carried.get("task") or "chat").id
            shapes = portable.weight_shapes(folder)
            head = self._head(task, config, shapes, carried)
            source = self.ctx.hub.source(self._base_for(base, carried, config, task), self._default(task))
            model, fingerprint = self._base_model(task, source)
            rank = portable.check_fits(shapes, model, source.name)
            fields = {"settings": {"rank": rank, "alpha": config.get("lora_alpha")}, **carried.get("fields", {})}
            meta = AdapterMeta(**{**fields, **head}, task=task, base_model=source.name,
                               base_location=source.location, base_fingerprint=fingerprint, owner=owner,
                               imported={"file": files[0].name[:200], "rank": rank,
                                         "trained_on": str(config.get("base_model_name_or_path") or "")[:200]})

            def write(target: Path) -> None:
                for kept in (portable.CONFIG, portable.WEIGHTS):
                    shutil.copyfile(folder / kept, target / kept)

            final = self.store.save(owner, wanted, write, meta)
        size = self.store.folder(owner, final).joinpath(portable.WEIGHTS).stat().st_size
        return {"name": final, "task": task, "base": source.name, "rank": rank, "size_mb": round(size / 2**20, 2)}

    def _max_bytes(self) -> int:
        return self.ctx.settings.max_upload_mb * 4 * 2**20  # weights hardly compress: unpacked ≈ uploaded

    def _default(self, task: str) -> str:
        family = task_spec(task).families[0]
        return task_spec(task).defaults.get(family) or self.ctx.hub.default(family)

    @staticmethod
    def _base_for(base: object, carried: dict, config: dict, task: str) -> str:
        """The base the import names: the caller's choice, else the one its metadata or peft config names when
        this app knows it (a catalog name or hub id), else "" (the task's default)."""
        if isinstance(base, str) and base.strip():
            return base.strip()
        for named in (carried.get("base_model"), carried.get("base_hub_id"), config.get("base_model_name_or_path")):
            backbone = catalog.find(named) if isinstance(named, str) and named else None
            if backbone is not None:
                return backbone.name
        trained_on = config.get("base_model_name_or_path")
        return trained_on if isinstance(trained_on, str) and "/" in trained_on and not trained_on.startswith(
            ("/", ".")) else ""  # a hub id; a path on someone else's machine means nothing here

    def _base_model(self, task: str, source: catalog.ModelSource):
        """The loaded base the adapter must fit, and its fingerprint (what every later use checks)."""
        kind = task_spec(task).adapter_kind
        if kind == "lm":
            lm = self.ctx.hub.lm(source.location)
            return lm.model, lm.fingerprint
        loaded = self.ctx.hub.get(kind, source.location)
        model = loaded.model[0].auto_model if kind == "embedder" else loaded.model
        return model, lora.encoder_fingerprint(model)

    @staticmethod
    def _head(task: str, config: dict, shapes: dict[str, tuple[int, ...]], carried: dict) -> dict:
        """An encoder task's head: it must be saved with the adapter (modules_to_save); a classifier's labels."""
        heads = task_spec(task).head
        if not heads:
            return {}
        saved = config.get("modules_to_save") or []
        head = next((h for h in heads if h in saved), None)
        if head is None:
            raise UserError(f"A {task} adapter must carry its head: its adapter_config.json lists no "
                            f"{' or '.join(heads)} in modules_to_save.")
        if task != "sentiment":
            return {}
        rows = [shape[0] for name, shape in shapes.items()
                if f"{head}." in name and name.endswith("weight") and "lora_" not in name and len(shape) == 2]
        if not rows:
            raise UserError(f"The adapter lists {head} in modules_to_save but its weights are not in the file.")
        labels = carried.get("fields", {}).get("labels")
        if not labels or len(labels) != rows[-1] or not all(isinstance(label, str) for label in labels):
            labels = [f"label_{i}" for i in range(rows[-1])]
        return {"labels": labels}

    # ---- merge -----------------------------------------------------------------------------------------------
    def merge_adapter(self, name: str, new_name: str = "", *, owner: str = LOCAL_USER) -> dict:
        """Merge an adapter into its base and save the result as a new local model (safetensors) that the model
        boxes accept by its name; returns {model, base, task}."""
        _, folder = self.store.locate(owner, name if isinstance(name, str) else "")
        meta = AdapterMeta.read(folder)
        kind = _kind(meta)
        wanted = sanitize_name(new_name if isinstance(new_name, str) and new_name.strip() else
                               f"{folder.name}-merged")  # a bad name is refused before any work
        source = self.ctx.hub.source(self.adapters.base_of(meta))
        on_disk = weights_on_disk(source)
        if on_disk > self.ctx.hub.cache.budget:  # the copy is loaded in this process: the budget holds for it too
            raise too_big(source.name, on_disk, self.ctx.hub.cache.budget)
        save = self._merged(source, folder, meta) if kind == "lm" else self._merged_encoder(kind, source, folder,
                                                                                              meta)
        provenance = MergedMeta(folder.name, meta.task, meta.base_model, KINDS[kind].merged_family,
                                portable.hub_id(meta), meta.system_prompt, time.time())

        def write(target: Path) -> None:
            save(target)
            provenance.write(target)

        final, _ = self.adapters.merged.save(owner, wanted, write)
        return {"model": final, "base": meta.base_model, "task": meta.task}

    def _merged(self, source: catalog.ModelSource, folder: Path, meta: AdapterMeta):
        """A fresh fp32 copy of the base with the adapter merged in (the served copy is never touched)."""
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model, tokenizer = load_pretrained(source, AutoModelForCausalLM, self.ctx.hub.options(source),
                                           "a text-generation model", torch.float32, torch.device("cpu"))
        if lora.weights_fingerprint(model) != meta.base_fingerprint:
            raise UserError(f"The adapter was trained on other weights than {source.name} has now; it cannot be "
                            "merged into them.")
        if meta.chat_template:
            tokenizer.chat_template = meta.chat_template  # the merged model chats as the adapter did
        merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload().eval()
        return lambda target: (merged.save_pretrained(target), tokenizer.save_pretrained(target))

    def _merged_encoder(self, kind: str, source: catalog.ModelSource, folder: Path, meta: AdapterMeta):
        """A fresh fp32 copy of an encoder with the adapter's LoRA and head merged in, as a saver: a classifier
        or span model saves as a transformers folder (its labels in its config), an embedder as a
        sentence-transformers folder."""
        files = lora.AdapterFiles(folder.name, "", str(folder), meta)
        options = self.ctx.hub.options(source)
        if kind == "embedder":
            model = load_sentence_transformer(source, options, torch.device("cpu"))
            model[0].model = lora.merged(model[0].auto_model, files, source.name)
            return lambda target: model.save(str(target))
        model, tokenizer = load_pretrained(source, getattr(transformers, KINDS[kind].auto_class), options,
                                           f"a {meta.task} model", torch.float32, torch.device("cpu"),
                                           **lora.head_options(files))
        merged = lora.merged(model, files, source.name)
        return lambda target: (merged.save_pretrained(target), tokenizer.save_pretrained(target))

    # ---- GGUF for llama.cpp and Ollama ------------------------------------------------------------------------
    def export_gguf(self, name: str, quantization: str = "q8_0", *, owner: str = LOCAL_USER,
                    progress: gguf_export.Progress | None = None) -> Upload:
        """A zip for llama.cpp and Ollama: a chat adapter as a GGUF LoRA with its base model as GGUF, or one of your
        merged models as one GGUF file, at quantization f16, q8_0 or q4_0; with an Ollama Modelfile and a card."""
        progress = progress or (lambda fraction, message: None)
        quantization = quantization.strip().lower() if isinstance(quantization, str) and quantization.strip() \
            else "q8_0"
        if quantization not in gguf_export.QUANTIZATIONS:
            raise UserError(f"Choose the quantization {', '.join(gguf_export.QUANTIZATIONS)}, not "
                            f"'{quantization[:20]}'.")
        name = name.strip() if isinstance(name, str) else ""
        merged = self.adapters.merged.find(owner, name)
        if merged is not None:
            made = MergedMeta.read(merged)
            task, folder, meta, system = made.task, None, None, made.system_prompt
            source = self.ctx.hub.source(self.adapters.reference(owner, name))
        else:
            _, folder = self.store.locate(owner, name)
            meta = AdapterMeta.read(folder)
            task, system = meta.task, meta.system_prompt
            source = self.ctx.hub.source(self.adapters.base_of(meta))
        if task_spec(task).adapter_kind != "lm":
            raise UserError(f"GGUF export is for chat models; '{name}' is a {task} "
                            f"{'model' if merged is not None else 'adapter'}.")
        gguf_export.family(read_config(source, self.ctx.hub.options(source)), source.name)  # before any loading
        on_disk = weights_on_disk(source)
        if on_disk > self.ctx.hub.cache.budget:
            raise too_big(source.name, on_disk, self.ctx.hub.cache.budget)
        progress(0.02, f"loading {source.name}")
        model, tokenizer = load_pretrained(source, transformers.AutoModelForCausalLM, self.ctx.hub.options(source),
                                           "a text-generation model", torch.float32, torch.device("cpu"))
        if meta is not None and lora.weights_fingerprint(model) != meta.base_fingerprint:
            raise UserError(f"The adapter was trained on other weights than {source.name} has now; it cannot be "
                            "exported with them.")
        template = (meta.chat_template if meta else None) or tokenizer.chat_template
        bundle = download_folder()
        try:
            files = bundle / (folder.name if folder else name)
            files.mkdir()
            _check_disk(bundle, 2 * gguf_export.model_bytes(model, quantization))  # the files, then the zip
            model_file = f"{sanitize_name(source.name if folder else name)}.{quantization}.gguf"
            adapter_file = f"{folder.name}.lora.gguf" if folder else None
            gguf_export.write_model(files / model_file, model, tokenizer, quantization, source.name, template,
                                    progress, 0.1, 0.85)
            if folder:
                gguf_export.write_lora(files / adapter_file, folder, model.config, folder.name, progress, 0.85, 0.9)
            system = system or ollama.implied_system(tokenizer, template)
            (files / "Modelfile").write_text(ollama.modelfile(model_file, adapter_file, template, system,
                                                              tokenizer.eos_token), encoding="utf-8")
            (files / "README.md").write_text(ollama.card(files.name, model_file, adapter_file, quantization,
                                                         portable.hub_id(meta) if meta else source.name),
                                             encoding="utf-8")
            progress(0.92, "packing the zip")
            target = bundle / f"{files.name}-gguf-{quantization}.zip"
            ollama.write_zip(files, target)
            shutil.rmtree(files)
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)  # a cancelled or failed export leaves nothing behind
            raise
        return Upload(str(target), target.name)

    # ---- push ------------------------------------------------------------------------------------------------
    def push_adapter(self, name: str, repo_id: str = "", token: str = "", private: bool = True, *,
                     owner: str = LOCAL_USER) -> dict:
        """Upload an adapter (or one of your merged models, by its name) to the Hugging Face Hub with its model
        card, as a private repository unless private is False; returns {url}. The token is used once, never
        stored."""
        import huggingface_hub

        repo_id = repo_id.strip() if isinstance(repo_id, str) else ""
        if not catalog.HUB_ID.match(repo_id):
            raise UserError("Give the repository as 'your-name/model-name'.")
        if not isinstance(token, str) or not token.strip():
            raise UserError("Give a Hugging Face access token with write permission (huggingface.co/settings/"
                            "tokens); it is used for this upload only.")
        name = name if isinstance(name, str) else ""
        with tempfile.TemporaryDirectory(prefix="lora-studio-push-") as tmp:
            folder = self._push_folder(owner, name, Path(tmp))
            if not catalog.hub_reachable():
                raise UserError("The Hugging Face Hub cannot be reached from this server; export the adapter and "
                                "upload it from a machine that is online.")
            api = huggingface_hub.HfApi(token=token.strip())
            try:
                url = api.create_repo(repo_id, private=bool(private), exist_ok=True)
                api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                                  commit_message=f"Upload {name} from LoRA Studio")
            except Exception as error:  # noqa: BLE001  (the hub's refusals are the user's to fix)
                raise UserError(f"The Hugging Face Hub refused the upload: {str(error).splitlines()[0][:200]}") \
                    from None
        return {"url": str(url)}

    def _push_folder(self, owner: str, name: str, tmp: Path) -> Path:
        """What a push uploads: the export bundle's files, or a merged model's folder."""
        merged = self.adapters.merged.find(owner, name)
        if merged is not None:
            return merged
        _, folder = self.store.locate(owner, name)
        meta = AdapterMeta.read(folder)
        return portable.write_bundle_folder(folder, folder.name, meta, tmp, _kind(meta))


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"The export needs about {needed / 2**20:,.0f} MB of free disk space and the server has "
                        f"{free / 2**20:,.0f} MB; free some space or pick a smaller quantization.")


def _kind(meta: AdapterMeta) -> str:
    """The kind of model an adapter's metadata says it applies to (its task's)."""
    return task_spec(meta.task).adapter_kind


def _carried(folder: Path) -> dict:
    """What an uploaded lora_studio.json says, type-checked: its task, base names and the fields in CARRIED."""
    path = folder / portable.META
    if not path.exists() or path.stat().st_size > portable.MAX_CONFIG_BYTES:
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(meta, dict):
        return {}
    named = {k: meta[k] for k in ("task", "base_model", "base_hub_id") if isinstance(meta.get(k), str)}
    return {**named, "fields": {k: meta[k] for k, kind in CARRIED.items() if isinstance(meta.get(k), kind)}}

