"""Chat with an instruction model (streaming), and continue-text for base models such as GPT-2."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from config import LOCAL_USER
from errors import ContextTooLong, TooLarge, UserError
from models import catalog
from models.engine import GREEDY_BELOW, Request, SamplingParams, new_caller
from models.text_model import TextModel
from tasks.base import Endpoint, Task, require_range, require_text
from tasks.grounding import (INSTRUCTION, NOTHING_FOUND, PASSAGE_SHARE, PASSAGES, Passage, asks_documents, fitted,
                             grounded_message, relevant, retrieval_queries, with_citations, without_sources)
from tasks.spec import DataField, TaskSpec


@dataclass
class Prompt:
    """A prompt ready for the engine: the model, its token ids, the adapter's engine key, old turns dropped, and a
    notice about the message (Chinese to an English-first model)."""

    lm: TextModel
    ids: list[int]
    adapter: str | None = None
    dropped: int = 0
    notice: str = ""
    opening: str = ""  # what the reply starts with, already at the end of the prompt (a forced tool call's start)
    passages: list[Passage] = field(default_factory=list)  # the documents' passages it holds, to cite
    known: str = ""  # the reply itself when no model needs asking (nothing in the documents is about it)
    sources_line: bool = True  # a cited reply ends with its Sources line (/chat); /v1 gives them as a field

    def start(self, params: SamplingParams, caller: int | None = None, notice: str = "") -> Reply:
        """The reply to this prompt, generating (the one place a reply is started: chat, completion, /v1)."""
        if self.known:
            request = Request([], params)
            request.stop.set()
            return Reply(self.lm, request, notice, known=self.known)
        return Reply(self.lm, self.lm.generate(self.ids, params, self.adapter, caller), notice, self.passages,
                     sources_line=self.sources_line)


@dataclass
class Reply:
    """A reply being generated (by the local engine or a serving backend): the notice to show (if any) and the
    growing text."""

    lm: TextModel
    request: Request
    notice: str = ""
    passages: list[Passage] = field(default_factory=list)
    known: str = ""
    sources_line: bool = True
    citations: list[Passage] = field(default_factory=list)  # the passages the finished reply cites

    @property
    def tokens(self) -> int:
        """Tokens generated so far."""
        return self.request.produced

    @property
    def finish_reason(self) -> str:
        """Why the finished reply ended: 'length' (out of tokens or context) or 'stop'."""
        return self.lm.finish_reason(self.request, self.request.params.max_new_tokens)

    def texts(self) -> Iterator[str]:
        """The whole reply so far, once per new token; stopping the iteration stops generation. A reply from
        documents ends with its citations."""
        if self.known:
            return iter((self.known,))
        texts = self.request.texts(self.lm.tokenizer)
        return self._cited(texts) if self.passages else texts

    def _cited(self, texts: Iterator[str]) -> Iterator[str]:
        last = ""
        try:
            for last in texts:
                yield last
        finally:  # also when the reader stops early (a /v1 stop string): the citations are still the reply's
            texts.close()
            final, self.citations = with_citations(last, self.passages, self.sources_line)
        if final != last:
            yield final

    def text(self) -> str:
        last = ""
        for last in self.texts():
            pass
        return last


def message_text(content: object) -> str:
    """A message's text, whether content is a string or a list of parts (as Gradio's chatbot sends)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, list):
        return "\n".join(message_text(part) for part in content)
    return "" if content is None else str(content)


def clean_history(history: object) -> list[dict]:
    """History as [{role, content: str}], user/assistant turns only; a clear error for anything else."""
    if history in (None, ""):
        return []
    if not isinstance(history, list):
        raise UserError("The history must be a list of messages like {'role': 'user', 'content': '...'}.")
    cleaned = []
    for message in history:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
            raise UserError("Each history message needs a role (user or assistant) and a content.")
        if message["role"] != "system":
            cleaned.append({"role": message["role"], "content": message_text(message.get("content"))})
    return cleaned


def sampling(temperature: float, top_p: float, max_new_tokens: int, seed: int | None = None) -> SamplingParams:
    require_range(temperature, "Temperature", 0.0, 2.0)
    require_range(top_p, "Top-p", 0.01, 1.0)
    require_range(max_new_tokens, "Max new tokens", 1, 4096)
    temperature = 0.0 if temperature < GREEDY_BELOW else float(temperature)  # near 0 means greedy
    return SamplingParams(int(max_new_tokens), temperature, float(top_p), seed)


class ChatTask(Task):
    spec = TaskSpec(
        id="chat", title="Chat", defaults={catalog.DECODER: "SmolLM2-135M-Instruct"},
        endpoints=("chat", "complete"),
        fields=(DataField("prompt", "what the user says"), DataField("response", "the reply the model should give"),
                DataField("system", "a system prompt for this row", required=False)),
        sample="chat_facts.jsonl", conversations=True,
        formats="Chat data: `messages`, ShareGPT `conversations`, Alpaca `instruction`/`output`, two columns "
                "(prompt, response), or plain text; preference pairs (`prompt`, `chosen`, `rejected`) train "
                "with DPO.",
        metrics={"preference_accuracy": "preference accuracy", "reward_margin": "reward margin",
                 "perplexity": "perplexity", "exact_match": "exact match", "f1": "F1"},
        trainable=True, evaluated=True)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("chat", self.chat, generates=True), Endpoint("complete", self.complete, generates=True)]

    def chat(self, message: str, history: list[dict] | None = None, system_prompt: str = "", model: str = "",
             adapter: str = "", temperature: float = 0.3, top_p: float = 0.9, max_new_tokens: int = 256,
             collection: str = "", *, owner: str = LOCAL_USER) -> Iterator[str]:
        """Stream a reply to message, given the earlier turns; every yield is the whole reply so far. With a
        collection, the reply answers from its documents and ends with a Sources line naming what it cites."""
        reply = self.reply(message, history, system_prompt, model, adapter, temperature, top_p, max_new_tokens,
                           collection, owner=owner)
        yield from reply.texts()

    def reply(self, message: str, history: list[dict] | None = None, system_prompt: str = "", model: str = "",
              adapter: str = "", temperature: float = 0.3, top_p: float = 0.9, max_new_tokens: int = 256,
              collection: str = "", *, owner: str = LOCAL_USER, search_adapter: str = "") -> Reply:
        """Start generating a reply; the Reply carries a notice when old turns were left out, or when the message is
        Chinese and the model English-first. search_adapter: the embedding adapter that searches the collection."""
        return self.start(*self.prepare(message, history, system_prompt, model, adapter, temperature, top_p,
                                        max_new_tokens, collection, owner=owner, search_adapter=search_adapter))

    def prepare(self, message: str, history: list[dict] | None = None, system_prompt: str = "", model: str = "",
                adapter: str = "", temperature: float = 0.3, top_p: float = 0.9, max_new_tokens: int = 256,
                collection: str = "", *, owner: str = LOCAL_USER,
                search_adapter: str = "") -> tuple[Prompt, SamplingParams]:
        """Everything a reply needs before it starts (the model loaded, the adapter attached, the prompt fitted):
        several prepared replies start together, into one engine batch."""
        params = sampling(temperature, top_p, max_new_tokens)
        return self.prompt(message, history, system_prompt, model, adapter, params.max_new_tokens, collection,
                           owner=owner, search_adapter=search_adapter), params

    @staticmethod
    def start(prompt: Prompt, params: SamplingParams) -> Reply:
        dropped = prompt.dropped
        notice = (f"The conversation was longer than {prompt.lm.name} can read, so the {dropped} oldest "
                  f"message{'s were' if dropped != 1 else ' was'} left out of this reply.") if dropped else ""
        return prompt.start(params, notice=" ".join(filter(None, [notice, prompt.notice])))

    def prompt(self, message: str, history: list[dict] | None, system_prompt: str, model: str, adapter: str,
               max_new_tokens: int, collection: str = "", *, owner: str = LOCAL_USER,
               search_adapter: str = "") -> Prompt:
        """The chat prompt's tokens on the model that will read it, the oldest turns dropped until it fits."""
        message = require_text(message, "message", self.ctx.settings.max_chars)
        turns = [*clean_history(history), {"role": "user", "content": message}]
        if asks_documents(collection):
            return self.grounded(turns, collection, system_prompt, model, adapter, max_new_tokens, owner=owner,
                                 search_adapter=search_adapter)
        return self.conversation(turns, system_prompt, model, adapter, max_new_tokens, owner=owner)

    @cached_property
    def search(self):
        """The collections a conversation may answer from (built on first use: most chats have none)."""
        from tasks.search import SearchTask

        return SearchTask(self.ctx)

    def grounded(self, turns: list[dict], collection: str, system_prompt: str, model: str, adapter: str,
                 max_new_tokens: int, *, owner: str = LOCAL_USER, sources_line: bool = True,
                 search_adapter: str = "") -> Prompt:
        """The prompt of a conversation answered from a collection: the passages most like it (the newest
        message, and it with the one before) in the last user turn, within PASSAGE_SHARE of the model's room;
        with none relevant, a reply that says so and no model asked."""
        if not isinstance(collection, str):
            raise UserError("The collection must be a collection's name.")
        if not turns or turns[-1]["role"] != "user":
            raise UserError("A conversation answered from documents must end with the user's message.")
        turns = [{**turn, "content": without_sources(turn["content"])} if turn["role"] == "assistant" else turn
                 for turn in turns]
        found = relevant([self.search.find(owner, query, collection, 2 * PASSAGES, search_adapter or "")
                          for query in retrieval_queries(turns)])
        lm = self.lm(model, adapter, owner)[0]  # even when nothing is found: a wrong model or adapter is named
        if not found:
            return Prompt(lm, [], known=NOTHING_FOUND.format(collection=collection.strip()))
        room = lm.context_length - min(max_new_tokens, lm.context_length // 4)
        tokens = lambda text: len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        passages = fitted(found, tokens, int(room * PASSAGE_SHARE) - tokens(INSTRUCTION + turns[-1]["content"]))
        if not passages:
            raise ContextTooLong(f"Your message leaves no room in {lm.name} for the documents' passages: shorten it.")
        asked = {"role": "user", "content": grounded_message(turns[-1]["content"], passages)}
        prompt = self.conversation([*turns[:-1], asked], system_prompt, model, adapter, max_new_tokens, owner=owner)
        prompt.passages, prompt.sources_line = passages, sources_line
        prompt.notice = self.language_notice(turns[-1]["content"], lm.name)  # of the question, not the passages
        return prompt

    def conversation(self, turns: list[dict], system_prompt: str, model: str, adapter: str, max_new_tokens: int, *,
                     owner: str = LOCAL_USER, tools: list[dict] | None = None,
                     opening: Callable[[str], str] | None = None) -> Prompt:
        """The prompt of a conversation that ends with the user's message (or, with tools, a tool's result), the
        oldest exchanges dropped until it fits. tools go to the chat template; opening, given the template, says
        what the assistant's turn starts with (the reply goes on from there; it may refuse the template)."""
        limit = self.ctx.settings.max_chars
        kept = turns[-self.ctx.settings.max_history - 1:]  # the newest: older ones could never fit anyway
        system_prompt = system_prompt if isinstance(system_prompt, str) else ""
        if sum(len(turn["content"]) for turn in kept) + len(system_prompt) + len(json.dumps(tools or [])) > limit:
            raise TooLarge("The conversation is too long: with its history and system prompt it has more than "
                           f"{limit:,} characters. Clear the conversation (or some of it) and ask again.")
        lm, adapter_name, meta = self.lm(model, adapter, owner)
        system_prompt = (system_prompt or "").strip() or (meta.system_prompt if meta else "")
        template = (meta.chat_template if meta else None) or getattr(lm.tokenizer, "chat_template", None)
        if not template:
            raise UserError(f"'{lm.name}' is a base model without a chat template: use 'Continue text' "
                            "to have it continue your words, or pick an instruction model for chat.")
        start = opening(template) if opening else ""
        last = max(i for i, turn in enumerate(kept) if turn["role"] == "user" or i == 0)  # the exchange now
        ids, dropped = fit_prompt(lm, system_prompt, kept[:last], kept[last:], max_new_tokens, template, tools, start)
        asked = next((t["content"] for t in reversed(kept) if t["role"] == "user"), "")
        return Prompt(lm, ids, adapter_name, dropped + len(turns) - len(kept), self.language_notice(asked, lm.name),
                      start)

    def complete(self, text: str, model: str = "", adapter: str = "", num_alternatives: int = 1,
                 max_new_tokens: int = 64, temperature: float = 0.8, top_p: float = 0.95, *,
                 owner: str = LOCAL_USER) -> list[str]:
        """Continue text; with several alternatives, each is sampled independently (they run as one batch)."""
        require_range(num_alternatives, "Alternatives", 1, 8)
        params = sampling(temperature, top_p, max_new_tokens)
        prompt = self.continuation(text, model, adapter, params.max_new_tokens, owner=owner)
        count = int(num_alternatives) if params.temperature > 0 else 1  # greedy alternatives would be equal
        caller = new_caller()  # the alternatives take one turn in the engine, like one request
        replies = [prompt.start(params, caller) for _ in range(count)]
        return [reply.text() for reply in replies]

    def continuation(self, text: str | list[int], model: str, adapter: str, max_new_tokens: int, *,
                     owner: str = LOCAL_USER) -> Prompt:
        """The tokens of a text (or the token ids) to continue, on the model that will continue it (too long is
        an error). Token ids are what a LoRA Studio in front of this one sends: the prompt it built itself."""
        if not isinstance(text, list):
            text = require_text(text, "text to continue", self.ctx.settings.max_chars)
        lm, adapter_name, _ = self.lm(model, adapter, owner)
        ids = checked_ids(text, len(lm.tokenizer)) if isinstance(text, list) else lm.tokenizer(text)["input_ids"]
        room = lm.context_length - max_new_tokens
        if len(ids) > room:
            raise ContextTooLong(f"The text is too long for {lm.name}: {len(ids)} tokens, and it reads at most "
                                 f"{room} before the continuation. Shorten it or ask for fewer new tokens.")
        return Prompt(lm, list(ids), adapter_name)


def checked_ids(ids: list, vocabulary: int) -> list[int]:
    """Token ids as sent by a client: whole numbers the model's vocabulary has, at least one."""
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocabulary for i in ids):
        raise UserError(f"A prompt of token ids must be a non-empty list of whole numbers from 0 to {vocabulary - 1}.")
    return list(ids)


def fit_prompt(lm: TextModel, system_prompt: str, turns: list[dict], tail: list[dict], max_new_tokens: int,
               template: str | None = None, tools: list[dict] | None = None,
               opening: str = "") -> tuple[list[int], int]:
    """The prompt's token ids (turns, then the tail: the exchange now) with the oldest exchanges dropped until it
    fits, and the reply's opening after the generation prompt; also how many turns were dropped.

    Linear in the history: each turn's words are tokenized once (in one batch) to guess where to start, and the
    template is rendered only from there (again from the next exchange while the guess was short)."""
    room = lm.context_length - min(max_new_tokens, lm.context_length // 4)
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    # Drop whole exchanges: some chat templates insist that the first turn is the user's.
    starts = [0] + [i for i, turn in enumerate(turns) if turn["role"] == "user" and i > 0] + [len(turns)]
    overhead = _template_overhead(lm, template)
    sizes = [len(ids) + overhead for ids in
             lm.tokenizer([t["content"] for t in head + turns + tail], add_special_tokens=False)["input_ids"]]
    fixed = sum(sizes[:len(head)]) + sum(sizes[len(head) + len(turns):])
    suffix = [0] * (len(turns) + 1)  # suffix[i]: the guessed tokens of turns[i:]
    for i in range(len(turns) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + sizes[len(head) + i]
    first = next((k for k, start in enumerate(starts) if fixed + suffix[start] <= room), len(starts) - 1)
    for dropped in starts[first:]:
        messages = head + turns[dropped:] + tail
        if opening:  # tokenized with the rendered prompt, as apply_chat_template tokenizes it (no special tokens)
            text = lm.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False,
                                                    chat_template=template)
            ids = lm.tokenizer(text + opening, add_special_tokens=False)["input_ids"]
        else:
            ids = lm.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                                   return_dict=False, chat_template=template)
        if len(ids) <= room:
            return list(ids), dropped
    raise ContextTooLong(f"Your message is too long for {lm.name}: it reads at most {room} tokens with the "
                         "system prompt. Shorten the message or the system prompt.")


def _template_overhead(lm: TextModel, template: str | None) -> int:
    """Tokens the chat template adds around one message's words (its role markers), measured on a short one."""
    probe = [{"role": "user", "content": "x"}]
    rendered = lm.tokenizer.apply_chat_template(probe * 2, tokenize=True, return_dict=False, chat_template=template)
    alone = lm.tokenizer.apply_chat_template(probe, tokenize=True, return_dict=False, chat_template=template)
    return max(1, len(rendered) - len(alone) - 1)  # the second message's cost, less its one word
