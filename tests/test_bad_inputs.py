"""Malformed input to every endpoint, as a stranger's client would send it: each gets one plain sentence back,
never a traceback or a path on the server."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from conftest import free_port
from config import Settings

ROOT = Path(__file__).resolve().parent.parent
FACTS = str(ROOT / "examples" / "chat_facts.jsonl")
TINY_CHAT = "<tiny chat>"  # replaced by the tiny chat model's folder
FILES = {"binary.jsonl": b"\x00\x01\x02binary", "columns.csv": b"colA,colB\nCapital of Zorbia?,Quellmar.\n",
         "empty.txt": b"   \n"}


def file(name: str) -> str:
    return f"<file {name}>"  # replaced by an upload of that file


CASES = [
    ("/chat", ["", [], "", "", "", 0.3, 0.9, 16], "empty"),
    ("/chat", ["x" * 200_001], "too long"),
    ("/chat", ["hi", "not a list"], "history must be a list"),
    ("/chat", ["hi", [{"role": "robot", "content": "beep"}]], "needs a role"),
    ("/chat", ["hi", [], "", "", "", 5.0], "Temperature must be between"),
    ("/chat", ["hi", [], "", "", "", "hot"], "Temperature must be between"),
    ("/chat", ["hi", [], "", "../../etc/passwd"], "Unknown model"),
    ("/chat", ["hi", [], "", "/etc"], "holds no model"),
    ("/chat", ["hi", [], "", TINY_CHAT, "../../x"], "no adapter named"),
    ("/chat", ["hi", [], "", TINY_CHAT, "a\x00b"], "no adapter named"),
    ("/chat", ["hi", [], "", TINY_CHAT, "", 0.3, 0.9, 0], "Max new tokens must be between"),
    ("/complete", ["Once", TINY_CHAT, "", 99], "Alternatives must be between"),
    ("/summarize", ["   "], "empty"),
    ("/summarize", ["Some text.", "rewrite"], "Unknown method"),
    ("/summarize", ["Some text.", "", "long"], "Unknown length"),
    ("/translate", ["Bonjour tout le monde, comment allez-vous ?", "xx"], "Unknown target language"),
    ("/translate", ["Hi", "de", "auto"], "too short to tell"),
    ("/translate", ["Hello there, how are you today my friend?", "en", "en"], "both English"),
    ("/sentiment", [[]], "Please enter some text"),
    ("/sentiment", [[1, 2]], "must be a list of strings"),
    ("/sentiment", [["ok"] * 1001], "the limit is 1,000"),
    ("/answer", ["", "Some context."], "empty"),
    ("/answer", ["Why?"], "paste a context"),
    ("/answer", ["Why?", "Some context.", "notes"], "not both"),
    ("/add_documents", ["../evil", [], "Some text."], "cannot be a collection name"),
    ("/add_documents", ["notes", [], ""], "upload a file or paste"),
    ("/add_documents", ["notes", [{"path": "/etc/passwd", "orig_name": "passwd.txt"}]], "Upload the file"),
    ("/add_documents", ["notes\x00", [], "Some text."], "cannot be a collection name"),
    ("/search", ["", "notes"], "empty"),
    ("/search", ["query", "notes", 0], "number of results"),
    ("/search", ["query", "nope"], "no collection named"),
    ("/remove_document", ["nope", "a.txt"], "no collection named"),
    ("/train", ["chat", {"path": "/etc/hostname", "orig_name": "data.jsonl"}], "Upload the file"),
    ("/train", ["chat", file("binary.jsonl"), TINY_CHAT, "x"], "looks binary"),
    ("/train", ["chat", file("columns.csv"), TINY_CHAT, "x"], "columns found: 'colA', 'colB'"),
    ("/train", ["chat", file("empty.txt"), TINY_CHAT, "x"], "is empty"),
    ("/train", ["poetry", file("columns.csv")], "not available"),
    ("/train", ["chat", FACTS, TINY_CHAT, "x", "huge"], "Unknown preset"),
    ("/train", ["chat", FACTS, TINY_CHAT, "x", "quick", {"epochs": "many"}], "must be a float"),
    ("/train", ["chat", FACTS, TINY_CHAT, "x", "quick", {"colour": 1}], "Unknown training setting"),
    ("/train", ["chat", FACTS, TINY_CHAT, "x", "quick", {"max_steps": 10**9}], "Max steps must be between"),
    ("/train", ["chat", FACTS, TINY_CHAT, "x", "quick", {"epochs": 1000, "batch_size": 1}], "at most 20,000"),
    ("/train", ["chat", FACTS, TINY_CHAT, "///"], "Please give the adapter a name"),
    ("/train", ["chat", FACTS, TINY_CHAT, "x", "quick", {}, "not a mapping"], "Columns must map"),
    ("/job", ["nope"], "There is no training job"),
    ("/job", [["a", "list"]], "There is no training job"),
    ("/cancel", ["../../jobs"], "There is no training job"),
    ("/delete_adapter", ["../../etc"], "no adapter named"),
    ("/share", ["adapter", "x"], "Only an admin"),
    ("/import_adapter", [{"path": "/etc/hostname", "orig_name": "adapter.zip"}], "Upload the file"),
    ("/import_adapter", [[]], "Upload the adapter"),
    ("/import_adapter", [file("columns.csv")], "needs adapter_config.json"),
    ("/import_adapter", [file("bomb.zip")], "more than an adapter can be"),  # 50 MB from a 50 KB upload
    ("/import_adapter", [file("binary.jsonl"), "x", "poetry"], "needs adapter_config.json"),
    ("/rename_adapter", ["../../etc", "x"], "no adapter named"),
    ("/rename_adapter", ["x" * 100_000, "y"], "no adapter named"),
    ("/export_adapter", ["nope"], "no adapter named"),
    ("/merge_adapter", ["../nope"], "no adapter named"),
    ("/export_gguf", ["../nope", "f16"], "no adapter named"),
    ("/export_gguf", ["nope", "q9_k"], "quantization f16, q8_0, q4_0"),
    ("/push_adapter", ["nope", "me/nope", "hf_x"], "no adapter named"),
    ("/push_adapter", ["nope", "../../etc", "hf_x"], "your-name/model-name"),
    ("/push_adapter", ["nope", "me/nope", ""], "access token"),
    # Every parameter after the first is optional (DESIGN §1): left out, it is asked for in a sentence.
    ("/train", ["chat"], "upload a data file"),
    ("/remove_document", ["handbook"], "document name: it is empty"),
    ("/rename_adapter", ["nope"], "no adapter named"),
    ("/push_adapter", ["nope"], "your-name/model-name"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory, shared_models_dir, tiny_chat_dir):
    from app import build_app

    data = tmp_path_factory.mktemp("bad-inputs") / "data"
    data.mkdir()
    (data / "models").symlink_to(shared_models_dir, target_is_directory=True)
    demo = build_app(Settings(data_dir=data, threads=2))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                show_error=False)
    folder = tmp_path_factory.mktemp("bad-files")
    for name, content in FILES.items():
        (folder / name).write_bytes(content)
    with zipfile.ZipFile(folder / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("adapter_config.json", "{}")
        bomb.writestr("adapter_model.safetensors", bytes(50 * 2**20))
    yield Client(demo.local_url, verbose=False), folder, tiny_chat_dir
    demo.training.manager.shutdown()
    demo.close()


def _argument(value, folder: Path, tiny_chat_dir: Path):
    if value == TINY_CHAT:
        return str(tiny_chat_dir)
    if value == FACTS:
        return handle_file(FACTS)
    if isinstance(value, str) and value.startswith("<file "):
        return handle_file(str(folder / value[6:-1]))
    if isinstance(value, list):
        return [_argument(item, folder, tiny_chat_dir) for item in value]
    return value


@pytest.mark.parametrize("api_name, args, message", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_malformed_request_gets_one_sentence(client, api_name, args, message):
    connection, folder, tiny_chat_dir = client
    with pytest.raises(AppError) as error:
        connection.predict(*[_argument(a, folder, tiny_chat_dir) for a in args], api_name=api_name)
    text = str(error.value)
    assert message.lower() in text.lower(), text
    assert "Traceback" not in text and str(ROOT) not in text and "File \"" not in text
