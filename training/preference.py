"""Preference tuning (DPO) for chat: the adapter learns to score each pair's chosen answer above its rejected one,
relative to the base model — the same weights with the adapter switched off, so there is no second copy.

The loss is DPO's (Rafailov et al. 2023, TRL's "sigmoid" loss): -log σ(β·((log π(c) − log π_ref(c)) −
(log π(r) − log π_ref(r)))), with log-probabilities summed over the answer's tokens, plus rpo_alpha times the
chosen answers' mean token loss (RPO, Pang et al. 2024; TRL's `rpo_alpha`). DPO alone only has to rank the two
answers, and on a few dozen pairs it ranks them by answering every prompt with what the chosen answers share; the
second term keeps the adapter writing whole chosen answers, so it takes their style and keeps the topic.
The reference scores never change, so each pair's are computed once, in a batch, the first time it is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import lazy, speculation
from training.data import Example
from training.language import (IGNORE, ChatRecipe, collate, encode_messages, fast_loss_matches, greedy_replies,
                               last_hidden, token_losses)
from training.trainer import evaluating

torch = lazy.module("torch")

ANSWERED = 12  # prompts answered for the report: the answer check reads them, the first few are shown
TIE = 1e-3  # a margin this close to 0 prefers neither answer (the untrained adapter's, for every pair)


@dataclass
class Pair:
    """One pair's tokens (ids, labels) and, once computed, the reference model's scores of both answers."""

    chosen: tuple[list, list]
    rejected: tuple[list, list]
    reference: tuple[float, float] | None = None


def untrained(model) -> bool:
    """Whether the adapter is still as peft made it: LoRA's B matrices start at zero, so it changes nothing yet."""
    return all(not p.any() for name, p in model.named_parameters() if "lora_B" in name)


def has_answer(tokens: tuple[list, list]) -> bool:
    return any(label != IGNORE for label in tokens[1][1:])


class PreferenceRecipe(ChatRecipe):
    """DPO with LoRA on a causal LM over pairs {prompt: messages, chosen: text, rejected: text}."""

    perplexity = False
    metric_decides = True  # preference accuracy, not the loss alone, says whether it learned
    checked_rows = 64  # held-out pairs scored before → after; answers are generated for the first few
    nothing_to_learn = ("No pair leaves room for its answers within the max sequence length: raise it or shorten "
                        "the prompts.")

    def prepare(self, rows: list[Example]) -> list[Example]:
        return rows

    def _prompt(self, fields: dict) -> list[dict]:
        prompt = fields["prompt"]
        if self.settings.system_prompt and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": self.settings.system_prompt}] + prompt
        return prompt

    def _answer(self, fields: dict, key: str) -> tuple[list, list]:
        conversation = self._prompt(fields) + [{"role": "assistant", "content": fields[key]}]
        return encode_messages(self.tokenizer, conversation, "", self.settings.max_length)

    def encode(self, row: Example) -> list:
        pair = Pair(self._answer(row.fields, "chosen"), self._answer(row.fields, "rejected"))
        return [pair] if has_answer(pair.chosen) and has_answer(pair.rejected) else []

    def length(self, item: Pair) -> int:
        return max(len(item.chosen[0]), len(item.rejected[0]))

    # ---- scores ---------------------------------------------------------------------------------------------
    def _answer_logps(self, model, rows: list[tuple[list, list]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's log-probability of its learned tokens (the answer), summed, and how many tokens it has."""
        batch = {k: v.to(model.device) for k, v in collate(rows, self.tokenizer.pad_token_id).items()}
        if self._fast is None:  # checked once per run, as the chat recipe does
            self._fast = fast_loss_matches(model, batch)
        if self._fast:  # the output layer only where an answer token is scored, its logits never kept whole
            base, hidden, start = last_hidden(model, batch)
            targets = batch["labels"][:, start + 1:]
            learned = targets != IGNORE
            token_logps = -token_losses(base.get_output_embeddings(), hidden[:, :-1][learned], targets[learned])
        else:
            targets = batch["labels"][:, 1:]
            learned = targets != IGNORE
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][learned]
            token_logps = torch.log_softmax(logits.float(), -1).gather(1, targets[learned][:, None]).squeeze(1)
        sums = torch.zeros(len(rows), device=token_logps.device, dtype=token_logps.dtype)
        return sums.index_add(0, learned.nonzero()[:, 0], token_logps), learned.sum(1)

    def _with_reference(self, model, items: list[Pair]) -> None:
        missing = [item for item in items if item.reference is None]
        if not missing:
            return
        with torch.no_grad(), model.disable_adapter():  # the base itself is the reference model
            scores = self._answer_logps(model, [i.chosen for i in missing] + [i.rejected for i in missing])[0].tolist()
        for item, chosen, rejected in zip(missing, scores, scores[len(missing):]):
            item.reference = (chosen, rejected)

    def _scores(self, model, items: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        """(DPO's reward margin per pair: β·(how much more the adapter favours the chosen answer than the base
        does), above 0 when it prefers the chosen answer; the chosen answers' mean loss per token)."""
        self._with_reference(model, items)
        policy, tokens = self._answer_logps(model, [i.chosen for i in items] + [i.rejected for i in items])
        reference = torch.tensor([i.reference for i in items], device=policy.device, dtype=policy.dtype)
        chosen, rejected = policy[:len(items)] - reference[:, 0], policy[len(items):] - reference[:, 1]
        chosen_loss = -policy[:len(items)].sum() / tokens[:len(items)].sum().clamp(min=1)
        return self.settings.beta * (chosen - rejected), chosen_loss

    def margins(self, model, items: list[Pair]) -> torch.Tensor:
        return self._scores(model, items)[0]

    def loss(self, model, items: list[Pair]) -> tuple[torch.Tensor, int]:
        margins, chosen_loss = self._scores(model, items)
        loss = -torch.nn.functional.logsigmoid(margins).mean()
        if self.settings.rpo_alpha:
            loss = loss + self.settings.rpo_alpha * chosen_loss
        return loss, len(items)

    def answers(self, items: list[Pair]) -> list[int]:
        return speculation.answer_tokens([item.chosen for item in items], IGNORE)  # the answers it learned to prefer

    # ---- the report ---------------------------------------------------------------------------------------------
    def checkable(self, row: Example) -> bool:
        return bool(self.encode(row))

    def shown(self, row: Example) -> str:
        return next(m["content"] for m in reversed(row.fields["prompt"]) if m["role"] == "user")

    def expected(self, row: Example) -> str:
        return row.fields["chosen"]

    def predict(self, rows: list[Example]) -> list[dict]:
        """Each pair's margin, and the model's greedy answer to the first ANSWERED prompts."""
        items = [self.encode(row)[0] for row in rows]
        margins = [0.0] * len(items)  # an adapter that has not moved yet scores every pair as the base does
        if not untrained(self.model):
            with evaluating(self.model):
                margins = [m for start in range(0, len(items), self.settings.batch_size)
                           for m in self.margins(self.model, items[start:start + self.settings.batch_size]).tolist()]
        answered = rows[:ANSWERED]
        replies = greedy_replies(self.model, self.tokenizer, [self._prompt_ids(row.fields) for row in answered])
        return [{"margin": m, "reply": replies[i] if i < len(replies) else None} for i, m in enumerate(margins)]

    def _prompt_ids(self, fields: dict) -> list[int]:
        text = self.tokenizer.apply_chat_template(self._prompt(fields), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def as_text(self, prediction: dict) -> str:
        return prediction["reply"]

    def score(self, predicted: list[dict], expected: list[str]) -> dict:
        """Preference accuracy (pairs whose chosen answer the model now favours, a tie counting half) in percent,
        and the mean reward margin."""
        margins = [p["margin"] for p in predicted]
        wins = sum(1.0 if m > TIE else 0.5 if m >= -TIE else 0.0 for m in margins)
        return {"preference_accuracy": round(100 * wins / max(len(margins), 1), 1),
                "reward_margin": round(sum(margins) / max(len(margins), 1), 3)}
