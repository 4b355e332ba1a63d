"""Training rows from documents, measured end to end: made-up facts → rows written by a chat model → a chat
adapter → its answers to held-out questions, asked without the documents, against the base model's.

Ten short documents state facts no model can know (invented towns, people, numbers). The make-data job writes
question/answer pairs about each passage with the writer model (default: the offline SmolLM2-135M-Instruct) and
keeps the supported ones; a chat adapter trains on them as the worker runs a job ("Train on these rows": 20% of
the rows held out); the report scores base and adapter on the held-out generated rows and on ten questions written
here by hand (the user's own). An answer counts when it says its reference (`documents_data.recalled`).

    .venv/bin/python bench/docs_data.py [--writer MODEL] [--base MODEL] [--questions 3] [--preset quick]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FACTS = {
    "velmora.txt": "Velmora is a harbour town founded by Tarsin Quell in 1742. It has 17 bridges over the river "
                   "Ost. The roofs of its houses are painted green by law.",
    "ostrel.txt": "The Ostrel lighthouse stands 64 metres tall on the cape of Brannoch. Its keeper, Ilse Vantry, "
                  "lit the lamp for 31 years. The light flashes blue three times a minute.",
    "quorbel.txt": "Quorbel is a card game invented by Mira Oskane in 1911. A game of Quorbel uses 52 tiles made "
                   "of slate. The winner of a round is called the quorbelline.",
    "dunmarch.txt": "The Dunmarch Library holds 48,000 books about clocks. It was opened by Edda Fenwright in "
                    "1867. Its reading room is lit by 12 copper lamps.",
    "saltreach.txt": "Saltreach is a mountain village at 2,310 metres. Its people grow purple barley. The village "
                     "festival, Brinnow Day, falls on the ninth of March.",
    "kelvory.txt": "The Kelvory Express runs between Amblin and Torsk. The journey takes 7 hours and crosses 23 "
                   "tunnels. Its engine is named Old Hessa.",
    "fennick.txt": "Doctor Ansel Fennick discovered the glass frog of Varrow in 1983. The frog is 4 centimetres "
                   "long. It sings only during thunderstorms.",
    "marrowby.txt": "Marrowby Market sells cheese made from reindeer milk. The market has 36 stalls. It was "
                    "founded by the brothers Olm and Pell Tavish.",
    "cindral.txt": "The Cindral Orchestra has 88 musicians and plays only on wooden instruments. Its conductor is "
                   "Runa Halvers. It gives one concert a year, in the Ember Hall.",
    "yarrowgate.txt": "Yarrowgate Castle was built from red basalt in 1430. It has 9 towers. The castle's ghost is "
                      "said to be a baker named Wim Corley.",
}
OWN = [("Who founded Velmora?", "Tarsin Quell"), ("How tall is the Ostrel lighthouse?", "64 metres"),
       ("Who invented Quorbel?", "Mira Oskane"), ("How many books does the Dunmarch Library hold?", "48,000"),
       ("What do the people of Saltreach grow?", "purple barley"),
       ("How many tunnels does the Kelvory Express cross?", "23"),
       ("Who discovered the glass frog of Varrow?", "Ansel Fennick"),
       ("What is the cheese of Marrowby Market made from?", "reindeer milk"),
       ("Who conducts the Cindral Orchestra?", "Runa Halvers"), ("How many towers has Yarrowgate Castle?", "9")]


def ran(training, job_id: str) -> tuple[dict | None, float]:
    """(the job's status, seconds) once the worker's own function has run it; None (said why) unless it
    succeeded."""
    from training import worker

    started = time.monotonic()
    worker.run_job(training.settings, job_id)
    status = training.job(job_id)
    if status["state"] != "succeeded":
        print(f"{status['kind']} job {status['state']}: {status['error']}")
        return None, 0.0
    return status, time.monotonic() - started


def main() -> None:
    from bench.common import header, parser
    from config import Settings
    from models.loading import ModelHub
    from tasks.base import Context, Upload
    from tasks.search import SearchTask
    from training.make_data import DataMaker, rows_path
    from training.service import TrainingService

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--writer", default="", help="the writer model ('' = the default chat model)")
    p.add_argument("--base", default="", help="the chat model the adapter trains on ('' = the default)")
    p.add_argument("--questions", type=int, default=3, help="questions asked per passage")
    p.add_argument("--preset", default="quick")
    args = p.parse_args()
    header("training rows from documents: made-up facts, base vs adapter", args.threads)
    work = Path(tempfile.mkdtemp(prefix="docs-data-"))
    data = work / "data"
    data.mkdir()
    models = Path(args.data_dir) / "models"
    models.mkdir(parents=True, exist_ok=True)
    (data / "models").symlink_to(models.resolve(), target_is_directory=True)  # the converted SmolLM2, shared
    settings = Settings(data_dir=data, threads=args.threads or 0)
    ctx = Context(settings, ModelHub(settings))
    training = TrainingService(ctx, start_manager=False)
    maker = DataMaker(ctx, training, SearchTask(ctx).store)
    files = []
    for name, text in FACTS.items():
        (work / name).write_text(text, encoding="utf-8")
        files.append(Upload(str(work / name), name))
    own = "\n".join(f"{q} | {a}" for q, a in OWN)

    made_id = maker.make_training_data("chat", "", files, args.writer,
                                       {"questions_per_passage": args.questions, "own_questions": own})["job_id"]
    made, writing_s = ran(training, made_id)
    if made is None:
        return
    report = made["report"]
    print(f"rows: {report['made']} made from {report['passages']} passages in {writing_s:.0f} s; "
          f"dropped {json.dumps(report['dropped'])}")
    for row in report["rows"][:6]:
        print(f"  Q: {row['prompt']}\n  A: {row['response']}")

    job_id = training.submit("chat", str(rows_path(settings, made_id)), args.base, "facts", args.preset, {})["job_id"]
    trained, training_s = ran(training, job_id)
    if trained is None:
        return
    result = trained["report"]
    print(f"trained in {training_s:.0f} s (report included); verdict {result['verdict']}")
    print(result["summary"])
    for key, what in (("held_out", "held-out generated rows"), ("own", "own questions")):
        part = result.get("generated", {}).get(key)
        if part:
            print(f"{what}: {part['rows']} rows, base {part['before']}, adapter {part['after']}")
    for sample in result["samples"]:
        print(f"  Q: {sample['prompt']}\n  expected: {sample['expected']}\n  base: {sample['base']}\n"
              f"  adapter: {sample['adapter']}")


if __name__ == "__main__":
    main()
