"""Translation: detect the source language, then translate line by line (keeping paragraphs and line breaks)
with a translation model (Marian, NLLB, M2M100, T5) or an instruction LM through the generation engine.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from langdetect import DetectorFactory, LangDetectException, detect_langs

from errors import UserError
from models import catalog
from config import LOCAL_USER
from tasks.base import Endpoint, Task, require_text
from tasks.generation import (Counter, Progress, backbone_family, instruction_lm, lm_replies, no_progress,
                              offline_fallback, pack, prompt_ids, refuse_adapter, seq2seq_context, seq2seq_generate,
                              token_counter)
from tasks.spec import DataField, TaskSpec

MIN_LETTERS = 20  # below this, langdetect's guess is not worth showing
MIN_CONFIDENCE = 0.7
PIECE_TOKENS = 200  # the longest piece an instruction LM is asked to translate at once
MAX_NEW_TOKENS = 512
UNSPACED = ("zh", "ja", "th")  # scripts written without spaces between words (and sentences)


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1, as langdetect and M2M100 name it
    name: str
    nllb: str  # NLLB-200's code


LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("en", "English", "eng_Latn"), Language("fr", "French", "fra_Latn"),
    Language("de", "German", "deu_Latn"), Language("es", "Spanish", "spa_Latn"),
    Language("it", "Italian", "ita_Latn"), Language("pt", "Portuguese", "por_Latn"),
    Language("nl", "Dutch", "nld_Latn"), Language("zh", "Chinese", "zho_Hans"),
    Language("ja", "Japanese", "jpn_Jpan"), Language("ko", "Korean", "kor_Hang"),
    Language("ru", "Russian", "rus_Cyrl"), Language("uk", "Ukrainian", "ukr_Cyrl"),
    Language("pl", "Polish", "pol_Latn"), Language("cs", "Czech", "ces_Latn"),
    Language("sv", "Swedish", "swe_Latn"), Language("da", "Danish", "dan_Latn"),
    Language("no", "Norwegian", "nob_Latn"), Language("fi", "Finnish", "fin_Latn"),
    Language("el", "Greek", "ell_Grek"), Language("tr", "Turkish", "tur_Latn"),
    Language("ro", "Romanian", "ron_Latn"), Language("hu", "Hungarian", "hun_Latn"),
    Language("bg", "Bulgarian", "bul_Cyrl"), Language("ca", "Catalan", "cat_Latn"),
    Language("ar", "Arabic", "arb_Arab"), Language("he", "Hebrew", "heb_Hebr"),
    Language("hi", "Hindi", "hin_Deva"), Language("id", "Indonesian", "ind_Latn"),
    Language("vi", "Vietnamese", "vie_Latn"), Language("th", "Thai", "tha_Thai"),
)}
_detecting = threading.Lock()  # langdetect loads its profiles lazily into a global on first use
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_MARIAN_PAIR = re.compile(r"opus-mt-([a-z]{2,3})-([a-z]{2,3})$", re.IGNORECASE)
_LINE = re.compile(r"^(\s*(?:(?:[-*•]|\d+[.)])\s+)?)(.*?)(\s*)$")  # indent and list marker, body, trailing space


@dataclass(frozen=True)
class Backend:
    """A loaded translator: its name, how it cuts a long line, and how it translates a list of pieces."""

    name: str
    budget: int  # the most tokens of source text per piece
    count: Counter
    translate_all: Callable[[list[str], Progress], list[str]]

    def split(self, line: str) -> list[str]:
        return pack(line, self.budget, self.count)


def lm_instruction(source: Language, target: Language) -> str:
    # Of the prompts tried on SmolLM2-135M, a short request with the text in quotes kept it closest to the text.
    return f"Translate this {source.name} text into {target.name}:"


def lm_prompt(text: str, source: Language, target: Language) -> str:
    """The request an LM gets to translate text (training uses the same, so adapters see what they learned)."""
    return f'{lm_instruction(source, target)} "{text}"'


def language(value: str, role: str) -> Language:
    """The Language for a code or English name (any case; zh-cn/zh-tw count as zh), or a UserError."""
    wanted = (value or "").strip().lower().split("-")[0]
    for lang in LANGUAGES.values():
        if wanted in (lang.code, lang.name.lower()):
            return lang
    raise UserError(f"Unknown {role} language '{value}': use one of {', '.join(LANGUAGES)}.")


def detect_language(text: str) -> tuple[str, float]:
    """The text's language code and the detector's confidence, or a UserError when it cannot tell."""
    letters = sum(2 if _CJK.match(c) else 1 for c in text if c.isalpha())  # one CJK character says more
    if letters < MIN_LETTERS:
        raise UserError("The text is too short to tell its language; choose the source language.")
    try:
        with _detecting:
            DetectorFactory.seed = 0  # langdetect is random unless seeded
            guesses = detect_langs(text[:5000])
    except LangDetectException:
        raise UserError("Could not tell the text's language; choose the source language.") from None
    scores: dict[str, float] = defaultdict(float)
    for guess in guesses:
        scores[guess.lang.split("-")[0]] += guess.prob  # zh-cn and zh-tw are both Chinese
    code, confidence = max(scores.items(), key=lambda item: item[1])
    shown = LANGUAGES[code].name if code in LANGUAGES else code
    if confidence < MIN_CONFIDENCE:
        raise UserError(f"The text is too unclear to tell its language (best guess {shown}, {confidence:.0%} "
                        "sure); choose the source language.")
    return code, confidence


def split_lines(text: str) -> list[tuple[str, str, str]]:
    """Each line as (indent and list marker, words to translate, trailing space); blank lines have no words."""
    return [_LINE.match(line).groups() for line in text.split("\n")]


def clean_reply(reply: str, target: Language) -> str:
    """An LM's translation as one line: no label, no wrapping quotes, no line breaks (they would break the layout)."""
    reply = re.sub(rf"^(?:translation|{re.escape(target.name)})\s*:\s*", "", reply.strip(), flags=re.IGNORECASE)
    if len(reply) > 1 and reply[0] == reply[-1] and reply[0] in "\"'“”«»":
        reply = reply[1:-1]
    return " ".join(reply.split())


class TranslateTask(Task):
    spec = TaskSpec(
        id="translate", title="Translate", endpoints=("translate",),
        defaults={catalog.DECODER: "SmolLM2-135M-Instruct", catalog.SEQ2SEQ: "Flan-T5-base"},
        fields=(DataField("source", "the text to translate"), DataField("target", "its translation"),
                DataField("source_lang", "the source's ISO code (detected when absent)", required=False),
                DataField("target_lang", "the target's ISO code (detected when absent)", required=False)),
        sample="translate.csv",
        formats="Columns `source` and `target`; optional `source_lang` and `target_lang` (detected if absent).",
        metrics={"chrf": "chrF", "bleu": "BLEU"}, trainable=True, evaluated=True)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("translate", self.translate)]

    def translate(self, text: str, target: str = "en", source: str = "auto", model: str = "", adapter: str = "",
                  *, owner: str = LOCAL_USER, progress: Progress | None = None) -> dict:
        """Translate text into target (a language code); source "auto" detects it. Line breaks are kept."""
        return self.run(text, target, source, model, adapter, progress, owner=owner)

    def detect(self, text: str) -> dict:
        """The detected language of text: {code, name, confidence} (a UserError when it cannot tell)."""
        code, confidence = detect_language(require_text(text))
        return {"code": code, "name": LANGUAGES[code].name if code in LANGUAGES else code, "confidence": confidence}

    def run(self, text: str, target: str = "en", source: str = "auto", model: str = "", adapter: str = "",
            progress: Progress | None = None, max_new_tokens: int | None = None, *,
            owner: str = LOCAL_USER) -> dict:
        """translate() with progress reports; max_new_tokens caps each piece's translation (tests keep it small)."""
        text = require_text(text, "text to translate", self.ctx.settings.max_chars)
        progress = progress or no_progress
        model = self.model_for(model, adapter, owner)
        target_lang = language(target, "target")
        if (source or "auto").strip().lower() == "auto":
            code, confidence = detect_language(text)
            if code not in LANGUAGES:
                raise UserError(f"The text looks like '{code}', which is not among the supported languages; "
                                "choose the source language if it is one of them.")
            source_lang = LANGUAGES[code]
            if source_lang == target_lang:
                raise UserError(f"The text is already in {target_lang.name}; pick another target language.")
        else:
            source_lang, confidence = language(source, "source"), 1.0  # the user's word is certain
            if source_lang == target_lang:
                raise UserError(f"The source and target are both {target_lang.name}; pick a different target.")
        # "Helsinki-NLP/opus-mt-{src}-{tgt}" names the Marian model for whichever pair is asked for.
        if isinstance(model, str):  # not an owner's merged model, found above
            model = model.replace("{src}", source_lang.code).replace("{tgt}", target_lang.code)
        cap = min(max_new_tokens or MAX_NEW_TOKENS, MAX_NEW_TOKENS)
        resolved, family = backbone_family(self, model)
        if family == catalog.SEQ2SEQ:
            backend = self._seq2seq(model, adapter, source_lang, target_lang, cap)
            note = f"Translated by {backend.name}, line by line."
        elif family == catalog.DECODER:
            backend = self._lm(model, adapter, source_lang, target_lang, cap, owner)
            note = f"Translated by {backend.name} with a translation prompt, line by line."
            if offline_fallback(backend.name):
                note += (" It is a small offline model and a weak translator: check the result, or pick a "
                         "translation model (NLLB, or Helsinki-NLP/opus-mt-{src}-{tgt}) when the hub is reachable.")
        else:
            raise UserError(f"'{resolved.name}' cannot write text; pick an instruction model or a translation model "
                            "(Marian, NLLB, M2M100 or T5).")
        translation, empty = self._by_line(text, target_lang, backend, progress)
        if empty:
            note += (f" {empty} piece{'s' if empty > 1 else ''} came back empty from the model and "
                     f"{'were' if empty > 1 else 'was'} left untranslated.")
        return {"translation": translation, "source": source_lang.code, "source_confidence": round(confidence, 4),
                "target": target_lang.code, "model": backend.name, "note": note}

    def _by_line(self, text: str, target: Language, backend: Backend, progress: Progress) -> tuple[str, int]:
        """Translate each line's words (long lines in pieces) and put the layout back around them; also how many
        pieces the model left empty (those keep their original words, so no line silently disappears)."""
        lines = split_lines(text)
        pieces: list[str] = []
        spans: list[range] = []  # which pieces make up each line
        for _, body, _ in lines:
            parts = backend.split(body) if body else []
            spans.append(range(len(pieces), len(pieces) + len(parts)))
            pieces.extend(parts)
        done = backend.translate_all(pieces, progress)
        empty = sum(not out for out in done)
        done = [out or piece for out, piece in zip(done, pieces)]
        joiner = "" if target.code in UNSPACED else " "
        translation = "\n".join(head + joiner.join(done[i] for i in span) + tail
                                for (head, _, tail), span in zip(lines, spans))
        return translation, empty

    def _seq2seq(self, model: str, adapter: str, source: Language, target: Language, cap: int) -> Backend:
        loaded = self.ctx.hub.get("seq2seq", model, self.default(catalog.SEQ2SEQ))
        refuse_adapter(adapter, loaded.name)
        config, tokenizer = loaded.model.config, loaded.tokenizer
        prefix, src_lang, generate_kwargs = "", None, {}
        pair = _MARIAN_PAIR.search(model.rstrip("/")) or _MARIAN_PAIR.search(loaded.name)
        if pair and (pair.group(1).lower(), pair.group(2).lower()) != (source.code, target.code):
            raise UserError(f"'{loaded.name}' translates from '{pair.group(1)}' to '{pair.group(2)}' only; for "
                            f"{source.name} to {target.name} use Helsinki-NLP/opus-mt-{source.code}-{target.code}.")
        if type(tokenizer).__name__.startswith("Nllb"):
            src_lang = source.nllb
            generate_kwargs["forced_bos_token_id"] = tokenizer.convert_tokens_to_ids(target.nllb)
        elif config.model_type == "m2m_100":
            src_lang = source.code
            try:
                generate_kwargs["forced_bos_token_id"] = tokenizer.get_lang_id(target.code)
            except KeyError:
                raise UserError(f"'{loaded.name}' does not translate into {target.name}.") from None
        elif config.model_type in ("t5", "mt5", "umt5"):
            prefix = f"translate {source.name} to {target.name}: "
        count = token_counter(tokenizer)
        budget = min(PIECE_TOKENS, seq2seq_context(loaded) - count(prefix) - 8)

        def translate_all(pieces: list[str], progress: Progress) -> list[str]:
            outs = []
            for i, piece in enumerate(pieces):
                room = min(cap, 2 * count(piece) + 16)  # a translation is rarely twice as long as its source
                outs.append(" ".join(seq2seq_generate(loaded, prefix + piece, room, src_lang,
                                                      **generate_kwargs).split()))
                progress((i + 1) / len(pieces), f"Translating piece {i + 1} of {len(pieces)}")
            return outs

        return Backend(loaded.name, budget, count, translate_all)

    def _lm(self, model: str, adapter: str, source: Language, target: Language, cap: int,
            owner: str) -> Backend:
        lm, adapter_name = instruction_lm(self, model, adapter, "translation", owner)
        count = token_counter(lm.tokenizer)
        room = lm.context_length - len(prompt_ids(lm, lm_prompt("", source, target))) - 8
        budget = min(PIECE_TOKENS, room // 3)  # the piece, and up to twice as much for its translation
        if budget < 16:
            raise UserError(f"'{lm.name}' reads too few tokens ({lm.context_length}) to translate with; "
                            "pick a model with a longer context.")

        def translate_all(pieces: list[str], progress: Progress) -> list[str]:
            limits = [min(cap, 2 * count(piece) + 16) for piece in pieces]
            replies = lm_replies(lm, [lm_prompt(piece, source, target) for piece in pieces], limits, adapter_name,
                                 progress, self.ctx.settings.lines_in_flight, "Translating piece")
            return [clean_reply(reply, target) for reply in replies]

        return Backend(lm.name, budget, count, translate_all)
