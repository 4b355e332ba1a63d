"""Inside the model: what a language model does, shown on the real models — its tokens, its next-token
distribution, a filled-in blank, its attention and its embeddings, and how surprised it is by a text.

Plain JSON in and out. Forward passes of a served LM run in its engine's thread (between decode steps), so they
never race a generation; an adapter is applied per call the same way the engine applies it per row.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from config import LOCAL_USER
from errors import UserError
from models import catalog, lazy, offline
from models.adapters import selected
from models.engine import GREEDY_BELOW
from models.lora import PEFT_BASE
from models.loading import LoadedLM, read_config
from tasks.base import Context, Endpoint, require_range, require_text
from tasks.spec import spec as task_spec

torch = lazy.module("torch")
AutoTokenizer = lazy.attribute("transformers", "AutoTokenizer")

MASK = "[MASK]"
MAX_TOKENS = 512  # a text these views read at once (they are for looking at a sentence or a paragraph)
MAX_ATTENTION_TOKENS = 128  # a heatmap wider than this is unreadable (and its matrix grows with the square)
MAX_SIMILARITY_TEXTS = 20
CACHED_TOKENIZERS = 8  # tokenizers of models that are not loaded, kept for the Tokens view
FILL_CANDIDATES = 20  # the words the decoder proposes for a blank before it ranks whole sentences
FILL_TOKENS = 64  # the longest sentence it ranks that way (every candidate's logits are read whole)
SCORED_AT_ONCE = 5  # candidate sentences per forward pass: their vocabulary-wide logits stay small


class InsideModel:
    """The "Inside the model" views, each a public endpoint."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._tokenizers: dict[str, object] = {}
        self._tokenizers_lock = threading.Lock()

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(name, getattr(self, name)) for name in
                ("tokenize", "next_token", "fill_mask", "attention", "similarity", "token_loss")]

    # ---- tokens --------------------------------------------------------------------------------------------
    def tokenize(self, text: str, model: str = "") -> dict:
        """How a model's tokenizer cuts text: {model, tokens: [{id, text, start, end}], count}. Loads only the
        tokenizer (GPT-2's works offline)."""
        text = require_text(text, "text", self.ctx.settings.max_chars)
        name, tokenizer = self._tokenizer(model)
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=tokenizer.is_fast)
        ids = encoded["input_ids"]
        offsets = encoded.get("offset_mapping") or [(-1, -1)] * len(ids)
        tokens = [{"id": int(i), "text": tokenizer.decode([i]), "start": int(s), "end": int(e)}
                  for i, (s, e) in zip(ids, offsets)]
        return {"model": name, "tokens": tokens, "count": len(tokens)}

    def _tokenizer(self, model: str) -> tuple[str, object]:
        """A model's tokenizer by reference, loaded once; a catalog model whose tokenizer ships offline (GPT-2's
        BPE) works without the hub."""
        backbone = catalog.find(model or "") if model else None
        offline_folder = offline.tokenizer_folder(backbone.hub_id, self.ctx.hub.models_dir) if backbone else None
        if offline_folder is not None and not catalog.hub_reachable():
            name, location, options = backbone.name, str(offline_folder), {"local_files_only": True}
        else:
            source = self.ctx.hub.source(model, self._lm_default())
            name, location, options = source.name, source.location, self.ctx.hub.options(source)
        with self._tokenizers_lock:
            if location not in self._tokenizers:
                if len(self._tokenizers) >= CACHED_TOKENIZERS:  # strangers' hub ids must not pile up
                    self._tokenizers.pop(next(iter(self._tokenizers)))
                try:
                    self._tokenizers[location] = AutoTokenizer.from_pretrained(location, **options)
                except (OSError, ValueError) as error:
                    raise UserError(f"Could not load the tokenizer of '{name}': {str(error).splitlines()[0]}") \
                        from None
            return name, self._tokenizers[location]

    # ---- next token ------------------------------------------------------------------------------------------
    def next_token(self, text: str, model: str = "", adapter: str = "", k: int = 10, temperature: float = 1.0,
                   top_p: float = 1.0, *, owner: str = LOCAL_USER) -> dict:
        """The k most likely next tokens after text: {model, adapter, tokens: [{id, text, prob, kept}], entropy
        (bits), kept_by_top_p, base}; with an adapter, base holds the base model's view of the same text."""
        k = int(require_range(k, "k", 1, 100))
        require_range(temperature, "Temperature", 0.0, 5.0)
        require_range(top_p, "Top-p", 0.0, 1.0)
        lm, key = self._lm(model, adapter, owner)
        ids = self._ids(lm, text)
        logits = lm.run(lambda m: _last_logits(m, ids, [key, PEFT_BASE] if key else [PEFT_BASE]))
        views = [_distribution(lm.tokenizer, row, k, temperature, top_p) for row in logits]
        result = {"model": lm.name, "adapter": adapter if key else "", **views[0], "base": None}
        if key:
            result["base"] = views[1]
        return result

    # ---- fill the blank ------------------------------------------------------------------------------------
    def fill_mask(self, text: str, model: str = "", k: int = 5, *, owner: str = LOCAL_USER) -> dict:
        """Candidates for the one [MASK] in text: {model, method, candidates: [{token, score, text}], note}. A masked
        LM (BERT, RoBERTa) predicts it; any other model is a decoder that ranks whole sentences."""
        text = require_text(text, "text", self.ctx.settings.max_chars)
        k = int(require_range(k, "k", 1, 20))
        if text.count(MASK) != 1:
            raise UserError(f"Put {MASK} once where the missing word goes, e.g. 'The capital of France is {MASK}.'")
        source = self.ctx.hub.source(model, self._lm_default())
        architectures = read_config(source, self.ctx.hub.options(source)).architectures or []
        if any(a.endswith("ForMaskedLM") for a in architectures):
            return self._masked(source, text, k)
        lm, _ = self._lm(model, "", owner)
        return self._decoder_fill(lm, text, k)

    def _masked(self, source: catalog.ModelSource, text: str, k: int) -> dict:
        loaded = self.ctx.hub.get("masked", source)
        tokenizer = loaded.tokenizer
        encoded = tokenizer(text.replace(MASK, tokenizer.mask_token), return_tensors="pt", truncation=True,
                            max_length=MAX_TOKENS).to(loaded.model.device)
        where = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()
        if len(where) != 1:
            raise UserError("The blank fell outside what the model reads; put it nearer the start.")
        logits = loaded.compute(lambda: loaded.model(**encoded).logits[0, int(where[0])].float())
        probs = logits.softmax(-1)
        top = probs.topk(k)
        candidates = []
        for p, i in zip(top.values.tolist(), top.indices.tolist()):
            word = tokenizer.decode([i]).strip()
            candidates.append({"token": word, "score": p, "text": text.replace(MASK, word)})
        return {"model": loaded.name, "method": "masked_lm", "candidates": candidates,
                "note": "A masked language model read the words on both sides of the blank and guessed it."}

    def _decoder_fill(self, lm: LoadedLM, text: str, k: int) -> dict:
        left, right = text.split(MASK)
        prefix = left.rstrip()
        if not prefix:
            raise UserError(f"A decoder reads left to right, so it needs a few words before the {MASK}.")
        prefix_ids = self._ids(lm, prefix)
        logits = lm.run(lambda m: _last_logits(m, prefix_ids, [PEFT_BASE]))[0]
        words = []
        for i in logits.topk(FILL_CANDIDATES * 3).indices.tolist():
            word = lm.tokenizer.decode([i]).strip()
            if word and any(c.isalnum() for c in word) and word not in words:
                words.append(word)
            if len(words) == FILL_CANDIDATES:
                break
        space = " " if left != prefix or not prefix.endswith((" ", "\n")) else ""
        filled = [prefix + space + word + right for word in words]
        sentences = [self._ids(lm, sentence) for sentence in filled]
        if max(map(len, sentences), default=0) > FILL_TOKENS:
            raise UserError(f"Without a masked language model, the blank is filled in sentences of up to "
                            f"{FILL_TOKENS} tokens; shorten the text around the {MASK}.")
        scores = [score for start in range(0, len(sentences), SCORED_AT_ONCE) for score in lm.run(
            lambda m, part=sentences[start:start + SCORED_AT_ONCE]: _sentence_logprobs(m, part, lm.tokenizer))]
        weights = torch.tensor(scores).softmax(-1).tolist()  # shares among the candidates, not probabilities
        ranked = sorted(zip(words, weights, filled), key=lambda c: -c[1])[:k]
        return {"model": lm.name, "method": "decoder_rescoring",
                "candidates": [{"token": w, "score": s, "text": t} for w, s, t in ranked],
                "note": "No masked language model (BERT) is available here, so a decoder guessed: it proposed "
                        "words for the blank from the words before it, then ranked the whole sentences (the words "
                        "after the blank included) by how likely it finds them."}

    # ---- attention -------------------------------------------------------------------------------------------
    def attention(self, text: str, model: str = "", layer: int = -1, head: int = -1) -> dict:
        """One layer's attention over text's tokens: {model, tokens, layers, heads, layer, head, weights} where
        weights[i][j] is how much token i attends to token j (rows sum to 1); head -1 is the mean of the heads,
        layer -1 the last layer. A decoder attends only to earlier tokens."""
        text = require_text(text, "text", self.ctx.settings.max_chars)
        source = self.ctx.hub.source(model, self._lm_default())
        if source.family == catalog.EMBEDDING or _is_encoder(self.ctx, source):
            embedder = self.ctx.hub.embedder(source)
            tokenizer = embedder.model.tokenizer
            encoded = tokenizer(text, truncation=True, max_length=MAX_ATTENTION_TOKENS + 1)
            ids = encoded["input_ids"]
            _check_attention_length(ids)
            network = embedder.model[0].auto_model
            maps = embedder.run(lambda: _attention_maps(network, ids))
            name = embedder.name
        else:
            lm, _ = self._lm(model, "", LOCAL_USER)
            tokenizer = lm.tokenizer
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            _check_attention_length(ids)  # far below any model's context length
            maps = lm.run(lambda m: _attention_maps(m, ids))
            name = lm.name
        layers, heads = len(maps), maps[0].shape[0]
        layer = int(require_range(layer, "Layer", -1, layers - 1))
        head = int(require_range(head, "Head", -1, heads - 1))
        chosen = maps[layer]
        weights = chosen.mean(0) if head == -1 else chosen[head]
        return {"model": name, "tokens": [tokenizer.decode([i]) for i in ids], "layers": layers, "heads": heads,
                "layer": layer % layers, "head": head, "weights": weights.tolist()}

    # ---- embeddings ----------------------------------------------------------------------------------------
    def similarity(self, texts: list[str] | str, model: str = "", adapter: str = "", *,
                   owner: str = LOCAL_USER) -> dict:
        """How alike a few texts are to an embedding model: {model, adapter, texts, matrix (cosine), points (a 2-D
        map, PCA), base_points}; with a search adapter, base_points is the base model's map of the same texts."""
        texts = [t.strip() for t in (texts.splitlines() if isinstance(texts, str) else texts or [])
                 if isinstance(t, str) and t.strip()]
        if len(texts) < 2:
            raise UserError("Give at least two sentences, one per line, to compare.")
        if len(texts) > MAX_SIMILARITY_TEXTS:
            raise UserError(f"Compare at most {MAX_SIMILARITY_TEXTS} sentences at once ({len(texts)} given).")
        for text in texts:
            require_text(text, "sentence", 2_000)
        embedder = self.ctx.adapters.encoder(owner, "embedder", model, adapter, "search",
                                             self.ctx.hub.default(catalog.EMBEDDING))
        vectors = embedder.encode(texts)
        result = {"model": embedder.name, "adapter": adapter if embedder.adapter else "", "texts": texts,
                  "matrix": np.clip(vectors.astype(np.float64) @ vectors.T, -1.0, 1.0).round(6).tolist(),
                  "points": _pca_2d(vectors), "base_points": None}
        if embedder.adapter:
            base = self.ctx.hub.embedder(embedder.source)
            result["base_points"] = _pca_2d(base.encode(texts))
        return result

    # ---- surprise ------------------------------------------------------------------------------------------
    def token_loss(self, text: str, model: str = "", adapter: str = "", *, owner: str = LOCAL_USER) -> dict:
        """How surprised the model is by each token of text: {model, adapter, tokens: [{text, logprob}], loss,
        perplexity, base}; the first token has no logprob (nothing came before it). With an adapter, base holds
        the base model's numbers, so the change training made shows token by token."""
        lm, key = self._lm(model, adapter, owner)
        ids = self._ids(lm, text)
        if len(ids) < 2:
            raise UserError("Give at least two tokens (a few words): the first one is what the others follow.")
        rows = lm.token_logprobs(ids, [key, None] if key else [None])
        views = [_surprise(lm.tokenizer, ids, row) for row in rows]
        result = {"model": lm.name, "adapter": adapter if key else "", **views[0], "base": None}
        if key:
            result["base"] = views[1]
        return result

    # ---- shared --------------------------------------------------------------------------------------------
    def _lm_default(self) -> str:
        return self.ctx.hub.default(catalog.DECODER)

    def _lm(self, model: str, adapter: str, owner: str) -> tuple[LoadedLM, str | None]:
        """The loaded decoder (the adapter's base when only an adapter is chosen) and the adapter's engine key."""
        lm = self.ctx.hub.lm(self.ctx.adapters.model_for(owner, model, adapter), self._lm_default())
        name = selected(adapter)
        if name is None:
            return lm, None
        task = self.ctx.adapters.store.meta(owner, name).task
        if task_spec(task).adapter_kind != "lm":
            raise UserError(f"'{adapter}' is a {task} adapter, which does not change a language model's words; "
                            "pick a chat, summarize or translate adapter.")
        key, _ = self.ctx.adapters.attach(owner, lm, name, task)
        return lm, key

    def _ids(self, lm: LoadedLM, text: str) -> list[int]:
        text = require_text(text, "text", self.ctx.settings.max_chars)
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        limit = min(MAX_TOKENS, lm.context_length)
        if len(ids) > limit:
            raise UserError(f"The text is {len(ids):,} tokens long; these views read up to {limit:,}. "
                            "Shorten it.")
        return ids



# ---- the computations (in the thread that owns the model) ------------------------------------------------------

def _adapter_kwargs(model, adapters: list[str]) -> dict:
    return {"adapter_names": adapters} if hasattr(model, "peft_config") else {}


def _last_logits(model, ids: list[int], adapters: list[str]) -> torch.Tensor:
    """The next-token logits after ids, one row per adapter (PEFT_BASE = none)."""
    batch = torch.tensor([ids] * len(adapters), device=model.device)
    out = model(input_ids=batch, use_cache=False, logits_to_keep=1, **_adapter_kwargs(model, adapters))
    return out.logits[:, -1, :].float().cpu()


def _sentence_logprobs(model, sentences: list[list[int]], tokenizer) -> list[float]:
    """Each sentence's total log-likelihood (its first token given), in one right-padded batch."""
    width = max(len(s) for s in sentences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(sentences), width), pad, dtype=torch.long)
    mask = torch.zeros(len(sentences), width, dtype=torch.long)
    for i, s in enumerate(sentences):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False,
                   **_adapter_kwargs(model, [PEFT_BASE] * len(sentences))).logits.float()
    picked = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    return (picked * mask[:, 1:]).sum(-1).tolist()


def _attention_maps(model, ids: list[int]) -> list[torch.Tensor]:
    """Each layer's (heads, n, n) attention, computed with eager attention for this call only (the fast kernels
    do not return the weights); the model's own setting is back in place afterwards."""
    network = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = network.config._attn_implementation
    network.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            batch = torch.tensor([ids], device=network.device)
            out = network(input_ids=batch, output_attentions=True, use_cache=False)
    finally:
        network.set_attn_implementation(before)
    return [layer[0].float().cpu() for layer in out.attentions]


# ---- the views' numbers --------------------------------------------------------------------------------------

def _distribution(tokenizer, logits: torch.Tensor, k: int, temperature: float, top_p: float) -> dict:
    """The next-token distribution at a temperature (0 = all on the likeliest), its k most likely tokens, its
    entropy in bits and how many of the top tokens top-p keeps."""
    if temperature < GREEDY_BELOW:
        probs = torch.zeros_like(logits)
        probs[int(logits.argmax())] = 1.0
    else:
        probs = (logits / temperature).softmax(-1)
    ordered, order = probs.sort(descending=True)
    before = ordered.cumsum(-1) - ordered  # what the tokens ranked above each one hold
    kept = max(1, int((before < top_p).sum())) if top_p < 1.0 else int((ordered > 0).sum())
    nonzero = probs[probs > 0]
    entropy = float(-(nonzero * nonzero.log2()).sum())
    tokens = [{"id": int(i), "text": tokenizer.decode([int(i)]), "prob": float(p), "kept": rank < kept}
              for rank, (p, i) in enumerate(zip(ordered[:k].tolist(), order[:k].tolist()))]
    return {"tokens": tokens, "entropy": round(entropy, 4), "kept_by_top_p": kept}


def _surprise(tokenizer, ids: list[int], logprobs: torch.Tensor) -> dict:
    values = logprobs.tolist()
    tokens = [{"text": tokenizer.decode([ids[0]]), "logprob": None}]
    tokens += [{"text": tokenizer.decode([i]), "logprob": lp} for i, lp in zip(ids[1:], values)]
    loss = -sum(values) / len(values)
    return {"tokens": tokens, "loss": loss, "perplexity": math.exp(min(loss, 700.0))}


def _pca_2d(vectors: np.ndarray) -> list[list[float]]:
    """Each vector's place on the plane of the two directions along which the vectors differ most."""
    centred = vectors - vectors.mean(0, keepdims=True)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    plane = directions[:2]
    if plane.shape[0] < 2:
        plane = np.vstack([plane, np.zeros((2 - plane.shape[0], vectors.shape[1]))])
    return (centred @ plane.T).astype(np.float64).round(6).tolist()


def _check_attention_length(ids: list[int]) -> None:
    if len(ids) > MAX_ATTENTION_TOKENS:
        raise UserError(f"Attention is drawn for up to {MAX_ATTENTION_TOKENS} tokens, to stay readable; shorten "
                        "the text to a sentence or two.")


def _is_encoder(ctx: Context, source: catalog.ModelSource) -> bool:
    """Whether a model is an encoder (BERT-like: it reads the whole text at once) rather than a decoder."""
    if source.family in (catalog.DECODER, catalog.SEQ2SEQ):
        return False
    config = read_config(source, ctx.hub.options(source))
    return not (getattr(config, "is_decoder", False) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or []))
