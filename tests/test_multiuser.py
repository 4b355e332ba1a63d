"""Open to many people: accounts, ownership and sharing, tried from outside through gradio_client against the
launched app with real accounts, as a stranger would."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import synthetic
from adapters_kit import plain_lora, zipped
from accounts import Accounts, password_matches
from errors import UserError
from waiting import wait_for

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "carol": "carol-admin-3"}


def test_accounts_store_slow_salted_hashes_in_a_private_file(settings):
    accounts = Accounts(settings)
    assert not accounts.enabled
    accounts.add("alice", "alice-secret-1")
    accounts.add("carol", "carol-admin-3", admin=True)
    stored = json.loads(accounts.path.read_text())["users"]
    assert "alice-secret-1" not in accounts.path.read_text() and stored["alice"]["password"].startswith("scrypt$")
    assert stat.S_IMODE(os.stat(accounts.path).st_mode) == 0o600
    assert accounts.enabled and accounts.check("alice", "alice-secret-1") and not accounts.check("alice", "nope")
    assert not accounts.check("nobody", "alice-secret-1") and accounts.is_admin("carol")
    assert not accounts.is_admin("alice") and accounts.first_admin() == "carol"
    accounts.set_password("alice", "another-secret")
    assert accounts.check("alice", "another-secret") and not password_matches("x", "not-a-hash")
    for name, password, message in [("alice", "long-enough", "already a user"), ("Bad Name", "long-enough", "username"),
                                    ("local", "long-enough", "username"), ("dave", "short", "at least 8")]:
        with pytest.raises(UserError, match=message):
            accounts.add(name, password)
    accounts.remove("alice")
    assert [u["name"] for u in accounts.list()] == ["carol"]


def test_the_users_command_takes_the_apps_options_before_or_after_the_command(settings, capsys):
    from cli import users_command

    Accounts(settings).add("carol", "carol-admin-3", admin=True)
    folder = str(settings.data_dir)
    for argv in (["list", "--data-dir", folder], ["--data-dir", folder, "list"]):
        assert users_command(argv) == 0
        assert capsys.readouterr().out == "carol  (admin)\n"


@pytest.fixture
def accounts_app(launch, settings, tmp_path):
    """The launched app with three real accounts (carol is the admin) and something made before accounts."""
    accounts = Accounts(settings)
    for name, password in PASSWORDS.items():
        accounts.add(name, password, admin=name == "carol")
    url, demo = launch(settings)
    return url, demo, {name: Client(url, auth=(name, password), verbose=False) for name, password in PASSWORDS.items()}


def _refused(call, message: str) -> None:
    with pytest.raises(AppError, match=message):
        call()


def test_anonymous_clients_and_wrong_passwords_get_nothing(accounts_app):
    url, _, _ = accounts_app
    for path, data in [("config", None), ("gradio_api/info", None), ("gradio_api/file=/etc/hostname", None),
                       ("gradio_api/queue/join", b"{}"), ("gradio_api/call/whoami", b'{"data": []}'),
                       ("gradio_api/call/import_adapter", b'{"data": []}'),
                       ("gradio_api/call/export_adapter", b'{"data": ["x"]}'), ("v1/models", None),
                       ("gradio_api/upload", b"")]:
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(urllib.request.Request(url + path, data=data), timeout=10)
        assert error.value.code in (401, 403), path
    with pytest.raises(Exception, match="credentials were not provided"):
        Client(url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(url, auth=("alice", "wrong password"), verbose=False)


@pytest.mark.worker  # alice's training job runs in a worker process
def test_users_see_only_their_own_work_and_an_admin_shares(accounts_app, tiny_bert_dir, tmp_path):
    _, demo, client = accounts_app
    alice, bob, carol = client["alice"], client["bob"], client["carol"]
    assert alice.predict(api_name="/whoami") == {"name": "alice", "admin": False, "accounts": True}

    (tmp_path / "plans.txt").write_text("The secret launch is planned for the ninth of March.", encoding="utf-8")
    alice.predict("plans", [handle_file(str(tmp_path / "plans.txt"))], "", api_name="/add_documents")
    assert [c["name"] for c in alice.predict(api_name="/collections")] == ["plans"]
    assert bob.predict(api_name="/collections") == []
    _refused(lambda: bob.predict("launch", "plans", 3, "", api_name="/search"), "no collection named 'plans'")
    _refused(lambda: bob.predict("plans", "plans.txt", api_name="/remove_document"), "no collection named 'plans'")
    _refused(lambda: bob.predict("When?", "", "plans", "", "", api_name="/answer"), "no collection named 'plans'")

    job = alice.predict("sentiment", handle_file(str(synthetic.sentiment_csv(tmp_path))), str(tiny_bert_dir),
                        "tickets", "quick", {"max_steps": 2}, {}, api_name="/train")
    unknown = f"There is no training job '{job['job_id']}'"
    for api_name in ("/job", "/cancel", "/resume"):
        _refused(lambda api_name=api_name: bob.predict(job["job_id"], api_name=api_name), unknown)
    status = wait_for(lambda: (s := alice.predict(job["job_id"], api_name="/job"))["state"] in
                      ("succeeded", "failed") and s, what="alice's job")
    assert status["state"] == "succeeded", status["error"]
    assert bob.predict("", api_name="/adapters") == []
    _refused(lambda: bob.predict(["I was billed twice"], "", "tickets", api_name="/sentiment"),
             "no adapter named 'tickets'")
    _refused(lambda: bob.predict("tickets", api_name="/delete_adapter"), "no adapter named 'tickets'")
    _refused(lambda: bob.predict(api_name="/users"), "Only an admin")
    _refused(lambda: bob.predict("adapter", "tickets", "alice", True, api_name="/share"), "Only an admin")

    assert [(c["name"], c["owner"]) for c in carol.predict(api_name="/collections")] == [("plans", "alice")]
    everything = carol.predict("", api_name="/adapters")  # an admin sees all
    assert [(a["name"], a["owner"]) for a in everything] == [("tickets", "alice")]
    assert carol.predict(job["job_id"], api_name="/job")["state"] == "succeeded"
    assert carol.predict("adapter", "tickets", "alice", True, api_name="/share")["shared"] is True
    assert [(a["name"], a["owner"], a["shared"]) for a in bob.predict("sentiment", api_name="/adapters")] == [
        ("tickets", "alice", True)]
    trained = {line.rsplit(",", 1)[1] for line in synthetic.sentiment_csv(tmp_path).read_text().splitlines()[1:]}
    labels = {row["label"] for row in bob.predict(["I was billed twice"], "", "tickets", api_name="/sentiment")}
    assert labels <= trained  # alice's classifier (her labels), used by bob
    _refused(lambda: bob.predict("tickets", api_name="/delete_adapter"), "shared with you by alice")
    carol.predict("collection", "plans", "alice", True, api_name="/share")
    assert bob.predict("launch", "plans", 1, "", api_name="/search")[0]["source"] == "plans.txt"
    _refused(lambda: bob.predict("plans", "plans.txt", api_name="/remove_document"), "read-only")
    assert alice.predict("tickets", api_name="/delete_adapter") == []  # the owner still can


def test_only_real_uploads_are_read(accounts_app, tmp_path):
    _, _, client = accounts_app
    alice = client["alice"]
    secret = tmp_path / "server-secret.txt"
    secret.write_text("The server's private notes.", encoding="utf-8")
    path_dict = {"path": str(secret), "orig_name": "a.txt"}  # never uploaded: a plain path on the server
    _refused(lambda: alice.predict("stolen", [path_dict], "", api_name="/add_documents"), "Upload the file")
    assert alice.predict(api_name="/collections") == []  # nothing was indexed
    _refused(lambda: alice.predict("chat", path_dict, "", "x", api_name="/train"), "Upload the file")
    assert alice.predict("", api_name="/adapters") == []


def test_the_adapter_library_is_each_users_own(accounts_app, tiny_chat_dir, tmp_path):
    _, demo, client = accounts_app
    alice, bob = client["alice"], client["bob"]
    archive = zipped(plain_lora(tiny_chat_dir, tmp_path / "peft"), tmp_path / "moon.zip")
    assert alice.predict(handle_file(str(archive)), "moon", "chat", str(tiny_chat_dir),
                         api_name="/import_adapter")["name"] == "moon"
    unknown = "no adapter named 'moon'"
    _refused(lambda: bob.predict("moon", "mine", api_name="/rename_adapter"), unknown)
    _refused(lambda: bob.predict("moon", api_name="/export_adapter"), unknown)
    _refused(lambda: bob.predict("moon", "", api_name="/merge_adapter"), unknown)
    _refused(lambda: bob.predict("moon", "f16", api_name="/export_gguf"), unknown)
    _refused(lambda: bob.predict("moon", "bob/moon", "hf_x", True, api_name="/push_adapter"), unknown)
    _refused(lambda: bob.predict("Hi", [], "", "", "moon", 0, 0.9, 4, api_name="/chat"), unknown)
    _refused(lambda: bob.predict("chat", {"message": "Hi"}, [{"adapter": "moon"}], api_name="/compare"), unknown)
    _refused(lambda: bob.predict("Hi there", "", "moon", 5, 1.0, 1.0, api_name="/next_token"), unknown)
    _refused(lambda: bob.predict("Hi there", "", "moon", api_name="/token_loss"), unknown)
    # A server path is never read as an upload, and bob's import cannot land in alice's library.
    _refused(lambda: bob.predict({"path": str(archive), "orig_name": "moon.zip"}, "moon", "chat",
                                 str(tiny_chat_dir), api_name="/import_adapter"), "Upload the file")
    assert bob.predict(handle_file(str(archive)), "moon", "chat", str(tiny_chat_dir),
                       api_name="/import_adapter")["name"] == "moon"  # his own "moon": names are per user
    alice.predict("moon", "", api_name="/merge_adapter")
    _refused(lambda: bob.predict("Hi", [], "", "moon-merged", "", 0, 0.9, 4, api_name="/chat"), "Unknown model")
    _refused(lambda: bob.predict("moon-merged", "f16", api_name="/export_gguf"), "no adapter named 'moon-merged'")
    alices_folder = str(demo.ctx.adapters.merged.find("alice", "moon-merged"))  # typed as a path: no way in
    _refused(lambda: bob.predict("Hi", [], "", alices_folder, "", 0, 0.9, 4, api_name="/chat"), "Unknown model")
    assert alice.predict("Hi", [], "", "moon-merged", "", 0, 0.9, 4, api_name="/chat") is not None
    assert [a["owner"] for a in alice.predict("", api_name="/adapters")] == ["alice"]


def test_data_made_before_accounts_goes_to_the_first_admin(settings, launch, tmp_path):
    from tasks.search import SearchTask
    from tasks.base import Context
    from models.loading import ModelHub

    (tmp_path / "old.txt").write_text("Made when the app had no accounts.", encoding="utf-8")
    SearchTask(Context(settings, ModelHub(settings))).add_documents("old notes", [(str(tmp_path / "old.txt"),
                                                                                   "old.txt")])
    Accounts(settings).add("carol", PASSWORDS["carol"], admin=True)
    Accounts(settings).add("bob", PASSWORDS["bob"])
    url, _ = launch(settings)
    assert [c["name"] for c in Client(url, auth=("carol", PASSWORDS["carol"]), verbose=False)
            .predict(api_name="/collections")] == ["old notes"]
    assert Client(url, auth=("bob", PASSWORDS["bob"]), verbose=False).predict(api_name="/collections") == []
