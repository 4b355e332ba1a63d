"""The language-model recipes (chat, summarize, translate): LoRA on a GPT-family model, each row a conversation
whose assistant words are learned; summaries and translations are prompted exactly as their tabs prompt them."""

from __future__ import annotations

import functools

from errors import UserError
from models import catalog, lazy, lora, speculation
from models.loading import load_pretrained
from training import metrics, shared_prefix
from training.data import Example
from training.formats import turns
from training.recipe import Recipe
from training.trainer import evaluating, lora_config

torch = lazy.module("torch")
AutoModelForCausalLM = lazy.attribute("transformers", "AutoModelForCausalLM")

# For base models without a chat template (GPT-2): a plain question/answer layout. It is saved with the adapter
# and applied in chat, so the adapter sees at inference the layout it was trained on.
PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### Question:\n{{ m['content'] }}\n\n### Answer:\n"
    "{% else %}{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
)
IGNORE = -100  # label value the loss skips


def ensure_chat_template(tokenizer) -> str:
    """The tokenizer's chat template, installing the plain one on base models; returns it."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.chat_template


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def encode_messages(tokenizer, messages: list[dict], system_prompt: str, max_length: int) -> tuple[list, list]:
    """(input_ids, labels) for one conversation; only assistant replies are learned."""
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}] + messages
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = _render(tokenizer, messages[:i], generation_prompt=True)
            _extend(tokenizer, prompt[len(rendered):], ids, labels, learn=False)
            rendered = prompt
        full = _render(tokenizer, messages[:i + 1])
        _extend(tokenizer, full[len(rendered):], ids, labels, learn=message["role"] == "assistant")
        rendered = full
    return ids[:max_length], labels[:max_length]


def _extend(tokenizer, text: str, ids: list, labels: list, learn: bool) -> None:
    piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    ids.extend(piece)
    labels.extend(piece if learn else [IGNORE] * len(piece))


def encode_text(tokenizer, text: str, max_length: int) -> tuple[list, list]:
    """(input_ids, labels) for continued pre-training on plain text."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
    ids = ids[:max_length]
    return ids, list(ids)


def encode(tokenizer, fields: dict, system_prompt: str, max_length: int) -> tuple[list, list]:
    if "messages" in fields:
        return encode_messages(tokenizer, fields["messages"], system_prompt, max_length)
    return encode_text(tokenizer, fields["text"], max_length)


def collate(rows: list[tuple[list, list]], pad_id: int) -> dict:
    """Right-padded tensors for a batch of (ids, labels)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(labs)] = torch.tensor(labs)
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def last_hidden(model, batch: dict) -> tuple[torch.nn.Module, torch.Tensor, int]:
    """The plain model under any peft wrapper, the last hidden states of a batch from `collate` from position
    `start` on ([rows, width - start, hidden]), and `start`.

    The batch is right-padded, so every real token attends only to earlier tokens, all of them real: the causal
    mask alone gives the same states, and attention runs its mask-free kernel (faster on CPU). The leading tokens
    that every row shares, up to the first learned one, run once (`shared_prefix`): `start` is where rows part."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids = batch["input_ids"]
    start = shared_prefix.shared_length(base, ids, batch["labels"][:, 1:] != IGNORE)
    if start:
        return base, shared_prefix.hidden_after(base, ids, start), start
    return base, base.base_model(input_ids=ids, use_cache=False).last_hidden_state, 0


def learned_loss(model, batch: dict) -> torch.Tensor:
    """The mean loss over learned tokens, with the output layer run only where a label is learned.

    Over a ~50k-word vocabulary the output layer is about a fifth of a small model's compute and most of its
    activation memory, and prompt tokens never need it. Models that post-process their logits (soft-capping,
    scaling) must not take this path: `trainer.fast_loss_matches` checks that once per run.
    """
    base, hidden, start = last_hidden(model, batch)
    targets = batch["labels"][:, start + 1:]
    learned = targets != IGNORE
    if not learned.any():  # every reply was cut off: nothing to learn here, and no NaN
        return hidden.sum() * 0.0
    return token_losses(base.get_output_embeddings(), hidden[:, :-1][learned], targets[learned]).mean()


def token_losses(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each token's cross-entropy of head(hidden) [tokens, vocabulary] against its target: [tokens].

    A frozen output layer takes `TokenLosses`, which never keeps the [tokens, vocabulary] logits: it reads them a
    slice of tokens at a time and makes their gradient in the same pass. A layer that trains takes the plain way."""
    if type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad:
        return _token_losses().apply(hidden, head.weight, targets)
    return torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="none")


OUTPUT_SLICE = 1 << 25  # logits read at a time (128 MB in fp32): about 680 tokens over a 49k-word vocabulary


@functools.cache
def _token_losses():
    # Made on first use: torch loads lazily, and a lazy stand-in cannot be a base class (models/lazy.py).
    class TokenLosses(torch.autograd.Function):
        """Cross-entropy per token over hidden·Wᵀ with W frozen; the forward pass also makes each token's
        d loss / d hidden, which depends on that token alone, so backward only scales it."""

        @staticmethod
        def forward(ctx, hidden, weight, targets):
            count, rows = len(hidden), max(1, OUTPUT_SLICE // weight.shape[0])
            grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
            losses = torch.empty(count, dtype=torch.float32, device=hidden.device)
            for start in range(0, count, rows):
                part, wanted = hidden[start:start + rows], targets[start:start + rows, None]
                logits = (part @ weight.t()).float()  # [rows, vocabulary]
                top = logits.amax(1, keepdim=True)
                picked = logits.gather(1, wanted)
                probs = logits.sub_(top).exp_()  # in place: the slice's logits are not needed again
                sums = probs.sum(1, keepdim=True)
                losses[start:start + rows] = (sums.log() + top - picked).squeeze(1)  # -log softmax at the target
                if grad is not None:  # softmax - one-hot: the loss's gradient for these logits
                    probs.div_(sums).scatter_add_(1, wanted, torch.full_like(picked, -1.0))
                    grad[start:start + rows] = probs.to(weight.dtype) @ weight
            ctx.save_for_backward(grad)
            return losses

        @staticmethod
        def backward(ctx, upstream):
            (grad,) = ctx.saved_tensors
            return grad * upstream[:, None].to(grad.dtype), None, None

    return TokenLosses


def prompt_and_expected(tokenizer, fields: dict, system_prompt: str) -> tuple[str, list[int], str] | None:
    """For a report sample: (question shown, prompt ids, expected reply), or None for plain text rows."""
    messages = fields.get("messages")
    if not messages or messages[-1]["role"] != "assistant":
        return None
    head = messages[:-1]
    if system_prompt and head[0]["role"] != "system":
        head = [{"role": "system", "content": system_prompt}] + head
    text = _render(tokenizer, head, generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    question = next(m["content"] for m in reversed(head) if m["role"] == "user")
    return question, ids, messages[-1]["content"]


class Reply(str):
    """A greedy reply that knows whether the token limit cut it (the answer check reads `cut`)."""

    cut: bool = False

    @classmethod
    def of(cls, text: str, cut: bool) -> Reply:
        reply = cls(text)
        reply.cut = cut
        return reply


@lazy.inference_mode
def greedy_replies(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 48,
                   batch_size: int = 8) -> list[Reply]:
    """Greedy replies to token-id prompts, several at a time (left-padded, as the generation engine batches)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ends = _end_ids(model, tokenizer)
    replies = []
    with evaluating(model):  # no LoRA dropout in a sample
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            width = max(len(ids) for ids in batch)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad)
            for row in out[:, width:].tolist():
                cut = len(row) >= max_new_tokens and not ends.intersection(row)
                replies.append(Reply.of(tokenizer.decode(row, skip_special_tokens=True).strip(), cut))
    return replies


def _end_ids(model, tokenizer) -> set[int]:
    """The token ids that end a reply: the tokenizer's end of text and the model's generation end tokens."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends = configured if isinstance(configured, list) else [configured]
    return {i for i in [*ends, tokenizer.eos_token_id] if i is not None}


def fast_loss_matches(model, batch: dict) -> bool:
    """Whether learned_loss gives the model's own loss on batch (it does unless the model reshapes its logits)."""
    # No dropout and no autocast: both losses must see the same computation, in full precision.
    with evaluating(model), torch.autocast(next(model.parameters()).device.type, enabled=False):
        try:
            fast = float(learned_loss(model, batch))
        except (AttributeError, TypeError):
            return False
        return abs(fast - float(model(**batch).loss)) <= 1e-3 * max(1.0, abs(fast))


class ChatRecipe(Recipe):
    """LoRA on a causal LM over conversations (or plain text for continued pre-training)."""

    families = (catalog.DECODER,)
    perplexity = True
    checked_rows = 12  # rows answered for the report: the answer check reads them, the first few are shown

    @classmethod
    def row(cls, fields: dict, record: dict) -> dict:
        """Prompt and response columns as a conversation (the other formats are conversations already)."""
        return turns(fields.get("system", ""), fields["prompt"], fields["response"])

    def conversation(self, fields: dict) -> dict:
        """A row as the conversation (or plain text) the model learns."""
        return fields

    def prepare(self, rows: list[Example]) -> list[Example]:
        prepared = []
        for row in rows:
            try:
                prepared.append(Example(row.line, self.conversation(row.fields)))
            except UserError as error:
                raise UserError(f"Row {row.line}: {error}") from None
        return prepared

    def load(self, source, options: dict, rows: list[Example]) -> None:
        from peft import get_peft_model

        model, self.tokenizer = load_pretrained(source, AutoModelForCausalLM, options,
                                                "a text-generation (GPT-family) model")
        self.base_fingerprint = lora.weights_fingerprint(model)
        self.template = ensure_chat_template(self.tokenizer)
        self.model = get_peft_model(model, lora_config(self.settings))
        self._fast = None

    def encode(self, row: Example) -> list:
        return [encode(self.tokenizer, row.fields, self.settings.system_prompt, self.settings.max_length)]

    def length(self, item) -> int:
        return len(item[0])

    def _batch(self, model, items: list) -> dict:
        return {k: v.to(model.device) for k, v in collate(items, self.tokenizer.pad_token_id).items()}

    def loss(self, model, items: list) -> tuple[torch.Tensor, int]:
        """Over learned tokens only, skipping the output layer elsewhere when that gives the same loss."""
        batch = self._batch(model, items)
        if self._fast is None:  # checked once per run, on the first batch
            self._fast = fast_loss_matches(model, batch)
        learned = int((batch["labels"][:, 1:] != IGNORE).sum())
        return (learned_loss(model, batch) if self._fast else model(**batch).loss), learned

    def checkable(self, row: Example) -> bool:
        return prompt_and_expected(self.tokenizer, row.fields, self.settings.system_prompt) is not None

    def shown(self, row: Example) -> str:
        return prompt_and_expected(self.tokenizer, row.fields, self.settings.system_prompt)[0]

    def expected(self, row: Example) -> str:
        return row.fields["messages"][-1]["content"]

    def predict(self, rows: list[Example]) -> list[str]:
        prompts = [prompt_and_expected(self.tokenizer, row.fields, self.settings.system_prompt)[1] for row in rows]
        return greedy_replies(self.model, self.tokenizer, prompts)

    def meta(self) -> dict:
        return {"chat_template": self.template, "base_fingerprint": self.base_fingerprint}

    def answers(self, items: list) -> list[int]:
        return speculation.answer_tokens(items, IGNORE)


def _conversation(prompt: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


class SummarizeRecipe(ChatRecipe):
    """A summary style, learned as the Summarize tab's instruction followed by the row's summary."""

    checked_rows = 8  # rows answered to score ROUGE-L before → after

    @classmethod
    def row(cls, fields: dict, record: dict) -> dict:
        return fields

    def conversation(self, fields: dict) -> dict:
        from tasks.summarize import lm_prompt

        return _conversation(lm_prompt(fields["text"]), fields["summary"])

    def score(self, predicted: list[str], expected: list[str]) -> dict:
        return metrics.summary_scores(predicted, expected)


class TranslateRecipe(ChatRecipe):
    """Translations, learned as the Translate tab's request followed by the row's target text."""

    checked_rows = 8

    @classmethod
    def row(cls, fields: dict, record: dict) -> dict:
        return fields

    def conversation(self, fields: dict) -> dict:
        from tasks.translate import detect_language, language, lm_prompt

        source_code = fields.get("source_lang") or detect_language(fields["source"])[0]
        target_code = fields.get("target_lang") or detect_language(fields["target"])[0]
        prompt = lm_prompt(fields["source"], language(source_code, "source"), language(target_code, "target"))
        return _conversation(prompt, fields["target"])

    def score(self, predicted: list[str], expected: list[str]) -> dict:
        return metrics.translation_scores(predicted, expected)
