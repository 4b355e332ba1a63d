"""tasks/vector_index: exact search below the threshold, a cached FAISS index above it (forced low here)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.collections import nearest
from tasks.vector_index import IndexCache, exact_search, fingerprint

DIM = 32


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, centres: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres, like embeddings of documents on a few topics."""
    rng = np.random.default_rng(seed)
    centre = unit(rng.standard_normal((centres, DIM)))
    return unit(centre[rng.integers(0, centres, n)] + 0.25 * rng.standard_normal((n, DIM)))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """(4,000 stored vectors, 100 queries near held-out points of the same clusters)."""
    points = clustered(4100)
    rng = np.random.default_rng(1)
    return points[:4000], unit(points[4000:] + 0.05 * rng.standard_normal((100, DIM)))


def brute_force(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ matrix.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())]))


def test_exact_path_equals_brute_force(data):
    matrix, queries = data
    cache = IndexCache()
    scores, rows = cache.search(matrix, queries, 10)  # 4,000 rows: far below the default threshold
    want_scores, want_rows = brute_force(matrix, queries, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    assert cache.builds == 0
    one_scores, one_rows = cache.search(matrix, queries[3], 10)  # a 1-D query gives 1-D results
    assert one_rows.shape == (10,)
    np.testing.assert_array_equal(one_rows, want_rows[3])


def test_faiss_path_recall(data):
    matrix, queries = data
    cache = IndexCache()
    scores, rows = cache.search(matrix, queries, 10, threshold=1000)
    assert cache.builds == 1
    index = cache.index(matrix)
    assert 1 < index.nlist < len(matrix) and 1 <= index.nprobe <= index.nlist
    _, truth = brute_force(matrix, queries, 10)
    assert recall(rows, truth) >= 0.9
    # Scores are the true inner products of the rows found, best first.
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, matrix[rows]), rtol=1e-4, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_index_is_built_once_and_reused(data):
    matrix, queries = data
    cache = IndexCache()
    for q in queries[:20]:
        cache.search(matrix, q, 5, threshold=1000)
    cache.search(matrix.copy(), queries, 5, threshold=1000)  # same content in another array: same index
    assert cache.builds == 1
    changed = matrix.copy()
    changed[-1] = changed[0]  # a new version of the collection is a new index
    cache.search(changed, queries[0], 5, threshold=1000)
    assert cache.builds == 2
    assert fingerprint(changed) != fingerprint(matrix)


def test_background_build_answers_exactly_meanwhile(data):
    matrix, queries = data
    cache = IndexCache()
    scores, rows = cache.search(matrix, queries[0], 10, threshold=1000, wait=False)
    np.testing.assert_array_equal(rows, brute_force(matrix, queries[:1], 10)[1][0])
    index = cache.index(matrix)  # waits for the background build instead of starting a second one
    assert index is not None and cache.builds == 1


def test_cache_is_bounded():
    cache = IndexCache(max_entries=2)
    for seed in range(3):
        cache.search(clustered(500, seed=seed), clustered(1, seed=9), 3, threshold=100)
    assert cache.builds == 3 and len(cache._entries) == 2


@pytest.mark.parametrize("threshold", [50_000, 1])
def test_k_larger_than_the_collection(threshold):
    matrix = clustered(30)
    query = clustered(1, seed=5)[0]
    scores, rows = IndexCache().search(matrix, query, 100, threshold=threshold)
    assert sorted(rows.tolist()) == list(range(30))
    assert (np.diff(scores) <= 1e-6).all()
    assert (exact_search(matrix, query, 100)[1][0] == rows).all()


def test_empty_matrix():
    empty = np.zeros((0, DIM), np.float32)
    query = clustered(1)[0]
    scores, rows = IndexCache().search(empty, query, 5, threshold=0)
    assert scores.shape == rows.shape == (0,) and rows.dtype == np.int64
    scores, rows = IndexCache().search(empty, clustered(3), 5, threshold=0)
    assert scores.shape == rows.shape == (3, 0)


def test_collections_nearest_keeps_its_behaviour(data):
    matrix, queries = data
    scores, rows = nearest(matrix, queries[0], 7)
    want = np.argsort(-(matrix @ queries[0]), kind="stable")[:7]
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_array_equal(scores, (matrix @ queries[0])[want])
    empty_scores, empty_rows = nearest(np.zeros((0, 0), np.float32), queries[0], 3)
    assert len(empty_scores) == len(empty_rows) == 0
