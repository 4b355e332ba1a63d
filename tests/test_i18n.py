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


def _report_sentences() -> list[str]:
    """Every summary the report can write, as training.report and the answer check write them."""
    from training import answer_check
    from training.report import AnswerCheck, Sample, verdict

    history = [[1, 2.0, None], [2, 1.0, None]]
    summaries = [verdict(2.0, 0.001, True, history)[1], verdict(2.0, 1.0, False, history, perplexity=False)[1],
                 verdict(2.0, 1.9, True, history)[1], verdict(1.0, 0.9, True, [[1, 2.0, 1.0], [2, 1.0, 1.5]])[1]]
    shown = (Sample("a review", "2", "2", "1"),)  # a label is the user's own text: it stays
    summaries += [answer_check.sentence(AnswerCheck(False, problem, examples=shown))
                  for problem in answer_check.SENTENCES]
    return summaries


@pytest.mark.parametrize("summary", _report_sentences())
def test_every_report_summary_reads_in_chinese(summary):
    chinese = i18n.localized_text(summary, "zh-CN")
    assert not re.search(r"[A-Za-z]{3,}", chinese), chinese  # no English sentence left (numbers and % may stay)
    assert i18n.localized_text(summary, "en") == summary


def test_a_summary_keeps_the_sentences_it_has_no_template_for():
    summary = ("The answers at step 12 were ruined, so the adapter from step 6, whose answers pass the check, is "
               "kept. It learned: the loss on held-out examples fell by 42%. Accuracy 50.0 → 90.0.")
    assert i18n.localized_text(summary, "zh-CN") == (
        "第 12 步的回答已被破坏，因此保留了第 6 步的适配器，它的回答通过了检查。学到了：留出的样例上的损失下降了 42%。"
        "Accuracy 50.0 → 90.0.")


def test_the_train_report_reads_in_the_page_language():
    from types import SimpleNamespace

    from gradio.context import LocalContext

    from ui import train_tab

    report = {"verdict": "ruined", "loss_before": 2.1, "loss_after": 0.4,
              "summary": "Its answers now repeat the same words over and over. Try a lower learning rate or fewer "
                         "epochs.",
              "answer_check": {"passed": False, "problem": "repetition", "repetition": 0.4, "collapse": 0.1,
                               "drift": 0.0, "examples": [{"prompt": "Hi", "expected": "Hello.", "base": "Hello.",
                                                           "adapter": "Hi hi hi hi"}]}}
    status = {"state": "succeeded", "step": 6, "total_steps": 6, "epoch": 3, "eta_s": 0, "error": "",
              "adapter": "my-bot", "report": report}
    token = LocalContext.request.set(SimpleNamespace(cookies={i18n.COOKIE: "zh-CN"}, headers={}))
    try:
        text = train_tab.report_markdown(status) + train_tab.status_markdown(status)
    finally:
        LocalContext.request.reset(token)
    for chinese in ("它的回答现在反复重复同样的词", "回答检查未通过（重复）", "最差的回答", "适配器已保存为 **my-bot**",
                    "已完成", "第 6 / 6 步"):
        assert chinese in text
    assert "Hi hi hi hi" in text  # the model's answers are never translated
    english = train_tab.report_markdown(status)
    assert "Answer check failed (repetition)" in english and "repeat the same words" in english
