"""Semantic search on the real all-MiniLM-L6-v2: collections on disk, file reading, chunking and the public API."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pypdf import PdfWriter

from errors import UserError
from models.loading import ModelHub
from tasks.base import Context
from tasks.collections import check_name
from tasks.documents import MAX_WORDS, MIN_WORDS
from tasks.text import chunk_text as cut


def chunk_text(text: str):
    return cut(text, MAX_WORDS, MIN_WORDS)
from tasks.search import SearchTask
from ui import api, search_tab

CORPUS = {
    "refunds.txt": "Refund policy. If you are not happy with a purchase, return it within 30 days and we will "
                   "reimburse the full price to your card. Items must be unused and in their original box.",
    "opening-hours.txt": "Our shop opens at nine in the morning and closes at six in the evening, Monday to "
                         "Saturday. On Sundays and public holidays we are closed.",
    "password.txt": "To reset a forgotten login credential, click 'Forgot password' on the sign-in page and "
                    "follow the link we e-mail you. The link expires after one hour.",
    "shipping.txt": "Parcels are dispatched within two working days. Delivery inside the country takes three "
                    "to five days; international delivery can take up to three weeks.",
    "recipe.txt": "For the tomato soup, fry an onion in olive oil, add a kilo of chopped tomatoes and a litre "
                  "of stock, simmer for twenty minutes and blend until smooth.",
    "volcano.txt": "A volcano erupts when molten rock from deep inside the Earth rises through cracks in the "
                   "crust and bursts out as lava, ash and gas.",
    "football.txt": "The home team scored twice in the second half and won the championship final after "
                    "trailing at the break.",
    "privacy.txt": "We never sell your personal data. We keep your address and order history only as long as "
                   "the law requires, and you can ask us to delete them at any time.",
}

QUERIES = [
    ("how do I get my money back", "refunds.txt"),
    ("when can I visit the store", "opening-hours.txt"),
    ("I can't remember how to log in", "password.txt"),
    ("how long until my package arrives", "shipping.txt"),
    ("what happens inside a mountain that explodes", "volcano.txt"),
    ("do you share my information with other companies", "privacy.txt"),
]


@pytest.fixture
def search(ctx) -> SearchTask:
    return SearchTask(ctx)


def write_corpus(folder, corpus=CORPUS) -> list[tuple[str, str]]:
    files = []
    for name, text in corpus.items():
        (folder / name).write_text(text, encoding="utf-8")
        files.append((str(folder / name), name))
    return files


def make_pdf(path, lines: list[str]) -> None:
    """A one-page PDF with text in Helvetica, written by hand (pypdf writes pages but not text)."""
    escaped = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines]
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in escaped) + " ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
               "/Contents 5 0 R >>",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               f"<< /Length {len(content)} >>\nstream\n{content}\nendstream"]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


def test_search_finds_documents_by_meaning(search, tmp_path):
    result = search.add_documents("help desk", write_corpus(tmp_path))
    assert sorted(result["added"]) == sorted(CORPUS) and result["skipped"] == []
    for query, expected in QUERIES:
        hits = search.search(query, "help desk", k=3)
        assert hits[0]["source"] == expected, (query, hits)
        assert set(hits[0]) >= {"score", "text", "source", "chunk"} and hits[0]["chunk"] == 0
        assert hits[0]["text"] == CORPUS[expected]
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert search.retrieve("how do I get my money back", "help desk", 1)[0]["source"] == "refunds.txt"


def test_mixed_upload_keeps_good_files_and_names_the_bad_ones(search, tmp_path):
    (tmp_path / "notes.md").write_text("# Garden\n\nWater the tomatoes every evening in summer.", encoding="utf-8")
    (tmp_path / "faq.csv").write_text("id,question,answer\n1,How do I cancel my subscription?,Open the account "
                                      "page and press cancel.\n2,Can I pay by bank transfer?,Yes, within 14 days.\n",
                                      encoding="utf-8")
    make_pdf(tmp_path / "manual.pdf", ["The espresso machine must be descaled every month.",
                                       "Use the white vinegar solution described on page two."])
    blank = PdfWriter()
    blank.add_blank_page(612, 792)
    blank.write(tmp_path / "scan.pdf")
    (tmp_path / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (tmp_path / "latin1.txt").write_bytes("Crème brûlée recipe for the café".encode("latin-1"))
    (tmp_path / "slides.pptx").write_bytes(b"PK\x03\x04")
    names = ["notes.md", "faq.csv", "manual.pdf", "scan.pdf", "photo.txt", "latin1.txt", "slides.pptx"]
    result = search.add_documents("mixed", [(str(tmp_path / n), n) for n in names],
                                  text="Meetings are held every Tuesday at ten.")
    assert sorted(result["added"]) == sorted(["notes.md", "faq.csv", "manual.pdf", result["added"][0]])
    assert result["added"][0].startswith("pasted text ")
    reasons = {s["name"]: s["reason"] for s in result["skipped"]}
    assert set(reasons) == {"scan.pdf", "photo.txt", "latin1.txt", "slides.pptx"}
    assert "no text" in reasons["scan.pdf"] and "binary" in reasons["photo.txt"]
    assert "UTF-8" in reasons["latin1.txt"] and "not a supported type" in reasons["slides.pptx"]
    assert search.search("how often should the coffee maker be cleaned", "mixed", 1)[0]["source"] == "manual.pdf"
    assert search.search("stop paying for my plan", "mixed", 1)[0]["source"] == "faq.csv"
    csv_text = " ".join(h["text"] for h in search.search("bank transfer", "mixed", 5) if h["source"] == "faq.csv")
    assert "bank transfer" in csv_text and "id" not in csv_text.split()  # header and number cells left out


def test_oversized_file_is_skipped_with_the_limit(ctx, tmp_path):
    ctx.settings.max_upload_mb = 1
    (tmp_path / "big.txt").write_text("word " * 300_000, encoding="utf-8")
    (tmp_path / "small.txt").write_text("A small file.", encoding="utf-8")
    result = SearchTask(ctx).add_documents("c", [(str(tmp_path / "big.txt"), "big.txt"),
                                                 (str(tmp_path / "small.txt"), "small.txt")])
    assert result["added"] == ["small.txt"]
    assert result["skipped"][0]["name"] == "big.txt" and "limit is 1 MB" in result["skipped"][0]["reason"]


def test_same_content_is_not_added_twice_and_a_new_version_replaces_the_old(search, tmp_path):
    files = write_corpus(tmp_path, {"a.txt": CORPUS["recipe.txt"]})
    assert search.add_documents("c", files)["added"] == ["a.txt"]
    again = search.add_documents("c", files, text=CORPUS["recipe.txt"])
    assert again["added"] == [] and again["chunks"] == 0
    assert [s["reason"] for s in again["skipped"]] == ["already in the collection"] * 2
    (tmp_path / "a.txt").write_text(CORPUS["volcano.txt"], encoding="utf-8")
    assert search.add_documents("c", files)["replaced"] == ["a.txt"]
    assert search.collections() == [{"name": "c", "documents": 1, "chunks": 1, "model": "all-MiniLM-L6-v2",
                                     "owner": "local", "shared": False}]
    assert "lava" in search.search("soup", "c", 5)[0]["text"]


def test_remove_document_and_last_one_removes_the_collection(search, tmp_path):
    search.add_documents("c", write_corpus(tmp_path))
    left = search.remove_document("c", "refunds.txt")
    assert left == {"removed": "refunds.txt", "documents": len(CORPUS) - 1, "chunks": len(CORPUS) - 1}
    assert all(h["source"] != "refunds.txt" for h in search.search("money back", "c", 10))
    with pytest.raises(UserError, match="no document named 'refunds.txt'"):
        search.remove_document("c", "refunds.txt")
    for name in list(CORPUS)[1:]:
        search.remove_document("c", name)
    assert search.collections() == []
    with pytest.raises(UserError, match="no collection named 'c'"):
        search.search("anything", "c")


def test_collection_survives_a_restart(settings, tmp_path):
    SearchTask(Context(settings, ModelHub(settings))).add_documents("kept", write_corpus(tmp_path))
    fresh = SearchTask(Context(settings, ModelHub(settings)))
    assert fresh.collections()[0]["name"] == "kept" and fresh.collections()[0]["documents"] == len(CORPUS)
    assert fresh.search("how do I get my money back", "kept", 1)[0]["source"] == "refunds.txt"


def test_another_embedding_model_gets_its_own_vectors(settings, tmp_path, tiny_bert_dir):
    SearchTask(Context(settings, ModelHub(settings))).add_documents("c", write_corpus(tmp_path))
    settings.embedding_model = str(tiny_bert_dir)  # 32-dimensional: mixing it with MiniLM's 384 would fail
    other = SearchTask(Context(settings, ModelHub(settings)))
    assert len(other.search("money back", "c", 3)) == 3
    assert other.collections()[0]["model"] == f"all-MiniLM-L6-v2, {tiny_bert_dir.name}" or \
        other.collections()[0]["model"] == f"{tiny_bert_dir.name}, all-MiniLM-L6-v2"


def test_concurrent_adds_lose_nothing(search, tmp_path):
    files = write_corpus(tmp_path)
    errors = []

    def add(pair):
        try:
            search.add_documents("busy", [pair])
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=add, args=(pair,)) for pair in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert search.collections()[0]["documents"] == len(CORPUS)
    assert {d["name"] for d in search.documents("local", "busy")} == set(CORPUS)


def test_search_all_collections_when_none_is_named(search, tmp_path):
    search.add_documents("one", write_corpus(tmp_path, {"refunds.txt": CORPUS["refunds.txt"]}))
    search.add_documents("two", write_corpus(tmp_path, {"recipe.txt": CORPUS["recipe.txt"]}))
    hits = search.search("tomato soup", k=2)
    assert [(h["collection"], h["source"]) for h in hits] == [("two", "recipe.txt"), ("one", "refunds.txt")]


@pytest.mark.parametrize("name", ["", "   ", "../etc", "a/b", "a\\b", ".hidden", "..", "x" * 65, "semi;colon",
                                  "new\nline", "ends with dot."])
def test_bad_collection_names_are_rejected(search, name):
    with pytest.raises(UserError, match="name"):
        search.add_documents(name, text="Some text.")


@pytest.mark.parametrize("name", ["docs", "My notes 2024", "v1.2_final-draft", "Café", "x" * 64])
def test_good_collection_names_pass(name):
    assert check_name(f"  {name} ") == name


@pytest.mark.parametrize("call, message", [
    (lambda s: s.add_documents("c"), "upload a file or paste"),
    (lambda s: s.search("   ", "c"), "empty"),
    (lambda s: s.search("query", "", k=0), "number of results"),
    (lambda s: s.search("query"), "no collections yet"),
    (lambda s: s.add_documents("c", text="Hi.") and s.search("query", "c", adapter="my-adapter"), "no adapter named"),
])
def test_bad_requests_get_a_clear_message(search, call, message):
    with pytest.raises(UserError, match=message):
        call(search)


def test_chunks_keep_offsets_sizes_and_a_sentence_of_overlap():
    sentences = [f"Sentence number {i} talks about topic {i % 7} in several plain words." for i in range(60)]
    text = "\n\n".join(" ".join(sentences[i:i + 5]) for i in range(0, 60, 5))
    chunks = chunk_text(text)
    assert len(chunks) > 3
    for chunk, following in zip(chunks, chunks[1:]):
        assert text[chunk.start:chunk.end] == chunk.text
        assert 80 <= len(chunk.text.split()) <= 200
        last_sentence = chunk.text.rsplit(". ", 1)[-1].split("\n")[-1]
        assert following.text.startswith(last_sentence)
    assert chunk_text("One short sentence.")[0].text == "One short sentence."
    assert [len(c.text.split()) for c in chunk_text("word " * 450)] == [200, 200, 50]


def test_ui_helpers(search, upload_dir, tmp_path):
    for name in ("a", "b.txt", "x.txt"):
        (upload_dir / name).write_text("words", encoding="utf-8")

    class FileDataLike:
        path, orig_name = str(upload_dir / "x.txt"), "x.txt"

    assert api.uploads([{"path": str(upload_dir / "a"), "orig_name": "a.md"}, str(upload_dir / "b.txt"),
                        FileDataLike()]) == [(str(upload_dir / "a"), "a.md"), (str(upload_dir / "b.txt"), "b.txt"),
                                             (str(upload_dir / "x.txt"), "x.txt")]
    (tmp_path / "secret.txt").write_text("not uploaded", encoding="utf-8")
    with pytest.raises(UserError, match="paths on the server are not accepted"):
        api.uploads([{"path": str(tmp_path / "secret.txt"), "orig_name": "a.txt"}])
    quiet = {"progress": lambda *args, **kwargs: None}
    files = [path for path, _ in write_corpus(upload_dir, {"shop <b>.txt": CORPUS["refunds.txt"]})]
    (upload_dir / "blob.txt").write_bytes(b"\x00binary")
    with pytest.warns(UserWarning, match="1 item"):  # gr.Warning outside a request
        status, choices, rows, removable, *cleared = search_tab.add_files(
            search, "c", files + [str(upload_dir / "blob.txt")], "Pasted words.", **quiet)
    assert "Added 2 documents (2 chunks) to 'c'" in status and "Skipped **blob.txt**" in status
    assert choices["choices"] == ["c"] and cleared == [None, ""]
    assert sorted(rows.iloc[:, 0])[1] == "shop <b>.txt" and len(removable["choices"]) == 2
    cards = search_tab.run_search(search, "refund policy", "c", 1, "none", **quiet)
    assert "<mark>Refund</mark>" in cards and "shop &lt;b&gt;.txt" in cards
    status, _, rows, _ = search_tab.remove_document(search, "c", "shop <b>.txt")
    assert "1 document(s)" in status and len(rows) == 1


def test_public_api_through_gradio_client(launch, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    write_corpus(tmp_path)
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    url, _ = launch()
    client = Client(url, verbose=False)
    added = client.predict("api docs", [handle_file(str(tmp_path / "refunds.txt")),
                                        handle_file(str(tmp_path / "recipe.txt")),
                                        handle_file(str(tmp_path / "blob.txt"))],
                           "Our shop opens at nine.", api_name="/add_documents")
    assert sorted(added["added"])[1:] == ["recipe.txt", "refunds.txt"] and added["chunks"] == 3
    assert added["skipped"][0]["name"] == "blob.txt" and "binary" in added["skipped"][0]["reason"]
    hits = client.predict("how do I get my money back", "api docs", 2, "", api_name="/search")
    assert hits[0]["source"] == "refunds.txt" and len(hits) == 2
    assert client.predict(api_name="/collections") == [
        {"name": "api docs", "documents": 3, "chunks": 3, "model": "all-MiniLM-L6-v2", "owner": "local",
         "shared": False}]
    left = client.predict("api docs", "recipe.txt", api_name="/remove_document")
    assert left == {"removed": "recipe.txt", "documents": 2, "chunks": 2}
    with pytest.raises(AppError, match="cannot be a collection name"):
        client.predict("../escape", None, "text", api_name="/add_documents")
    with pytest.raises(AppError, match="no document named"):
        client.predict("api docs", "nothing.txt", api_name="/remove_document")


def test_question_answering_reads_passages_from_a_collection(search, tmp_path):
    from tasks.answer import AnswerTask

    search.add_documents("help", write_corpus(tmp_path))
    found = AnswerTask(search.ctx).answer("How long does international delivery take?", collection="help")
    assert found["found"] and found["source"] == "shipping.txt" and "three weeks" in found["answer"]


def test_vectors_are_read_once_per_generation_and_a_change_is_seen(search, tmp_path):
    search.add_documents("c", write_corpus(tmp_path, {"a.txt": CORPUS["recipe.txt"]}))
    target = search.store.open("local", "c")
    space = target.spaces()[0]
    first_ids, first = target.vectors(space)
    assert target.vectors(space)[1] is first  # the same matrix in memory: no second read
    search.add_documents("c", write_corpus(tmp_path, {"b.txt": CORPUS["volcano.txt"]}))
    ids, matrix = target.vectors(space)
    assert len(ids) == len(first_ids) + 1 and matrix is not first
    assert "lava" in search.search("erupting mountain", "c", 1)[0]["text"]


def test_embeddings_in_bf16_stay_close_to_fp32(settings):
    from dataclasses import replace

    from models.device import fast_bf16
    from models.embeddings import Embedder

    fp32 = ModelHub(replace(settings, dtype="float32")).embedder()
    assert not fp32.bf16  # the operator asked for fp32
    assert ModelHub(settings).embedder().bf16 == fast_bf16(fp32.model.device)  # auto: bf16 where it is fast
    fast = Embedder(fp32.source, fp32.model, bf16=True)
    texts = list(CORPUS.values())
    a, b = fp32.encode(texts), fast.encode(texts)
    assert b.dtype == a.dtype and float((a * b).sum(axis=1).min()) > 0.999


def test_concurrent_short_requests_share_forward_passes(ctx):
    embedder = ctx.hub.embedder()
    queries = [f"question number {i} about {topic}" for i, topic in
               enumerate(["refunds", "opening hours", "passwords", "parcels", "volcanoes", "privacy"] * 4)]
    alone = np.stack([embedder.encode([q])[0] for q in queries])
    before = embedder.forward_passes
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(queries))

    def ask(i: int) -> None:
        start.wait()
        results[i] = embedder.encode([queries[i]])[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(queries))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    together = np.stack([results[i] for i in range(len(queries))])
    assert embedder.forward_passes - before < len(queries)  # some requests rode along with others
    assert float((alone * together).sum(axis=1).min()) > 0.999  # and each got its own vector


def test_the_results_mark_the_querys_words_but_not_its_stopwords():
    from tasks.text import snippet

    shown = snippet("The office is open when the doors are, and the refund desk too.", "When is the office open and")
    assert "<mark>office</mark>" in shown and "<mark>open</mark>" in shown
    assert "<mark>" not in shown.replace("<mark>office</mark>", "").replace("<mark>open</mark>", "")
