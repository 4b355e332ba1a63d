"""The page in the visitor's language: one dictionary file per language, Gradio's own i18n, and what it misses.

- Each module here named after a locale (`en.py`, `zh_CN.py` for zh-CN) holds `TEXTS`, a plain dict of key ->
  text; English is the source of truth and tests/test_i18n.py checks every other file has exactly its keys. A new
  language is one more file: nothing else changes.
- `t(key)` marks a label, info line, placeholder, button, tab or Markdown text; Gradio's front end shows it in the
  browser's language (the chosen one once the page's switch is used) and in English where it has no such file.
  Only one marked key per value is translated, so a marked text is never glued to another marked text.
- What Gradio does not translate, the server does, in the page's language (`page_locale`): the known error
  sentences of `gr.Error` (English templates under `error.*`, their `{parts}` kept) — in UI events only, the
  public API answers in English. The toasts' titles too: `show_info`, `show_warning`, and ui/api.py's gr.Error.
- Text a handler builds is written in the page's language too: `phrase` for a text with parts, `marked` for a
  fixed one in a Markdown value, `localized_columns` for a table's column names, `term` for a metric's name, and
  `text_in_page_language` for the sentences the tasks and training write in English (templates under `report.*`,
  as the errors'). What the user typed, the model's output, names and numbers are never translated.
- Gradio 6.31 leaves untranslated: a table's headers (an Examples table's come from its inputs' labels, so a
  multi-column one has none; a handler's table has them from `localized_columns`), and a Dropdown's choices (a
  live switch blanks the chosen one's text): choices are translated in Radios only.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from functools import cache
from urllib.parse import unquote

import gradio as gr
from gradio.i18n import I18nData

SOURCE = "en"
COOKIE = "lora_studio_locale"  # set by the page's switch, so the server knows the language the page shows


def _locale(module_name: str) -> str:
    """zh_CN -> zh-CN: a module name cannot hold the hyphen of a BCP 47 tag."""
    return module_name.replace("_", "-")


@cache
def languages() -> dict[str, dict[str, str]]:
    """Every dictionary file here: locale -> its texts, English first."""
    found = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name != SOURCE):
        texts = getattr(importlib.import_module(f"{__name__}.{module.name}"), "TEXTS", None)
        if isinstance(texts, dict):
            found[_locale(module.name)] = texts
    return found


def english() -> dict[str, str]:
    return languages()[SOURCE]


def t(key: str) -> I18nData:
    """A translated text for the page; an unknown key is refused while the page is built, not shown as a key."""
    if key not in english():
        raise KeyError(f"No English text for the i18n key {key!r}: add it to ui/i18n/en.py.")
    return I18nData(key)


def marked(key: str) -> str:
    """t(key) inside a value a handler returns (a Markdown heading): the front end translates it there too."""
    return str(t(key))


@cache
def translations() -> gr.I18n:
    """Every language for `demo.launch(i18n=...)`."""
    return gr.I18n(**languages())


def task_title(task_id: str, title: str) -> I18nData | str:
    """A task tab's title: its spec's English title, translated when the dictionaries know the task."""
    key = f"task.{task_id}"
    return t(key) if key in english() else title


# ---- the language switch ---------------------------------------------------------------------------------------

# Gradio picks the browser's language (and has a Settings panel in its footer); this switch is on the page, is
# remembered in the browser, and tells the server (a cookie) for what it writes: error sentences, model lines,
# choices. On load it calls the front end's own `changeLocale`, exported by its core module (looked for in the
# page's other modules too, should a release rename it). A click on the switch reloads the page (it keeps its view):
# only a new load has the server write its texts again in the new language. Gradio 6.31
# translates a tab's title again only once the tab has been opened, so the switch renames the other tabs' buttons
# itself, from the titles of every language (their text nodes only: Gradio's own updates still land).
SWITCH_JS = """
async (locale, reload = true) => {
  if (!locale) return;
  const scripts = performance.getEntriesByType("resource").map((e) => e.name)
    .filter((name) => /\\/assets\\/[^/]+\\.js$/.test(name))
    .sort((a, b) => /\\/core-/.test(b) - /\\/core-/.test(a));
  for (const name of scripts) {
    const module = await import(name).catch(() => ({}));
    if (typeof module.changeLocale === "function") { module.changeLocale(locale); break; }
  }
  const changed = localStorage.getItem("lora-studio-locale") !== locale;
  localStorage.setItem("lora-studio-locale", locale);
  document.cookie = "__COOKIE__=" + encodeURIComponent(locale) + "; path=/; max-age=31536000; SameSite=Lax";
  if (changed && reload) { location.reload(); return; }
  const titles = __TITLES__;
  const keyOf = {};
  for (const texts of Object.values(titles)) for (const [key, text] of Object.entries(texts)) keyOf[text] ??= key;
  for (const button of document.querySelectorAll("[role=tab]")) {
    const walker = document.createTreeWalker(button, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const key = keyOf[node.nodeValue.trim()];
      if (key && titles[locale][key]) node.nodeValue = titles[locale][key];
    }
  }
}
"""
# On load: the remembered choice (applied here: the switch's change event does not run for a value set on load),
# else the browser's language when a dictionary has it, else English.
CURRENT_JS = """
async () => {
  const known = __KNOWN__;
  const saved = localStorage.getItem("lora-studio-locale");
  if (known.includes(saved)) {
    await (__SWITCH__)(saved, false);
    return saved;
  }
  const browser = navigator.language || "en";
  return known.find((l) => l.toLowerCase() === browser.toLowerCase())
    || known.find((l) => l.split("-")[0] === browser.split("-")[0]) || "en";
}
"""


def tab_titles() -> dict[str, dict[str, str]]:
    """Every language's tab titles: the keys under `tab.` and `task.` (a task tab's title)."""
    keys = [key for key in english() if key.startswith(("tab.", "task."))]
    return {locale: {key: texts[key] for key in keys} for locale, texts in languages().items()}


def switch_js() -> str:
    return (SWITCH_JS.replace("__COOKIE__", COOKIE).replace("__TITLES__", json.dumps(tab_titles(), ensure_ascii=False))
            .strip())


def language_switch() -> gr.Radio:
    """A small switch between the dictionaries' languages, each named in itself (call inside the Blocks)."""
    known = list(languages())
    switch = gr.Radio([(languages()[locale].get("language.name", locale), locale) for locale in known],
                      value=SOURCE, show_label=False, container=False, elem_id="language-switch",
                      elem_classes="language-switch", min_width=220, scale=0)
    quiet = {"api_visibility": "undocumented", "show_progress": "hidden"}
    switch.input(None, switch, None, js=switch_js(), **quiet)  # the user's click only: it reloads the page
    gr.on(None, None, None, switch, js=CURRENT_JS.replace("__KNOWN__", json.dumps(known))
          .replace("__SWITCH__", switch_js()), **quiet)
    return switch


def header(intro_key: str) -> None:
    """The page's heading and introduction beside the language switch."""
    with gr.Row(equal_height=False):
        gr.Markdown(t(intro_key))
        language_switch()


# ---- error sentences -------------------------------------------------------------------------------------------

def page_locale(request: gr.Request | None) -> str:
    """The language the page shows: the switch's cookie, else the browser's first language we have, else English."""
    if request is None:
        return SOURCE
    cookies = getattr(request, "cookies", None) or {}
    wanted = [unquote(cookies.get(COOKIE, ""))]
    wanted += [part.split(";")[0].strip() for part in (request.headers.get("accept-language") or "").split(",")]
    for tag in filter(None, wanted):
        for locale in languages():
            if tag.lower() == locale.lower() or tag.split("-")[0].lower() == locale.lower():
                return locale
        for locale in languages():  # zh-TW and zh-Hans still read zh-CN best of what we have
            if tag.split("-")[0].lower() == locale.split("-")[0].lower():
                return locale
    return SOURCE


SENTENCES = ("error.", "report.", "reply.")  # the keys of whole sentences the server writes, with `{part}`s
# Parts kept as they are: a data file's column names are what the file must hold, in any language.
LITERAL = {"field", "column", "columns"}
# Parts that are themselves sentences the server writes: a row's error, a variant's name, a decode product's name.
NESTED = {"error", "variant", "product"}
LISTED = {"reasons"}  # parts that are such sentences joined by "; ": a file's first rejected rows, "line 2: …"
TERMS = ("term.", "lang.")  # the keys of the words a part is translated as: a metric's name, a language's
BREAK = re.compile(r"(?<=[.!?]) +")  # where the next sentence of a text begins


@cache
def _error_patterns() -> list[tuple[re.Pattern, str]]:
    """The English sentence templates as patterns: a `{part}` matches whatever the sentence has there. The most
    specific first (the most text of its own), so that '{adapter} on {model}' cannot take a longer sentence that
    happens to hold " on "."""
    patterns = []
    for key, template in english().items():
        if key.startswith(SENTENCES):
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+?)", re.escape(template))
            patterns.append((len(re.sub(r"\{\w+\}", "", template)), re.compile(regex + r"\Z", re.DOTALL), key))
    return [(pattern, key) for _, pattern, key in sorted(patterns, key=lambda p: -p[0])]


def _term(value: str, texts: dict[str, str]) -> str:
    """A part of a sentence in the target language when it is a known term (`term.*`, a language's name), else as
    it is."""
    for key, english_text in english().items():
        if key.startswith(TERMS) and english_text == value:
            return texts.get(key, value)
    return value


def _part(name: str, part: str, locale: str, texts: dict[str, str]) -> str:
    """A sentence's part in locale: literal, a sentence of its own (or a list of them), or a term."""
    if name in LITERAL:
        return part
    if name in LISTED:
        return texts.get("data.separator", "; ").join(_part("error", item, locale, texts) for item in part.split("; "))
    translated = localized_sentence(part, locale) if name in NESTED else part
    return translated if translated != part else _term(part, texts)


def localized_sentence(sentence: str, locale: str, sentences: int | None = None) -> str:
    """A known English error sentence in locale (its parts kept, known terms translated); any other as it is.
    sentences: only a template of that many sentences may take it."""
    texts = languages().get(locale)
    if texts is None or locale == SOURCE:
        return sentence
    for pattern, key in _error_patterns():
        found = pattern.match(sentence)
        if found and key in texts and sentences in (None, len(BREAK.split(english()[key]))):
            return texts[key].format(**{name: _part(name, part, locale, texts)
                                        for name, part in found.groupdict().items()})
    return sentence


def localized_text(text: str, locale: str) -> str:
    """A text of several sentences (a report's summary): each known sentence in locale, the rest as it is."""
    if locale == SOURCE:
        return text
    parts = BREAK.split(text)
    # A message of several sentences that one template writes (an error and its advice: a job's error) goes whole;
    # only a template of as many sentences may take it, so a one-sentence template's part never swallows the rest.
    if len(parts) > 1 and (whole := localized_sentence(text, locale, len(parts))) != text:
        return whole
    return sentences_joined(localized_sentence(part, locale) for part in parts)


def sentences_joined(sentences) -> str:
    """Sentences one after another as their language writes them: a space after an English stop, none after a
    Chinese one."""
    joined = ""
    for sentence in sentences:
        joined += ("" if not joined or joined.endswith(("。", "！", "？")) else " ") + sentence
    return joined


def text_in_page_language(text: str) -> str:
    """localized_text in the language of the page whose event is running (English outside an event)."""
    from gradio.context import LocalContext

    return localized_text(text, page_locale(LocalContext.request.get(None)))


def phrase(key: str, **parts) -> str:
    """A text with parts filled in, for a value a handler returns, in the language of the page whose event is
    running (English outside an event or where the language lacks the key)."""
    from gradio.context import LocalContext

    texts = languages().get(page_locale(LocalContext.request.get(None)), {})
    text = texts.get(key, english()[key])
    return text.format(**parts) if parts else text  # a text without parts may hold braces of its own (plotly's %{x})


def show_info(message: str) -> None:
    """gr.Info titled in the page's language (Gradio titles it in English)."""
    gr.Info(message, title=phrase("toast.info"))


def show_warning(message: str) -> None:
    """gr.Warning titled in the page's language (Gradio titles it in English)."""
    gr.Warning(message, title=phrase("toast.warning"))


def term(value: str) -> str:
    """A known term (`term.*`: a metric's name) in the language of the page whose event is running, else as it is."""
    from gradio.context import LocalContext

    return _term(value, languages().get(page_locale(LocalContext.request.get(None)), {}))


def task_name(task_id: str) -> str:
    """A task's name in the language of the page whose event runs (its id where the dictionaries lack it)."""
    return phrase(f"task.{task_id}") if f"task.{task_id}" in english() else task_id


def task_choices(task_ids: list[str]) -> list[tuple[str, str]]:
    """A task box's choices: each task named in the language of the page whose event runs (Gradio leaves a
    Dropdown's choices untranslated), its id the value."""
    return [(task_name(task_id), task_id) for task_id in task_ids]


def localized_columns(prefix: str, names: list[str]) -> list[str]:
    """A table's column names as a handler returns them, in the page's language (key: prefix.name_in_snake_case)."""
    return [phrase(f"{prefix}.{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}") for name in names]


def in_page_language(sentence: str) -> str:
    """An error sentence in the language of the page whose event is running (English outside an event)."""
    from gradio.context import LocalContext

    return localized_sentence(sentence, page_locale(LocalContext.request.get(None)))
