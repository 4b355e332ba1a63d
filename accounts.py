"""Accounts: who may log in, who is an admin, and what an admin shared with everyone.

Users live in `users.json` under the data directory with salted, slow password hashes (scrypt); shares in
`shared.json`; API keys (hashed) in `api_keys.json`. All three are written to a temporary file and renamed into
place, under a file lock (kept in the state directory, where locking works), so the app and the
`python app.py users ...` command never see half a file. With no users (and no --username), the app is the
single-user app: everything belongs to `local`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from config import LOCAL_USER, Settings
from errors import NotFound, UserError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MIN_PASSWORD = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # ~16 MB and ~50 ms per check: slow for guessing, quick for a login
KINDS = ("adapter", "collection")  # what an admin can share


def check_username(name: object) -> str:
    """The name if it can be a username (lower case letters, digits, '.', '-', '_'; at most 32), else a UserError."""
    name = name.strip() if isinstance(name, str) else ""
    if not _NAME.match(name) or name == LOCAL_USER:
        raise UserError("A username is 1 to 32 lower-case letters, digits, '.', '-' or '_' (and not 'local').")
    return name


def hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise UserError(f"A password needs at least {MIN_PASSWORD} characters.")
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), dklen=32, **_SCRYPT)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


def write_private_json(path: Path, data: dict) -> None:
    """Write data as JSON that only this user can read (password hashes, keys, a worker's settings), through a
    temporary file renamed into place: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private from its first byte
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, ensure_ascii=False)
    os.replace(tmp, path)


class Accounts:
    """The users of one data directory (and the operator's --username/--password admin, kept in memory only)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path = Path(settings.data_dir) / "users.json"
        self._lock = FileLock(str(settings.state_path() / "users.json.lock"))
        self.keys = ApiKeys(settings.data_dir, settings.state_path())

    # ---- reading ---------------------------------------------------------------------------------------------
    def users(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8")).get("users", {})

    @property
    def enabled(self) -> bool:
        """Whether the app asks for a login (users exist, or the operator set --username)."""
        return bool(self.settings.username) or bool(self.users())

    def check(self, name: str, password: str) -> bool:
        """Whether name and password log in (Gradio's auth calls this)."""
        if self.settings.username and hmac.compare_digest(name or "", self.settings.username):
            return hmac.compare_digest((password or "").encode(), self.settings.password.encode())
        user = self.users().get(name or "")
        return bool(user) and password_matches(password or "", user["password"])

    def exists(self, name: str) -> bool:
        """Whether name can log in now (a removed user's API keys stop working with the account)."""
        return name == self.settings.username or name in self.users()

    def key_owner(self, key: str) -> str | None:
        """The user an API key acts as, or None: a key never made or revoked, or whose user was removed (a Hugging
        Face user's key works while the Space has sign-in)."""
        owner = self.keys.owner_of(key)
        if owner is None or (self.enabled and not owner.startswith("hf-") and not self.exists(owner)):
            return None
        return owner

    def is_admin(self, name: str) -> bool:
        if not self.enabled:
            return name == LOCAL_USER  # the single user of an app without accounts runs everything
        if self.settings.username and name == self.settings.username:
            return True
        return bool(self.users().get(name, {}).get("admin"))

    def first_admin(self) -> str | None:
        """Who inherits the data made before accounts existed: the operator's admin, else the oldest admin."""
        if self.settings.username:
            return self.settings.username
        admins = sorted((u["created"], n) for n, u in self.users().items() if u.get("admin"))
        return admins[0][1] if admins else None

    def list(self) -> list[dict]:
        return [{"name": n, "admin": bool(u.get("admin")), "created": u["created"]}
                for n, u in sorted(self.users().items())]

    # ---- changing --------------------------------------------------------------------------------------------
    @contextmanager
    def _editing(self):
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            users = self.users()
            yield users
            write_private_json(self.path, {"version": 1, "users": users})

    def add(self, name: str, password: str, admin: bool = False) -> dict:
        name = check_username(name)
        hashed = hash_password(password)
        with self._editing() as users:
            if name in users:
                raise UserError(f"There is already a user named '{name}'.")
            users[name] = {"password": hashed, "admin": bool(admin), "created": time.time()}
        return {"name": name, "admin": bool(admin)}

    def remove(self, name: str) -> None:
        with self._editing() as users:
            if name not in users:
                raise NotFound(f"There is no user named '{name}'.")
            del users[name]

    def set_password(self, name: str, password: str) -> None:
        hashed = hash_password(password)
        with self._editing() as users:
            if name not in users:
                raise NotFound(f"There is no user named '{name}'.")
            users[name]["password"] = hashed


class Shares:
    """What an admin shared with everyone: (owner, name) per kind; others may use a shared item, not change it."""

    def __init__(self, data_dir: Path, locks: Path | None = None):
        self.path = Path(data_dir) / "shared.json"
        self._lock = FileLock(str(Path(locks or data_dir) / "shared.json.lock"))

    def items(self, kind: str) -> set[tuple[str, str]]:
        if not self.path.exists():
            return set()
        return {tuple(item) for item in json.loads(self.path.read_text(encoding="utf-8")).get(kind, [])}

    def owners_sharing(self, kind: str, name: str) -> list[str]:
        """The owners who share an item of this kind and name with everyone, in a stable order."""
        return sorted(owner for owner, shared in self.items(kind) if shared == name)

    def set(self, kind: str, owner: str, name: str, shared: bool) -> None:
        with self._lock:
            data = json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
            items = {tuple(item) for item in data.get(kind, [])}
            (items.add if shared else items.discard)((owner, name))
            data[kind] = sorted(items)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_private_json(self.path, data)


KEY_PREFIX = "lsk-"


def _key_hash(key: str) -> str:
    # A key is 32 random bytes: a plain hash is enough (scrypt is for guessable passwords).
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """API keys for the OpenAI-compatible routes: each acts as its owner. Only their hashes are stored
    (`api_keys.json`); a key is shown once, when it is made."""

    def __init__(self, data_dir: Path, locks: Path | None = None):
        self.path = Path(data_dir) / "api_keys.json"
        self._lock = FileLock(str(Path(locks or data_dir) / "api_keys.json.lock"))

    def _keys(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8")).get("keys", {})

    def create(self, owner: str, label: str = "") -> str:
        """A new key for owner (returned once, never stored)."""
        label = (label or "").strip()[:60] if isinstance(label, str) else ""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            keys = self._keys()
            keys[_key_hash(key)] = {"owner": owner, "label": label, "id": key[len(KEY_PREFIX):][:8],
                                    "created": time.time()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_private_json(self.path, {"version": 1, "keys": keys})
        return key

    def owner_of(self, key: str) -> str | None:
        """Whose key this is, or None for a key that was never made or was revoked."""
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
            return None
        entry = self._keys().get(_key_hash(key))
        return entry["owner"] if entry else None

    def list(self, owner: str) -> list[dict]:
        """owner's keys as {id, label, created} (the id is the key's first characters, to tell them apart)."""
        return sorted(({k: v for k, v in entry.items() if k != "owner"} for entry in self._keys().values()
                       if entry["owner"] == owner), key=lambda entry: entry["created"])

    def revoke(self, owner: str, key_id: str) -> None:
        with self._lock:
            keys = self._keys()
            found = [h for h, entry in keys.items() if entry["owner"] == owner and entry["id"] == key_id]
            if not found:
                raise NotFound(f"You have no API key '{str(key_id)[:12]}'.")
            for digest in found:
                del keys[digest]
            write_private_json(self.path, {"version": 1, "keys": keys})
