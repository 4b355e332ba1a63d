"""The page's languages: every dictionary has exactly English's keys, every key the UI uses exists, and the known
error sentences come out in the page's language (the public API's stay English)."""

import re
from pathlib import Path

import pytest

from ui import i18n

UI = Path(__file__).resolve().parent.parent / "ui"
USED = re.compile(r"""\b(?:t|marked)\(\s*["']([\w.]+)["']""")  # t("key") / marked("key") with a literal key
QUOTED_KEY = re.compile(r"""["']((?:compare|chat|verdict|task)\.[\w.]+)["']""")  # keys kept in tuples first


def used_keys() -> set[str]:
    """Every literal key in the ui layer's source, in t()/marked() calls or in the tuples they index."""
    keys = set()
    for path in UI.rglob("*.py"):
        if path.parent.name == "i18n":
            continue
        source = path.read_text()
        keys |= set(USED.findall(source)) | set(QUOTED_KEY.findall(source))
    return keys


@pytest.mark.parametrize("locale", [locale for locale in i18n.languages() if locale != i18n.SOURCE])
def test_every_language_has_exactly_the_english_keys(locale):
    english, other = set(i18n.english()), set(i18n.languages()[locale])
    assert not english - other, f"{locale} lacks {sorted(english - other)}"
    assert not other - english, f"{locale} has keys English does not: {sorted(other - english)}"


@pytest.mark.parametrize("locale", list(i18n.languages()))
def test_texts_are_non_empty_and_keep_their_placeholders(locale):
    for key, english in i18n.english().items():
        text = i18n.languages()[locale][key]
        assert isinstance(text, str) and text.strip(), key
        if key.startswith("error."):  # a template's {parts} are filled in from the English sentence
            assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", english)), key


def test_every_key_the_ui_uses_exists():
    from tasks.spec import TASKS
    from training.evaluation import MAX_VARIANTS
    from ui.train_tab import ADVANCED

    keys = used_keys() | {f"train.field.{name}" for name in ADVANCED} | {f"task.{task}" for task in TASKS}
    assert len(keys) > 200  # the pattern still finds them
    assert sorted(keys - set(i18n.english())) == []
    assert f"up to {MAX_VARIANTS})" in i18n.english()["evaluate.up_to"]  # the number is in the text itself


def test_the_page_is_built_with_the_marked_texts():
    import gradio as gr

    assert isinstance(i18n.translations(), gr.I18n)
    assert str(i18n.t("task.chat")).startswith("__i18n__")
    with pytest.raises(KeyError, match="en.py"):
        i18n.t("no.such.key")


class FakeRequest:
    def __init__(self, cookie: str = "", language: str = ""):
        self.cookies = {i18n.COOKIE: cookie} if cookie else {}
        self.headers = {"accept-language": language} if language else {}


@pytest.mark.parametrize("request_, locale", [
    (None, "en"), (FakeRequest(), "en"), (FakeRequest(language="zh-CN,zh;q=0.9,en;q=0.8"), "zh-CN"),
    (FakeRequest(language="zh-TW"), "zh-CN"), (FakeRequest(language="fr-FR,en;q=0.5"), "en"),
    (FakeRequest(cookie="en", language="zh-CN"), "en"),  # the page's switch wins over the browser
    (FakeRequest(cookie="zh-CN", language="en-US"), "zh-CN"),
])
def test_the_page_locale_follows_the_switch_then_the_browser(request_, locale):
    assert i18n.page_locale(request_) == locale


@pytest.mark.parametrize("sentence, chinese", [
    ("Please enter some message: it is empty.", "请输入消息：内容为空。"),
    ("The file 'notes.txt' could not be found; please upload it again.",
     "找不到文件“notes.txt”，请重新上传。"),
    ("Unknown target language 'xx': use one of en, fr, de.",
     "未知的目标语言“xx”：请使用以下之一：en, fr, de。"),
    ("A sentence nobody knows.", "A sentence nobody knows."),
])
def test_known_error_sentences_are_shown_in_chinese(sentence, chinese):
    assert i18n.localized_sentence(sentence, "zh-CN") == chinese
    assert i18n.localized_sentence(sentence, "en") == sentence


def test_the_sentences_match_what_the_server_raises():
    from errors import UserError
    from tasks.base import require_text
    from tasks.translate import language

    for raise_it in (lambda: require_text("  ", "message"), lambda: language("xx", "target")):
        with pytest.raises(UserError) as error:
            raise_it()
        assert i18n.localized_sentence(str(error.value), "zh-CN") != str(error.value)


def test_ui_events_show_errors_in_the_page_language_and_the_api_in_english(monkeypatch):
    from errors import UserError
    from ui import api

    def empty():
        raise UserError("Please enter some text: it is empty.")

    monkeypatch.setattr(api, "in_page_language", lambda sentence: i18n.localized_sentence(sentence, "zh-CN"))
    with pytest.raises(Exception, match="请输入文本"):
        api.handler(empty)()
    with pytest.raises(Exception, match="Please enter some text"):
        api.expose(empty)()


def test_the_summary_lengths_offered_are_the_tasks():
    from tasks.summarize import LENGTHS
    from ui.summarize_tab import LENGTH_CHOICES

    assert [value for _, value in LENGTH_CHOICES] == list(LENGTHS)


@pytest.mark.parametrize("verdict", ["learned", "barely", "overfit", "ruined"])  # TrainingReport.verdict
def test_each_verdict_has_its_heading(verdict):
    from ui.train_tab import verdict_heading

    assert verdict_heading(verdict) == i18n.marked(f"verdict.{verdict}")
    assert i18n.english()[f"verdict.{verdict}"].startswith("Did it learn?")  # the English page reads as before


def test_an_unknown_verdict_still_has_a_heading():
    from ui.train_tab import verdict_heading

    assert verdict_heading(None) == i18n.marked("verdict.unknown")
