"""The serving backend's adapters kept in step with the adapter library (`--serve-backend`): a chat adapter that
is trained, imported, renamed or loaded here is loaded on the backend at once through the engine's own route
(vLLM's /v1/load_lora_adapter, SGLang's /load_lora_adapter, LoRA Studio's), and one deleted or renamed away is
unloaded. A backend without those routes keeps the way it had: an adapter reaches it when it is restarted with it;
the log and the System panel say so.

One observer for every way an adapter changes, a training worker's save in its own process and another app on the
same data directory included: it watches the store's folders (a save, a rename and a delete each rename a folder
inside an owner's folder, which changes that folder's mtime) and, on a change, compares the chat adapters there
with the ones loaded on the backend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from errors import UserError
from models.adapter_meta import AdapterMeta
from models.adapters import AdapterService
from models.remote import BackendDown, ServingBackend, remote_name

log = logging.getLogger(__name__)
EVERY_S = 1.0  # how often the store's folders are looked at (a few stat calls)
RETRY_S = 10.0  # how soon a sync that failed (the backend away) is tried again


class AdapterSync:
    """Loads the library's chat adapters on the backend and unloads the ones that left it."""

    def __init__(self, backend: ServingBackend, adapters: AdapterService, hub, every_s: float = EVERY_S):
        self.backend, self.adapters, self.hub, self.every_s = backend, adapters, hub, every_s
        self._seen: tuple | None = None
        self._said: set[str] = set()  # warnings logged once

    def start(self, serving: Callable[[], bool]) -> AdapterSync:
        """Follow the store in a thread of its own from when serving() says the app serves until it says no more."""
        threading.Thread(target=self._loop, args=(serving,), name="backend-adapters", daemon=True).start()
        return self

    def _loop(self, serving: Callable[[], bool]) -> None:
        while not serving():
            time.sleep(self.every_s)
        while serving():
            seen = self._signature()
            pause = self.every_s
            if seen != self._seen:
                self._seen = seen
                try:
                    self.sync()
                except Exception as error:  # noqa: BLE001  (the app serves on; an adapter is loaded on first use)
                    self._warn(f"the serving backend's adapters could not be brought up to date: {error}")
                    self._seen, pause = None, RETRY_S  # tried again a little later
            time.sleep(pause)

    def _signature(self) -> tuple:
        root = self.adapters.store.root
        try:
            return tuple(sorted((d.name, d.stat().st_mtime_ns) for d in root.iterdir() if d.is_dir()))
        except OSError:  # no adapters yet (or a folder removed while looked at: the next look sees it)
            return ()

    def wanted(self) -> dict[str, tuple[str, Path]]:
        """The chat adapters the backend should hold: their name there -> (their base's id there, their folder);
        one whose base it does not serve is left out (it could not run there)."""
        store, found = self.adapters.store, {}
        for adapter in store.list("", "chat", everyone=True) if store.root.exists() else []:
            folder = store.folder(adapter["owner"], adapter["name"])
            try:
                base = self.backend.served_id(self.hub.source(self.adapters.base_of(AdapterMeta.read(folder))))
            except BackendDown:
                raise  # away: nothing is known, so nothing is unloaded
            except UserError:
                continue  # its base is not served there
            found[remote_name(adapter["owner"], adapter["name"], adapter["created"])] = (base, folder)
        return found

    def sync(self) -> None:
        """Load what the library has and the backend lacks; unload what this app loaded and the library lost."""
        wanted, loaded = self.wanted(), self.backend.loaded()
        for name, (base, folder) in wanted.items():
            if name in loaded or self.backend.runtime_loading is False:
                continue
            try:
                self.backend.register(base, name, folder)
            except UserError as error:
                self._warn(str(error))
        for name, served in loaded.items():
            if name not in wanted and not self.backend.unregister(served):
                self._warn(f"the serving backend {self.backend.url} keeps deleted adapters until it restarts "
                           "(it has no unload_lora_adapter route)")

    def _warn(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.warning("%s", message)
