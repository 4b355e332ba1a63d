"""The adapter library: adapters from plain peft come in as zips and answer as peft does, go out as zips that
plain peft loads, merge into models that answer the same, and every unsafe upload is refused writing nothing."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapters_kit import plain_lora, plain_peft_greedy, zipped
from errors import UserError
from models.speculation import DRAFTS_FILE, GAP, save_answers
from tasks.base import Upload
from tasks.chat import ChatTask
from tasks.library import AdapterLibrary

QUESTION = "Tell me about the moon."


@pytest.fixture
def library(ctx) -> AdapterLibrary:
    return AdapterLibrary(ctx)


def upload(path: Path) -> Upload:
    return Upload(str(path), path.name)


def greedy(ctx, model, adapter: str = "", tokens: int = 10) -> tuple[str, list[int]]:
    """The Chat task's greedy reply and the prompt ids it read."""
    chat = ChatTask(ctx)
    prompt = chat.prompt(QUESTION, [], "", str(model), adapter, tokens)
    return chat.reply(QUESTION, model=str(model), adapter=adapter, temperature=0, max_new_tokens=tokens).text(), \
        prompt.ids


def nothing_written(ctx) -> bool:
    root = ctx.adapters.store.root
    return not any(p.name == "adapter_model.safetensors" for p in root.rglob("*"))


def test_plain_peft_adapter_imports_and_answers_as_peft_does(ctx, library, tiny_chat_dir, tmp_path):
    folder = plain_lora(tiny_chat_dir, tmp_path / "peft")
    out = library.import_adapter(upload(zipped(folder, tmp_path / "moon.zip")), "", "chat", str(tiny_chat_dir))
    assert out["name"] == "moon" and out["task"] == "chat" and out["rank"] == 4 and out["size_mb"] > 0
    text, ids = greedy(ctx, tiny_chat_dir, "moon")
    tokenizer = ctx.hub.lm(str(tiny_chat_dir)).tokenizer
    expected = tokenizer.decode(plain_peft_greedy(tiny_chat_dir, folder, ids, 10), skip_special_tokens=True)
    base = tokenizer.decode(plain_peft_greedy(tiny_chat_dir, None, ids, 10), skip_special_tokens=True)
    assert text == expected and text != base  # the adapter matters, and it answers exactly as plain peft
    listed = ctx.adapters.store.list("local", "chat")
    assert [a["name"] for a in listed] == ["moon"] and listed[0]["base"] == Path(tiny_chat_dir).name
    # The folder's files work as well as a zip, and a taken name gets a suffix.
    files = [upload(folder / "adapter_config.json"), upload(folder / "adapter_model.safetensors")]
    assert library.import_adapter(files, "moon", "chat", str(tiny_chat_dir))["name"] == "moon-2"


def test_an_uploaded_drafts_file_is_never_kept(ctx, library, tiny_chat_dir, tmp_path):
    folder = plain_lora(tiny_chat_dir, tmp_path / "peft")
    save_answers(folder, [7, 8, 9, GAP])  # a stranger's "training answers": drafts come only from training here
    library.import_adapter(upload(zipped(folder, tmp_path / "moon.zip")), "moon", "chat", str(tiny_chat_dir))
    assert not (ctx.adapters.store.folder("local", "moon") / DRAFTS_FILE).exists()


def test_export_gives_back_equal_tensors_with_a_model_card(ctx, library, tiny_chat_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = plain_lora(tiny_chat_dir, tmp_path / "peft")
    library.import_adapter(upload(zipped(folder, tmp_path / "moon.zip")), "moon", "chat", str(tiny_chat_dir))
    save_answers(ctx.adapters.store.folder("local", "moon"), [7, 8, 9, GAP])  # as a trained adapter keeps them
    exported = library.export_adapter("moon")
    assert exported.name == "moon.zip"
    with zipfile.ZipFile(exported.path) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "out")
    assert names == {f"moon/{n}" for n in ("adapter_config.json", "adapter_model.safetensors",
                                           "lora_studio.json", "README.md")}  # the training answers stay here
    out = tmp_path / "out" / "moon"
    original, back = load_file(folder / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert original.keys() == back.keys() and all(torch.equal(original[k], back[k]) for k in original)
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "PeftModel.from_pretrained" in card and "chat" in card
    meta = json.loads((out / "lora_studio.json").read_text())
    assert "base_location" not in meta and "owner" not in meta  # nothing about the server leaves it
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_dir), str(out))  # plain peft loads it
    # An exported adapter imports again (its lora_studio.json names the task).
    assert library.import_adapter(upload(Path(exported.path)), "again", "", str(tiny_chat_dir))["task"] == "chat"


def test_merged_model_answers_as_the_adapter_and_is_a_model_by_its_name(ctx, library, tiny_chat_dir, tmp_path):
    folder = plain_lora(tiny_chat_dir, tmp_path / "peft")
    library.import_adapter(upload(zipped(folder, tmp_path / "moon.zip")), "moon", "chat", str(tiny_chat_dir))
    merged = library.merge_adapter("moon")
    assert merged == {"model": "moon-merged", "base": Path(tiny_chat_dir).name, "task": "chat"}
    with_adapter, _ = greedy(ctx, tiny_chat_dir, "moon")
    as_model, _ = greedy(ctx, "moon-merged")
    assert as_model == with_adapter
    model_dir = ctx.adapters.merged.find("local", "moon-merged")
    assert (model_dir / "model.safetensors").exists() and json.loads(
        (model_dir / "lora_studio.json").read_text())["merged_from"] == "moon"
    assert ctx.adapters.merged.find("someone-else", "moon-merged") is None  # a merged model is its owner's


def test_encoder_adapters_merge_into_models_that_answer_the_same(ctx, library, tiny_bert_dir, minilm_dir,
                                                                    tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForSequenceClassification

    from tasks.inside import InsideModel
    from tasks.sentiment import SentimentTask

    torch.manual_seed(5)
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"], modules_to_save=["classifier"],
                        init_lora_weights=False, task_type="SEQ_CLS")
    get_peft_model(classifier, config).save_pretrained(tmp_path / "tickets")
    library.import_adapter(upload(zipped(tmp_path / "tickets", tmp_path / "tickets.zip")), "tickets", "sentiment",
                           str(tiny_bert_dir))
    assert library.merge_adapter("tickets")["model"] == "tickets-merged"
    sentiment, texts = SentimentTask(ctx), ["I was billed twice.", "Thanks, all good now."]
    assert not sentiment.zero_shot("tickets-merged")  # a classifier of its own, by its name
    assert sentiment.sentiment(texts, "tickets-merged") == sentiment.sentiment(texts, "", "tickets")
    with pytest.raises(UserError, match="Unknown model"):
        sentiment.sentiment(texts, "tickets-merged", owner="someone-else")  # a merged model is its owner's

    from transformers import AutoModelForQuestionAnswering

    from tasks.answer import AnswerTask

    config = LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"], modules_to_save=["qa_outputs"],
                        init_lora_weights=False, task_type="QUESTION_ANS")
    get_peft_model(AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir), config).save_pretrained(
        tmp_path / "names")
    library.import_adapter(upload(zipped(tmp_path / "names", tmp_path / "names.zip")), "names", "answer",
                           str(tiny_bert_dir))
    library.merge_adapter("names")
    qa, passage = AnswerTask(ctx), "The Harbour team is led by Mira Okafor. It meets on Tuesdays."
    assert not qa.sentence_level("names-merged")
    assert qa.answer("Who leads the team?", passage, "", "names-merged") == qa.answer(
        "Who leads the team?", passage, "", "", "names")

    config = LoraConfig(r=4, lora_alpha=64, target_modules=["query", "value"], init_lora_weights=False)
    get_peft_model(AutoModel.from_pretrained(minilm_dir), config).save_pretrained(tmp_path / "jargon")
    library.import_adapter(upload(zipped(tmp_path / "jargon", tmp_path / "jargon.zip")), "jargon", "search",
                           str(minilm_dir))
    library.merge_adapter("jargon")
    inside = InsideModel(ctx)
    merged = torch.tensor(inside.similarity(texts, "jargon-merged")["matrix"])
    assert torch.allclose(merged, torch.tensor(inside.similarity(texts, str(minilm_dir), "jargon")["matrix"]),
                          atol=1e-5)
    assert not torch.allclose(merged, torch.tensor(inside.similarity(texts, str(minilm_dir))["matrix"]), atol=1e-3)


def _bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("adapter_config.json", "{}")
        archive.writestr("adapter_model.safetensors", b"\0" * (200 * 2**20))  # 200 MB of zeros: ~200 KB zipped
    return path


def _with_member(path: Path, name: str, folder: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, file.name)
        archive.writestr(name, "x")
    return path


def _configured(folder: Path, **changes) -> Path:
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return folder


def _wrong_shape(folder: Path) -> Path:
    weights = load_file(folder / "adapter_model.safetensors")
    first = next(k for k in weights if "lora_A" in k)
    weights[first] = torch.zeros(weights[first].shape[0], weights[first].shape[1] + 3)
    save_file(weights, folder / "adapter_model.safetensors")
    return folder


@pytest.mark.parametrize("make, message", [
    (lambda f, t: _with_member(t / "a.zip", "../x", f), "outside the adapter"),
    (lambda f, t: _with_member(t / "a.zip", "/etc/x", f), "outside the adapter"),
    (lambda f, t: _bomb(t / "bomb.zip"), "more than an adapter"),
    (lambda f, t: zipped(_wrong_shape(f), t / "shape.zip"), "does not fit"),
    (lambda f, t: ((f / "adapter_model.safetensors").rename(f / "adapter_model.bin"), zipped(f, t / "b.zip"))[1],
     r"\.bin \(pickle\)"),
    (lambda f, t: ((f / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING"}'),
                   zipped(f, t / "c.zip"))[1], "not a LoRA"),
    (lambda f, t: ((t / "junk.zip").write_bytes(b"not a zip"), t / "junk.zip")[1], "not a readable zip"),
    (lambda f, t: zipped(_configured(f, init_lora_weights="pissa"), t / "p.zip"), "rewrites the base model"),
    (lambda f, t: zipped(_configured(f, use_dora=True), t / "d.zip"), "DoRA"),
])
def test_unsafe_or_unfitting_uploads_are_refused_and_write_nothing(ctx, library, tiny_chat_dir, tmp_path, make,
                                                                   message):
    folder = plain_lora(tiny_chat_dir, tmp_path / "peft")
    bad = make(folder, tmp_path)
    with pytest.raises(UserError, match=message):
        library.import_adapter(upload(bad), "bad", "chat", str(tiny_chat_dir))
    assert nothing_written(ctx) and ctx.adapters.store.list("local") == []
    assert not (tmp_path / "x").exists()


def test_an_adapter_for_another_model_is_refused(ctx, library, tiny_chat_dir, tiny_gpt2_dir, tmp_path):
    folder = plain_lora(tiny_gpt2_dir, tmp_path / "gpt2-lora", targets=("c_attn",))
    with pytest.raises(UserError, match="does not have"):
        library.import_adapter(upload(zipped(folder, tmp_path / "g.zip")), "g", "chat", str(tiny_chat_dir))
    # On its own base it fits (GPT-2's Conv1D layers store their weights the other way round).
    assert library.import_adapter(upload(zipped(folder, tmp_path / "g.zip")), "g", "chat",
                                  str(tiny_gpt2_dir))["rank"] == 4


def test_encoder_adapters_must_carry_their_head(ctx, library, tiny_chat_dir, tmp_path):
    folder = plain_lora(tiny_chat_dir, tmp_path / "peft")
    with pytest.raises(UserError, match="must carry its head"):
        library.import_adapter(upload(zipped(folder, tmp_path / "s.zip")), "s", "sentiment", "")


def test_push_without_a_reachable_hub_says_so(ctx, library, tiny_chat_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = plain_lora(tiny_chat_dir, tmp_path / "peft")
    library.import_adapter(upload(zipped(folder, tmp_path / "moon.zip")), "moon", "chat", str(tiny_chat_dir))
    with pytest.raises(UserError, match="cannot be reached"):
        library.push_adapter("moon", "someone/moon", "hf_token")
    with pytest.raises(UserError, match="your-name/model-name"):
        library.push_adapter("moon", "not a repo", "hf_token")
    with pytest.raises(UserError, match="no adapter named"):
        library.push_adapter("nope", "someone/moon", "hf_token")


def test_library_through_the_api(launch, settings, tiny_chat_dir, tmp_path):
    from gradio_client import Client, handle_file

    url, demo = launch(settings)
    client = Client(url, verbose=False)
    folder = plain_lora(tiny_chat_dir, tmp_path / "peft")
    out = client.predict(handle_file(str(zipped(folder, tmp_path / "moon.zip"))), "moon", "chat",
                         str(tiny_chat_dir), api_name="/import_adapter")
    assert out["name"] == "moon"
    assert client.predict("moon", "luna", api_name="/rename_adapter") == {"name": "luna", "old_name": "moon"}
    downloaded = Path(client.predict("luna", api_name="/export_adapter"))
    assert downloaded.name == "luna.zip" and "luna/adapter_model.safetensors" in zipfile.ZipFile(
        downloaded).namelist()
    gguf = Path(client.predict("luna", "q8_0", api_name="/export_gguf"))
    assert gguf.name == "luna-gguf-q8_0.zip" and {"luna/Modelfile", "luna/luna.lora.gguf"} <= set(zipfile.ZipFile(
        gguf).namelist())
    merged = client.predict("luna", "", api_name="/merge_adapter")
    assert merged["model"] == "luna-merged"
    reply = client.predict(QUESTION, [], "", "luna-merged", "", 0, 0.9, 8, api_name="/chat")
    assert reply == client.predict(QUESTION, [], "", str(tiny_chat_dir), "luna", 0, 0.9, 8, api_name="/chat")
