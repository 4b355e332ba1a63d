"""A language model as every consumer sees it — chat, the LM-backed tasks, Inside the model, Evaluate and /v1 —
whether its weights are loaded here (models.loading.LoadedLM, served by its generation engine) or a serving
backend holds them (models.remote.RemoteLM). Consumers call these methods and never reach for the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from errors import UserError
from models import catalog
from models.engine import SamplingParams


class TextModel:
    source: catalog.ModelSource
    tokenizer: Any
    context_length: int  # tokens it reads at once, prompt and reply together
    holds_weights = False  # whether its weights are in this process (logits, scores and attention need them)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def generate(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
                 caller: int | None = None):
        """Start generating after prompt_ids (under the adapter's key; None = the base); the returned request
        streams its tokens (token_ids(), texts()) and stops when its iteration is closed. Requests of one caller
        take turns with other callers'."""
        raise NotImplementedError

    def finish_reason(self, request, max_new_tokens: int) -> str:
        """Why a finished request ended, in OpenAI's words: 'length' when it ran out of tokens or context."""
        full = len(request.prompt_ids) + request.produced >= self.context_length
        return "length" if request.produced >= max_new_tokens or full else "stop"

    def token_logprobs(self, ids: list[int], adapters: list[str | None]):
        """log p(ids[i] | ids[:i]) for i >= 1, one row per adapter (None = the base): a (rows, len(ids) - 1)
        tensor."""
        raise self._no_weights()

    def run(self, command: Callable[[Any], Any]) -> Any:
        """command(model) where the model lives, without gradients (between decode steps)."""
        raise self._no_weights()

    def reply_surprise(self, prompt_ids: list[int], reply: str, adapter: str | None) -> tuple[float, int]:
        """(sum of -log p over the reply's tokens after the prompt, their count) under the adapter; (0.0, 0) when
        there is nothing to score or the weights are elsewhere."""
        reply_ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
        ids = (list(prompt_ids) + list(reply_ids))[:self.context_length]
        start = len(prompt_ids)
        if start >= len(ids) or not self.holds_weights:
            return 0.0, 0
        picked = self.token_logprobs(ids, [adapter])[0, start - 1:]
        return float(-picked.sum()), int(picked.numel())

    def _no_weights(self) -> UserError:
        return UserError(f"'{self.name}' runs on the serving backend, so its weights are not here; this needs a "
                         "model loaded in this app.")
