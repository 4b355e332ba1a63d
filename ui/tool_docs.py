"""What a model reads about each public endpoint that is an MCP tool (and the API page shows): one paragraph,
then an `Args:` section, from which Gradio builds the tool's description and the description of each parameter.

Kept apart from the task functions, whose own docstrings speak to the programmer; `ui.api.publish` gives an
endpoint its text from here. A parameter named here must be one of the function's (tests/test_mcp.py checks).
"""

from __future__ import annotations

_MODEL = "model: a catalog name, a Hugging Face id or a local model folder; empty for the task's default model."
_ADAPTER = ("adapter: the name of one of your LoRA adapters (see the adapters tool) to apply to the model; empty for "
            "none. An adapter someone else trained is unknown unless it was shared with everyone.")


def _doc(summary: str, *args: str) -> str:
    return summary + "\n\nArgs:\n" + "\n".join("    " + arg for arg in args) + "\n"


TOOL_DOCS: dict[str, str] = {
    "chat": _doc(
        "Reply to a chat message with a language model, optionally changed by one of your LoRA adapters. Returns the "
        "whole reply as text.",
        "message: the user's new message.",
        "history: earlier turns of the conversation as a list of {role, content} objects (role is user or "
        "assistant); empty for a new conversation.",
        "system_prompt: instructions for the assistant (its role, tone, rules); empty for none.",
        _MODEL, _ADAPTER,
        "temperature: randomness from 0 to 2; 0 always picks the likeliest word (the same answer every time).",
        "top_p: sample only from the likeliest words whose probabilities add up to this (0 to 1).",
        "max_new_tokens: the longest reply in tokens (about three quarters of a word each).",
        "collection: the name of one of your document collections to answer from: the reply uses its passages and "
        "ends with a 'Sources:' line naming each one it cites, or says it does not know when none is about the "
        "question; empty to answer without documents."),
    "complete": _doc(
        "Continue a text with a base language model (one not tuned for chat). Returns a list of continuations.",
        "text: the beginning to continue.", _MODEL, _ADAPTER,
        "num_alternatives: how many different continuations to write (1 to 8).",
        "max_new_tokens: the longest continuation in tokens.",
        "temperature: randomness from 0 to 2; 0 is always the likeliest continuation.",
        "top_p: sample only from the likeliest words whose probabilities add up to this (0 to 1)."),
    "summarize": _doc(
        "Summarize a text. Returns {summary, method, model, note}.",
        "text: the text to summarize.",
        "method: extractive (picks the most central sentences), abstractive (a model writes it) or empty to let the "
        "model decide.",
        "length: short, medium or bullets.", _MODEL, _ADAPTER),
    "translate": _doc(
        "Translate a text into another language; line breaks are kept. Returns {translation, source, "
        "source_confidence, target, model, note}.",
        "text: the text to translate.",
        "target: the language to translate into, as a code such as en, fr, de, es, zh.",
        "source: the text's language code, or auto to detect it.", _MODEL, _ADAPTER),
    "sentiment": _doc(
        "Classify the sentiment (or a trained adapter's own labels) of one or more texts. Returns a list of "
        "{text, label, scores} with each label's probability.",
        "texts: a list of texts, or one string with one text per line.", _MODEL, _ADAPTER),
    "answer": _doc(
        "Answer a question from a given context or from one of your document collections. Returns {found, answer, "
        "score, start, end, level, source}; found is false when the text holds no answer.",
        "question: the question to answer.",
        "context: the text that holds the answer; empty to search a collection instead.",
        "collection: the name of one of your document collections (see the collections tool) to take the context "
        "from; empty when context is given.", _MODEL, _ADAPTER),
    "search": _doc(
        "Find the passages of your document collections closest in meaning to a query, best first. Returns a list "
        "of {score, text, source, chunk}.",
        "query: what to look for, in plain words.",
        "collection: the collection to search (see the collections tool); empty searches all of yours.",
        "k: how many passages to return.",
        "adapter: the name of one of your search adapters to embed with; empty for the collection's own model."),
    "compare": _doc(
        "Run one task on the same inputs with several model and adapter variants side by side. Returns a list of "
        "{model, adapter, result} in the variants' order.",
        "task: chat, summarize, translate, sentiment, answer or search.",
        "inputs: the task's own parameters as an object, for example {\"message\": \"Hi\"} for chat.",
        "variants: a list of {model, adapter} objects to compare (use an empty adapter for the base model).",
        "collection: for chat, one of your document collections (see the collections tool) every variant answers "
        "from; empty for none."),
    "tokenize": _doc(
        "Show how a model's tokenizer cuts a text into tokens. Returns {model, tokens: [{id, text, start, end}], "
        "count}.",
        "text: the text to cut into tokens.", _MODEL),
    "next_token": _doc(
        "List the tokens a language model finds likeliest to come next after a text, with their probabilities. "
        "Returns {model, adapter, tokens: [{id, text, prob, kept}], entropy, kept_by_top_p, base}.",
        "text: the text so far.", _MODEL, _ADAPTER,
        "k: how many candidate tokens to list.",
        "temperature: the sampling temperature the probabilities are shown at.",
        "top_p: mark the candidates that top-p sampling at this value would keep."),
    "fill_mask": _doc(
        "Guess the word hidden by [MASK] in a sentence. Returns {model, method, candidates: [{token, score, text}], "
        "note}.",
        "text: a sentence with exactly one [MASK].", _MODEL,
        "k: how many candidates to return."),
    "similarity": _doc(
        "Measure how alike in meaning a few texts are to an embedding model. Returns {model, adapter, texts, "
        "matrix (cosine similarity), points, base_points}.",
        "texts: a list of texts, or one string with one text per line.", _MODEL, _ADAPTER),
    "token_loss": _doc(
        "Show how surprised a language model is by each token of a text (lower means more expected). Returns "
        "{model, adapter, tokens: [{text, logprob}], loss, perplexity, base}.",
        "text: the text to score.", _MODEL, _ADAPTER),
    "adapters": _doc(
        "List the LoRA adapters you can use (yours and those shared with everyone), newest first. Returns a list "
        "of {name, task, base, created, metrics, size_mb}.",
        "task: only the adapters for this task (chat, summarize, translate, sentiment, answer, search); empty for "
        "all."),
    "collections": "List your document collections (and those shared with everyone) with their documents. Returns "
                   "a list of {name, documents, chunks, models}.",
    "job": _doc(
        "The state of one of your training or evaluation jobs: state, progress, loss curve, metrics and report.",
        "job_id: the job's id, as training returned it."),
    "whoami": "Who the calls act as. Returns {name, admin, accounts}.",
}
