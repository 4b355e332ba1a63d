"""The one error a user can cause: its message is a plain sentence shown as is in the UI and the API.

Its kinds only matter to HTTP clients (the OpenAI-compatible routes answer each with its status); the UI and the
Gradio API show every kind the same way."""


class UserError(Exception):
    """Bad input or an unavailable resource, explained in one sentence the user can act on."""

    status = 400


class NotFound(UserError):
    """A named model, adapter, job or collection that does not exist, or is not the caller's to see."""

    status = 404


class TooLarge(UserError):
    """An input over a size limit (characters, texts, tokens)."""

    status = 413


class OverLimit(UserError):
    """A per-user limit on work in flight was reached; trying again later will work."""

    status = 429
