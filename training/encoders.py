"""Training recipes for the encoder tasks: a classification head (sentiment), a span head (answer) and sentence
embeddings (search).

Each trains LoRA on a BERT-family encoder; a new head is trained in full and peft saves it in the same adapter
folder (`modules_to_save`), so the folder alone restores the model on its base. The task metric is measured on
the validation rows before training (the base with its fresh head, or the plain embeddings) and after.
"""

from __future__ import annotations

import re

from errors import UserError
from models import catalog, lazy, lora
from models.loading import LoadedModel, load_pretrained, load_sentence_transformer, token_limit
from training import answer_check, metrics
from training.data import Example, RowError
from training.presets import TrainSettings
from training.recipe import Recipe
from training.report import AnswerCheck, Sample
from training.trainer import evaluating

torch = lazy.module("torch")

# LoRA goes on the encoder's layers only (never on a head, which trains in full). BERT/RoBERTa/MiniLM name their
# linear layers query/key/value/dense, DistilBERT q_lin/k_lin/v_lin/out_lin/lin1/lin2.
_LAYER = r"(.*\.)?(encoder|transformer)\.layer\.\d+\.(.*\.)?"
ALL_LINEAR = ("query", "key", "value", "dense", "q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")
LM_NAMES = {"q_proj": ("query", "q_lin"), "k_proj": ("key", "k_lin"), "v_proj": ("value", "v_lin"),
            "o_proj": ("dense", "out_lin")}  # the presets speak decoder names; these are their encoder twins
SEARCH_SCALE = 20.0  # cosine similarities times this are the logits of the in-batch loss (as sentence-transformers)


def encoder_targets(settings: TrainSettings) -> str:
    """A peft target_modules regex for the encoder layers named by the settings."""
    wanted = settings.target_modules.strip()
    if wanted == "all-linear":
        names = ALL_LINEAR
    else:
        names = tuple(alias for name in wanted.split(",") if name.strip()
                      for alias in LM_NAMES.get(name.strip(), (name.strip(),)))
    return _LAYER + "(" + "|".join(re.escape(name) for name in names) + ")"


def encoder_lora(settings: TrainSettings, task_type: str):
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=encoder_targets(settings), task_type=task_type)


def padded(tokenizer, features: list[dict], device) -> dict:
    return {k: v.to(device) for k, v in tokenizer.pad(features, return_tensors="pt").items()}


class EncoderRecipe(Recipe):
    """LoRA on a BERT-family encoder, with the task's head trained in full."""

    families = (catalog.EMBEDDING, catalog.ENCODER)
    metric_decides = True
    peft_task = "FEATURE_EXTRACTION"

    def _load(self, source, options: dict, model_class, **extra) -> None:
        from peft import get_peft_model

        model, self.tokenizer = load_pretrained(source, model_class, options, "a BERT-family encoder", **extra)
        if not getattr(self.tokenizer, "is_fast", False):
            raise UserError(f"'{source.name}' has no fast tokenizer, which training this task needs.")
        self.base_fingerprint = lora.encoder_fingerprint(model)
        self.limit = token_limit(model.config, self.tokenizer, cap=self.settings.max_length, fallback=512)
        self.model = get_peft_model(model, encoder_lora(self.settings, self.peft_task))

    def length(self, item) -> int:
        return len(item[0]["input_ids"])

    def meta(self) -> dict:
        return {"base_fingerprint": self.base_fingerprint}


# ---- sentiment: a classification head ---------------------------------------------------------------------
class SentimentRecipe(EncoderRecipe):
    peft_task = "SEQ_CLS"

    @classmethod
    def check_rows(cls, examples: list[Example], name: str) -> None:
        labels = {e.fields["label"] for e in examples}
        if len(labels) < 2:
            raise UserError(f"The file '{name}' has only one label ('{labels.pop()}'); "
                            "a classifier needs examples of at least two.")

    def load(self, source, options: dict, rows: list[Example]) -> None:
        from transformers import AutoModelForSequenceClassification

        self.labels = sorted({row.fields["label"] for row in rows})
        if len(self.labels) < 2:
            raise UserError(f"Training a classifier needs at least two different labels; the file has only "
                            f"'{self.labels[0]}'.")
        self.index = {label: i for i, label in enumerate(self.labels)}
        self._load(source, options, AutoModelForSequenceClassification, num_labels=len(self.labels),
                   id2label=dict(enumerate(self.labels)), label2id=self.index, ignore_mismatched_sizes=True)

    def encode(self, row: Example) -> list:
        features = self.tokenizer(row.fields["text"], truncation=True, max_length=self.limit)
        return [(features, self.index[row.fields["label"]])]

    def loss(self, model, items: list) -> tuple[torch.Tensor, int]:
        batch = padded(self.tokenizer, [features for features, _ in items], model.device)
        targets = torch.tensor([label for _, label in items], device=model.device)
        return model(**batch, labels=targets).loss, len(items)

    def check_answers(self, rows: list[Sample], embed=None) -> AnswerCheck:
        return answer_check.check_labels(rows, embed)

    def shown(self, row: Example) -> str:
        return row.fields["text"]

    def expected(self, row: Example) -> str:
        return row.fields["label"]

    def predict(self, rows: list[Example]) -> list[str]:
        texts, out = [row.fields["text"] for row in rows], []
        with evaluating(self.model):
            for start in range(0, len(texts), self.settings.batch_size):
                batch = self.tokenizer(texts[start:start + self.settings.batch_size], truncation=True,
                                       max_length=self.limit, padding=True, return_tensors="pt").to(self.model.device)
                out += [self.labels[i] for i in self.model(**batch).logits.argmax(-1).tolist()]
        return out

    def score(self, predicted: list[str], expected: list[str]) -> dict:
        return metrics.classification_scores(predicted, expected, self.labels)

    def extra(self, predicted: list[str], expected: list[str]) -> dict:
        return {"confusion": metrics.confusion(predicted, expected, self.labels)}

    def meta(self) -> dict:
        return {**super().meta(), "labels": self.labels}


# ---- extractive QA: a span head ---------------------------------------------------------------------------
class AnswerRecipe(EncoderRecipe):
    peft_task = "QUESTION_ANS"
    nothing_to_learn = "No training row fits the model's window with its answer; use shorter contexts."

    @classmethod
    def row(cls, fields: dict, record: dict) -> dict:
        """The answer located in the (stripped) context: answer_start says where, the text is the context's."""
        start = answer_start(record, fields)
        return {**fields, "answer_start": start, "answer": fields["context"][start:][:len(fields["answer"])]}

    def load(self, source, options: dict, rows: list[Example]) -> None:
        from transformers import AutoModelForQuestionAnswering

        from tasks.answer import WINDOW_TOKENS

        self._load(source, options, AutoModelForQuestionAnswering)
        self.limit = min(self.limit, WINDOW_TOKENS)
        self.loaded = LoadedModel(source, self.model, self.tokenizer)

    def encode(self, row: Example) -> list:
        return span_windows(self.tokenizer, row.fields, self.limit)

    def loss(self, model, items: list) -> tuple[torch.Tensor, int]:
        batch = padded(self.tokenizer, [features for features, _ in items], model.device)
        starts, ends = (torch.tensor(column, device=model.device) for column in zip(*[span for _, span in items]))
        return model(**batch, start_positions=starts, end_positions=ends).loss, len(items)

    def check_answers(self, rows: list[Sample], embed=None) -> AnswerCheck:
        return answer_check.check_spans(rows, embed)

    def shown(self, row: Example) -> str:
        return row.fields["question"]

    def expected(self, row: Example) -> str:
        return row.fields["answer"]

    def predict(self, rows: list[Example]) -> list[str]:
        return [best_span(self.loaded, row.fields) for row in rows]

    def score(self, predicted: list[str], expected: list[str]) -> dict:
        return metrics.answer_scores(predicted, expected)


def answer_start(record: dict, fields: dict) -> int:
    """Where the answer starts in the (stripped) context; a given answer_start picks among repeated answers."""
    context, answer = fields["context"], fields["answer"]
    given, raw = record.get("answer_start"), record.get("context")
    if isinstance(given, str) and given.strip().isdigit():
        given = int(given)
    if isinstance(given, int) and not isinstance(given, bool):
        raw = raw if isinstance(raw, str) else ""
        start = given - (len(raw) - len(raw.lstrip()))  # the context was stripped: shift the given offset
        if context[start:start + len(answer)] == answer:
            return start
    start = context.find(answer)
    if start < 0:
        start = context.lower().find(answer.lower())  # "quellmar" still points at "Quellmar"
    if start < 0:
        raise RowError("the answer does not occur in the context")
    return start


def span_windows(tokenizer, fields: dict, limit: int) -> list[tuple[dict, tuple[int, int]]]:
    """The (features, (start token, end token)) of each window over the context that holds the whole answer."""
    start_char = fields["answer_start"]
    end_char = start_char + len(fields["answer"])
    encoded = tokenizer(fields["question"], fields["context"], truncation="only_second", max_length=limit,
                        stride=min(128, limit // 4), return_overflowing_tokens=True, return_offsets_mapping=True)
    windows = []
    for w, offsets in enumerate(encoded["offset_mapping"]):
        context = [i for i, s in enumerate(encoded.sequence_ids(w)) if s == 1]
        if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
            continue
        first = max(i for i in context if offsets[i][0] <= start_char)
        last = min(i for i in context if offsets[i][1] >= end_char)
        features = {k: encoded[k][w] for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded}
        windows.append((features, (first, last)))
    return windows


def best_span(loaded, fields: dict) -> str:
    """The likeliest answer span in the row's context, as the Question answering tab would find it."""
    from tasks.answer import window_spans

    with evaluating(loaded.model):
        score, start, end = max(window_spans(loaded, fields["question"], fields["context"]))
    return fields["context"][start:end]


# ---- semantic search: sentence embeddings with in-batch negatives ------------------------------------------
def embed(model, texts: list[str]) -> torch.Tensor:
    """Unit vectors through the sentence-transformers pipeline (with gradients when training)."""
    features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v
                for k, v in model.preprocess(texts).items()}
    return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)


class SearchRecipe(EncoderRecipe):
    def load(self, source, options: dict, rows: list[Example]) -> None:
        from peft import get_peft_model

        self.model = load_sentence_transformer(source, options)
        transformer = self.model[0]
        self.base_fingerprint = lora.encoder_fingerprint(transformer.auto_model)
        transformer.model = get_peft_model(transformer.auto_model, encoder_lora(self.settings, self.peft_task))
        # Every passage of the file, each query's own among them: what a query is ranked against.
        self.corpus = list(dict.fromkeys([row.fields["positive"] for row in rows]
                                         + [row.fields["negative"] for row in rows if row.fields.get("negative")]))

    def encode(self, row: Example) -> list:
        return [(row.fields["query"], row.fields["positive"], row.fields.get("negative", ""))]

    def length(self, item) -> int:
        return len(item[0]) + len(item[1])

    def loss(self, model, items: list) -> tuple[torch.Tensor, int]:
        queries = embed(model, [query for query, _, _ in items])
        passages = [positive for _, positive, _ in items] + [negative for _, _, negative in items if negative]
        # Each query's own passage is the right answer; every other passage in the batch is a wrong one.
        logits = SEARCH_SCALE * queries @ embed(model, passages).T
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(items), device=logits.device)), len(items)

    def check_answers(self, rows: list[Sample], embed=None) -> AnswerCheck:
        return answer_check.check_ranking(rows, embed)

    def shown(self, row: Example) -> str:
        return row.fields["query"]

    def expected(self, row: Example) -> str:
        return row.fields["positive"]

    def predict(self, rows: list[Example]) -> list[str]:
        """Each query's passages, best first (the report shows the first)."""
        ranked = rank_passages(self.model, [row.fields["query"] for row in rows], self.corpus, self.settings.batch_size)
        return [[self.corpus[i] for i in order] for order in ranked]

    def as_text(self, prediction) -> str:
        return prediction[0]

    def score(self, predicted: list, expected: list[str]) -> dict:
        return metrics.retrieval_scores([ranking.index(wanted) + 1 for ranking, wanted in zip(predicted, expected)])

    @property
    def trained(self):
        return self.model[0].model


def rank_passages(model, queries: list[str], corpus: list[str], batch_size: int) -> list[list[int]]:
    """Per query: the corpus indices, most similar first."""
    encode = lambda texts: torch.cat([embed(model, texts[i:i + batch_size])  # noqa: E731
                                      for i in range(0, len(texts), batch_size)])
    with evaluating(model):
        scores = encode(queries) @ encode(corpus).T
    return [row.argsort(descending=True).tolist() for row in scores]
