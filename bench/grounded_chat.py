"""Chat from documents: made-up facts no model can know (examples/handbook/), asked in other words than the
documents use, answered with and without the collection, and timed with and without speculative decoding.

An answer is *right* when it holds the fact's key words; its citation is *right* when the cited passages include
the fact's document. Unrelated questions should get the "I don't know" reply (no passage scores MIN_RELEVANCE).
The model and its settings are the app's defaults for chat: SmolLM2-135M-Instruct, greedy, 96 new tokens.

    .venv/bin/python bench/grounded_chat.py [--threads 2] [--data-dir data]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import ROOT, header, parser

HANDBOOK = ROOT / "examples" / "handbook"
# (question, its document, the words a right answer holds: any one of each group)
QUESTIONS = [
    ("Who looks after the lighthouse on Kessel Point?", "lighthouse.md", [["orla", "finch"]]),
    ("What time in the morning can I buy bread at Brimwell?", "bakery.md", [["6:40"]]),
    ("How long does the boat trip to Selk Island take?", "ferry.md", [["47"]]),
    ("In which room does the library store its old maps?", "library.md", [["14"]]),
    ("On which river do the Ambergate lanterns float?", "festival.md", [["tolley"]]),
    ("What name was given to the Halden cleaning robot?", "robot.md", [["pip-7", "pip 7"]]),
    ("Who started the Calloway community garden?", "garden.md", [["abernathy"]]),
    ("Where does the Wrenfield choir practise?", "choir.md", [["tram"]]),
    ("How high is Mount Ferrow?", "mountain.md", [["2,914", "2914", "2 914"]]),
    ("Which ingredients go into the copper fizz?", "cafe.md", [["ginger", "pear"]]),
]
UNRELATED = ["What is the capital of Japan?", "How do I bake a chocolate cake?", "Who wrote Hamlet?",
             "What is the boiling point of water?", "Which planet is the largest?"]
TOKENS = 96


def right(reply: str, groups: list[list[str]]) -> bool:
    text = reply.lower()
    return all(any(word in text for word in group) for group in groups)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    header("Chat from documents (examples/handbook, SmolLM2-135M-Instruct)", args.threads)
    from config import Settings
    from models.loading import ModelHub
    from tasks.base import Context, Upload
    from tasks.chat import ChatTask
    from tasks.grounding import NOTHING_FOUND

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        data.mkdir()
        (data / "models").symlink_to(Path(args.data_dir).resolve() / "models", target_is_directory=True)

        def chat_task(speculative: bool) -> ChatTask:
            settings = Settings(data_dir=data, threads=args.threads or 0, speculative=speculative)
            return ChatTask(Context(settings, ModelHub(settings)))

        chat, plain = chat_task(True), chat_task(False)
        files = [Upload(str(path), path.name) for path in sorted(HANDBOOK.glob("*.md"))]
        chat.search.add_documents("handbook", files)
        ask = {"temperature": 0.0, "max_new_tokens": TOKENS}
        chat.reply("Hello", **ask).text()  # the model loaded and measured before any timing
        plain.reply("Hello", **ask).text()

        rows, grounded_s, plain_s = [], 0.0, 0.0
        for question, source, groups in QUESTIONS:
            hits = chat.search.find("local", question, "handbook", 10)
            rank = next((i for i, hit in enumerate(hits, 1) if hit["source"] == source), None)
            start = time.perf_counter()
            reply = chat.reply(question, collection="handbook", **ask)
            text = reply.text()
            grounded_s += time.perf_counter() - start
            start = time.perf_counter()
            same = plain.reply(question, collection="handbook", **ask).text()
            plain_s += time.perf_counter() - start
            alone = chat.reply(question, **ask).text()
            cites = [p.source for p in reply.citations]
            rows.append((right(text, groups), source in cites, right(alone, groups), same == text))
            score = next((h["score"] for h in hits if h["source"] == source), 0.0)
            print(f"- {question}\n  with the collection: {text!r}\n  cites {cites}; its document ranked {rank} "
                  f"(score {score:.2f})\n  without: {alone!r}")
        unrelated = []
        for question in UNRELATED:
            best = chat.search.find("local", question, "handbook", 1)[0]["score"]
            text = chat.reply(question, collection="handbook", **ask).text()
            unrelated.append(text == NOTHING_FOUND.format(collection="handbook"))
            print(f"- {question} (best passage {best:.2f}): {text!r}")
        count = len(QUESTIONS)
        print(f"\nright answers with the collection: {sum(r[0] for r in rows)}/{count}; right document cited: "
              f"{sum(r[1] for r in rows)}/{count}; both: {sum(r[0] and r[1] for r in rows)}/{count}")
        print(f"right answers without it (the same model): {sum(r[2] for r in rows)}/{count}")
        print(f"unrelated questions answered 'I don't know': {sum(unrelated)}/{len(UNRELATED)}")
        print(f"time to the whole answer: {grounded_s / count:.2f} s with speculation, {plain_s / count:.2f} s "
              f"without ({plain_s / grounded_s:.2f}x); the same answers: {sum(r[3] for r in rows)}/{count}")
        shutil.rmtree(data / "collections", ignore_errors=True)


if __name__ == "__main__":
    main()
