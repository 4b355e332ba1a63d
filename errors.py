"""The one error a user can cause: its message is a plain sentence shown as is in the UI and the API."""


class UserError(Exception):
    """Bad input or an unavailable resource, explained in one sentence the user can act on."""
