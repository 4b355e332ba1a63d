"""Lossless speculative decoding by prompt lookup: drafts from a row's own text, kept only where the model agrees.

A row that repeats a stretch of its prompt or its answer (a summary quoting the passage, an answer over a given
context, a translation keeping names, code edits) can have several next tokens guessed by looking up its last few
tokens earlier in its text. The engine feeds the guesses with the row's next token in one forward pass and keeps
the longest prefix the model itself would have produced: greedy rows keep a draft token only where it is the
argmax, sampled rows accept it with its probability and otherwise sample from the rest of the distribution
(standard speculative sampling with a one-point draft), so every answer keeps exactly the distribution of plain
decoding. One pass then yields up to a whole draft plus one token for the price of about one step.

A chat with a trained adapter also drafts from that adapter's training answers (`drafts.safetensors` in its
folder, written when it was trained): an adapter that learned a greeting, a sign-off or the answers of an FAQ
tends to say them again, where its own prompt has nothing to copy.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from models import lazy

torch = lazy.module("torch")

NGRAMS = (3, 2)  # suffix lengths looked up, longest first; a lone repeated token is too weak a clue to pay
FIRST_DRAFT = 4
MAX_DRAFT = 12
MAX_PAUSE = 16  # steps a row that keeps missing waits before it guesses again
STEP_DRAFTS = 12  # draft tokens one step verifies, shared by its rows: a verify pass over many rows costs more
MIN_SHARE = 4  # a shorter share is not worth widening the pass: on 2 cores, 4 chat rows lost ~15% with shares of 3

DRAFTS_FILE = "drafts.safetensors"  # an adapter's training answers, as token ids
ANSWERS_NGRAMS = (4, 3, 2)  # looked up in the answers; each n-gram drafts its most frequent continuation there
ANSWER_CONTEXT = 4  # tokens kept before each answer: a reply's opening follows the prompt's last tokens
ANSWER_TOKENS = 65_536  # answer tokens kept per adapter (256 KB): indexing them takes a fraction of a second
GAP = -1  # between two answers in the kept text: no draft runs across it


class AnswerCorpus:
    """An adapter's training answers indexed by their n-grams, each mapped to where its most frequent next token
    follows it: drafts for a row whose own text has nothing to copy. An n-gram is keyed by its hash: two that
    share one only cost a draft the model rejects."""

    def __init__(self, tokens: list[int]):
        self.tokens = tokens
        counts: Counter = Counter()
        latest: dict[tuple[int, int], int] = {}
        for n in ANSWERS_NGRAMS:
            for end in range(n, len(tokens)):
                gram = tuple(tokens[end - n:end])
                if tokens[end] != GAP and GAP not in gram:
                    key = (hash(gram), tokens[end])
                    counts[key] += 1
                    latest[key] = end
        best: dict[int, tuple[int, int]] = {}
        for (gram, token), count in counts.items():
            if count > best.get(gram, (0, 0))[0]:
                best[gram] = (count, latest[gram, token])
        self.next_after = {gram: start for gram, (_, start) in best.items()}

    @property
    def memory(self) -> int:
        """About how many bytes it holds (measured with tracemalloc: ~110 per n-gram and ~36 per token; ~23 MB for
        the most kept)."""
        return 110 * len(self.next_after) + 36 * len(self.tokens)

    def propose(self, text: list[int], limit: int) -> list[int]:
        for n in ANSWERS_NGRAMS:
            start = self.next_after.get(hash(tuple(text[-n:]))) if len(text) >= n else None
            if start is not None:
                draft = self.tokens[start:start + limit]
                return draft[:draft.index(GAP)] if GAP in draft else draft
        return []


def answer_tokens(items: list[tuple[list, list]], ignore: int) -> list[int]:
    """The learned stretches of training items ((ids, labels) with `ignore` where nothing is learned), each with
    the few tokens before it, joined by GAP: up to ANSWER_TOKENS."""
    kept: list[int] = []
    for ids, labels in items:
        start = None
        for i, label in enumerate([*labels, ignore]):
            if label != ignore and start is None:
                start = i
            elif label == ignore and start is not None:
                kept += [*ids[max(0, start - ANSWER_CONTEXT):i], GAP]
                start = None
        if len(kept) >= ANSWER_TOKENS:
            return kept[:ANSWER_TOKENS]
    return kept


def save_answers(folder: Path, tokens: list[int]) -> None:
    """Write an adapter's answer tokens beside its weights (nothing when it learned none)."""
    from safetensors.torch import save_file

    if tokens:
        save_file({"answers": torch.tensor(tokens, dtype=torch.int32)}, str(Path(folder) / DRAFTS_FILE))


def read_answers(folder: str | Path) -> AnswerCorpus | None:
    """The adapter's indexed answers, or None when its folder has none (an older or imported adapter) or they
    cannot be read: they only make replies faster, so a damaged file never stops a chat."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / DRAFTS_FILE
    if not path.is_file():
        return None
    try:
        answers = load_file(str(path))["answers"]
    except (OSError, KeyError, SafetensorError):
        return None
    return AnswerCorpus(answers.flatten()[:ANSWER_TOKENS].tolist())


class Drafter:
    """A row's text (prompt + answer so far) indexed by its n-grams, and its draft length, adapted as it goes."""

    def __init__(self, prompt: list[int], answers: AnswerCorpus | None = None):
        self.answers = answers  # the adapter's training answers, drafted from where the row's own text has nothing
        self.text: list[int] = []
        self.next_after: dict[tuple[int, ...], int] = {}  # n-gram -> where its latest continuation starts
        self.length = FIRST_DRAFT
        self.pause = self.waiting = 0  # after a miss the row waits `pause` steps, doubled at each further miss
        for token in prompt:
            self.append(token)

    def append(self, token: int) -> None:
        # The n-grams ending just before this token now have a continuation: this token.
        end = len(self.text)
        for n in NGRAMS:
            if end >= n:
                self.next_after[tuple(self.text[end - n:end])] = end
        self.text.append(token)

    def propose(self, room: int) -> list[int]:
        """Up to min(room, draft length) tokens that followed the latest earlier occurrence of the text's tail."""
        limit = min(room, self.length)
        if self.waiting > 0:
            self.waiting -= 1
            return []
        if limit <= 0:
            return []
        for n in NGRAMS:
            start = self.next_after.get(tuple(self.text[-n:])) if len(self.text) >= n else None
            if start is not None:
                return self.text[start:start + limit]
        return self.answers.propose(self.text, limit) if self.answers is not None else []

    def adapt(self, proposed: int, accepted: int) -> None:
        """Longer drafts after a fully accepted one, shorter after a rejection (assisted generation's rule); after
        a draft with nothing kept, a pause, so a row that does not copy soon stops paying for guesses."""
        if proposed == 0:
            return
        self.length = min(MAX_DRAFT, self.length + 2) if accepted == proposed else max(1, self.length - 1)
        if accepted == 0:
            self.pause = min(MAX_PAUSE, 2 * self.pause or 1)
            self.waiting = self.pause
        else:
            self.pause = 0


def verify(logits: torch.Tensor, draft_token: int | None, temperature: float, top_p: float,
           generator: torch.Generator | None, greedy_below: float) -> tuple[int, bool]:
    """The token at one verified position and whether it is the draft's: the model's choice there, never the
    draft's unless the model would have made it (greedy) or the draft survives the acceptance test (sampled)."""
    if temperature < greedy_below:
        token = int(logits.argmax())
        return token, token == draft_token
    probs = probabilities(logits, temperature, top_p)
    if draft_token is not None:
        if float(torch.rand((), generator=generator)) < float(probs[draft_token]):
            return draft_token, True
        probs = probs.clone()
        probs[draft_token] = 0  # the residual max(p - q, 0) for a draft that puts all its mass on one token
        if float(probs.sum()) <= 0:
            raise ValueError("no token left to sample after rejecting the draft")
    return int(torch.multinomial(probs.cpu(), 1, generator=generator)), False


def probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution a sampled row draws from: softmax at the temperature, cut to the top_p nucleus."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if not torch.isfinite(probs).all():
        raise ValueError("the temperature gave no valid probabilities")
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest set of tokens whose mass reaches top_p (always at least the most likely one)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        probs = probs / probs.sum()  # the acceptance test compares against the nucleus's own probabilities
    return probs
