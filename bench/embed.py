"""Embedding throughput on the real offline all-MiniLM-L6-v2: `SentenceTransformer.encode` vs our `Embedder.encode`.

The chunks are synthetic but shaped like document chunks: one to four template sentences, 20 to 60 words, in
shuffled order so lengths are mixed. Both paths get the same texts, batch size 32 and unit-length output; ours
runs with the app's defaults (bf16 autocast where the hardware computes bf16 fast). The vectors are compared (lowest
cosine, and agreement of each chunk's 10 nearest neighbours) so a speed-up never comes from computing something else.

    .venv/bin/python bench/embed.py [--n 5000] [--batch-size 32]
"""

from __future__ import annotations

import random

from common import header, parser, progress_printer, ratio, timer

import numpy as np  # noqa: E402

from config import Settings  # noqa: E402
from models.loading import ModelHub  # noqa: E402
from models.threads import in_own_thread  # noqa: E402

SUBJECTS = ["The committee", "Our support team", "The new library", "A local farmer", "The city council",
            "Most customers", "The research group", "This quarterly report", "The hiking trail", "Our warehouse",
            "The museum", "A young engineer", "The train operator", "The school board", "The recipe"]
VERBS = ["announced", "reviewed", "described", "postponed", "improved", "questioned", "recommended", "measured",
         "published", "replaced", "explained", "scheduled", "approved", "criticised", "documented"]
OBJECTS = ["the budget for next year", "a faster delivery process", "the opening hours on public holidays",
           "the results of the soil survey", "a plan to reduce energy use", "the refund policy for damaged items",
           "the safety rules for the river path", "a new exhibition about ancient coins",
           "the timetable for the evening trains", "the way passwords are reset", "the cost of heating the hall",
           "a simpler form for new members", "the traffic around the market square"]
CLAUSES = ["after a long discussion with residents", "because several people had complained",
           "although the weather was unusually cold", "so that everyone could take part",
           "while the old system was still running", "before the summer holidays began",
           "even though the numbers were incomplete", "to make the service easier to use",
           "as part of a wider review of the department"]
EXTRAS = ["Details will follow in the next newsletter.", "Questions can be sent by e-mail at any time.",
          "The decision takes effect on the first of the month.", "A short summary is available at the front desk.",
          "Several volunteers have already offered to help.", "Nobody expects the change to raise prices."]


def synthetic_chunks(n: int, seed: int = 0) -> list[str]:
    """n chunk-like texts of 20 to 60 words built from templates, in random order."""
    rng = random.Random(seed)
    chunks = []
    while len(chunks) < n:
        words: list[str] = []
        target = rng.randint(20, 60)
        while len(words) < target:
            sentence = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
            if rng.random() < 0.7:
                sentence += f" {rng.choice(CLAUSES)}"
            words += (sentence + ".").split()
            if rng.random() < 0.4:
                words += rng.choice(EXTRAS).split()
        chunks.append(" ".join(words[:target]).rstrip(".,") + ".")
    return chunks


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="chunks to embed (the README table uses 5000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block", type=int, default=1000, help="texts per call; the two paths take turns per block")
    args = p.parse_args()
    header("embed: SentenceTransformer.encode vs Embedder.encode, all-MiniLM-L6-v2", args.threads)
    from sentence_transformers import SentenceTransformer

    texts = synthetic_chunks(args.n)
    lengths = [len(t.split()) for t in texts]
    print(f"{len(texts):,} chunks, {min(lengths)}-{max(lengths)} words (mean {np.mean(lengths):.0f}), "
          f"batch size {args.batch_size}")
    embedder = ModelHub(Settings(data_dir=args.data_dir)).embedder()  # the app's defaults
    print(f"Embedder computes in {'bf16 autocast (this hardware runs bf16 fast)' if embedder.bf16 else 'fp32'}")
    peer = SentenceTransformer(str(embedder.source.location), device="cpu")
    print(f"model: {embedder.name} from {embedder.source.location}")
    warm = texts[:64]
    # The peer's calls run in threads of their own, as ours do: a main thread that kept an OpenMP pool beside the
    # pools of our calls' threads would slow both (models/threads.py).
    in_own_thread(lambda: peer.encode(warm, batch_size=args.batch_size))
    embedder.encode(warm, batch_size=args.batch_size)

    # Blocks in turns (theirs, ours, ours, theirs, ...) so both paths see the same load on a shared machine.
    dim = embedder.dimension
    theirs, ours = np.zeros((len(texts), dim), np.float32), np.zeros((len(texts), dim), np.float32)
    peer_s = our_s = 0.0
    report = progress_printer("embedded by both")
    for number, start in enumerate(range(0, len(texts), args.block)):
        block = texts[start:start + args.block]

        def run_peer() -> float:
            with timer() as elapsed:
                theirs[start:start + len(block)] = in_own_thread(lambda: peer.encode(
                    block, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                    show_progress_bar=False))
            return elapsed()

        def run_ours() -> float:
            with timer() as elapsed:
                ours[start:start + len(block)] = embedder.encode(block, batch_size=args.batch_size,
                                                                 progress=lambda done, total: None)
            return elapsed()

        if number % 2 == 0:
            peer_s += run_peer()
            our_s += run_ours()
        else:
            our_s += run_ours()
            peer_s += run_peer()
        report(start + len(block), len(texts))
    print(f"SentenceTransformer.encode: {peer_s:.1f} s; Embedder.encode: {our_s:.1f} s "
          f"(blocks of {args.block} in turns)")
    cosines = np.sum(theirs * ours, axis=1)
    print(f"same vectors: lowest cosine between the two outputs {cosines.min():.6f}")
    top = [set(np.argsort(-(theirs @ theirs[i]))[:10]) & set(np.argsort(-(ours @ ours[i]))[:10]) for i in range(200)]
    print(f"same neighbours: top-10 of 200 chunks among the others agree {np.mean([len(t) for t in top]) / 10:.3f}")
    ratio(f"embedding {len(texts):,} chunks", ("SentenceTransformer.encode, batch 32", len(texts) / peer_s),
          ("Embedder.encode, batch 32", len(texts) / our_s), "docs/s", 1.0)


if __name__ == "__main__":
    main()
