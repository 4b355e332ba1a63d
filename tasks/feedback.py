"""Feedback on chat replies: 👍/👎 and corrections, kept per user, and the training set they make.

A row is one assistant turn as the user judged it: the prompt with the history before it, the reply, the
verdict (up/down) and the correction (the answer it should have been), with the model and adapter that replied.
Rows typed by hand are the same rows, so the Feedback view is also the way to write a small training set in the
browser. "Train from feedback" turns corrected and liked replies into supervised chat rows; a reply with its
correction, or a liked and a disliked reply to one prompt, is also a preference pair (kept for preference tuning).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import database
from config import LOCAL_USER
from errors import NotFound, TooLarge, UserError
from tasks.base import Context, Endpoint, Upload, download_folder, require_text
from tasks.chat import clean_history

VERDICTS = ("up", "down", "")
MAX_ROWS = 2_000  # per user: a feedback set is written by hand and by clicks, not imported
ROW_CHARS = 20_000  # one row's texts (a chat turn, its correction and the conversation kept before it)
FIELDS = ("id", "created", "prompt", "reply", "verdict", "correction", "history", "system_prompt", "model", "adapter")
SCHEMA = ("CREATE TABLE feedback (id TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL, "
          "prompt TEXT NOT NULL, reply TEXT NOT NULL, verdict TEXT NOT NULL, correction TEXT NOT NULL, "
          "history TEXT NOT NULL, system_prompt TEXT NOT NULL, model TEXT NOT NULL, adapter TEXT NOT NULL)")


class FeedbackStore:
    """The rows of every user in one SQLite file (each statement a transaction: nothing half-written)."""

    def __init__(self, path: Path):
        self.path = database.create(path, (SCHEMA,))

    def _db(self):
        return database.transaction(self.path)

    def put(self, owner: str, row: dict) -> dict:
        with self._db() as db:
            if not row.get("id"):
                count = db.execute("SELECT COUNT(*) FROM feedback WHERE owner = ?", (owner,)).fetchone()[0]
                if count >= MAX_ROWS:
                    raise UserError(f"Your feedback set is full ({MAX_ROWS:,} rows); delete some first.")
                row = {**row, "id": uuid.uuid4().hex[:12], "created": time.time()}
            elif db.execute("SELECT 1 FROM feedback WHERE id = ? AND owner = ?", (row["id"], owner)).fetchone() is None:
                raise NotFound(f"You have no feedback row '{str(row['id'])[:40]}'.")
            stored = {**row, "history": json.dumps(row["history"], ensure_ascii=False)}
            db.execute(f"INSERT OR REPLACE INTO feedback (owner, {', '.join(FIELDS)}) VALUES "
                       f"(?, {', '.join('?' * len(FIELDS))})", (owner, *(stored[f] for f in FIELDS)))
        return row

    def get(self, owner: str, row_id: str) -> dict:
        with self._db() as db:
            found = db.execute("SELECT * FROM feedback WHERE id = ? AND owner = ?", (row_id, owner)).fetchone()
        if found is None:
            raise NotFound(f"You have no feedback row '{str(row_id)[:40]}'.")
        return _row(found)

    def rows(self, owner: str) -> list[dict]:
        with self._db() as db:
            found = db.execute("SELECT * FROM feedback WHERE owner = ? ORDER BY created", (owner,)).fetchall()
        return [_row(r) for r in found]

    def delete(self, owner: str, row_id: str) -> int:
        with self._db() as db:
            return db.execute("DELETE FROM feedback WHERE id = ? AND owner = ?", (row_id, owner)).rowcount

    def move_owner(self, old: str, new: str) -> int:
        with self._db() as db:
            return db.execute("UPDATE feedback SET owner = ? WHERE owner = ?", (new, old)).rowcount


def _row(found: sqlite3.Row) -> dict:
    return {**{f: found[f] for f in FIELDS}, "history": json.loads(found["history"])}


class FeedbackService:
    """The feedback endpoints."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.store = FeedbackStore(ctx.settings.state_path() / "feedback.sqlite")

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("feedback", self.feedback), Endpoint("feedback_rows", self.feedback_rows),
                Endpoint("delete_feedback", self.delete_feedback),
                Endpoint("feedback_training_set", self.feedback_training_set)]

    def feedback(self, prompt: str, reply: str = "", verdict: str = "", correction: str = "",
                 history: list[dict] | None = None, system_prompt: str = "", model: str = "", adapter: str = "",
                 id: str = "", *, owner: str = LOCAL_USER) -> dict:  # noqa: A002  (the row's id, as the API names it)
        """Keep (or, with id, change) one judged turn: the prompt, the reply, the verdict up/down and the
        correction; a row needs a reply or a correction. Returns the row."""
        limit = ROW_CHARS
        prompt = require_text(prompt, "prompt", limit)
        reply, correction = (_text(reply, "reply", limit), _text(correction, "correction", limit))
        if verdict not in VERDICTS:
            raise UserError("The verdict is 'up', 'down' or empty.")
        if not (reply or correction):
            raise UserError("Give the reply, or the answer it should have been (the correction).")
        system_prompt = _text(system_prompt, "system prompt", limit)
        used = len(prompt) + len(reply) + len(correction) + len(system_prompt)
        if used > limit:
            raise TooLarge(f"This feedback is too long ({used:,} characters); a row holds up to {limit:,}.")
        row = {"id": id if isinstance(id, str) else "", "created": 0.0, "prompt": prompt, "reply": reply,
               "verdict": verdict, "correction": correction, "history": kept_history(history, limit - used),
               "system_prompt": system_prompt, "model": _text(model, "model", 500),
               "adapter": _text(adapter, "adapter", 200)}
        if row["id"]:
            row["created"] = self.store.get(owner, row["id"])["created"]
        return self.store.put(owner, row)

    def feedback_rows(self, task: str = "chat", *, owner: str = LOCAL_USER) -> list[dict]:
        """Your feedback rows, oldest first (chat is the task they come from)."""
        if task not in ("", "chat"):
            raise UserError("Feedback is kept for chat replies; ask for task 'chat'.")
        return self.store.rows(owner)

    def delete_feedback(self, id: str, *, owner: str = LOCAL_USER) -> dict:  # noqa: A002
        """Delete one of your feedback rows; returns {deleted, left}."""
        if not self.store.delete(owner, id if isinstance(id, str) else ""):
            raise NotFound(f"You have no feedback row '{str(id)[:40]}'.")
        return {"deleted": id, "left": len(self.store.rows(owner))}

    def feedback_training_set(self, method: str = "sft", *, owner: str = LOCAL_USER) -> Upload:
        """A chat training file (JSONL) from your feedback. method "sft": `messages` rows, each corrected reply
        as its correction and each liked reply as it was; "dpo": preference pairs (`prompt`, `chosen`,
        `rejected`) — a reply and its correction, or a liked and a disliked reply to the same conversation."""
        if method not in ("sft", "dpo"):
            raise UserError("The method must be sft (the answers to learn) or dpo (preference pairs).")
        supervised, pairs = training_rows(self.store.rows(owner))
        rows = supervised if method == "sft" else pairs
        if not rows:
            raise UserError("No feedback to train on yet: like a reply (👍) or correct one first." if method == "sft"
                            else "No preference pairs yet: correct a reply, or like one reply and dislike another "
                                 "to the same message.")
        name = f"feedback-{'pairs' if method == 'dpo' else 'rows'}.jsonl"
        target = download_folder() / name
        target.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        return Upload(str(target), name)


def training_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(supervised rows, preference pairs) from feedback rows: a correction is the answer to learn, a liked reply
    too; a reply with its correction, or a liked and a disliked reply to the same conversation, is a pair."""
    supervised, pairs, judged = [], [], {}
    for row in rows:
        context = ([{"role": "system", "content": row["system_prompt"]}] if row["system_prompt"] else []) + \
            row["history"] + [{"role": "user", "content": row["prompt"]}]
        good = row["correction"] or (row["reply"] if row["verdict"] == "up" else "")
        if good:
            supervised.append({"messages": context + [{"role": "assistant", "content": good}]})
        if row["correction"] and row["reply"] and row["reply"] != row["correction"]:
            pairs.append({"prompt": context, "chosen": row["correction"], "rejected": row["reply"]})
        if row["verdict"] in ("up", "down") and row["reply"]:
            judged.setdefault(json.dumps(context, ensure_ascii=False), {}).setdefault(row["verdict"], row["reply"])
    for key, verdicts in judged.items():
        if {"up", "down"} <= set(verdicts) and verdicts["up"] != verdicts["down"]:
            pairs.append({"prompt": json.loads(key), "chosen": verdicts["up"], "rejected": verdicts["down"]})
    return supervised, pairs


def kept_history(history: object, room: int) -> list[dict]:
    """The newest turns of the conversation that fit in room characters (at most 20)."""
    turns, kept = clean_history(history)[-20:], []
    for turn in reversed(turns):
        room -= len(turn["content"])
        if room < 0:
            break
        kept.insert(0, turn)
    return kept


def _text(value: object, what: str, limit: int) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise UserError(f"The {what} must be text.")
    if len(value) > limit:
        raise TooLarge(f"The {what} is too long ({len(value):,} characters); the limit is {limit:,}.")
    return value.strip()
