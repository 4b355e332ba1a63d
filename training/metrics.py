"""The task metrics a report shows before → after, each in percent (higher is better) or as a plain count."""

from __future__ import annotations

import re
from collections import Counter


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased words: the longest common subsequence against both lengths."""
    a, b = prediction.lower().split(), reference.lower().split()
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def summary_scores(predictions: list[str], references: list[str]) -> dict:
    scores = [rouge_l(p, r) for p, r in zip(predictions, references)]
    return {"rouge_l": round(100 * sum(scores) / max(len(scores), 1), 1)}


def translation_scores(predictions: list[str], references: list[str]) -> dict:
    import sacrebleu

    return {"chrf": round(sacrebleu.corpus_chrf(predictions, [references]).score, 1),
            "bleu": round(sacrebleu.corpus_bleu(predictions, [references]).score, 1)}


def classification_scores(predicted: list[str], expected: list[str], labels: list[str]) -> dict:
    """Accuracy and macro-F1 in percent."""
    correct = sum(p == e for p, e in zip(predicted, expected))
    f1s = []
    for label in labels:
        tp = sum(p == e == label for p, e in zip(predicted, expected))
        fp = sum(p == label != e for p, e in zip(predicted, expected))
        fn = sum(e == label != p for p, e in zip(predicted, expected))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": round(100 * correct / max(len(expected), 1), 1),
            "macro_f1": round(100 * sum(f1s) / max(len(f1s), 1), 1)}


def confusion(predicted: list[str], expected: list[str], labels: list[str]) -> dict:
    """{labels, matrix}: matrix[i][j] counts rows labelled labels[i] that were predicted labels[j]."""
    counts = Counter(zip(expected, predicted))
    return {"labels": labels, "matrix": [[counts[(e, p)] for p in labels] for e in labels]}


def normalize_answer(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, no punctuation or articles, split on whitespace."""
    text = re.sub(r"\b(a|an|the)\b", " ", re.sub(r"[^\w\s]", " ", text.lower()))
    return text.split()


def answer_scores(predicted: list[str], expected: list[str]) -> dict:
    """Exact match and token F1 in percent (SQuAD's definitions)."""
    exact, f1 = 0.0, 0.0
    for p, e in zip(predicted, expected):
        a, b = normalize_answer(p), normalize_answer(e)
        exact += a == b
        common = sum((Counter(a) & Counter(b)).values())
        if common:
            precision, recall = common / len(a), common / len(b)
            f1 += 2 * precision * recall / (precision + recall)
    n = max(len(expected), 1)
    return {"exact_match": round(100 * exact / n, 1), "f1": round(100 * f1 / n, 1)}


def retrieval_scores(ranks: list[int]) -> dict:
    """recall@1, recall@5 and MRR in percent, from the 1-based rank of each query's passage."""
    n = max(len(ranks), 1)
    return {"recall_at_1": round(100 * sum(r == 1 for r in ranks) / n, 1),
            "recall_at_5": round(100 * sum(r <= 5 for r in ranks) / n, 1),
            "mrr": round(100 * sum(1 / r for r in ranks) / n, 1)}
