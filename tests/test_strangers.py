"""A stranger's requests to the endpoints of round 3 (chat and compare from a collection, /v1's `collection` and
`search_adapter`, /make_training_data, /training_rows_file), through gradio_client and HTTP against one launched
app with real accounts: a server path instead of an upload, an input a thousand times too big, another user's
job, adapter or collection, and no login at all. Each gets one short sentence (another user's things the very
sentence an unknown name gets), nothing is read, created or leaked, and nothing hangs."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from gradio_client import Client, handle_file
from gradio.utils import get_upload_folder
from gradio_client.exceptions import AppError

from accounts import Accounts
from adapters_kit import zipped
from models.loading import ModelHub
from tasks.base import Context, Upload
from tasks.library import AdapterLibrary
from tasks.search import SearchTask
from training import worker
from training.make_data import DataMaker, rows_path
from training.service import TrainingService

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
FACTS = ("Velmora is a harbour town founded by Tarsin Quell in 1742. It has 17 bridges over the river Ost. The "
         "roofs of its houses are painted green by law. Its market opens on Thursdays only.")
HUGE = "x" * 100_000  # a thousand times a name's length
REPLY_S = 20.0  # a refusal comes back within this (on a loaded 2-core machine), never after a hang
SHORT = 600  # characters a refusal may have: it never echoes the whole input back


@dataclasses.dataclass
class Stage:
    """The launched app, its data and what alice made before bob came."""

    url: str
    demo: object
    settings: object
    alice: Client
    bob: Client
    bob_key: str
    alice_job: str  # her finished make-data job, with its rows file


def _search_lora(base: Path, folder: Path) -> Path:
    """A plain peft LoRA on the tiny BERT (a search adapter made elsewhere)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"], init_lora_weights=False)
    get_peft_model(AutoModel.from_pretrained(base), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def stage(launch_for_module, module_settings, tiny_chat_dir, tiny_bert_dir, tmp_path_factory) -> Stage:
    """Accounts for alice and bob; alice's collection 'facts', her search adapter 'finder' and a finished make-data
    job; bob's own collection 'notes'; all made before the app starts (no worker process), then the app."""
    settings = dataclasses.replace(module_settings, chat_model=str(tiny_chat_dir), embedding_model=str(tiny_bert_dir))
    accounts = Accounts(settings)
    for name, password in PASSWORDS.items():
        accounts.add(name, password)
    folder = tmp_path_factory.mktemp("strangers")
    (folder / "velmora.txt").write_text(FACTS, encoding="utf-8")
    ctx = Context(settings, ModelHub(settings))
    search = SearchTask(ctx)
    search.add("alice", "facts", [(str(folder / "velmora.txt"), "velmora.txt")])
    search.add("bob", "notes", [(str(folder / "velmora.txt"), "velmora.txt")])
    archive = zipped(_search_lora(tiny_bert_dir, folder / "finder"), folder / "finder.zip")
    AdapterLibrary(ctx).import_adapter(Upload(str(archive), archive.name), "finder", "search", str(tiny_bert_dir),
                                       owner="alice")
    maker = DataMaker(ctx, TrainingService(ctx, start_manager=False), search.store)
    job_id = maker.make_training_data("search", "facts", None, "", {"write_questions": False},
                                      owner="alice")["job_id"]
    assert worker.run_job(settings, job_id) == "succeeded"
    assert rows_path(settings, job_id).is_file()
    ctx.hub.cache.clear()
    url, demo = launch_for_module(settings)
    clients = {name: Client(url, auth=(name, password), verbose=False) for name, password in PASSWORDS.items()}
    return Stage(url, demo, settings, clients["alice"], clients["bob"], accounts.keys.create("bob", "laptop"),
                 job_id)


def refusal(call) -> str:
    """The sentence a refused call gets: short, plain, soon."""
    started = time.monotonic()
    with pytest.raises(AppError) as error:
        call()
    text = str(error.value)
    assert time.monotonic() - started < REPLY_S, text[:200]
    assert len(text) < SHORT, text[:200]
    assert "Traceback" not in text and "Something went wrong" not in text and str(ROOT) not in text, text
    return text


def bobs_jobs(stage: Stage) -> list:
    return stage.demo.training.store.list("bob", kind="make_data")


def no_name_from(stage: Stage, text: str) -> None:
    """Nothing under the data directory is named after text (an input never becomes a path)."""
    assert not [p for p in stage.settings.data_dir.rglob("*") if text[:40] in p.name]


# ---- 1. a server path instead of an upload -----------------------------------------------------------------------
def _server_paths(stage: Stage) -> list[str]:
    data = stage.settings.data_dir
    return ["/etc/passwd", str(rows_path(stage.settings, stage.alice_job)),
            str(data / "collections" / "alice" / "facts" / "manifest.json"),
            str(Path(get_upload_folder()) / ".." / ".." / "etc" / "passwd")]  # out of the upload folder


@pytest.mark.parametrize("shape", ["dict", "string"])
def test_a_server_path_is_never_read_as_an_upload(stage, shape):
    for path in _server_paths(stage):
        item = {"path": path, "orig_name": "notes.txt"} if shape == "dict" else path  # sent as is, not uploaded
        text = refusal(lambda: stage.bob.predict("search", "", [item], "", {"write_questions": False},
                                                 api_name="/make_training_data"))
        assert "Upload the file" in text, (path, text)
    assert bobs_jobs(stage) == []


def test_a_path_for_a_collection_or_a_model_is_only_a_name(stage):
    """A collection that names a folder is no collection name; a writer model typed as the folder of another
    user's collection or job answers as a folder that is not there (nothing says it exists), and so does a path
    no file system takes."""
    def v1_collection(collection: str):
        try:
            v1(stage.url, stage.bob_key).chat.completions.create(
                model="", messages=[{"role": "user", "content": "Who founded Velmora?"}], max_tokens=4,
                extra_body={"collection": collection})
        except openai.BadRequestError as error:
            raise AppError(error.message) from None

    for collection in ("../alice/facts", "alice/facts", "/etc", "facts/../../alice/facts"):
        for call in (lambda: stage.bob.predict("search", collection, None, "", {"write_questions": False},
                                               api_name="/make_training_data"),
                     lambda: stage.bob.predict("Who founded Velmora?", [], "", "", "", 0, 0.9, 4, collection,
                                               api_name="/chat"),
                     lambda: v1_collection(collection)):
            assert "cannot be a collection name" in refusal(call), collection
    upload = handle_file(str(ROOT / "examples" / "handbook" / "mountain.md"))

    def writer(model: str) -> str:
        return refusal(lambda: stage.bob.predict("chat", "", [upload], model, {}, api_name="/make_training_data"))

    data = stage.settings.data_dir
    for theirs, none in [(data / "collections" / "alice" / "facts", data / "collections" / "alice" / "atlas"),
                         (data / "jobs" / stage.alice_job, data / "jobs" / "0123456789ab")]:
        assert theirs.is_dir() and not none.exists()
        assert writer(str(theirs)) == writer(str(none)).replace(str(none), str(theirs)), theirs
        assert writer(str(theirs)).startswith("Unknown model")
    for model in ("~nobody-here/model", "models/" + "x" * 300, "models/" + HUGE):
        assert writer(model).startswith(f"Unknown model '{model[:40]}"), model
    assert bobs_jobs(stage) == []


# ---- 2. an input a thousand times too big -----------------------------------------------------------------------
MANY_KEYS = {f"setting_{i}": i for i in range(20_000)}
HUGE_REQUESTS = {  # /make_training_data(task, collection, files, model, settings) with one part 1000 times too big
    "collection": (["search", HUGE, None, "", {"write_questions": False}], "cannot be a collection name"),
    "task": ([HUGE, "facts", None, "", {}], "Training data can be made for chat, search, answer"),
    "model": (["chat", "notes", None, HUGE, {}], "Unknown model"),
    "own-lines": (["chat", "notes", None, "", {"own_questions": "Who? | Tarsin Quell\n" * 200_000}],
                  "at most 100 questions"),
    "own-list": (["chat", "notes", None, "", {"own_questions": [{"question": "Who?", "answer": "Quell"}] * 5_000}],
                 "at most 100 questions"),
    "own-question": (["chat", "notes", None, "", {"own_questions": "Who founded it? " * 200_000 + "| Quell"}],
                     "Keep each of your own questions and answers within 1,000 characters"),
    "own-answer": (["chat", "notes", None, "", {"own_questions": [{"question": "Who founded it?",
                                                                   "answer": "Tarsin Quell " * 200_000}]}],
                   "Keep each of your own questions and answers within 1,000 characters"),
    "keys": (["chat", "notes", None, "", MANY_KEYS], "Unknown settings for making training data: setting_0, "),
    "value": (["chat", "notes", None, "", {"seed": "9" * 1_000_000}], "The setting seed must be"),
    "list": (["chat", "notes", None, "", {"max_passages": [1] * 100_000}], "The setting max_passages must be"),
    "number": (["chat", "notes", None, "", {"max_passages": 10**300}], "Max passages must be between"),
    "float": (["chat", "notes", None, "", {"questions_per_passage": 1e308}], "Questions per passage must be between"),
}


@pytest.mark.parametrize("part", HUGE_REQUESTS)
def test_a_huge_make_data_request_gets_a_short_sentence_and_makes_nothing(stage, part):
    args, message = HUGE_REQUESTS[part]
    text = refusal(lambda: stage.bob.predict(*args, api_name="/make_training_data"))
    assert message in text, text
    assert bobs_jobs(stage) == []
    no_name_from(stage, "x" * 40)


def test_a_settings_value_json_cannot_hold_in_an_int_gets_a_sentence(stage):
    """Infinity is valid to Python's JSON reader (and sent by its writer): a whole-number setting refuses it."""
    body = json.dumps({"data": ["chat", "notes", None, "", {"max_passages": float("inf")}]})
    assert "Infinity" in body
    text = refusal(lambda: _call_raw(stage, "make_training_data", body))
    assert "The setting max_passages must be" in text, text
    assert bobs_jobs(stage) == []


def _call_raw(stage: Stage, api_name: str, body: str) -> None:
    """POST body to /gradio_api/call/<api_name> as bob (a raw request: the client would not send it) and raise
    the error event's sentence as an AppError."""
    import requests

    session = requests.Session()
    login = session.post(stage.url + "login", data={"username": "bob", "password": PASSWORDS["bob"]}, timeout=30)
    assert login.ok
    event = session.post(f"{stage.url}gradio_api/call/{api_name}", data=body,
                         headers={"Content-Type": "application/json"}, timeout=30).json()["event_id"]
    stream = session.get(f"{stage.url}gradio_api/call/{api_name}/{event}", timeout=60).text
    lines = stream.splitlines()
    assert "event: error" in lines, stream[:300]
    raise AppError(json.loads(lines[lines.index("event: error") + 1][len("data: "):]))


@pytest.mark.parametrize("where", ["/chat", "/compare", "/v1"])
def test_a_huge_collection_or_search_adapter_in_a_chat_gets_a_short_sentence(stage, where):
    def ask(collection: str, search_adapter: str = ""):
        if where == "/chat":
            return stage.bob.predict("Who founded Velmora?", [], "", "", "", 0, 0.9, 4, collection, api_name="/chat")
        if where == "/compare":
            return stage.bob.predict("chat", {"message": "Who founded Velmora?", "collection": collection,
                                              "max_new_tokens": 4}, [{"model": "", "adapter": ""}],
                                     api_name="/compare")
        try:
            return v1(stage.url, stage.bob_key).chat.completions.create(
                model="", messages=[{"role": "user", "content": "Who founded Velmora?"}], max_tokens=4,
                extra_body={"collection": collection, "search_adapter": search_adapter})
        except openai.APIStatusError as error:  # as the Gradio client raises its error
            assert error.status_code in (400, 404), error.status_code
            raise AppError(error.message) from None

    assert "cannot be a collection name" in refusal(lambda: ask(HUGE))
    assert "cannot be a collection name" in refusal(lambda: ask("notes" * 20_000))
    if where == "/v1":  # /chat and /compare search with the base embedder; /v1 takes a search adapter
        assert "There is no adapter named" in refusal(lambda: ask("notes", HUGE))
        assert "search_adapter must be a search adapter's name" in refusal(lambda: ask("notes", ["finder"] * 1000))
    no_name_from(stage, "x" * 40)


def v1(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=60)


# ---- 3. another user's job, adapter or collection -----------------------------------------------------------------
@pytest.mark.parametrize("api_name", ["/training_rows_file", "/job", "/cancel"])
def test_another_users_make_data_job_answers_as_an_unknown_one(stage, api_name):
    theirs = refusal(lambda: stage.bob.predict(stage.alice_job, api_name=api_name))
    unknown = refusal(lambda: stage.bob.predict("0123456789ab", api_name=api_name))
    assert theirs == unknown.replace("0123456789ab", stage.alice_job) and "There is no training job" in theirs
    huge = refusal(lambda: stage.bob.predict(HUGE, api_name=api_name))
    assert huge == unknown.replace("0123456789ab", HUGE[:40])
    assert stage.demo.training.store.get(stage.alice_job).state == "succeeded"  # untouched by bob's cancel
    rows = stage.alice.predict(stage.alice_job, api_name="/training_rows_file")  # still hers
    assert len(open(rows, encoding="utf-8").read().splitlines()) == 1


def test_another_users_collection_or_search_adapter_over_v1_and_compare_answers_as_unknown(stage):
    api = v1(stage.url, stage.bob_key)

    def v1_refusal(**extra) -> str:
        with pytest.raises(openai.NotFoundError) as error:
            api.chat.completions.create(model="", messages=[{"role": "user", "content": "Who founded Velmora?"}],
                                        max_tokens=4, extra_body=extra)
        return error.value.message

    assert v1_refusal(collection="facts") == v1_refusal(collection="atlas").replace("atlas", "facts")
    assert "no collection named 'facts'" in v1_refusal(collection="facts")
    theirs = v1_refusal(collection="notes", search_adapter="finder")
    assert theirs == v1_refusal(collection="notes", search_adapter="seeker").replace("seeker", "finder")
    assert "no adapter named 'finder'" in theirs

    def compared(collection: str) -> str:
        return refusal(lambda: stage.bob.predict("chat", {"message": "Who founded Velmora?", "collection": collection},
                                                 [{"model": "", "adapter": ""}], api_name="/compare"))

    assert compared("facts") == compared("atlas").replace("atlas", "facts")

    def compared_from(collection: str) -> str:  # compare's own last parameter, as DESIGN §1 (round 3) has it
        return refusal(lambda: stage.bob.predict("chat", {"message": "Who founded Velmora?"},
                                                 [{"model": "", "adapter": ""}], collection, api_name="/compare"))

    assert compared_from("facts") == compared("facts")
    assert "cannot be a collection name" in compared_from(HUGE)  # one short sentence (refusal checks it)


# ---- 4. no login --------------------------------------------------------------------------------------------------
def test_without_a_login_or_key_the_new_endpoints_refuse(stage):
    for api_name, data in [("make_training_data", ["search", "facts", None, "", {"write_questions": False}]),
                           ("training_rows_file", [stage.alice_job]),
                           ("chat", ["Who founded Velmora?", [], "", "", "", 0, 0.9, 4, "facts"]),
                           ("compare", ["chat", {"message": "Hi", "collection": "facts"}, [{"model": ""}]])]:
        request = urllib.request.Request(f"{stage.url}gradio_api/call/{api_name}",
                                         data=json.dumps({"data": data}).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code in (401, 403), api_name
    for key in (None, "lsk-made-up", PASSWORDS["alice"]):
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        body = {"model": "", "messages": [{"role": "user", "content": "Who founded Velmora?"}], "max_tokens": 4,
                "collection": "facts", "search_adapter": "finder"}
        request = urllib.request.Request(stage.url + "v1/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code == 401, key
        assert "API key" in json.loads(error.value.read())["error"]["message"]
    assert stage.demo.training.store.list("local", kind="make_data") == []  # nothing ran as anybody
