"""Training recipes for the encoder tasks: a classification head (sentiment), a span head (answer) and sentence
embeddings (search).

Each trains LoRA on a BERT-family encoder; a new head is trained in full and peft saves it in the same adapter
folder (`modules_to_save`), so the folder alone restores the model on its base. The task metric is measured on
the validation rows before training (the base with its fresh head, or the plain embeddings) and after.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import torch

from errors import UserError
from models import catalog, lora
from models.device import pick_device
from training.presets import TrainSettings
from training.report import encoder_report
from training.trainer import Checkpoint, Hooks, Outcome, evaluating, fit, loss_metrics

# LoRA goes on the encoder's layers only (never on a head, which trains in full). BERT/RoBERTa/MiniLM name their
# linear layers query/key/value/dense, DistilBERT q_lin/k_lin/v_lin/out_lin/lin1/lin2.
_LAYER = r"(.*\.)?(encoder|transformer)\.layer\.\d+\.(.*\.)?"
ALL_LINEAR = ("query", "key", "value", "dense", "q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")
LM_NAMES = {"q_proj": ("query", "q_lin"), "k_proj": ("key", "k_lin"), "v_proj": ("value", "v_lin"),
            "o_proj": ("dense", "out_lin")}  # the presets speak decoder names; these are their encoder twins
REPORT_SAMPLES = 3
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


def load_pretrained(source: catalog.ModelSource, options: dict, model_class, **extra):
    """(model, tokenizer) of model_class in fp32, or a UserError naming the model."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **options)
        model = model_class.from_pretrained(source.location, dtype=torch.float32, **options, **extra)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"Could not load the base model '{source.name}' for training: "
                        f"{str(error).splitlines()[0]}") from error
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"'{source.name}' has no fast tokenizer, which training this task needs.")
    return model.to(pick_device()), tokenizer


def token_limit(model, tokenizer, settings: TrainSettings) -> int:
    positions = getattr(model.config, "max_position_embeddings", 512) or 512
    return min(settings.max_length, positions, tokenizer.model_max_length)


def padded(tokenizer, features: list[dict], device) -> dict:
    return {k: v.to(device) for k, v in tokenizer.pad(features, return_tensors="pt").items()}


def _by_length(items: list) -> tuple[int, ...]:
    return tuple(len(features["input_ids"]) for features, _ in items)


def _samples(prompts: list[str], expected: list[str], before: list[str], after: list[str]) -> list[dict]:
    return [{"prompt": p, "expected": e, "base": b, "adapter": a}
            for p, e, b, a in zip(prompts, expected, before, after)][:REPORT_SAMPLES]


def _outcome(model, fitted, rows: tuple[list, list], scores: tuple[dict, dict], samples: list[dict],
             meta: dict, extra: dict | None = None) -> Outcome:
    report = encoder_report(fitted, scores[0], scores[1], samples, extra)
    metrics = {**loss_metrics(fitted, len(rows[0]), len(rows[1])),
               **{f"{k}_before": v for k, v in scores[0].items()},
               **{f"{k}_after": v for k, v in scores[1].items()}}
    return Outcome(model, metrics, report, meta)


# ---- sentiment: a classification head ---------------------------------------------------------------------
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


def train_sentiment(source, options: dict, train_rows: list, val_rows: list, settings: TrainSettings,
                    checkpoint: Checkpoint, hooks: Hooks) -> Outcome:
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    labels = sorted({row.fields["label"] for row in train_rows + val_rows})
    if len(labels) < 2:
        raise UserError(f"Training a classifier needs at least two different labels; the file has only "
                        f"'{labels[0]}'.")
    index = {label: i for i, label in enumerate(labels)}
    torch.manual_seed(settings.seed)  # the new head's initial weights are part of a resumable run
    model, tokenizer = load_pretrained(source, options, AutoModelForSequenceClassification,
                                       num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index,
                                       ignore_mismatched_sizes=True)
    base_fingerprint = lora.body_fingerprint(model)
    limit = token_limit(model, tokenizer, settings)
    encode = lambda row: (tokenizer(row.fields["text"], truncation=True, max_length=limit),  # noqa: E731
                          index[row.fields["label"]])
    train, val = [encode(row) for row in train_rows], [encode(row) for row in val_rows]
    model = get_peft_model(model, encoder_lora(settings, "SEQ_CLS"))

    def loss_of(model, items: list) -> tuple[torch.Tensor, int]:
        batch = padded(tokenizer, [features for features, _ in items], model.device)
        targets = torch.tensor([label for _, label in items], device=model.device)
        return model(**batch, labels=targets).loss, len(items)

    checked = val_rows or train_rows
    texts, expected = [row.fields["text"] for row in checked], [row.fields["label"] for row in checked]
    predict = lambda: predict_labels(model, tokenizer, texts, labels, limit, settings.batch_size)  # noqa: E731
    before = predict()
    fitted = fit(model, train, val, _by_length(train), settings, checkpoint, hooks, loss_of)
    after = predict()
    scores = (classification_scores(before, expected, labels), classification_scores(after, expected, labels))
    return _outcome(model, fitted, (train_rows, val_rows), scores, _samples(texts, expected, before, after),
                    {"base_fingerprint": base_fingerprint, "labels": labels},
                    {"confusion": confusion(after, expected, labels)})


def predict_labels(model, tokenizer, texts: list[str], labels: list[str], limit: int, batch_size: int) -> list[str]:
    out = []
    with evaluating(model):
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=limit, padding=True,
                              return_tensors="pt").to(model.device)
            out += [labels[i] for i in model(**batch).logits.argmax(-1).tolist()]
    return out


# ---- extractive QA: a span head ---------------------------------------------------------------------------
def normalize_answer(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, no punctuation or articles, split on whitespace."""
    text = re.sub(r"\b(a|an|the)\b", " ", re.sub(r"[^\w\s]", " ", text.lower()))
    return text.split()


def span_scores(predicted: list[str], expected: list[str]) -> dict:
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


def train_answer(source, options: dict, train_rows: list, val_rows: list, settings: TrainSettings,
                 checkpoint: Checkpoint, hooks: Hooks) -> Outcome:
    from peft import get_peft_model
    from transformers import AutoModelForQuestionAnswering

    from models.loading import LoadedModel
    from tasks.answer import WINDOW_TOKENS

    torch.manual_seed(settings.seed)
    model, tokenizer = load_pretrained(source, options, AutoModelForQuestionAnswering)
    base_fingerprint = lora.body_fingerprint(model)
    limit = min(token_limit(model, tokenizer, settings), WINDOW_TOKENS)
    train = [window for row in train_rows for window in span_windows(tokenizer, row.fields, limit)]
    val = [window for row in val_rows for window in span_windows(tokenizer, row.fields, limit)]
    if not train:
        raise UserError("No training row fits the model's window with its answer; use shorter contexts.")
    model = get_peft_model(model, encoder_lora(settings, "QUESTION_ANS"))

    def loss_of(model, items: list) -> tuple[torch.Tensor, int]:
        batch = padded(tokenizer, [features for features, _ in items], model.device)
        starts, ends = (torch.tensor(column, device=model.device) for column in zip(*[span for _, span in items]))
        return model(**batch, start_positions=starts, end_positions=ends).loss, len(items)

    checked = val_rows or train_rows
    questions, expected = [row.fields["question"] for row in checked], [row.fields["answer"] for row in checked]
    loaded = LoadedModel(source, model, tokenizer)
    predict = lambda: [best_span(loaded, row.fields) for row in checked]  # noqa: E731
    before = predict()
    fitted = fit(model, train, val, _by_length(train), settings, checkpoint, hooks, loss_of)
    after = predict()
    scores = (span_scores(before, expected), span_scores(after, expected))
    return _outcome(model, fitted, (train_rows, val_rows), scores, _samples(questions, expected, before, after),
                    {"base_fingerprint": base_fingerprint})


def best_span(loaded, fields: dict) -> str:
    """The likeliest answer span in the row's context, as the Question answering tab would find it."""
    from tasks.answer import span_scores as scored_windows

    with evaluating(loaded.model):
        score, start, end = max(scored_windows(loaded, fields["question"], fields["context"]))
    return fields["context"][start:end]


# ---- semantic search: sentence embeddings with in-batch negatives ------------------------------------------
def retrieval_scores(ranks: list[int]) -> dict:
    """recall@1, recall@5 and MRR in percent, from the 1-based rank of each query's passage."""
    n = max(len(ranks), 1)
    return {"recall_at_1": round(100 * sum(r == 1 for r in ranks) / n, 1),
            "recall_at_5": round(100 * sum(r <= 5 for r in ranks) / n, 1),
            "mrr": round(100 * sum(1 / r for r in ranks) / n, 1)}


def load_sentence_model(source: catalog.ModelSource, options: dict):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(source.location, device=str(pick_device()), **options)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"Could not load the embedding model '{source.name}' for training: "
                        f"{str(error).splitlines()[0]}") from error


def embed(model, texts: list[str]) -> torch.Tensor:
    """Unit vectors through the sentence-transformers pipeline (with gradients when training)."""
    features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v
                for k, v in model.preprocess(texts).items()}
    return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)


def train_search(source, options: dict, train_rows: list, val_rows: list, settings: TrainSettings,
                 checkpoint: Checkpoint, hooks: Hooks) -> Outcome:
    from peft import get_peft_model

    torch.manual_seed(settings.seed)
    model = load_sentence_model(source, options)
    transformer = model[0]
    base_fingerprint = lora.body_fingerprint(transformer.auto_model)
    transformer.model = get_peft_model(transformer.auto_model, encoder_lora(settings, "FEATURE_EXTRACTION"))
    item = lambda row: (row.fields["query"], row.fields["positive"], row.fields.get("negative", ""))  # noqa: E731
    train, val = [item(row) for row in train_rows], [item(row) for row in val_rows]

    def loss_of(model, items: list) -> tuple[torch.Tensor, int]:
        queries = embed(model, [query for query, _, _ in items])
        passages = [positive for _, positive, _ in items] + [negative for _, _, negative in items if negative]
        # Each query's own passage is the right answer; every other passage in the batch is a wrong one.
        logits = SEARCH_SCALE * queries @ embed(model, passages).T
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(items), device=logits.device)), len(items)

    checked = val_rows or train_rows
    corpus = list(dict.fromkeys([row.fields["positive"] for row in train_rows + val_rows]
                                + [row.fields["negative"] for row in train_rows + val_rows
                                   if row.fields.get("negative")]))
    queries, expected = [row.fields["query"] for row in checked], [row.fields["positive"] for row in checked]
    rank = lambda: passage_ranks(model, queries, expected, corpus, settings.batch_size)  # noqa: E731
    before = rank()
    lengths = tuple(len(query) + len(positive) for query, positive, _ in train)
    fitted = fit(model, train, val, lengths, settings, checkpoint, hooks, loss_of)
    after = rank()
    top = lambda ranked: [corpus[r[1]] for r in ranked]  # noqa: E731
    scores = (retrieval_scores([r[0] for r in before]), retrieval_scores([r[0] for r in after]))
    return _outcome(transformer.model, fitted, (train_rows, val_rows), scores,
                    _samples(queries, expected, top(before), top(after)), {"base_fingerprint": base_fingerprint})


def passage_ranks(model, queries: list[str], expected: list[str], corpus: list[str],
                  batch_size: int) -> list[tuple[int, int]]:
    """Per query: (1-based rank of its expected passage in corpus, index of the top passage)."""
    encode = lambda texts: torch.cat([embed(model, texts[i:i + batch_size])  # noqa: E731
                                      for i in range(0, len(texts), batch_size)])
    with evaluating(model):
        scores = encode(queries) @ encode(corpus).T
    position = {text: i for i, text in enumerate(corpus)}
    out = []
    for row, wanted in zip(scores, expected):
        order = row.argsort(descending=True).tolist()
        out.append((order.index(position[wanted]) + 1, order[0]))
    return out


# One entry per encoder task: how it trains. The language-model tasks train through recipes.CONVERSATIONS.
TRAINERS: dict[str, Callable[..., Outcome]] = {
    "sentiment": train_sentiment,
    "answer": train_answer,
    "search": train_search,
}
