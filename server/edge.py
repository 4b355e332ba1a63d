"""The HTTP edge of the /v1 routes: who a request acts as (the owner of the API key in `Authorization: Bearer ...`
with accounts, else the single local user), how many generations each owner has running (over the per-user limit
is a 429), the JSON body read with a size limit, and every error in OpenAI's JSON shape with the status of the
app's error kind (errors.py) and its one sentence.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager

from fastapi import Request
from fastapi.responses import JSONResponse

from config import LOCAL_USER
from errors import OverLimit, TooLarge, UserError, internal_sentence
from tasks.base import Context

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
               503: "server_error"}
# An oversized body is still read (and dropped) up to this size before the 413 goes out: a server that answers
# while the client is still sending makes the client's socket fail with a reset, and the 413's sentence is lost.
DRAINED_AT_MOST = 64 * 2**20


class ApiError(Exception):
    """An error with its HTTP status and OpenAI error code (a UserError carries its status itself)."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def error_body(error: BaseException) -> tuple[int, dict]:
    """Any error as (status, OpenAI's error object): the app's sentence for the ones a user caused, a sentence
    with a reference otherwise."""
    if isinstance(error, ApiError):
        status, message, code, param = error.status, str(error), error.code, error.param
    elif isinstance(error, UserError):
        status, message, code, param = error.status, str(error), error.code, None
    else:
        status, message, code, param = 500, internal_sentence(error), None, None
    return status, {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": param,
                    "code": code}


def as_response(error: BaseException) -> JSONResponse:
    """Any error as OpenAI's error JSON with its status."""
    status, body = error_body(error)
    return JSONResponse({"error": body}, status_code=status)


def route(handler: Callable) -> Callable:
    """handler as a route whose every error becomes OpenAI's error JSON."""
    async def route(request: Request):
        try:
            return await handler(request)
        except Exception as error:  # noqa: BLE001  (every error becomes OpenAI's error JSON)
            return as_response(error)
    route.__name__ = handler.__name__
    return route


class Edge:
    """Who asks, how much they run, and what they sent: the checks every /v1 route makes before its work."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    def caller(self, request: Request) -> str:
        """The owner the request acts as: its API key's user with accounts, else the local user."""
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header[:7].lower() == "bearer " else ""
        accounts = self.ctx.accounts
        if accounts.enabled or os.environ.get("OAUTH_CLIENT_ID"):
            owner = accounts.keys.owner_of(key)
            if owner is None or (accounts.enabled and not owner.startswith("hf-") and not accounts.exists(owner)):
                raise ApiError(401, "This server needs an API key: create one in the Account panel and send it "
                                    "as 'Authorization: Bearer KEY'.", code="invalid_api_key")
            return owner
        expected = self.ctx.settings.api_key
        if expected and not hmac.compare_digest(key.encode(), expected.encode()):
            raise ApiError(401, "This server needs its API key, sent as 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")
        return LOCAL_USER

    def check_room(self, owner: str, count: int) -> None:
        """An OverLimit (429) when count more generations would take owner over the per-user limit."""
        limit = self.ctx.settings.api_requests_per_user
        if self._running[owner] + count > limit:
            raise OverLimit(f"You have {self._running[owner]} generations running and the limit is {limit}; "
                            "wait for one to finish and try again.")

    @contextmanager
    def running(self, owner: str, count: int):
        """Count count generations as owner's until the block ends; over the per-user limit is a 429."""
        with self._lock:
            self.check_room(owner, count)
            self._running[owner] += count
        try:
            yield
        finally:
            with self._lock:
                self._running[owner] -= count

    async def body(self, request: Request) -> dict:
        """The request's JSON object, read with a size limit: a stranger's gigabyte never reaches memory."""
        limit = self.ctx.settings.max_chars * 8 + 2**20  # max_chars of text even fully \u-escaped, plus the rest
        too_large = TooLarge(f"The request is larger than {limit / 2**20:.1f} MB, more than this server reads.")
        length = request.headers.get("content-length", "")
        declared = int(length) if length.isdigit() else 0
        if declared > DRAINED_AT_MOST:  # refused before a byte of it is read
            raise too_large
        over, received, size = declared > limit, [], 0
        async for chunk in request.stream():
            size += len(chunk)
            over = over or size > limit  # a client that sent no length, or a wrong one
            if not over:
                received.append(chunk)
            elif size > DRAINED_AT_MOST:
                break
        if over:
            raise too_large
        try:
            body = json.loads(b"".join(received))
        except ValueError:  # not JSON, or not UTF-8
            raise ApiError(400, "The request body must be a JSON object.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body
