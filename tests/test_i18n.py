"""The page's languages: every dictionary has exactly English's keys, every key the UI uses exists, and the known
error sentences come out in the page's language (the public API's stay English)."""

import re
from pathlib import Path

import pytest

from ui import i18n

UI = Path(__file__).resolve().parent.parent / "ui"
USED = re.compile(r"""\b(?:t|marked|phrase)\(\s*["']([\w.]+)["']""")  # t / marked / phrase("key") with a literal key
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
        if key.startswith(i18n.SENTENCES):  # a template's {parts} are filled in from the English sentence
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
    searching = {**status, "state": "running", "stage": "trial 2 of 6: lr 3e-3, rank 16"}
    token = LocalContext.request.set(SimpleNamespace(cookies={i18n.COOKIE: "zh-CN"}, headers={}))
    try:
        text = train_tab.report_markdown(status) + train_tab.status_markdown(status)
        text += train_tab.status_markdown(searching)
    finally:
        LocalContext.request.reset(token)
    for chinese in ("它的回答现在反复重复同样的词", "回答检查未通过（重复）", "最差的回答", "适配器已保存为 **my-bot**",
                    "已完成", "第 6 / 6 步", "第 2 / 6 次试验：lr 3e-3, rank 16"):
        assert chinese in text
    assert "Hi hi hi hi" in text  # the model's answers are never translated
    english = train_tab.report_markdown(status)
    assert "Answer check failed (repetition)" in english and "repeat the same words" in english


# ---- the other views' handler texts --------------------------------------------------------------------------

@pytest.fixture
def chinese_page():
    """A running event from a page that shows Chinese (the switch's cookie)."""
    from types import SimpleNamespace

    from gradio.context import LocalContext

    token = LocalContext.request.set(SimpleNamespace(cookies={i18n.COOKIE: "zh-CN"}, headers={}))
    yield
    LocalContext.request.reset(token)


def _in_both(call):
    """(call() outside an event: English, call() on a Chinese page)."""
    from types import SimpleNamespace

    from gradio.context import LocalContext

    english = call()
    token = LocalContext.request.set(SimpleNamespace(cookies={i18n.COOKIE: "zh-CN"}, headers={}))
    try:
        return english, call()
    finally:
        LocalContext.request.reset(token)


@pytest.mark.parametrize("scores", [(50.0,), (50.0, 90.0), (70.0, 70.0)])
def test_every_evaluation_summary_reads_in_chinese(scores):
    from training.evaluation import verdict

    scored = [{"label": f"V{i}", "metrics": {"accuracy": value}} for i, value in enumerate(scores)]
    best = max(range(len(scores)), key=lambda i: scores[i])
    for differ in (0, 3):
        summary = verdict(scored, best, "accuracy", {"accuracy": "accuracy"}, 8, differ)
        summary += " 2 answers could not be given (they count as wrong); see the problems listed with the results."
        chinese = i18n.localized_text(summary, "zh-CN")
        assert not re.search(r"[A-Za-z]{3,}", chinese), chinese


def test_the_evaluate_view_reads_in_the_page_language():
    from ui import evaluate_tab

    report = {"summary": "On 4 rows, my-bot scored accuracy 75.0.", "metric_names": {"accuracy": "accuracy",
              "perplexity": "perplexity"}, "lower_is_better": ["perplexity"], "best": 0,
              "variants": [{"label": "my-bot", "adapter": "my-bot", "metrics": {"accuracy": 75.0, "perplexity": 3.0},
                            "confusion": {"labels": ["pos", "neg"], "matrix": [[1, 0], [1, 2]]}},
                           {"label": "tiny (base)", "adapter": "", "metrics": {"accuracy": 50.0, "perplexity": 4.0}}],
              "problems": [{"line": 3, "variant": "my-bot", "reason": "The answer was empty."}],
              "rows": [{"line": 1, "input": "Great film", "expected": "pos", "outputs": ["pos", "neg"],
                        "scores": [1.0, 0.0], "agree": False}]}
    status = {"state": "interrupted", "step": 2, "total_steps": 4, "eta_s": 0, "error": ""}
    view = lambda: (evaluate_tab.results_markdown(report, {"my-bot": "learned"}),  # noqa: E731
                    evaluate_tab.progress_markdown(status), evaluate_tab.rows_frame(report))
    (english, progress, rows), (chinese, progress_zh, rows_zh) = _in_both(view)
    assert "accuracy | perplexity (lower is better)" in english and "**Confusion of my-bot**" in english
    assert "**Interrupted** — 2 of 4 answers (50%)" in progress and "press Evaluate" in progress
    assert list(rows.columns) == ["line", "input", "reference", "my-bot", "tiny (base)", "agree"]
    assert rows.iloc[0, -1] == "no" and "| tiny (base) |" in english
    for text in ("在 4 行上，my-bot 的准确率为 75.0。", "准确率 | 困惑度（越低越好）", "**my-bot 的混淆矩阵**",
                 "无法给出的回答", "✅ 学到了"):
        assert text in chinese
    assert "已中断" in progress_zh and "重新运行" in progress_zh
    assert list(rows_zh.columns) == ["行号", "输入", "参考答案", "my-bot", "tiny（基础模型）", "一致"]
    assert rows_zh.iloc[0, -1] == "否" and "| tiny（基础模型） |" in chinese
    assert "Great film" in rows_zh.iloc[0, 1]  # the user's rows are never translated


def test_the_search_view_reads_in_the_page_language():
    from ui import search_tab

    hit = {"source": "faq.txt", "chunk": 0, "collection": "docs", "score": 0.5, "text": "Refunds take a week."}
    view = lambda: (search_tab.result_cards([], "x"), search_tab.result_cards([hit], "refund"),  # noqa: E731
                    search_tab.hit_lines([]))
    english, chinese = _in_both(view)
    assert english[0] == "<p>No results: the collection is empty.</p>" and "chunk 1" in english[1]
    assert "没有结果" in chinese[0] and "第 1 段" in chinese[1] and "take a week" in chinese[1]
    assert chinese[2] == "*什么也没找到。*"
    assert i18n.localized_sentence("already in the collection", "zh-CN") == "已在文档集中"


def test_the_system_panel_reads_in_the_page_language(tmp_path):
    from config import Settings
    from models.loading import ModelHub
    from tasks.base import Context
    from ui.system_tab import system_report

    settings = Settings(data_dir=tmp_path)
    ctx = Context(settings, ModelHub(settings))
    english, chinese = _in_both(lambda: system_report(ctx))
    assert "**Training** runs on" in english and "| model | memory | decoding |" in english
    assert "**训练** 运行于" in chinese and "| 模型 | 内存 | 解码方式 |" in chinese and "**已加载的模型**" in chinese
    assert "(none yet)" not in chinese and "CPU 线程" in chinese


def test_feedback_account_chat_and_compare_read_in_the_page_language():
    from types import SimpleNamespace

    import gradio as gr

    from ui import account_tab, chat_tab, compare_panel, feedback_tab

    rows = [{"id": "r1", "verdict": "up", "prompt": "Hi there", "reply": "Hello!", "correction": "", "model": "m",
             "adapter": "", "history": [], "system_prompt": ""}]
    feedback = SimpleNamespace(feedback_rows=lambda owner: rows)
    account = SimpleNamespace(users=lambda owner: [{"name": "ann", "admin": True}],
                              api_keys=lambda owner: [{"id": "k1", "label": "laptop", "created": 0}],
                              share=lambda *args, **kwargs: {"kind": "adapter", "name": "bot", "owner": "ann",
                                                            "shared": True})

    def view():
        try:
            next(chat_tab.respond(None, " ", [], "", "", "", 0.3, 0.9, 16))
        except gr.Error as error:
            refused = error.message
        return (feedback_tab.table(feedback, "local"), feedback_tab.summary(feedback, "local"),
                account_tab.users_table(account), account_tab.keys_table(account),
                account_tab.share(account, "adapter", "bot", "", True), refused,
                compare_panel.variant_name({"model": "", "adapter": ""}))
    english, chinese = _in_both(view)
    assert list(english[0].columns) == feedback_tab.COLUMNS and english[0].iloc[0, 1] == "👍 up"
    assert english[1] == "1 training rows and 0 preference pairs so far."
    assert list(english[2].columns) == ["user", "admin"] and list(english[3].columns) == ["key", "label", "created"]
    assert english[4] == "The adapter **bot** of ann is now shared with everyone (read-only)."
    assert english[5] == "Please type a message first." and english[6] == "the default model"
    assert list(chinese[0].columns)[:3] == ["编号", "评价", "提示词"] and chinese[0].iloc[0, 2] == "Hi there"
    assert chinese[1] == "目前有 1 条训练数据和 0 组偏好对。"
    assert list(chinese[2].columns) == ["用户", "管理员"] and chinese[2].iloc[0, 1] == "是"
    assert list(chinese[3].columns) == ["密钥", "用途", "创建时间"] and chinese[3].iloc[0, 1] == "laptop"
    assert chinese[4] == "ann 的适配器 **bot** 现已与所有人共享（只读）。"
    assert chinese[5] == "请先输入一条消息。" and chinese[6] == "默认模型"


@pytest.mark.parametrize("sentence", [
    "Tick what to evaluate: the base model and/or some adapters.", "Tick at most 4 to evaluate at once.",
    'Write the column mapping as JSON, like {"text": "review", "label": "stars"}.',
    "Pick a document to remove first.", "Pick a row in the table first.", "There is no feedback to export yet.",
    "Type the name of the user to remove.", "Pick the key to revoke (click its row).",
    "Only the assistant's replies take feedback.", "This reply answers no message.",
    "Please choose the CSV column that holds the texts.",
    "Something went wrong on the server (reference 1a2b3c4d); please try again, or tell the operator the reference.",
    "Please paste a context to answer from, or name a document collection.", "Please give the collection a name.",
    "The file 'a.doc' is not a supported type; upload .txt, .md, .csv, .pdf files.",
    "The PDF 'scan.pdf' has no text that can be extracted (it may be scanned images).",
    "'GPT-2' is a base model without a chat template: use 'Continue text' to have it continue your words, or pick an "
    "instruction model for chat.",
    "Put [MASK] once where the missing word goes, e.g. 'The capital of France is [MASK].'",
    "Give at least two sentences, one per line, to compare.", "Compare at most 8 sentences at once (9 given)."])
def test_the_views_error_sentences_read_in_chinese(sentence):
    chinese = i18n.localized_sentence(sentence, "zh-CN")
    assert chinese != sentence and re.search(r"[\u4e00-\u9fff]", chinese), chinese


def _task_notes() -> list[str]:
    """The notes the task modules write, as they write them (tasks/summarize.py, translate.py, base.py, chat.py)."""
    from tasks.answer import SENTENCE_NOTE
    from tasks.sentiment import ZERO_SHOT_NOTE

    return [SENTENCE_NOTE, ZERO_SHOT_NOTE,
            "Extractive summary, the offline fallback: the 3 most central of the text's 12 sentences, picked with "
            "all-MiniLM-L6-v2 and kept word for word. The text is long, so 2,000 of its sentences, spread evenly "
            "over it, were compared. For a rewritten summary pick a summarizer (e.g. BART-large-CNN) or an "
            "instruction model.",
            "Abstractive summary written by Flan-T5-base. The text was longer than Flan-T5-base reads at once, so it "
            "was summarized in 3 parts. This small offline model can miss or invent details: check the summary "
            "against the text. This text is Chinese, but Flan-T5-base is an English-first model, so expect weaker "
            "results; Qwen2.5-0.5B-Instruct handles Chinese when the Hugging Face hub is reachable.",
            "Translated by SmolLM2-135M-Instruct with a translation prompt, line by line. It is a small offline "
            "model and a weak translator: check the result, or pick a translation model (NLLB, or "
            "Helsinki-NLP/opus-mt-{src}-{tgt}) when the hub is reachable. 2 pieces came back empty from the model "
            "and were left untranslated.",
            "The conversation was longer than SmolLM2-135M-Instruct can read, so the 3 oldest messages were left out "
            "of this reply. This text is Chinese, but SmolLM2-135M-Instruct is an English-first model, so expect "
            "weaker results."]  # tasks/chat.py: the Chat view's warning


@pytest.mark.parametrize("note", _task_notes())
def test_the_tasks_notes_read_in_chinese(note):
    chinese = i18n.localized_text(note, "zh-CN")
    words = re.sub(r"[\w.-]*(?:-|\d)[\w.{}/-]*|NLLB|BART|Hugging Face|Hub", "", chinese)  # model names stay
    assert not re.search(r"[a-z]{3,}", words), chinese


def test_the_model_line_and_the_task_tabs_read_in_the_page_language():
    from types import SimpleNamespace

    from models import catalog
    from ui import answer_tab, summarize_tab, translate_tab

    name = next(n for n, b in catalog.CATALOG.items() if b.offline)
    answer = {"found": False, "score": 0.12, "level": "sentence", "answer": ""}
    found = {"found": True, "score": 0.9, "level": "span", "answer": "Gustave Eiffel"}
    view = lambda: (summarize_tab.model_info(""), translate_tab.model_info(""),  # noqa: E731
                    answer_tab.answer_line(answer), answer_tab.answer_line(found),
                    translate_tab.detected(SimpleNamespace(detect=lambda text: {"name": "German", "code": "de",
                                                                                 "confidence": 0.97}), "Hallo"),
                    summarize_tab.model_info(name))
    english, chinese = _in_both(view)
    assert english[0].startswith("Model: ") and "extractive" in english[0] and "weak translator" in english[1]
    assert english[2] == "*No answer found* (the best candidate scored 0.12)."
    assert english[4] == "Detected: **German** (de), 97% sure"
    assert chinese[0].startswith("模型：") and "抽取式" in chinese[0] and "许可证" in chinese[0]
    assert "翻译能力较弱" in chinese[1] and "没有找到答案" in chinese[2]
    assert chinese[3] == "Gustave Eiffel\n\n*得分 0.90 · 精确片段*"
    assert chinese[4] == "检测到：**德语**（de），把握 97%"  # the language's name too
    assert "可离线运行" in chinese[5]


def test_inside_the_model_reads_in_the_page_language():
    from types import SimpleNamespace

    from ui import inside_tab

    tokens = [{"text": " Paris", "prob": 0.6, "kept": True}, {"text": " Rome", "prob": 0.4, "kept": True}]
    scored = {"tokens": [{"text": "Hi", "logprob": None}, {"text": "!", "logprob": -2.0}], "loss": 2.0,
              "perplexity": 7.4}
    inside = SimpleNamespace(
        next_token=lambda *args, **kwargs: {"model": "GPT-2", "adapter": "", "tokens": tokens, "entropy": 1.0,
                                            "kept_by_top_p": 2, "base": None},
        token_loss=lambda *args, **kwargs: {**scored, "adapter": "", "base": None},
        tokenize=lambda text, name: {"model": name, "count": 2, "tokens": [{"text": "Hi", "id": 1}] * 2})
    view = lambda: (inside_tab.next_view(inside, "The capital", "GPT-2", "none", 2, 1.0, 0.9)[1],  # noqa: E731
                    inside_tab.surprise_view(inside, "Hi!", "GPT-2", "none")[2],
                    inside_tab.tokens_view(inside, "Hi", "GPT-2", False)[0]["label"],
                    inside_tab.attention_row({"tokens": ["a", "b"], "weights": [[1.0, 0.0], [0.5, 0.5]]}, "1:b"))
    english, chinese = _in_both(view)
    assert english[0] == ("**GPT-2**: entropy 1.00 bits (about 2 equally likely choices); top-p keeps 2 tokens.")
    assert english[1] == "**base**: loss 2.000, perplexity 7.4" and english[2] == "GPT-2: 2 tokens"
    assert chinese[0] == "**GPT-2**: 熵 1.00 比特（约相当于 2 个同样可能的选择）；top-p 保留 2 个 token。"
    assert chinese[1] == "**基础模型**: 损失 2.000，困惑度 7.4" and chinese[2] == "GPT-2：2 个 token"
    assert chinese[3].layout.title.text == "1:b 关注哪里"


def test_the_sentiment_table_reads_in_the_page_language():
    from ui import sentiment_tab

    rows = [{"text": "I loved it", "label": "positive", "scores": {"positive": 0.9, "negative": 0.1}}]
    english, chinese = _in_both(lambda: sentiment_tab.results_table(rows))
    assert list(english.columns) == ["text", "label", "positive score", "negative score"]
    assert list(chinese.columns) == ["文本", "标签", "“positive”得分", "“negative”得分"]  # the label quoted, as a name
    assert chinese.iloc[0, 0] == "I loved it" and chinese.iloc[0, 1] == "positive"  # the text and the model's label


def test_every_translation_language_is_named_in_each_dictionary():
    from tasks.translate import LANGUAGES

    for code, language in LANGUAGES.items():
        assert i18n.english()[f"lang.{code}"] == language.name  # the English name is the task's own
        assert all(f"lang.{code}" in texts for texts in i18n.languages().values())


def test_a_phrase_without_parts_keeps_its_braces():
    assert i18n.phrase("inside.looks_at_hover") == "%{y} looks at %{x}: %{z:.2f}"  # plotly's, not ours to fill


def test_the_surprise_levels_are_named_and_coloured_in_each_language():
    from ui import inside_tab

    english, chinese = _in_both(lambda: [inside_tab.surprise_level(n) for n in (0.5, 2.0, 6.0)])
    assert english == ["expected", "a little surprising", "surprising"]
    assert chinese == ["意料之中", "有点意外", "很意外"]
    colours = inside_tab.surprise_colours()
    assert colours["expected"] == colours["意料之中"] == "green" and colours["很意外"] == "red"


def test_each_tasks_data_formats_are_in_the_dictionaries_as_the_spec_writes_them():
    from tasks.spec import specs
    from ui import tabs  # noqa: F401  (the tasks register with their tabs' modules)
    from ui.train_tab import formats_text

    for spec in specs():
        if spec.formats:
            assert i18n.english()[f"formats.{spec.id}"] == spec.formats
            assert all(f"formats.{spec.id}" in texts for texts in i18n.languages().values())
            assert formats_text(spec) == i18n.marked(f"formats.{spec.id}")


def test_the_adapter_boxes_name_no_adapter_in_the_page_language_and_keep_its_value(ctx):
    from models.adapters import NO_ADAPTER, selected
    from tasks.chat import ChatTask
    from ui.picker import adapter_update

    english, chinese = _in_both(lambda: adapter_update(ChatTask(ctx), "", "gone", "local")["choices"][0])
    assert english == ("none", NO_ADAPTER) and chinese == ("无", NO_ADAPTER)
    assert selected(chinese[1]) is None  # what the box sends still means no adapter


def test_the_task_boxes_and_presets_are_named_in_the_page_language_and_keep_their_values():
    from training.presets import PRESETS
    from ui.i18n import task_choices

    english, chinese = _in_both(lambda: task_choices(["chat", "answer"]))
    assert english == [("Chat", "chat"), ("Question answering", "answer")]
    assert chinese == [("对话", "chat"), ("问答", "answer")]
    assert all(f"preset.{name}" in i18n.english() for name in PRESETS)  # each preset's radio label


def test_a_chat_export_names_the_speakers_in_the_page_language():
    import json
    from pathlib import Path

    from ui.chat_tab import export_chat

    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! 你好"}]
    english, chinese = _in_both(lambda: Path(export_chat(history, "Markdown")).read_text(encoding="utf-8"))
    assert english == "**User:** Hi\n\n**Assistant:** Hello! 你好"
    assert chinese == "**用户：** Hi\n\n**助手：** Hello! 你好"
    assert json.loads(Path(export_chat(history, "JSON")).read_text(encoding="utf-8")) == history  # data stays as is


def test_the_loss_plot_waits_for_a_loss_and_reads_in_the_page_language():
    from ui import train_tab

    losses = [(10, 2.5, None), (20, 2.1, 2.3)]  # (step, training loss, validation loss)
    english, chinese = _in_both(lambda: (train_tab.refresh(None, "")[1], train_tab.loss_plot(losses)))
    assert english[0]["visible"] is False  # no job yet: no empty chart with broken axes
    assert english[1]["visible"] is True
    assert (english[1]["x_title"], english[1]["y_title"], english[1]["color_title"]) == ("step", "loss", "loss on")
    assert set(english[1]["value"]["series"]) == {"training", "validation"}
    assert (chinese[1]["x_title"], chinese[1]["y_title"], chinese[1]["color_title"]) == ("步数", "损失", "损失来自")
    assert set(chinese[1]["value"]["series"]) == {"训练集", "验证集"}


def test_toasts_and_errors_are_titled_in_the_page_language(monkeypatch):
    import gradio as gr

    from errors import UserError
    from ui import api

    shown = []
    monkeypatch.setattr(gr, "Info", lambda message, title: shown.append((message, title)))
    monkeypatch.setattr(gr, "Warning", lambda message, title: shown.append((message, title)))

    def view():
        i18n.show_info("saved")
        i18n.show_warning("careful")
        return (api._translated(UserError("Pick a row in the table first."), page=True),
                api._translated(gr.Error("A view's own sentence."), page=True),
                api._translated(UserError("Pick a row in the table first.")))
    english, chinese = _in_both(view)
    assert shown == [("saved", "Info"), ("careful", "Warning"), ("saved", "提示"), ("careful", "警告")]
    assert [error.title for error in english] == ["Error", "Error", "Error"]
    assert [error.title for error in chinese] == ["错误", "错误", "Error"]  # the public API stays English
    assert chinese[0].message == i18n.localized_sentence("Pick a row in the table first.", "zh-CN")


def test_a_users_mistake_prints_no_traceback_but_a_servers_error_does():
    import gradio as gr

    from errors import UserError
    from ui import api

    assert api._translated(UserError("Please enter some text: it is empty.")).print_exception is False
    assert api._translated(gr.Error("Please type a message first."), page=True).print_exception is False
    internal = api._translated(RuntimeError("a bug"), page=True)
    assert internal.print_exception is True and "reference" in internal.message


def test_the_evaluate_view_says_what_its_rows_need_not_how_training_reads_them():
    from tasks.spec import trainable_spec
    from ui import evaluate_tab
    from ui.train_tab import formats_text

    assert evaluate_tab.formats_help("chat") == i18n.marked("evaluate.formats.chat")
    assert all("DPO" not in texts["evaluate.formats.chat"] for texts in i18n.languages().values())
    assert evaluate_tab.formats_help("sentiment") == formats_text(trainable_spec("sentiment"))  # read alike


def test_the_default_collection_is_named_in_the_page_language_and_a_typed_name_stays():
    from ui import search_tab

    english, chinese = _in_both(lambda: (search_tab.default_collection(search_tab.DEFAULT_COLLECTION),
                                         search_tab.default_collection("Handbook")))
    assert english[0]["value"] == "my documents" and chinese[0]["value"] == "我的文档"
    assert "value" not in chinese[1]  # the user's own name is kept


def test_the_feedback_verdicts_read_alike_in_every_language():
    for texts in i18n.languages().values():
        assert texts["feedback.verdict_up"].startswith("👍") and texts["feedback.verdict_down"].startswith("👎")
        assert texts["feedback.row.up"].startswith("👍") and texts["feedback.row.down"].startswith("👎")


def test_the_column_mapping_reads_in_chinese_and_says_what_each_task_field_holds(settings):
    from types import SimpleNamespace

    from tasks.spec import specs
    from ui import train_tab

    for spec in filter(lambda s: s.trainable, specs()):
        for i, field in enumerate(spec.fields):  # the dictionaries' English is the field's own
            assert i18n.english()[f"column.{spec.id}.{field.name}.help"] == field.help
            english, chinese = _in_both(lambda: train_tab.slot_texts(spec.id, i, i18n.phrase))
            assert english[0] == f"{field.name} column" + ("" if field.required else " (optional)")
            assert chinese[0].startswith(f"{field.name} 列") and not re.search(r"[a-z]{3,} [a-z]{3,}", chinese[1])
    # a new task re-labels them
    english, chinese = _in_both(lambda: train_tab.task_changed(SimpleNamespace(settings=settings), "search")[2:])
    assert [u.get("label") for u in chinese[:3]] == ["query 列", "positive 列", "negative 列（可选）"]
    assert chinese[0]["info"] == "别人搜索的内容" and english[0]["info"] == "what someone searches for"
    assert not chinese[3]["visible"] and chinese[3]["label"] == ""  # search has three fields


def test_the_data_check_reads_in_chinese_down_to_each_rejected_rows_reason(tmp_path):
    from training import data
    from ui import train_tab

    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "Hi", "response": "Hello"}\n[1]\n{"prompt": "", "response": "x"}\nnot json\n')
    report = data.load_examples(path, "chat")
    english, chinese = _in_both(lambda: train_tab.data_check(report))
    assert english == ("Read 4 rows, kept 1. 3 rejected: line 2: not a JSON object but a list; line 3: empty "
                       "'prompt'; line 4: not valid JSON: Expecting value.")
    assert chinese.startswith("读取 4 条，保留 1 条。3 条被拒绝：第 2 行：不是 JSON 对象，而是列表；"
                              "第 3 行：“prompt”为空")
    assert english == report.summary().replace("; 3 rejected", ". 3 rejected")  # the log's English says the same


def test_every_rejected_rows_reason_has_its_chinese():
    """Every reason a row can be rejected for (training/formats.py, readers.py, the span recipe) is a known
    sentence, so the data check never shows an English reason on a Chinese page."""
    import ast

    found = []
    for name in ("formats", "readers", "encoders"):
        tree = ast.parse((UI.parent / "training" / f"{name}.py").read_text())
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") in ("RowError", "Rejected"):
                found += _texts(call.args[-1])
    assert len(found) >= 25
    assert [text for text in found if i18n.localized_sentence(text, "zh-CN") == text] == []


# Sentences the server raises that never reach the page, so they stay English: each with why.
ENGLISH_ONLY = {
    "Write overrides and columns as KEY=VALUE.": "cli.py: the `train` command's own arguments, at the terminal",
    "The two passwords differ; nothing was changed.": "cli.py: `users passwd` asks twice at the terminal",
    "Send your API key with the call (Authorization: Bearer KEY).": "ui/api.py: only the MCP server's own client",
}


def _source() -> list:
    """The app's source, parsed (not its tests, benchmarks or virtualenv)."""
    import ast

    root = UI.parent
    return [ast.parse(path.read_text()) for path in sorted(root.rglob("*.py"))
            if not {".venv", "tests", "bench"} & set(path.relative_to(root).parts)]


def _texts(node, follow=lambda name: []) -> list[str]:
    """The strings an expression can be, each {expression} as "x"; follow(name): what a variable or a called
    function stands for (nothing where not followed)."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        texts = [""]
        for value in node.values:
            parts = [value.value] if isinstance(value, ast.Constant) else _texts(value.value, follow) or ["x"]
            texts = [text + part for text in texts for part in parts]
        return texts
    if isinstance(node, ast.IfExp):
        return _texts(node.body, follow) + _texts(node.orelse, follow)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [a + b for a in _texts(node.left, follow) for b in _texts(node.right, follow)]
    if isinstance(node, ast.Name):
        return follow(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return follow(node.func.id)
    return []


def _user_error_kinds(trees: list) -> set[str]:
    """UserError and the classes derived from it (errors.py's NotFound, TooLarge, OverLimit; a backend's)."""
    import ast

    classes = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    kinds = {"UserError"}
    while derived := {c.name for c in classes if c.name not in kinds
                      and {getattr(base, "id", getattr(base, "attr", None)) for base in c.bases} & kinds}:
        kinds |= derived
    return kinds


def _raised_sentences() -> list[str]:
    """Every sentence the app's source raises as a UserError (or a kind of it), each {expression} as "x"; also
    those it raises from a variable: a settings check's (`checks = [(ok, sentence), ...]`) and a recipe's
    `nothing_to_learn`."""
    import ast

    trees, found = _source(), []
    kinds = _user_error_kinds(trees)
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args and {getattr(node.func, "id", None),
                                                             getattr(node.func, "attr", None)} & kinds:
                found += _texts(node.args[0])
            elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "nothing_to_learn":
                found += _texts(node.value)
            elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "checks":
                found += [text for check in node.value.elts for text in _texts(check.elts[-1])]
    return found


def _job_errors() -> list[str]:
    """Every error a job can end with, as the source writes it: each `error=` keyword's value (the job store's
    update and transition), a variable followed to what its function assigns it, a call to what that function
    returns (the worker's readable())."""
    import ast

    functions = [node for tree in _source() for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    by_name = {function.name: function for function in functions}

    def inside(function, seen: frozenset = frozenset()):
        def follow(name: str) -> list[str]:
            if name in seen:
                return []
            assigned = [node.value for node in ast.walk(function) if isinstance(node, ast.Assign)
                        and [getattr(target, "id", None) for target in node.targets] == [name]]
            if assigned:
                return [text for value in assigned for text in _texts(value, inside(function, seen | {name}))]
            called = by_name.get(name)
            returned = [node.value for node in ast.walk(called) if isinstance(node, ast.Return)] if called else []
            return [text for value in returned if value for text in _texts(value, inside(called, seen | {name}))]
        return follow

    return sorted({text for function in functions for call in ast.walk(function) if isinstance(call, ast.Call)
                   for keyword in call.keywords if keyword.arg == "error"
                   for text in _texts(keyword.value, inside(function)) if text})


def test_every_error_the_server_raises_has_its_chinese():
    sentences = _raised_sentences()
    assert len(sentences) > 200  # the scan still finds them
    untranslated = {text for text in sentences if i18n.localized_sentence(text, "zh-CN") == text}
    assert sorted(untranslated) == sorted(ENGLISH_ONLY)


def test_every_error_a_job_ends_with_has_its_chinese():
    """What a training, evaluation or make-data job stores as its error (the manager's, the worker's readable())
    is shown in its view in the page's language: each form has its Chinese."""
    errors = _job_errors()
    assert len(errors) >= 8  # the scan still finds them
    assert [text for text in errors if i18n.localized_text(text, "zh-CN") == text] == []


def test_a_jobs_error_reads_in_chinese_in_its_view():
    from types import SimpleNamespace

    from training.manager import JobManager
    from training.store import JobState
    from training.worker import readable
    from ui import evaluate_tab, train_tab

    stored = []
    store = SimpleNamespace(get=lambda job_id: SimpleNamespace(state=JobState.RUNNING, cancel=0),
                            update=lambda job_id, **fields: stored.append(fields["error"]))
    for code in (-9, 1):  # the worker was killed, or exited without writing its outcome
        JobManager._finished(SimpleNamespace(store=store), "job-1", code)
    errors = stored + [readable(MemoryError(), "Evaluation"), readable(KeyboardInterrupt(), "Making training data"),
                       readable(ValueError("bad value"))]
    assert [i18n.localized_text(error, "zh-CN") for error in errors] == [
        "训练进程意外停止（被信号 9 终止）；没有保存适配器。", "训练进程意外停止（以退出码 1 退出）；没有保存适配器。",
        "评估时机器内存不足：请选择更小的模型。", "生成训练数据被中断了。", "训练失败：ValueError: bad value"]
    status = {"state": "failed", "step": 3, "total_steps": 10, "epoch": 1, "eta_s": 0, "error": errors[0]}
    english, chinese = _in_both(lambda: (train_tab.status_markdown(status), evaluate_tab.progress_markdown(status)))
    assert all(errors[0] in text for text in english) and all("被信号 9 终止" in text for text in chinese)


def test_the_system_panels_decoding_column_reads_in_chinese():
    """The decoding column as models/ writes it (kernels.tune, the lean pass's describe(), loading.decoding())
    reads in Chinese, product names and figures kept."""
    from types import SimpleNamespace

    import torch

    from models import kernels
    from models.decoder import LeanDecoder
    from models.loading import LoadedLM, decoding
    from ui.system_tab import decoding_in_page_language

    def line(kernel: str, joined=None, extra_mb=0, speculate=False, drafted=0) -> str:
        lean = "" if joined is None else "; " + LeanDecoder.describe(SimpleNamespace(joined=joined,
                                                                                     extra_bytes=extra_mb * 2**20))
        engine = SimpleNamespace(speculate=speculate, accepted=drafted // 2, drafted=drafted)
        return decoding(LoadedLM(None, None, None, engine, kernel + lean))

    small = torch.nn.Sequential(torch.nn.Linear(4, 4))
    lines = [line(kernels._described({"W·xᵀ (prompts too)": 3, "fp16 weights": 165, "library": 1}, 90 * 2**20),
                  ["q·k·v", "gate·up"], 12, speculate=True, drafted=2468),
             line(kernels._described({"fp16 weights (prompts too)": 1}, 0), ["gate·up"], speculate=True),
             line(kernels._described({"library": 30}, 0), []),
             line(kernels.tune(small, enabled=False).text),
             line(kernels.tune(small).text),
             line(kernels.tune(torch.nn.Sequential(torch.nn.Linear(4, 4, dtype=torch.bfloat16))).text)]
    english, chinese = _in_both(lambda: [decoding_in_page_language(text) for text in lines])
    assert english == lines  # an English page shows what models/ wrote
    assert chinese[0] == ("加载时实测：3 层用W·xᵀ（提示词也用），165 层用fp16 权重，1 层用库自带的乘法，"
                          "fp16 副本另占 90 MB；精简前向计算（q·k·v 与 gate·up 各合并为一次 fp16 乘法，"
                          "取代各自的乘法，内存净变化 +12 MB）；推测解码：开（2,468 个草稿 token 中保留了 1,234 个）")
    assert chinese[1].startswith("加载时实测：1 层用fp16 权重（提示词也用）；精简前向计算（gate·up 各合并")
    assert chinese[1].endswith("；推测解码：开（还没有草稿）")
    for text in chinese:
        words = re.sub(r"W·xᵀ|fp16|fp32|q·k·v|gate·up|--decode-kernels plain|CPU|MB|token", "", text)
        assert re.search(r"[\u4e00-\u9fff]", text) and not re.search(r"[A-Za-z]{2,}", words), text


def test_each_sentence_template_takes_its_own_sentences():
    """No template takes a sentence meant for another: each one, filled in, reads back through its own key."""
    english = i18n.english()
    for key, template in english.items():
        if key.startswith(i18n.SENTENCES):
            sentence = re.sub(r"\{(\w+)\}", lambda part: f"<{part.group(1)}>", template)
            taken = next(k for pattern, k in i18n._error_patterns() if pattern.match(sentence))
            assert english[taken] == template, (key, taken)


def test_raised_errors_read_in_chinese_with_their_parts_in_place(tmp_path):
    import zipfile

    from errors import UserError
    from models.portable import _checked_member
    from models.adapters import _unknown
    from tasks.base import require_range
    from tasks.sentiment import MAX_CHARS, split_texts
    from tasks.text import csv_column
    from tasks.translate import language

    (tmp_path / "reviews.csv").write_text("text,stars\nGreat,5\n")
    raised = []
    for raise_it in (lambda: _checked_member(zipfile.ZipInfo("../evil.json")),
                     lambda: require_range(3, "Temperature", 0.0, 2.0),
                     lambda: csv_column(tmp_path / "reviews.csv", "review", 10),
                     lambda: language("xx", "source")):
        with pytest.raises(UserError) as error:
            raise_it()
        raised.append(str(error.value))
    chinese = [i18n.localized_sentence(sentence, "zh-CN") for sentence in raised]
    assert chinese[:3] == ["zip 条目“../evil.json”指向适配器文件夹之外；已拒绝该 zip。",
                           "温度必须在 0.0 到 2.0 之间，而不是 3。",  # a known term is translated
                           "文件中没有“review”列；它的列是：text, stars。"]  # a column's name stays as the file has it
    # The kinds of UserError (NotFound, TooLarge) read in Chinese as well.
    with pytest.raises(UserError) as error:
        split_texts(["fine", "x" * (MAX_CHARS + 1)])
    assert i18n.localized_sentence(str(error.value), "zh-CN") == (
        f"第 2 条文本太长（{MAX_CHARS + 1:,} 个字符）；每条最多 {MAX_CHARS:,} 个。")
    assert i18n.localized_sentence(str(_unknown("reviews")), "zh-CN") == "没有名为“reviews”的适配器。"
    assert chinese[3].startswith("未知的源语言“xx”")  # training/language.py puts it after a row's number:
    assert i18n.localized_sentence(f"Row 4: {raised[3]}", "zh-CN") == f"第 4 行：{chinese[3]}"  # translated too
    for english, chinese in [
        ("The adapter 'reviews' was trained for sentiment, not chat.",  # models/adapters.py
         "适配器“reviews”是为 sentiment 任务训练的，不能用于 chat。"),
        ("The adapter does not fit gpt2: its layer 'transformer.h.0.attn.c_attn' expects size 576, the model's has "
         "768. Choose its base model.",  # models/portable.py
         "适配器与 gpt2 不匹配：它的层“transformer.h.0.attn.c_attn”需要大小 576，而模型的是 768。请选择它的基础模型。"),
        ("The collection 'handbook' is shared with you by alice, read-only; only they can change it.",
         "文档集“handbook”是 alice 以只读方式共享给你的；只有对方可以修改它。"),  # tasks/collections.py
        ("The text is already in French; pick another target language.", "文本已经是法语；请选择另一种目标语言。"),
    ]:
        assert i18n.localized_sentence(english, "zh-CN") == chinese
    # A job's error of two sentences, as the Make data view shows it (by sentence, for a report), reads whole.
    failed = "No usable rows were made from 2 passages: the writer answered nothing. Try another writer model."
    assert i18n.localized_text(failed, "zh-CN") == ("从 2 个段落中没有生成可用的数据：出题模型什么也没有回答。"
                                                    "请换一个出题模型。")


def test_the_estimate_reads_in_chinese():
    from ui import train_tab

    result = {"trainable_params": 1_234, "total_params": 100_000, "memory_gb": 1.5, "duration_s": 180, "steps": 30,
              "step_s": 6.0, "placement": "1 process on the CPU"}
    english, chinese = _in_both(lambda: train_tab.estimate_text(result))
    assert english == ("**Trainable parameters:** 1,234 of 100,000 (1.23%) · **memory:** about 1.5 GB · **duration:** "
                       "about 3 min for 30 steps (6.0 s per step measured on this machine) · **runs on:** 1 process on "
                       "the CPU")
    assert chinese == ("**可训练参数**：1,234 / 100,000（1.23%）· **内存**：约 1.5 GB · "
                       "**时长**：30 步约需 3 分钟（本机实测每步 6.0 秒） · **运行于**："
                       + i18n.languages()["zh-CN"]["report.placement_cpu"])


@pytest.mark.parametrize("locale", list(i18n.languages()))
def test_bold_text_is_bold_in_every_language(locale):
    """Markdown closes `**` only where it is right-flanking: `**格式：**messages` (punctuation inside, a letter
    after) shows its asterisks. So no closing `**` follows punctuation and precedes a letter or an ideograph, and
    no opening one the other way round."""
    punctuation = "：。，；！？）」”:.,;!?)"
    for key, text in i18n.languages()[locale].items():
        marks = [m.start() for m in re.finditer(r"\*\*", text)]
        for i, at in enumerate(marks):
            before, after = text[at - 1:at], text[at + 2:at + 3]
            inner, outer = (before, after) if i % 2 else (after, before)  # a closing mark's inside is before it
            word = outer and (outer.isalnum() or ord(outer) > 0x2e80 or outer in "{}")  # a {part} is filled in
            assert not (inner and inner in punctuation and word), key


def test_a_file_with_no_usable_row_says_each_rows_reason_in_chinese(tmp_path):
    from errors import UserError
    from training import data

    path = tmp_path / "broken.jsonl"
    path.write_text('[1]\n{"prompt": "", "response": "x"}\n')
    with pytest.raises(UserError) as error:
        data.load_examples(path, "chat")
    assert str(error.value) == ("The file 'broken.jsonl' has no usable rows (line 1: not a JSON object but a list; "
                                "line 2: empty 'prompt').")
    assert i18n.localized_sentence(str(error.value), "zh-CN") == (
        "文件“broken.jsonl”中没有可用的数据行（第 1 行：不是 JSON 对象，而是列表；第 2 行：“prompt”为空）。")


def test_the_job_and_adapter_tables_name_the_task_and_state_in_the_page_language():
    from types import SimpleNamespace

    from ui import adapters_tab, evaluate_tab, train_tab

    job = {"job_id": "job-1", "name": "my-bot", "task": "summarize", "state": "succeeded", "step": 4,
           "total_steps": 4, "report": {"summary": "On 4 rows, my-bot scored accuracy 75.0."}, "error": ""}
    adapter = {"name": "my-bot", "task": "summarize", "base": "tiny", "created": 0, "size_mb": 1.0,
               "verdict": "learned", "metrics": {}, "shared": False, "owner": "local"}
    service = SimpleNamespace(jobs=lambda owner: [job], evaluations=lambda owner: [job],
                              list_adapters=lambda owner: [adapter])
    english, chinese = _in_both(lambda: (train_tab.jobs_table(service, "local").iloc[0].tolist(),
                                         evaluate_tab.history(service).iloc[0].tolist()[:3],
                                         adapters_tab.adapters_table(service, "local").iloc[0].tolist()[:2]))
    assert english == (["job-1", "my-bot", "Summarize", "Succeeded", "4/4"], ["job-1", "Summarize", "Succeeded"],
                       ["my-bot", "Summarize"])
    assert chinese == (["job-1", "my-bot", "摘要", "已完成", "4/4"], ["job-1", "摘要", "已完成"], ["my-bot", "摘要"])


def test_a_made_data_summary_reads_in_chinese_down_to_what_was_dropped():
    from training.make_data import DROPPED_WORDS, dropped_words

    dropped = dict.fromkeys(DROPPED_WORDS, 2)
    for reason in DROPPED_WORDS.values():  # each reason on its own, as a list of one
        assert not re.search("[A-Za-z]", i18n.localized_text(f"No usable rows were made from 2 passages: 2 {reason}. "
                                                             "Try another writer model.", "zh-CN")), reason
    summary = f"Made 12 rows from 5 passages of handbook.pdf. Dropped: {dropped_words(dropped)}."
    assert i18n.localized_text(summary, "zh-CN") == (
        "从 handbook.pdf 的 5 个段落生成了 12 行数据。丢弃的：2 条回复没有给出问题和答案；2 个答案得不到段落的支持；"
        "2 个答案在段落中找不到原文；2 个重复的问题。")
