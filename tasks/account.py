"""The account's own operations: who is asking, and for an admin the users and what is shared with everyone.

Not a task (it has no tab of its own in the registry): the app publishes these next to the tasks' endpoints.
"""

from __future__ import annotations

from config import LOCAL_USER
from errors import UserError
from tasks.base import Context, Endpoint
from tasks.collections import CollectionStore


class AccountService:
    def __init__(self, ctx: Context, collections: CollectionStore):
        self.ctx = ctx
        self.accounts = ctx.accounts
        self.collections = collections

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("whoami", self.whoami), Endpoint("users", self.users), Endpoint("share", self.share)]

    def whoami(self, *, owner: str = LOCAL_USER) -> dict:
        """Who you are: {name, admin, accounts} (accounts: whether this server asks for a login)."""
        return {"name": owner, "admin": self.accounts.is_admin(owner), "accounts": self.accounts.enabled}

    # API keys for the /v1 routes: each user makes and revokes their own (the UI's, not the public API's).
    def create_key(self, label: str = "", *, owner: str = LOCAL_USER) -> str:
        """A new API key acting as you; it is shown this once and only its hash is kept."""
        return self.accounts.keys.create(owner, label)

    def api_keys(self, *, owner: str = LOCAL_USER) -> list[dict]:
        return self.accounts.keys.list(owner)

    def revoke_key(self, key_id: str, *, owner: str = LOCAL_USER) -> None:
        self.accounts.keys.revoke(owner, (key_id or "").strip() if isinstance(key_id, str) else "")

    def _admin(self, owner: str) -> None:
        if not self.accounts.enabled or not self.accounts.is_admin(owner):
            raise UserError("Only an admin can do this.")

    def users(self, *, owner: str = LOCAL_USER) -> list[dict]:
        """Every user with whether they are an admin (admins only)."""
        self._admin(owner)
        listed = self.accounts.list()
        if self.ctx.settings.username and all(u["name"] != self.ctx.settings.username for u in listed):
            listed.insert(0, {"name": self.ctx.settings.username, "admin": True, "created": 0.0})
        return listed

    def add_user(self, name: str, password: str, admin: bool = False, *, owner: str = LOCAL_USER) -> dict:
        """Add a user (admins only)."""
        self._admin(owner)
        return self.accounts.add(name, password, admin)

    def remove_user(self, name: str, *, owner: str = LOCAL_USER) -> None:
        """Remove a user (admins only; never yourself). Their adapters and collections stay on disk."""
        self._admin(owner)
        if name == owner:
            raise UserError("You cannot remove your own account.")
        self.accounts.remove(name)

    def share(self, kind: str, name: str, whose: str = "", shared: bool = True, *, owner: str = LOCAL_USER) -> dict:
        """Share an adapter or a collection with everyone, read-only (admins only); whose "" is your own."""
        self._admin(owner)
        whose = (whose or "").strip() if isinstance(whose, str) else ""
        whose = whose or owner
        if kind == "adapter":
            folder = self.ctx.adapters.store.own(whose, name if isinstance(name, str) else "")
            name = folder.name
        elif kind == "collection":
            self.collections.open(whose, name, writable=True)  # it must be theirs
        else:
            raise UserError("Choose what to share: adapter or collection.")
        self.ctx.adapters.store.shares.set(kind, whose, name, bool(shared))
        return {"kind": kind, "name": name, "owner": whose, "shared": bool(shared)}
