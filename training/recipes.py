"""What training means per task: how a row becomes a conversation for the LM recipe, and the task's metric.

A task trains here when it has an entry in CONVERSATIONS; its metric (if any) is reported before → after on
validation rows, next to the loss.
"""

from __future__ import annotations

from collections.abc import Callable

from errors import UserError
from models import catalog


def _chat(fields: dict) -> dict:
    return fields


def _summarize(fields: dict) -> dict:
    from tasks.summarize import lm_prompt

    return {"messages": [{"role": "user", "content": lm_prompt(fields["text"])},
                         {"role": "assistant", "content": fields["summary"]}]}


def _translate(fields: dict) -> dict:
    from tasks.translate import detect_language, language, lm_prompt

    source_code = fields.get("source_lang") or detect_language(fields["source"])[0]
    target_code = fields.get("target_lang") or detect_language(fields["target"])[0]
    prompt = lm_prompt(fields["source"], language(source_code, "source"), language(target_code, "target"))
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": fields["target"]}]}


# One entry per task the LM recipe trains: how a validated row becomes a conversation.
CONVERSATIONS: dict[str, Callable[[dict], dict]] = {
    "chat": _chat,
    "summarize": _summarize,
    "translate": _translate,
}


def base_families(task: str) -> tuple[str, ...]:
    """The model families a task trains on: GPT-family for the tasks trained as conversations, else BERT-family."""
    return (catalog.DECODER,) if task in CONVERSATIONS else (catalog.EMBEDDING, catalog.ENCODER)


def model_task(task: str) -> str:
    """The task whose default model a task trains when no base is given (the chat model for the LM tasks)."""
    return "chat" if task in CONVERSATIONS else task


def conversation(task: str, fields: dict, line: int) -> dict:
    """The row as LM training fields, or a UserError naming the row."""
    try:
        return CONVERSATIONS[task](fields)
    except UserError as error:
        raise UserError(f"Row {line}: {error}") from None


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


def _rouge(predictions: list[str], references: list[str]) -> dict:
    scores = [rouge_l(p, r) for p, r in zip(predictions, references)]
    return {"rouge_l": round(100 * sum(scores) / max(len(scores), 1), 1)}


def _translation_scores(predictions: list[str], references: list[str]) -> dict:
    import sacrebleu

    return {"chrf": round(sacrebleu.corpus_chrf(predictions, [references]).score, 1),
            "bleu": round(sacrebleu.corpus_bleu(predictions, [references]).score, 1)}


# The metric each task reports before → after (higher is better); chat is judged on loss and samples.
METRICS: dict[str, Callable[[list[str], list[str]], dict]] = {
    "summarize": _rouge,
    "translate": _translation_scores,
}
