"""The Account panel: who is logged in (and the way out); for an admin, the users and what is shared."""

from __future__ import annotations

import os
import time

import gradio as gr
import pandas as pd

from errors import UserError
from tasks.account import AccountService
from ui.api import first_cell, handler, on_load, user_of
from ui.i18n import localized_columns, marked, phrase, show_info, t

HIDDEN = {"api_visibility": "undocumented"}


def who(account: AccountService, request: gr.Request = None):
    """The login line, and whether the log-out button, the admin tools and the API keys show."""
    try:
        owner = user_of(request)
    except UserError:  # a Space with Hugging Face sign-in, visited before signing in
        hidden = gr.update(visible=False)
        return marked("account.sign_in_first"), hidden, hidden, hidden
    me = account.whoami(owner=owner)
    if owner.startswith("hf-") and not me["accounts"]:
        line = marked("account.signed_in_hf") + f" **{owner.removeprefix('hf-')}** (`{owner}`)."
    elif not me["accounts"]:
        line = marked("account.no_accounts")  # the front end shows it in the page's language
    else:
        line = phrase("account.logged_in_admin" if me["admin"] else "account.logged_in", name=me["name"])
    keys = me["accounts"] or bool(os.environ.get("OAUTH_CLIENT_ID"))
    return (line, gr.update(visible=me["accounts"]), gr.update(visible=me["accounts"] and me["admin"]),
            gr.update(visible=keys))


def users_table(account: AccountService, request: gr.Request = None) -> pd.DataFrame:
    rows = [(u["name"], phrase("account.row.yes") if u["admin"] else "") for u in account.users(owner=user_of(request))]
    return pd.DataFrame(rows, columns=localized_columns("account.column", ["user", "admin"]))


def add_user(account: AccountService, name: str, password: str, admin: bool, request: gr.Request = None):
    user = account.add_user(name, password, admin, owner=user_of(request))
    show_info(phrase("account.added", name=user["name"]))
    return users_table(account, request), "", ""


def remove_user(account: AccountService, name: str, request: gr.Request = None):
    if not (name or "").strip():
        raise UserError("Type the name of the user to remove.")
    account.remove_user(name.strip(), owner=user_of(request))
    show_info(phrase("account.removed", name=name.strip()))
    return users_table(account, request)


def share(account: AccountService, kind: str, name: str, whose: str, shared: bool, request: gr.Request = None):
    done = account.share(kind, name, whose, shared, owner=user_of(request))
    kind = phrase(f"account.kind_{done['kind']}") if done["kind"] in ("adapter", "collection") else done["kind"]
    return phrase("account.now_shared" if done["shared"] else "account.not_shared", kind=kind, name=done["name"],
                  owner=done["owner"])


def keys_table(account: AccountService, request: gr.Request = None) -> pd.DataFrame:
    rows = [(k["id"], k["label"], time.strftime("%Y-%m-%d %H:%M", time.localtime(k["created"])))
            for k in account.api_keys(owner=user_of(request))]
    return pd.DataFrame(rows, columns=localized_columns("account.column", ["key", "label", "created"]))


def create_key(account: AccountService, label: str, request: gr.Request = None):
    key = account.create_key(label, owner=user_of(request))
    return gr.update(value=key, visible=True), keys_table(account, request), ""


def revoke_key(account: AccountService, key_id: str, request: gr.Request = None):
    if not (key_id or "").strip():
        raise UserError("Pick the key to revoke (click its row).")
    account.revoke_key(key_id, owner=user_of(request))
    show_info(phrase("account.revoked"))
    return keys_table(account, request), ""


def build(account: AccountService) -> None:
    with gr.Tab(t("tab.account"), id="account"):
        line = gr.Markdown()
        if os.environ.get("OAUTH_CLIENT_ID"):  # a Space with `hf_oauth: true`: the sign-in that owns your work
            gr.LoginButton()
        logout = gr.Button(t("account.log_out"), link="/logout", size="sm", visible=False)
        with gr.Column(visible=False) as admin:
            gr.Markdown(t("account.users"))
            users = gr.Dataframe(label=t("account.who_may_log"), interactive=False)
            with gr.Row():
                name = gr.Textbox(label=t("account.username"), scale=2)
                password = gr.Textbox(label=t("account.password"), type="password", scale=2,
                                      info=t("account.at_least_8_characters"))
                is_admin = gr.Checkbox(label=t("account.admin"), scale=1)
                add = gr.Button(t("account.add_user"), scale=1)
                remove = gr.Button(t("account.remove_user"), variant="stop", scale=1)
            gr.Markdown(t("account.share_everyone_others_can"))
            with gr.Row():
                kind = gr.Radio([(t("account.kind_adapter"), "adapter"), (t("account.kind_collection"), "collection")],
                                value="adapter", label=t("account.what"))
                item = gr.Textbox(label=t("common.name"))
                whose = gr.Textbox(label=t("account.owner"), info=t("account.empty_own"))
                shared = gr.Checkbox(value=True, label=t("account.shared"))
                apply = gr.Button(t("account.apply"))
            shared_status = gr.Markdown()
        with gr.Column(visible=False) as api_keys:
            gr.Markdown(t("account.api_keys_openai_compatible"))
            with gr.Row():
                label = gr.Textbox(label=t("account.what_key"), scale=3, placeholder=t("account.laptop_notebook"))
                create = gr.Button(t("account.create_key"), scale=1)
            new_key = gr.Textbox(label=t("account.new_key_copy_now"), visible=False,
                                 interactive=False, buttons=["copy"])
            keys = gr.Dataframe(label=t("account.keys_click_one_revoke"), interactive=False)
            with gr.Row():
                key_id = gr.Textbox(label=t("account.key"), scale=3)
                revoke = gr.Button(t("account.revoke"), variant="stop", scale=1)
    on_load(handler(who, account), None, [line, logout, admin, api_keys])
    add.click(handler(add_user, account), [name, password, is_admin], [users, name, password], **HIDDEN)
    remove.click(handler(remove_user, account), name, users, **HIDDEN)
    apply.click(handler(share, account), [kind, item, whose, shared], shared_status, **HIDDEN)
    create.click(handler(create_key, account), label, [new_key, keys, label], **HIDDEN)
    revoke.click(handler(revoke_key, account), key_id, [keys, key_id], **HIDDEN)
    keys.select(first_cell, None, key_id, **HIDDEN)
    on_load(handler(_keys_if_signed_in, account), None, keys)
    on_load(handler(_users_if_admin, account), None, users)


def _keys_if_signed_in(account: AccountService, request: gr.Request = None):
    try:
        return keys_table(account, request)
    except UserError:  # not signed in yet (a Space with Hugging Face sign-in)
        return pd.DataFrame(columns=localized_columns("account.column", ["key", "label", "created"]))


def _users_if_admin(account: AccountService, request: gr.Request = None):
    try:
        return users_table(account, request)
    except UserError:
        return pd.DataFrame(columns=localized_columns("account.column", ["user", "admin"]))
