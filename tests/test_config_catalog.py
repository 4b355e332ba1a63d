"""Settings from flags and environment; catalog resolution of names, folders and hub ids."""

import pytest

import app
import config
from errors import UserError
from models import catalog


def test_flags_override_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_STUDIO_PORT", "9001")
    monkeypatch.setenv("LORA_STUDIO_TRUST_REMOTE_CODE", "yes")
    from_env = app.parse_settings([])
    assert from_env.port == 9001 and from_env.trust_remote_code is True
    settings = app.parse_settings(["--port", "9002", "--data-dir", str(tmp_path), "--no-trust-remote-code"])
    assert (settings.port, settings.data_dir, settings.trust_remote_code) == (9002, tmp_path, False)


@pytest.mark.parametrize("argv", [["--port", "0"], ["--dtype", "float8"], ["--username", "ann"],
                                  ["--decode-kernels", "fast"]])
def test_bad_settings_are_refused_with_a_message(argv, capsys):
    with pytest.raises(SystemExit):
        app.parse_settings(argv)
    assert "error:" in capsys.readouterr().err


def test_trust_remote_code_is_off_by_default():
    assert config.Settings().trust_remote_code is False


def test_catalog_names_gpt_and_bert_families():
    hub_ids = {b.hub_id for b in catalog.CATALOG.values()}
    assert {"openai-community/gpt2", "distilbert/distilgpt2", "google-bert/bert-base-uncased",
            "distilbert/distilbert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2"} <= hub_ids
    assert all(b.license for b in catalog.CATALOG.values())
    with pytest.raises(ValueError):
        catalog.register(catalog.CATALOG["GPT-2"])


def test_resolve_offline_catalog_model(tmp_path):
    source = catalog.resolve("", tmp_path, "all-MiniLM-L6-v2")
    assert source.local and source.name == "all-MiniLM-L6-v2"
    assert catalog.resolve("sentence-transformers/all-minilm-l6-v2", tmp_path) == source


def test_resolve_folder(tmp_path, tiny_gpt2_dir):
    source = catalog.resolve(str(tiny_gpt2_dir), tmp_path)
    assert source.local and source.location == str(tiny_gpt2_dir)
    with pytest.raises(UserError, match="no config.json"):
        catalog.resolve(str(tmp_path), tmp_path)


@pytest.mark.parametrize("reference, message", [
    ("openai-community/gpt2", "hub cannot be reached"),  # catalog entry without an offline source
    ("someone/some-model", "hub cannot be reached"),
    ("not a model!", "Unknown model"),
])
def test_unreachable_or_unknown_models_are_named(tmp_path, reference, message):
    with pytest.raises(UserError, match=message) as error:
        catalog.resolve(reference, tmp_path)
    assert reference.split("/")[-1].lower() in str(error.value).lower() or "GPT-2" in str(error.value)
