"""Search speed and recall: sentence-transformers `semantic_search` once per query vs our index (tasks/vector_index).

Synthetic corpus (DESIGN §8): unit vectors (dim 384) around a few thousand cluster centres that share a common
direction (as real embeddings do), cluster sizes skewed, spreads varied; queries are held-out points of the same
clusters, perturbed. The baseline is `util.semantic_search` called once per query (as the UI asks) on an fp32
torch tensor; batched queries are reported too. Recall@10 is measured against exact search (ties counted as hits).
Then the same on a real corpus: prose chunks from the docstrings of installed Python packages, embedded with
all-MiniLM-L6-v2, queried with the first sentence of held-out chunks.

    .venv/bin/python bench/search.py [--n 1000000] [--queries 1000] [--real-n 20000] [--no-real]
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
import sysconfig
from pathlib import Path

from common import header, parser, progress_printer, ratio, timer

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tasks.vector_index import EXACT_LIMIT, IndexCache, exact_search  # noqa: E402

K = 10


def clustered(n: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
    """n unit vectors around `centres` cluster centres (float32, rows in random cluster order)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim, dtype=np.float32)
    centre = rng.standard_normal((centres, dim), dtype=np.float32)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    centre += 0.4 * common / np.linalg.norm(common)  # a shared direction: unrelated texts still score ~0.15
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    weight = rng.lognormal(0.0, 1.0, centres)  # some topics are much bigger than others
    label = rng.choice(centres, n, p=weight / weight.sum())
    spread = rng.uniform(0.6, 1.2, centres).astype(np.float32)  # cosine to the centre ~0.64 to ~0.86
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        part = label[start:start + 100_000]
        rows = centre[part] + rng.standard_normal((len(part), dim), dtype=np.float32) * (
            spread[part, None] / math.sqrt(dim))
        out[start:start + len(part)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def perturb(points: np.ndarray, noise: float = 0.3, seed: int = 1) -> np.ndarray:
    """Unit vectors near points (cosine ~0.96): a query near, not on, what it looks for."""
    rng = np.random.default_rng(seed)
    out = points + rng.standard_normal(points.shape, dtype=np.float32) * (noise / math.sqrt(points.shape[1]))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def recall(found: np.ndarray, truth_scores: np.ndarray, matrix: np.ndarray, queries: np.ndarray) -> float:
    """Mean recall@k: a found row counts if it scores at least the k-th exact score (ties are hits)."""
    k = truth_scores.shape[1]
    scores = np.einsum("qd,qkd->qk", queries, matrix[np.maximum(found, 0)])
    hits = (scores >= truth_scores[:, -1:] - 1e-5) & (found >= 0)
    return float(hits.sum(1).clip(max=k).mean() / k)


def semantic_search_rows(queries: torch.Tensor, corpus: torch.Tensor) -> np.ndarray:
    from sentence_transformers import util

    return np.array([[hit["corpus_id"] for hit in hits] for hits in util.semantic_search(queries, corpus, top_k=K)])


def compare(name: str, matrix: np.ndarray, queries: np.ndarray, baseline_queries: int, threshold: int,
            target: float | None = None) -> None:
    """Build our index over matrix, time both paths one query at a time and batched, print recall and ratios."""
    from sentence_transformers import util

    corpus = torch.from_numpy(matrix)  # fp32, shares memory with matrix
    print(f"\n-- {name}: {len(matrix):,} vectors x {matrix.shape[1]}, {len(queries):,} queries")
    with timer() as elapsed:
        truth_scores, _ = exact_search(matrix, queries, K)
    print(f"exact top-{K} for every query (numpy, batched): {elapsed():.1f} s")

    cache = IndexCache()
    with timer() as elapsed:
        index = cache.index(matrix) if len(matrix) >= threshold else None
    if index is not None:
        print(f"index: IVF-Flat, {index.nlist} lists, nprobe {index.nprobe} (build-time recall@10 "
              f"{index.recall:.3f}); built in {elapsed():.1f} s")
    else:
        print(f"index: none, {len(matrix):,} rows is below the exact-search threshold of {threshold:,}")

    few = queries[:baseline_queries]
    with timer() as elapsed:
        for q in few:
            util.semantic_search(torch.from_numpy(q[None]), corpus, top_k=K)
    base_single = len(few) / elapsed()
    with timer() as elapsed:
        for q in few:
            exact_search(matrix, q, K)
    exact_single = len(few) / elapsed()
    with timer() as elapsed:
        for q in queries:
            cache.search(matrix, q, K, threshold=threshold)
    our_single = len(queries) / elapsed()
    with timer() as elapsed:
        base_rows = semantic_search_rows(torch.from_numpy(queries), corpus)
    base_batch = len(queries) / elapsed()
    with timer() as elapsed:
        _, our_rows = cache.search(matrix, queries, K, threshold=threshold)
    our_batch = len(queries) / elapsed()

    print(f"recall@{K} vs exact: semantic_search {recall(base_rows, truth_scores, matrix, queries):.4f}, "
          f"ours {recall(our_rows, truth_scores, matrix, queries):.4f}")
    print(f"(one-query baseline timed over the first {len(few)} queries; ours over all {len(queries)}); "
          f"for reference, exact numpy search one query per call: {exact_single:,.1f} queries/s")
    ratio(f"{name}, one query per call", ("util.semantic_search, fp32 tensor", base_single),
          ("tasks.vector_index.search", our_single), "queries/s", target)
    ratio(f"{name}, all queries in one call", ("util.semantic_search, fp32 tensor", base_batch),
          ("tasks.vector_index.search", our_batch), "queries/s")


def prose_chunks(count: int, words: int = 50) -> list[str]:
    """Up to count distinct prose chunks (~words words) from docstrings of the standard library and packages."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    docstring = re.compile(r'"""(.*?)"""', re.S)
    code = re.compile(r"[{}\[\]=<>`|\\#]|::|>>>|\(\)")  # keep prose: no code, tables or doctests
    seen: set[str] = set()
    chunks: list[str] = []
    for root in roots:
        for file in sorted(root.rglob("*.py")):
            if "test" in file.parts or "tests" in file.parts:
                continue
            try:
                text = file.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for doc in docstring.findall(text):
                for paragraph in doc.split("\n\n"):
                    paragraph = " ".join(paragraph.split())
                    if len(paragraph.split()) < 20 or code.search(paragraph) or paragraph in seen:
                        continue
                    seen.add(paragraph)
                    parts = paragraph.split()
                    chunks += [" ".join(parts[i:i + words]) for i in range(0, len(parts), words)
                               if len(parts[i:i + words]) >= 15]
            if len(chunks) >= count:
                return chunks[:count]
    return chunks


def real_corpus(n: int, queries: int, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(corpus vectors, query vectors) embedded with all-MiniLM-L6-v2 through our Embedder."""
    from config import Settings
    from models.loading import ModelHub

    with timer() as elapsed:
        chunks = prose_chunks(n + queries)
    rng = np.random.default_rng(0)
    rng.shuffle(chunks)
    held, corpus = chunks[:queries], chunks[queries:]
    # A query is the first sentence (or first dozen words) of a held-out chunk: short, like a user's question.
    asked = [re.split(r"(?<=[.!?])\s", text)[0] if len(text.split(".")[0].split()) >= 5
             else " ".join(text.split()[:12]) for text in held]
    print(f"\nreal corpus: {len(corpus):,} docstring chunks (+{len(held)} held out for queries), "
          f"collected in {elapsed():.1f} s; e.g. query {asked[0]!r}")
    # Embedding 20k chunks takes minutes on 2 cores: keep the vectors, keyed by the exact texts, for re-runs.
    digest = hashlib.sha256("\n".join(corpus + asked).encode()).hexdigest()[:16]
    saved = Path(data_dir) / "bench" / f"real-corpus-{len(corpus)}-{digest}.npz"
    if saved.is_file():
        with np.load(saved) as stored:
            print(f"reusing the vectors embedded earlier from {saved}")
            return stored["corpus"], stored["queries"]
    embedder = ModelHub(Settings(data_dir=data_dir, dtype="float32")).embedder()
    with timer() as elapsed:
        matrix = embedder.encode(corpus, progress=progress_printer("embedding the real corpus", 30))
        query_vectors = embedder.encode(asked)
    print(f"embedded with {embedder.name} in {elapsed():.1f} s ({len(corpus) / elapsed():.0f} chunks/s)")
    saved.parent.mkdir(parents=True, exist_ok=True)
    np.savez(saved, corpus=matrix, queries=query_vectors)
    return matrix, query_vectors


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="synthetic corpus size (0 = skip it)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--centres", type=int, default=3000, help="cluster centres of the synthetic corpus")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--baseline-queries", type=int, default=30,
                   help="queries timed one per call on the baseline (it is slow on a large corpus)")
    p.add_argument("--real-n", type=int, default=20_000, help="chunks in the real embedded corpus")
    p.add_argument("--no-real", action="store_true", help="skip the real corpus")
    args = p.parse_args()
    header("search: util.semantic_search vs tasks.vector_index", args.threads)
    import faiss

    print(f"faiss OpenMP threads: {faiss.omp_get_max_threads()}; exact below {EXACT_LIMIT:,} rows")

    if args.n > 0:
        with timer() as elapsed:
            points = clustered(args.n + args.queries, args.dim, args.centres)
        matrix, queries = points[:args.n], perturb(points[args.n:])
        del points
        print(f"synthetic corpus generated in {elapsed():.1f} s ({matrix.nbytes / 2**30:.2f} GiB)")
        compare(f"synthetic, {args.n:,} vectors", matrix, queries, args.baseline_queries, EXACT_LIMIT, target=10)
        del matrix

    if not args.no_real:
        matrix, queries = real_corpus(args.real_n, 200, args.data_dir)
        # Below EXACT_LIMIT the app searches exactly; force the index too, to show its recall on real vectors.
        compare(f"real MiniLM corpus, {len(matrix):,} chunks, as the app searches it", matrix, queries,
                args.baseline_queries, EXACT_LIMIT)
        compare(f"real MiniLM corpus, {len(matrix):,} chunks, index forced", matrix, queries,
                args.baseline_queries, 0)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
