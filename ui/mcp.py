"""The MCP server (`python app.py --mcp`): the public API's read-only operations as MCP tools at /gradio_api/mcp/,
each acting as the user whose API key the call carries.

Gradio builds the server (`launch(mcp_server=True)`) with a tool per public endpoint, named after its function
(`ui.api.publish` names each after its api name and gives it its description from `ui.tool_docs`). Here:

- Which endpoints are tools: the ones in READ_ONLY (the six tasks, Inside the model, adapters, collections, a
  job's state); every other public endpoint (training, deleting, renaming, pushing, sharing...) only when the
  operator turns on --mcp-write-tools. New endpoints are not tools until they are named here.
- Who a call acts as: with accounts (or Hugging Face sign-in) an MCP request needs an API key, the same as /v1's
  (`Authorization: Bearer KEY`); without one it is refused with 401. `ApiKeyLogin` logs a request with a valid
  key in as the key's user for all of Gradio's routes (Gradio's own session token, kept in memory), so the owner
  reaches the task function the usual way (`ui.api.user_of`). Gradio runs a queued tool through a client of its
  own that forwards the caller's headers; that client carries a secret header of this process so it can read the
  app's config and results, and the name it gets, `ui.api.LOOPBACK_USER`, owns nothing.
"""

from __future__ import annotations

import json
import os
import secrets

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from ui.api import LOOPBACK_USER

MCP_PATH = "/gradio_api/mcp"
LOOPBACK_HEADER = "x-lora-studio-loopback"
READ_ONLY = ("chat", "complete", "summarize", "translate", "sentiment", "answer", "search", "compare", "tokenize",
             "next_token", "fill_mask", "similarity", "token_loss", "adapters", "collections", "job", "whoami")
NEEDS_KEY = ("This server needs an API key: create one in Settings → Account and send it as "
             "'Authorization: Bearer KEY'.")


def bearer(headers: Headers) -> str:
    """The key in `Authorization: Bearer KEY`, or ""."""
    header = headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


def keys_required(accounts) -> bool:
    """Whether calls must say who they are: the app has accounts, or Hugging Face sign-in (a Space)."""
    return accounts.enabled or bool(os.environ.get("OAUTH_CLIENT_ID"))


class ApiKeyLogin:
    """ASGI middleware: a request with a valid API key is logged in as the key's user on every Gradio route; an
    MCP request without one is refused (401) where calls must say who they are."""

    def __init__(self, app, secret: str):
        self.app = app
        self.secret = secret
        self._tokens: dict[str, str] = {}  # owner -> the session token this process made for them

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        key = bearer(headers)
        if not (key or LOOPBACK_HEADER in headers or scope["path"].startswith(MCP_PATH)):
            return await self.app(scope, receive, send)  # the page and its assets: nothing to read from disk
        gradio_app = scope.get("app")
        accounts = getattr(getattr(getattr(gradio_app, "blocks", None), "ctx", None), "accounts", None)
        if accounts is None or not keys_required(accounts):  # one local user: nothing to tell apart
            return await self.app(scope, receive, send)
        owner = accounts.key_owner(key) if key else None
        sent = headers.get(LOOPBACK_HEADER, "").encode("latin-1")  # bytes: any header compares without an error
        if owner is None and secrets.compare_digest(sent, self.secret.encode()):
            owner = LOOPBACK_USER
        if scope["path"].startswith(MCP_PATH) and owner in (None, LOOPBACK_USER):
            response = JSONResponse({"error": NEEDS_KEY}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        if owner is not None:
            scope = self._logged_in(scope, gradio_app, owner)
        return await self.app(scope, receive, send)

    def _logged_in(self, scope: dict, gradio_app, owner: str) -> dict:
        """scope with Gradio's session cookie for owner added (its token made once per owner, in memory)."""
        token = self._tokens.setdefault(owner, secrets.token_urlsafe(32))
        gradio_app.tokens[token] = owner  # Gradio clears its tokens when it launches: set it every time
        cookie = f"access-token-{gradio_app.cookie_id}={token}"
        headers = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
        sent = "; ".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"cookie")
        headers.append((b"cookie", (f"{sent}; {cookie}" if sent else cookie).encode("latin-1")))
        return {**scope, "headers": headers}


def tools(write: bool, public: list[str]) -> list[str]:
    """The api names offered as tools: the read-only ones, or with write every public endpoint."""
    return list(public) if write else [name for name in public if name in READ_ONLY]


def _as_json(postprocess):
    """Gradio's tool results, with JSON for a dict or list result (Gradio writes Python's repr of it)."""
    from gradio_client.utils import is_file_obj_with_meta

    def results(data, root_url):
        return postprocess([json.dumps(item, ensure_ascii=False) if isinstance(item, (dict, list))
                            and not is_file_obj_with_meta(item) else item for item in data], root_url)
    return results


def serve_tools(demo, write: bool, secret: str) -> None:
    """After launch: keep only the chosen endpoints as tools, and give Gradio's own client for queued tools the
    loopback header (with accounts, Gradio's login would refuse it)."""
    server = demo.mcp_server_obj
    if server is None:
        raise RuntimeError(demo.mcp_error or "The MCP server did not start; install the mcp package.")
    keep = set(tools(write, [endpoint.lstrip("/") for endpoint in server.tool_to_endpoint.values()]))
    server.tool_to_endpoint = {tool: endpoint for tool, endpoint in server.tool_to_endpoint.items()
                               if endpoint.lstrip("/") in keep}
    server.postprocess_output_data = _as_json(server.postprocess_output_data)
    if demo.ctx.accounts.enabled:
        from gradio_client import Client

        # As gradio.mcp makes it (GradioMCPServer._get_or_create_client), with the header that lets it in.
        server._client_instance = Client(demo.local_url, download_files=False, verbose=False,
                                         analytics_enabled=False, ssl_verify=False, _skip_components=False,
                                         headers={"x-gradio-user": "mcp", LOOPBACK_HEADER: secret})
