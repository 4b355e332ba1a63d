"""The one error a user can cause: its message is a plain sentence shown as is in the UI and the API.

Its kinds only matter to HTTP clients (the OpenAI-compatible routes answer each with its status); the UI and the
Gradio API show every kind the same way."""

import logging
import secrets


class UserError(Exception):
    """Bad input or an unavailable resource, explained in one sentence the user can act on."""

    status = 400
    code: str | None = None  # the OpenAI-style error code an HTTP client gets


class NotFound(UserError):
    """A named model, adapter, job or collection that does not exist, or is not the caller's to see."""

    status = 404
    code = "not_found"


class TooLarge(UserError):
    """An input over a size limit (characters, texts, tokens)."""

    status = 413
    code = "too_large"


class ContextTooLong(TooLarge):
    """A prompt longer than the model reads, even with older turns left out: a 400, as OpenAI answers it (the
    clients that shorten and retry look for its code)."""

    status = 400
    code = "context_length_exceeded"


class OverLimit(UserError):
    """A per-user limit on work in flight was reached; trying again later will work."""

    status = 429
    code = "rate_limit_exceeded"


def internal_sentence(error: BaseException) -> str:
    """One plain sentence for an error the user did not cause, with a reference that is also in the server's log
    (with the traceback): never the error's own text, which may name server paths."""
    reference = secrets.token_hex(4)
    logging.getLogger("lora_studio").error("internal error %s", reference,
                                           exc_info=(type(error), error, error.__traceback__))
    return (f"Something went wrong on the server (reference {reference}); please try again, or tell the operator "
            "the reference.")
