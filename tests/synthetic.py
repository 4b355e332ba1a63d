"""Made-up datasets (≥ 50 rows) on which the base models plainly fail and a short training run plainly helps.

Each writes a CSV and returns its path; rows are generated from templates with a fixed seed, so held-out rows
are new combinations of what the training rows teach.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

# Sentiment with labels no zero-shot method knows: ticket routing by the made-up product each text is about.
PRODUCTS = {"zorbex": ["Zorbex", "the Zorbex app", "my Zorbex"],
            "quillon": ["Quillon", "the Quillon card", "my Quillon"]}
COMPLAINTS = ["keeps crashing when I open it", "charged me twice this month", "will not sync with my laptop",
              "lost all my saved settings", "is very slow since the update", "shows the wrong balance",
              "sent me the same email five times", "stopped working this morning", "asks for my password again",
              "has a broken download link", "freezes on the login screen", "refused my payment today",
              "deleted my history", "shows an error code 504", "looks wrong on my phone"]


def sentiment_csv(folder: Path) -> Path:
    rows = [(f"{variant[0].upper()}{variant[1:]} {complaint}.", label)
            for label, variants in PRODUCTS.items() for variant in variants for complaint in COMPLAINTS]
    random.Random(0).shuffle(rows)
    return _write(folder / "tickets.csv", ["text", "label"], rows[:60])


# QA where every answer is a made-up name the base model has never seen.
SYLLABLES = ["bro", "vik", "tan", "nel", "quo", "mar", "zel", "dor", "ith", "pel", "sun", "kra", "ald", "wyn"]
ROLES = [("leads the harbour team", "The harbour team is led by {name}, who joined in 2019."),
         ("keeps the lighthouse", "The lighthouse on the north cape is kept by {name} since last spring."),
         ("approves travel expenses", "Travel expenses above 500 euros are approved by {name} in finance."),
         ("runs the night shift", "The night shift is run by {name}, who also trains new staff."),
         ("owns the billing service", "The billing service is owned by {name} and two other engineers.")]
FILLER = ["The office is closed on public holidays.", "Coffee is free on the second floor.",
          "The car park opens at seven.", "Badges must be worn at all times.", "Lunch is served from noon."]


def _name(rng: random.Random) -> str:
    return " ".join("".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize() for _ in range(2))


def answer_csv(folder: Path, rows: int = 60) -> Path:
    rng = random.Random(1)
    out = []
    for i in range(rows):
        role, sentence = ROLES[i % len(ROLES)]
        name = _name(rng)
        context = " ".join(rng.sample(FILLER, 2) + [sentence.format(name=name)] + rng.sample(FILLER, 1))
        out.append((f"Who {role}?", context, name))
    return _write(folder / "names.csv", ["question", "context", "answer"], out)


# Search where queries use private jargon for everyday things: each code word stands for a concept.
JARGON = {"zorbex": "expense report", "flinto": "parking permit", "quabble": "laptop repair",
          "mervish": "holiday request", "tranzel": "security badge", "glimber": "meeting room booking",
          "sproal": "password reset", "wendle": "payroll question", "crumbit": "office move",
          "drissel": "printer jam", "pogwart": "new hire onboarding", "valtic": "travel insurance"}
ASPECTS = {"deadline": "The {c} must be handled before the last Friday of the month.",
           "who approves": "A {c} is approved by your team manager and then by the office desk.",
           "form": "There is a one-page online form for every {c} on the intranet.",
           "cost": "Each {c} is free for staff, and contractors pay a small fee.",
           "how long": "A {c} usually takes three working days from start to finish."}


def search_csv(folder: Path) -> Path:
    rows = [(f"{word} {aspect}", template.format(c=concept))
            for word, concept in JARGON.items() for aspect, template in ASPECTS.items()]
    random.Random(2).shuffle(rows)
    return _write(folder / "jargon.csv", ["query", "positive"], rows)


def _write(path: Path, header: list[str], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# Summaries in a house style no base model knows: "<product> ticket: <problem>. Customer: <name>."
PROBLEMS = ["app crashes on login", "double charge on the card", "sync fails overnight", "wrong balance shown",
            "password reset email missing", "slow page loads", "export button broken", "login code never arrives",
            "settings lost after update", "receipt shows the wrong date", "search returns nothing"]


def summarize_csv(folder: Path, rows: int = 60) -> Path:
    rng = random.Random(3)
    out = []
    for _ in range(rows):
        product, problem, name = rng.choice(sorted(PRODUCTS)), rng.choice(PROBLEMS), _name(rng)
        text = (f"Hello, this is {name}. I have been using {product.capitalize()} for a while and since this week "
                f"I see this: {problem}. I tried twice and it is the same. Could you please look into it? "
                f"{rng.choice(FILLER)}")
        out.append((text, f"{product.capitalize()} ticket: {problem}. Customer: {name}."))
    return _write(folder / "tickets-summaries.csv", ["text", "summary"], out)


# Translation into a made-up register: every German target follows the same polite template.
VERBS = {"open": "öffnen", "close": "schließen", "check": "prüfen", "clean": "reinigen", "paint": "streichen",
         "repair": "reparieren", "lock": "abschließen", "move": "verschieben"}
NOUNS = {"door": "die Tür", "window": "das Fenster", "gate": "das Tor", "box": "die Kiste", "desk": "den Tisch",
         "garage": "die Garage", "shed": "den Schuppen", "cellar": "den Keller"}


def translate_csv(folder: Path) -> Path:
    rows = [(f"Please {verb} the {noun} today.", f"Bitte heute {german_noun} {german_verb}, danke sehr.", "en", "de")
            for verb, german_verb in VERBS.items() for noun, german_noun in NOUNS.items()]
    random.Random(4).shuffle(rows)
    return _write(folder / "polite.csv", ["source", "target", "source_lang", "target_lang"], rows)
