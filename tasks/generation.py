"""The generation plumbing LM- and seq2seq-backed tasks share (summarization, translation): a model's family,
cutting text to a token budget, seq2seq generation under the model's lock, and instruction-LM replies through the
generation engine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from errors import UserError
from models import catalog, lazy
from models.adapters import selected
from models.engine import SamplingParams, new_caller
from models.text_model import TextModel
from models.loading import LoadedModel, ModelHub, read_config, token_limit
from tasks.base import Task
from tasks.chat import Reply
from tasks.text import chunk_text

torch = lazy.module("torch")

Progress = Callable[[float, str], None]  # (fraction done, what is happening)
Counter = Callable[[str], int]  # tokens in a text


def no_progress(fraction: float, message: str) -> None:
    pass


def backbone_family(task: Task, model: str) -> tuple[catalog.ModelSource, str]:
    """The resolved model and its family (decoder, encoder, embedding, seq2seq), read from the config if typed."""
    source = task.source(model)
    return source, family_of(task.ctx.hub, source)


def family_of(hub: ModelHub, source: catalog.ModelSource) -> str:
    """A source's family: the catalog's, or for a typed model what its configuration says."""
    if source.family:
        return source.family
    config = read_config(source, hub.options(source))
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False):
        return catalog.SEQ2SEQ
    if "CausalLM" in architectures or "LMHead" in architectures:
        return catalog.DECODER
    return catalog.ENCODER  # a BERT-like encoder: sentence-transformers mean-pools it into embeddings


def offline_fallback(name: str) -> bool:
    """Whether a model is one of the small ones that ship offline (weaker than the hub's choices)."""
    backbone = catalog.find(name)
    return backbone is not None and backbone.offline is not None


def token_counter(tokenizer) -> Counter:
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def pack(text: str, budget: int, count: Counter) -> list[str]:
    """Text cut into chunks of at most budget tokens: whole paragraphs where they fit, else sentences, else words."""
    return [chunk.text for chunk in chunk_text(text, budget, size=count, overlap=False)]


def seq2seq_context(loaded: LoadedModel) -> int:
    """How many input tokens an encoder-decoder reads."""
    return token_limit(loaded.model.config, loaded.tokenizer, fallback=512)


def refuse_adapter(adapter: str, model_name: str) -> None:
    """Adapters are trained on GPT-family models: a sequence-to-sequence model takes none."""
    if selected(adapter):
        raise UserError(f"The adapter '{adapter}' was trained on a GPT-family model, not on {model_name}: leave "
                        "the model empty to use the adapter with its own base model.")


def seq2seq_generate(loaded: LoadedModel, text: str, max_new_tokens: int, src_lang: str | None = None,
                     **generate_kwargs) -> str:
    """The encoder-decoder's output for one input, run under the model's lock (models are not re-entrant)."""
    tokenizer, model = loaded.tokenizer, loaded.model

    def run() -> torch.Tensor:
        if src_lang is not None:
            tokenizer.src_lang = src_lang  # NLLB/M2M tokenizers mark the source language; shared, hence the lock
        inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=seq2seq_context(loaded))
        return model.generate(**inputs.to(model.device), max_new_tokens=max_new_tokens, **generate_kwargs)
    return tokenizer.decode(loaded.compute(run)[0], skip_special_tokens=True).strip()


def prompt_ids(lm: TextModel, prompt: str) -> list[int]:
    return list(lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False))


def lm_replies(lm: TextModel, prompts: list[str], max_new_tokens: list[int], adapter_name: str | None,
               progress: Progress, in_flight_limit: int, label: str) -> list[str]:
    """Greedy replies of an instruction LM, one user message each, in_flight_limit at a time so they batch in the
    engine without crowding out other users; the rest wait here, not in the engine. Progress may raise to stop
    (the client went away): the requests in flight stop too."""
    caller = new_caller()  # one turn-taker in the engine for all of this request's pieces
    submit = lambda i: lm.generate(prompt_ids(lm, prompts[i]),  # noqa: E731
                                   SamplingParams(max_new_tokens=max_new_tokens[i], temperature=0), adapter_name,
                                   caller)
    in_flight = deque(submit(i) for i in range(min(in_flight_limit, len(prompts))))
    replies = []
    try:
        while in_flight:
            replies.append(Reply(lm, in_flight.popleft()).text().strip())
            if len(replies) + len(in_flight) < len(prompts):
                in_flight.append(submit(len(replies) + len(in_flight)))
            progress(len(replies) / len(prompts), f"{label} {len(replies)} of {len(prompts)}")
    finally:
        for request in in_flight:  # after an error or a stop, the rest must not keep the engine busy
            request.stop.set()
    return replies


def instruction_lm(task: Task, model: str, adapter: str, what: str, owner: str) -> tuple[TextModel, str | None]:
    """The instruction LM and adapter for an LM-backed task, or a UserError for a base model."""
    lm, adapter_name, _ = task.lm(model, adapter, owner)
    if not lm.has_chat_template:
        raise UserError(f"'{lm.name}' is a base model without a chat template, so it cannot follow a {what} "
                        "request; pick an instruction model or a sequence-to-sequence model.")
    return lm, adapter_name
