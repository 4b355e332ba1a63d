"""Training rows made from documents: question/answer pairs a chat model writes about each passage, query/passage
pairs for search (written questions, plus inverse-cloze pairs that need no model) and answer spans for extractive
QA. Pure functions over passages; the job that runs them is training/make_data.py's.

A small writer invents: a pair is kept only when its answer is supported by the passage it was written from. The
test is deliberately plain: every number of the answer occurs in the passage, most of its words do, and the
question and answer read close to one of its sentences (a sentence embedding's cosine, or character 3-grams
without one). What is dropped is counted by reason, so the report says how much the writer made up.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from errors import UserError
from tasks.text import STOPWORDS, split_sentences
from training.answer_check import lexical_embed, tokens

Embed = Callable[[list[str]], np.ndarray]  # texts -> unit vectors
Writer = Callable[[list[str]], list[str]]  # prompts -> the writer model's replies, in order

TASKS = ("chat", "search", "answer")
COLUMNS = {"chat": ("prompt", "response"), "search": ("query", "positive"),
           "answer": ("question", "context", "answer", "answer_start")}
MIN_OVERLAP = 0.5  # share of the answer's content words that must occur in the passage
MIN_SIMILARITY = 0.3  # cosine of "question answer" with the passage's closest sentence
MAX_PASSAGES = 500  # passages one job reads at most (the operator's job limits bound the rest)
DROP_REASONS = ("unparsed", "unsupported", "not_in_passage", "duplicate")
GENERATED_FILE = re.compile(r"generated-([0-9a-f]{12})\.jsonl")  # the rows file's name names its job
HOLD_OUT = 0.2  # of generated rows, set aside to score the adapter on


@dataclass(frozen=True)
class MakeSettings:
    """/make_training_data's settings (all optional), checked once where the job is submitted."""

    questions_per_passage: int = 3  # pairs the writer is asked for about each passage
    inverse_cloze: bool = True  # search: also one sentence → the rest of its passage per passage (no model)
    write_questions: bool = True  # search: also ask the writer (off = inverse-cloze pairs only, no model loaded)
    max_passages: int = 50  # passages read (the first ones of the collection or files)
    max_new_tokens: int = 160  # of each writer reply
    seed: int = 42

    def __post_init__(self) -> None:
        checks = [(1 <= self.questions_per_passage <= 10, "Questions per passage must be between 1 and 10."),
                  (1 <= self.max_passages <= MAX_PASSAGES, f"Max passages must be between 1 and {MAX_PASSAGES}."),
                  (16 <= self.max_new_tokens <= 1024, "The writer's max new tokens must be between 16 and 1024.")]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    @classmethod
    def from_json(cls, data: dict | None) -> MakeSettings:
        """From the user's dict: unknown keys and wrong types are named in one sentence."""
        from training.presets import typed_settings

        return cls(**typed_settings(cls(), data, "setting", " for making training data", frozenset({"own_questions"})))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Passage:
    text: str
    source: str  # the document it was cut from


# ---- rows that need no model ------------------------------------------------------------------------------------
def inverse_cloze_pairs(passages: list[Passage], seed: int = 42) -> list[dict]:
    """Search rows in the inverse-cloze style: one sentence of a passage is the query, the passage without that
    sentence the positive (so a model learns to find a passage from what it says, not from a copy of it)."""
    rng = random.Random(seed)
    rows = []
    for passage in passages:
        sentences = [s for s in split_sentences(passage.text) if len(tokens(s)) >= 4]
        if len(sentences) < 2:
            continue
        query = rng.choice(sentences)
        rest = " ".join(s for s in split_sentences(passage.text) if s != query).strip()
        if rest:
            rows.append({"query": query, "positive": rest, "source": passage.source})
    return rows


def answer_row(question: str, answer: str, passage: Passage) -> dict | None:
    """An extractive-QA row whose answer occurs in the passage word for word (the passage's own spelling and
    case), with answer_start where it does; None when it does not occur."""
    answer = answer.strip().strip(".").strip()
    if not answer:
        return None
    start = passage.text.find(answer)
    if start < 0:
        start = passage.text.lower().find(answer.lower())
    if start < 0:
        return None
    return {"question": question, "context": passage.text, "answer": passage.text[start:start + len(answer)],
            "answer_start": start, "source": passage.source}


# ---- the writer -------------------------------------------------------------------------------------------------
def writer_prompt(passage: str, count: int) -> str:
    """What the writer model is asked about one passage."""
    return (f"Read the passage, then write {count} questions that it answers, each followed by its answer taken "
            "from the passage. Use exactly this form:\nQuestion: ...\nAnswer: ...\n\n"
            f"Passage:\n{passage}")


_LABEL = r"\**\s*(?:{})\s*\d*\s*\**\s*[:：]\s*\**\s*"  # "Question:", "**Question 2:**", "Q1:", "问题："
_PAIR = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?" + _LABEL.format("Question|Q|问题") + r"(?P<q>[^\n]+?)\s*\n?\s*"
                   + _LABEL.format("Answer|A|答案") + r"(?P<a>[^\n]+)", re.IGNORECASE)


def parse_pairs(reply: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs of a writer's reply in the "Question: … Answer: …" form, in order."""
    pairs = []
    for match in _PAIR.finditer(reply or ""):
        question, answer = (" ".join(match.group(k).split()) for k in ("q", "a"))
        if question and answer:
            pairs.append((question, answer))
    return pairs


_QUESTION = re.compile(r"(?:^|\n)\s*(?:\d+[.)]\s*)?(?:" + _LABEL.format("Question|Q|问题") + r")?(?P<q>[^\n]+[?？])",
                       re.IGNORECASE)


def parse_drafts(reply: str) -> list[tuple[str, str]]:
    """The pairs of a reply, then the questions it wrote without an answer (as (question, "")): a small writer
    often stops at "Answer:", and its question can still be answered in a second request."""
    pairs = parse_pairs(reply)
    asked = {question for question, _ in pairs}
    for match in _QUESTION.finditer(reply or ""):
        question = " ".join(match.group("q").split())
        if question not in asked:
            asked.add(question)
            pairs.append((question, ""))
    return pairs


def answer_prompt(passage: str, question: str) -> str:
    """What the writer is asked for a question it left unanswered: a short answer from the passage."""
    return (f"Passage:\n{passage}\n\nAnswer the question in one short sentence, using only the passage.\n"
            f"Question: {question}")


def first_answer(reply: str) -> str:
    """The answer in a reply to answer_prompt: its first line, without an "Answer:" label."""
    line = next((line for line in (reply or "").splitlines() if line.strip()), "")
    return " ".join(re.sub(r"^\s*" + _LABEL.format("Answer|A|答案"), "", line, flags=re.IGNORECASE).split())


def _content_words(text: str) -> list[str]:
    return [w for w in tokens(text) if w not in STOPWORDS]


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)}


def supported(question: str, answer: str, passage: str, embed: Embed | None = None) -> bool:
    """Whether the passage supports the answer: its numbers and most of its words occur in the passage, and the
    question with its answer reads close to the passage."""
    words = _content_words(answer)
    if not words or not _numbers(answer) <= _numbers(passage):
        return False
    known = set(tokens(passage))
    if sum(w in known for w in words) / len(words) < MIN_OVERLAP:
        return False
    # Against the passage's closest sentence: a short pair reads far from a long passage as a whole.
    vectors = (embed or lexical_embed)([f"{question} {answer}", *(split_sentences(passage) or [passage])])
    return float(np.max(vectors[1:] @ vectors[0])) >= MIN_SIMILARITY


@dataclass
class Made:
    """What a run made: the rows and what was dropped, by reason."""

    rows: list[dict]
    dropped: dict[str, int]
    passages: int

    @property
    def made(self) -> int:
        return len(self.rows)


def rows_from_replies(task: str, passages: list[Passage], replies: list[str], embed: Embed | None = None) -> Made:
    """The rows of a task from the writer's replies (one per passage); see rows_from_pairs."""
    return rows_from_pairs(task, passages, [parse_pairs(reply) for reply in replies], embed)


def rows_from_pairs(task: str, passages: list[Passage], pairs: list[list[tuple[str, str]]],
                    embed: Embed | None = None) -> Made:
    """The rows of a task from each passage's (question, answer) pairs: a passage without a pair, unsupported
    and repeated pairs are dropped and counted; an answer row also needs its answer word for word in the
    passage."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    rows, seen = [], set()
    for passage, found in zip(passages, pairs):
        found = [(question, answer) for question, answer in found if answer]
        if not found:
            dropped["unparsed"] += 1
        for question, answer in found:
            key = " ".join(tokens(question))
            if key in seen:
                dropped["duplicate"] += 1
                continue
            if not supported(question, answer, passage.text, embed):
                dropped["unsupported"] += 1
                continue
            if task == "answer":
                row = answer_row(question, answer, passage)
                if row is None:
                    dropped["not_in_passage"] += 1
                    continue
            elif task == "search":
                row = {"query": question, "positive": passage.text, "source": passage.source}
            else:
                row = {"prompt": question, "response": answer, "source": passage.source}
            seen.add(key)
            rows.append(row)
    return Made(rows, dropped, len(passages))


def make_rows(task: str, passages: list[Passage], settings: MakeSettings, writer: Writer | None,
              embed: Embed | None = None) -> Made:
    """All the rows of a task from passages: the writer's pairs (when the task uses one; questions it wrote
    without an answer are answered in a second round) and, for search, inverse-cloze pairs."""
    if task not in TASKS:
        raise UserError(f"Training data can be made for {', '.join(TASKS)}, not for '{task}'.")
    passages = passages[:settings.max_passages]
    made = Made([], dict.fromkeys(DROP_REASONS, 0), len(passages))
    if writer is not None and uses_writer(task, settings):
        drafts = [parse_drafts(reply)[:settings.questions_per_passage]
                  for reply in writer([writer_prompt(p.text, settings.questions_per_passage) for p in passages])]
        open_ = [(i, j) for i, found in enumerate(drafts) for j, (_, answer) in enumerate(found) if not answer]
        if open_:
            replies = writer([answer_prompt(passages[i].text, drafts[i][j][0]) for i, j in open_])
            for (i, j), reply in zip(open_, replies):
                drafts[i][j] = (drafts[i][j][0], first_answer(reply))
        made = rows_from_pairs(task, passages, drafts, embed)
    if task == "search" and settings.inverse_cloze:
        made.rows += inverse_cloze_pairs(passages, settings.seed)
    return made


def uses_writer(task: str, settings: MakeSettings) -> bool:
    return task != "search" or settings.write_questions


# ---- files --------------------------------------------------------------------------------------------------------
def write_jsonl(path: Path, rows) -> Path:
    """Rows as JSONL, written to a temporary name beside path and renamed into place: never half a file (a killed
    worker leaves only `<name>.tmp`, which its job's end removes)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_rows(rows: list[dict], path: Path, columns: tuple[str, ...]) -> Path:
    """The rows with the task's columns (and each row's source), as write_jsonl writes them."""
    return write_jsonl(path, ({c: row[c] for c in (*columns, "source") if c in row} for row in rows))


def read_passages(path: Path) -> list[Passage]:
    """The passages a job was given (a JSONL file of {text, source})."""
    with path.open(encoding="utf-8") as lines:
        return [Passage(**json.loads(line)) for line in lines if line.strip()]


OWN_LIMIT, OWN_CHARS = 100, 1_000  # the user's own questions: how many, and the characters of each and its answer


def own_questions(value: object) -> list[dict]:
    """The user's own questions with their answers: a list of {question, answer}, or text with one
    "question | answer" per line; a UserError for anything else."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        value = [dict(zip(("question", "answer"), (p.strip() for p in line.split("|", 1))))
                 for line in value.splitlines() if line.strip()]
    if not isinstance(value, list):
        raise UserError("Your own questions must be a list of {\"question\": ..., \"answer\": ...}.")
    if len(value) > OWN_LIMIT:
        raise UserError(f"Give at most {OWN_LIMIT} questions of your own.")
    rows = []
    for item in value:
        if not (isinstance(item, dict) and isinstance(item.get("question"), str) and item["question"].strip()
                and isinstance(item.get("answer"), str) and item["answer"].strip()):
            raise UserError("Write each of your own questions with its answer, as \"question | answer\".")
        row = {"question": item["question"].strip(), "answer": item["answer"].strip()}
        if max(map(len, row.values())) > OWN_CHARS:
            raise UserError(f"Keep each of your own questions and answers within {OWN_CHARS:,} characters.")
        rows.append(row)
    return rows


def generated_job(data_path: str, settings: object) -> tuple[str, bool]:
    """(the make-data job whose rows a training file holds, whether the user named it): settings' generated_from,
    else the id in the rows file's own name ("" when neither)."""
    given = settings.get("generated_from") if isinstance(settings, dict) else None
    if isinstance(given, str) and given.strip():
        return given.strip(), True
    found = GENERATED_FILE.fullmatch(Path(data_path).name) if data_path else None
    return (found.group(1) if found else ""), False


def recalled(answers: list[str], references: list[str]) -> float:
    """The share (in %) of answers that say their reference: every number of it and most of its words."""
    if not answers:
        return 0.0
    hits = 0
    for answer, reference in zip(answers, references):
        words, said = _content_words(reference), set(tokens(answer))
        if words and _numbers(reference) <= _numbers(answer) and sum(w in said for w in words) / len(words) >= 0.6:
            hits += 1
    return round(100 * hits / len(answers), 1)


# ---- training on made rows ----------------------------------------------------------------------------------------
def hold_out(examples: list, seed: int) -> tuple[list, list]:
    """Generated rows split for training and scoring: HOLD_OUT of them (at least 1 of 5 or more, at most 200) set
    aside with seed, both parts in the file's order. Unlike a user's own file, even a few generated rows are split:
    the report is meant to say how the adapter answers questions it was not shown."""
    if len(examples) < 5:
        return list(examples), []
    size = min(200, max(1, round(len(examples) * HOLD_OUT)))
    held = set(random.Random(seed).sample(range(len(examples)), size))
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def reported(report, source: str):
    """A training report of an adapter trained on generated rows: says so, and how it scored on held-out
    generated rows and on the user's own questions (report.extra["generated"]). Own questions are the point of
    such a run: when the adapter answers them no better than the base model, the verdict is not *learned*, however
    far the loss on the generated rows fell."""
    from dataclasses import replace

    from training.report import metric_sentence

    generated = report.extra.get("generated", {})
    words = [f"Trained on rows generated from {source}."]
    for key, one, many in (("held_out", "held-out generated row", "held-out generated rows"),
                           ("own", "of your own questions", "of your own questions")):
        if not (part := generated.get(key)):
            continue
        rows = f"{part['rows']} {one if part['rows'] == 1 else many}"
        if "recalled" in part["after"]:
            words.append(f"On {rows}, {part['after']['recalled']:g}% of the adapter's answers say the reference "
                         f"answer (the base model's: {part['before']['recalled']:g}%).")
        else:
            words.append(f"On {rows}: {metric_sentence(part['before'], part['after'])}")
    verdict, summary = report.verdict, report.summary
    if verdict == "learned" and (own := generated.get("own")) and not _improved(own["before"], own["after"]):
        verdict, summary = "barely", UNLEARNED_OWN + (
            f" {metric_sentence(report.metric_before, report.metric_after)}" if report.metric_after else "")
    return replace(report, verdict=verdict, summary=" ".join(words[:1] + [summary] + words[1:]),
                   extra={**report.extra, "generated": {**generated, "source": source}})


UNLEARNED_OWN = ("It learned the wording of the generated rows, but it answers your own questions no better than the "
                 "base model. Make rows from more passages, fix them in the table, or add rows of your own.")


def _improved(before: dict, after: dict) -> bool:
    """Whether the adapter scored better than the base on some metric (every one of ours is higher-is-better)."""
    return any(after[name] > before.get(name, 0) for name in after)


def own_examples(path: str) -> list:
    """The user's own questions (a JSONL file of {question, answer}) as chat rows to score an adapter on."""
    from training.data import Example
    from training.formats import turns

    if not path:
        return []
    with open(path, encoding="utf-8") as lines:
        found = [json.loads(line) for line in lines if line.strip()]
    return [Example(n, turns("", row["question"], row["answer"])) for n, row in enumerate(found, 1)]
