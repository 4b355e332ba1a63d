"""Side by side: the same input on up to three variants (a base, adapters, other models) at once.

Every variant runs through its task's own public function, all of them together: variants on one base meet in
that model's engine, which runs them as one batch (each row with its own adapter), so comparing costs about one
answer's time. Chat streams: every update holds each variant's whole reply so far.
"""

from __future__ import annotations

import inspect
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from config import LOCAL_USER
from errors import UserError
from tasks.base import Endpoint, Task
from tasks.generation import Progress, no_progress
from tasks.spec import spec as task_spec

MAX_VARIANTS = 3
CHOSEN = ("model", "adapter")  # what a variant sets; the rest of the parameters are the shared inputs
FILLED = ("owner", "progress")  # filled in by the API edge, never inputs


class Comparison:
    """The /compare endpoint over the registered tasks."""

    def __init__(self, tasks: dict[str, Task]):
        self.tasks = tasks

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("compare", self.compare, generates=True)]

    def compare(self, task: str, inputs: dict | None = None, variants: list[dict] | None = None,
                collection: str = "", *, owner: str = LOCAL_USER,
                progress: Progress | None = None) -> Iterator[list[dict]]:
        """Run the task's own endpoint on each variant ({model, adapter}) with the same inputs (the endpoint's
        other parameters); yields [{model, adapter, result}] in the variants' order — for chat once per new
        token with each reply so far, for the other tasks once, when all are done. collection: every variant
        answers from it (chat's own `collection` input, given on its own)."""
        progress = progress or no_progress
        function = self._function(task)
        kwargs = self._inputs(task, function, inputs)
        if collection:
            if "collection" not in inspect.signature(function).parameters:
                raise UserError(f"Only chat answers from a collection; {task} takes none.")
            kwargs["collection"] = collection
        chosen = self._variants(function, variants)
        if task_spec(task).id == "chat":
            yield from self._stream(kwargs, chosen, owner, progress)
            return
        with ThreadPoolExecutor(max_workers=len(chosen), thread_name_prefix="compare") as pool:
            futures = [pool.submit(function, **kwargs, **variant, owner=owner, **self._progress(function, progress))
                       for variant in chosen]
            results = [future.result() for future in futures]
        yield [{**_named(variant), "result": result} for variant, result in zip(chosen, results)]

    def _function(self, task: object):
        spec = task_spec(task if isinstance(task, str) else "")
        endpoint = next((e for e in self.tasks[spec.id].endpoints() if e.api_name == spec.id), None)
        if endpoint is None:
            raise UserError(f"The {spec.title} tab has nothing to compare.")
        return endpoint.fn

    @staticmethod
    def _inputs(task: str, function, inputs: object) -> dict:
        if inputs in (None, ""):
            inputs = {}
        if not isinstance(inputs, dict):
            raise UserError("Give the inputs as a dict of the task's parameters, e.g. {\"message\": \"Hi\"}.")
        names = [n for n in inspect.signature(function).parameters if n not in CHOSEN + FILLED]
        unknown = [str(key)[:40] for key in inputs if key not in names]
        if unknown:
            raise UserError(f"'{unknown[0]}' is not an input of {task}; it takes: {', '.join(names)}.")
        return dict(inputs)

    @staticmethod
    def _variants(function, variants: object) -> list[dict]:
        if not isinstance(variants, list) or not 1 <= len(variants) <= MAX_VARIANTS:
            raise UserError(f"Give 1 to {MAX_VARIANTS} variants to compare, each {{\"model\": ..., \"adapter\": ...}}.")
        takes = [n for n in CHOSEN if n in inspect.signature(function).parameters]
        chosen = []
        for variant in variants:
            if not isinstance(variant, dict) or any(k not in CHOSEN for k in variant) or any(
                    not isinstance(v, str) for v in variant.values()):
                raise UserError("Each variant is {\"model\": \"...\", \"adapter\": \"...\"} (either may be empty).")
            if variant.get("model") and "model" not in takes:
                raise UserError("This task's model is fixed (the collection's); compare its adapters instead.")
            chosen.append({name: variant.get(name, "") for name in takes})
        return chosen

    @staticmethod
    def _progress(function, progress: Progress) -> dict:
        return {"progress": progress} if "progress" in inspect.signature(function).parameters else {}

    def _stream(self, kwargs: dict, variants: list[dict], owner: str, progress: Progress) -> Iterator[list[dict]]:
        """Chat on every variant at once: all replies are started before any is read (so the ones on one base
        enter its engine together), then each new token updates its column."""
        chat = self.tasks["chat"]
        prepared = [chat.prepare(**kwargs, **variant, owner=owner) for variant in variants]
        replies = [chat.start(*ready) for ready in prepared]
        texts = [""] * len(replies)
        updates: queue.Queue = queue.Queue()

        def read(i: int) -> None:
            try:
                for text in replies[i].texts():
                    updates.put((i, text))
            except Exception as error:  # noqa: BLE001  (the reader's failure ends the comparison with it)
                updates.put((i, error))
            updates.put((i, None))

        readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(replies))]
        for reader in readers:
            reader.start()
        running = len(replies)
        try:
            while running:
                i, text = updates.get()
                if text is None:
                    running -= 1
                    continue
                if isinstance(text, Exception):
                    raise text
                texts[i] = text
                progress(0.0, "Comparing")  # stops here once the client has gone
                yield [{**_named(v), "result": t} for v, t in zip(variants, texts)]
        finally:
            for reply in replies:  # a stop, an error or a gone client: no variant keeps generating
                reply.request.stop.set()
        yield [{**_named(v), "result": t} for v, t in zip(variants, texts)]


def _named(variant: dict) -> dict:
    return {"model": variant.get("model", ""), "adapter": variant.get("adapter", "")}
