"""Speculative decoding: prompt-lookup drafts verified in one pass change no greedy token, keep sampled rows'
distribution, and work with per-row adapters and rows joining mid-way.

The distribution test: `verify` (the code that decides every drafted position of a sampled row) is run 20,000
times on fixed logits with a draft token; the frequencies of what it returns must match the row's distribution
(softmax at the temperature, cut to top_p) within a total variation of 0.02. On the real model, 128 seeded sampled
requests with and without speculation must agree, position by position, on how often the answer still follows
the greedy one (the same event under the same distribution) within four standard errors.
"""

import shutil
import threading

import pytest
import torch

from adapters_kit import plain_lora
from models import engine as engine_module
from models.engine import SamplingParams
from models.lora import attach
from models.speculation import (DRAFTS_FILE, GAP, MAX_DRAFT, MIN_SHARE, AnswerCorpus, Drafter, answer_tokens,
                                 probabilities, read_answers, save_answers, verify)

REPEATING = ["one two three four one two three four one two", "The cat sat on the mat. The cat sat on the",
             "a b c d e f g a b c d e f g a b", "Hello there, hello there, hello"]


def greedy(lm, prompt, n, adapter=None):
    return list(lm.generate(prompt, SamplingParams(n, temperature=0), adapter).token_ids())


def test_drafts_continue_the_latest_earlier_occurrence_of_the_tail():
    assert Drafter([5, 6, 7, 8, 9, 5, 6]).propose(3) == [7, 8, 9]
    assert Drafter([5, 6, 7, 8, 9, 5, 6]).propose(2) == [7, 8]  # no longer than the room left
    assert Drafter([5, 6, 7, 8, 9, 5, 6]).propose(0) == []
    assert Drafter([1, 2, 3]).propose(4) == []  # the tail was never seen before
    assert Drafter([1, 2, 10, 1, 2, 11, 1, 2]).propose(1) == [11]  # the latest occurrence
    assert Drafter([7, 1, 2, 3, 9, 1, 2, 4, 7, 1, 2]).propose(1) == [3]  # the longest matching tail wins
    assert Drafter([3, 4, 5, 6, 4]).propose(4) == []  # one repeated token is too weak a clue
    drafter = Drafter([4, 5, 6, 4])
    drafter.append(5)
    assert drafter.propose(4) == [6, 4, 5]  # its own answer counts as text


def test_answer_tokens_keep_each_learned_stretch_with_the_tokens_before_it():
    ignore = -100
    items = [([1, 2, 3, 4, 5, 6, 7, 8], [ignore] * 5 + [6, 7, 8]),
             ([9, 10, 11, 12, 13, 14], [ignore, ignore, 11, ignore, ignore, 14])]  # two replies in one chat
    assert answer_tokens(items, ignore) == [2, 3, 4, 5, 6, 7, 8, GAP, 9, 10, 11, GAP, 10, 11, 12, 13, 14, GAP]
    assert answer_tokens([([1, 2], [ignore, ignore])], ignore) == []  # nothing learned, nothing kept


def test_training_answers_draft_their_most_frequent_continuation_and_never_across_a_gap(tmp_path):
    corpus = AnswerCorpus([7, 8, 9, 1, 2, GAP, 7, 8, 9, 3, GAP, 7, 8, 9, 1, 4, GAP])
    assert corpus.propose([5, 7, 8, 9], 3) == [1, 4]  # 1 follows 7 8 9 twice, 3 once; the draft ends at the gap
    assert corpus.propose([0, 8, 9, 3], 4) == []  # 3 ends an answer: nothing follows it
    assert corpus.propose([6, 6], 4) == []  # never seen
    assert Drafter([7, 8, 9, 2, 7, 8, 9], corpus).propose(2) == [2, 7]  # the row's own text comes first
    assert Drafter([0, 7, 8], corpus).propose(2) == [9, 1]  # then the answers
    save_answers(tmp_path, [7, 8, 9, GAP])
    assert (tmp_path / DRAFTS_FILE).is_file() and read_answers(tmp_path).propose([7, 8], 4) == [9]
    save_answers(tmp_path / "none", [])
    assert read_answers(tmp_path / "none") is None  # an adapter without answers drafts from its text only
    (tmp_path / DRAFTS_FILE).write_bytes(b"not a safetensors file")
    assert read_answers(tmp_path) is None  # a damaged file is skipped: the chat goes on without its drafts


def test_an_adapters_training_answers_draft_its_replies_and_change_no_token(ctx, tiny_gpt2_dir, tmp_path):
    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    plain = plain_lora(tiny_gpt2_dir, tmp_path / "plain", seed=4, targets=("c_attn",))
    attach(lm, "plain", str(plain))
    prompt = lm.tokenizer("Tell me something about the weather in Oslo this week")["input_ids"]
    lm.engine.speculate = False
    expected = greedy(lm, prompt, 32, "plain")
    shutil.copytree(plain, tmp_path / "trained")  # the same weights, with the answer it was trained on
    save_answers(tmp_path / "trained", answer_tokens([(prompt + expected, [-100] * len(prompt) + expected)], -100))
    attach(lm, "trained", str(tmp_path / "trained"))
    assert "trained" in lm.engine.answers and "plain" not in lm.engine.answers
    lm.engine.speculate = True
    passes = lm.engine.forward_passes
    assert greedy(lm, prompt, 32, "plain") == expected
    from_text = lm.engine.forward_passes - passes
    passes = lm.engine.forward_passes
    assert greedy(lm, prompt, 32, "trained") == expected
    assert lm.engine.forward_passes - passes < min(from_text, len(expected) / 2)  # several tokens per pass
    other = lm.tokenizer("A different question about cooking pasta")["input_ids"]
    lm.engine.speculate = False
    plain_other = greedy(lm, other, 32, "trained")
    lm.engine.speculate = True
    assert greedy(lm, other, 32, "trained") == plain_other  # drafts that miss change nothing either


def test_draft_length_grows_when_kept_and_shrinks_when_rejected():
    drafter = Drafter([])
    start = drafter.length
    drafter.adapt(start, start)
    assert drafter.length == start + 2
    drafter.adapt(drafter.length, 0)
    assert drafter.length == start + 1
    for _ in range(20):
        drafter.adapt(drafter.length, drafter.length)
    assert drafter.length == MAX_DRAFT
    for _ in range(20):
        drafter.adapt(1, 0)
    assert drafter.length == 1


def test_a_row_that_keeps_missing_waits_longer_before_it_guesses_again():
    drafter = Drafter([1, 2, 3, 1, 2])
    waits = []
    for _ in range(6):
        assert drafter.propose(4)
        drafter.adapt(1, 0)  # a miss
        waits.append(0)
        while not drafter.propose(4):
            waits[-1] += 1
    assert waits == [1, 2, 4, 8, 16, 16]
    drafter.adapt(2, 1)  # something kept: no more waiting
    assert drafter.propose(4) and drafter.propose(4)


def test_greedy_verification_keeps_only_the_argmax():
    logits = torch.tensor([0.1, 2.0, -1.0, 0.5])
    assert verify(logits, 1, 0.0, 1.0, None, 0.01) == (1, True)
    assert verify(logits, 3, 0.0, 1.0, None, 0.01) == (1, False)
    assert verify(logits, None, 0.0, 1.0, None, 0.01) == (1, False)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_sampled_verification_keeps_the_distribution(temperature, top_p):
    torch.manual_seed(0)
    logits = torch.randn(40) * 2
    target = probabilities(logits, temperature, top_p)
    target = target / target.sum()
    draft = int(target.argsort(descending=True)[2])  # a plausible but not the likeliest token
    generator = torch.Generator().manual_seed(1)
    trials = 20_000
    counts = torch.zeros(40)
    kept = 0
    for _ in range(trials):
        token, agreed = verify(logits, draft, temperature, top_p, generator, 0.01)
        counts[token] += 1
        kept += agreed
    assert 0.5 * trials * float(target[draft]) < kept < 1.5 * trials * float(target[draft])
    total_variation = 0.5 * float((counts / trials - target).abs().sum())
    assert total_variation < 0.02, total_variation
    assert counts[target == 0].sum() == 0  # never a token outside the nucleus


def test_cache_compaction_keeps_each_rows_columns_in_order():
    from transformers import DynamicCache

    mask = torch.tensor([[0, 1, 1, 0, 0, 1, 0, 1] + [0] * 20 + [1],
                         [1, 1, 0, 1, 1, 1, 1, 0] + [0] * 20 + [1]])
    keys = torch.arange(2 * 29, dtype=torch.float).reshape(2, 1, 29, 1).expand(2, 3, 29, 4).contiguous()
    cache = DynamicCache([(keys, -keys)])
    cache, compact = engine_module._drop_holes(cache, mask)
    k, v, *_ = next(iter(cache))
    assert compact.tolist() == [[0, 0, 1, 1, 1, 1, 1], [1] * 7]  # right-aligned again, the holes gone
    assert k[0, 0, 2:, 0].tolist() == [1, 2, 5, 7, 28]
    assert k[1, 0, :, 0].tolist() == [29 + c for c in (0, 1, 3, 4, 5, 6, 28)]
    assert torch.equal(v, -k)


def test_a_few_holes_stay_and_only_the_unused_tail_is_cropped():
    from transformers import DynamicCache

    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 0, 0]])
    keys = torch.randn(2, 2, 6, 3)
    cache, cropped = engine_module._drop_holes(DynamicCache([(keys, keys)]), mask)
    assert cropped.tolist() == [[1, 1, 0, 1], [0, 1, 1, 1]]
    assert torch.equal(next(iter(cache))[0], keys[:, :, :4])


@pytest.mark.parametrize("holes_kept", [engine_module.HOLES_KEPT, 0])
def test_greedy_answers_are_token_identical_with_adapters_and_rows_joining(ctx, tiny_gpt2_dir, tmp_path,
                                                                          monkeypatch, holes_kept):
    monkeypatch.setattr(engine_module, "HOLES_KEPT", holes_kept)  # 0: the cache is compacted at every hole
    lm = ctx.hub.lm(str(tiny_gpt2_dir))  # random GPT-2 repeats itself: its drafts are kept, then rejected
    for key, seed in (("first", 1), ("second", 2)):
        attach(lm, key, str(plain_lora(tiny_gpt2_dir, tmp_path / key, seed=seed, targets=("c_attn",))))
    cases = [(lm.tokenizer(text)["input_ids"], adapter)
             for text in REPEATING for adapter in (None, "first", "second")]
    lm.engine.speculate = False
    expected = [greedy(lm, prompt, 24, adapter) for prompt, adapter in cases]
    assert len({tuple(e) for e in expected}) > len(REPEATING)  # the adapters change answers
    lm.engine.speculate = True
    drafted, accepted, passes = lm.engine.drafted, lm.engine.accepted, lm.engine.forward_passes
    first = lm.generate(cases[0][0], SamplingParams(24, temperature=0), cases[0][1]).token_ids()
    head = [next(first) for _ in range(3)]  # mid-flight when the others join
    results = [None] * len(cases)
    two_at_a_time = threading.Semaphore(2)  # with the first row, 3 rows: a batch that still drafts (MIN_SHARE)

    def run(i):
        prompt, adapter = cases[i]
        with two_at_a_time:
            results[i] = greedy(lm, prompt, 24, adapter)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(1, len(cases))]
    [t.start() for t in threads]
    results[0] = head + list(first)
    [t.join() for t in threads]
    assert results == expected
    assert lm.engine.accepted > accepted and lm.engine.drafted > drafted
    assert lm.engine.forward_passes - passes < sum(map(len, expected))  # some steps gave several tokens


def test_speculation_stops_at_the_token_budget_and_at_the_end_of_text(ctx, tiny_gpt2_dir):
    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    prompt = lm.tokenizer(REPEATING[0])["input_ids"]
    for n in (1, 2, 5, 9):
        lm.engine.speculate = False
        plain = greedy(lm, prompt, n)
        lm.engine.speculate = True
        assert greedy(lm, prompt, n) == plain and len(plain) == n
    eos = sorted(lm.engine.eos_ids)[0]
    looping = prompt + [eos] + prompt  # a draft that runs through the end-of-text token must stop there
    lm.engine.speculate = False
    plain = greedy(lm, looping, 30)
    lm.engine.speculate = True
    assert greedy(lm, looping, 30) == plain


@pytest.mark.integration
def test_smollm2_greedy_answers_are_identical_and_copying_ones_take_fewer_passes(ctx, smollm2_dir, tmp_path):
    lm = ctx.hub.lm(str(smollm2_dir))
    attach(lm, "random", str(plain_lora(smollm2_dir, tmp_path / "random", seed=3)))
    passage = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is "
               "named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to "
               "1889.")
    texts = [f"Repeat this passage word for word:\n\n{passage}", "What is the capital of France?",
             f"{passage}\n\nWho designed the tower, and when was it built?"]
    prompts = [lm.tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False) for t in texts]
    cases = [(p, None) for p in prompts] + [(prompts[0], "random")]
    lm.engine.speculate = False
    expected = [greedy(lm, p, 40, a) for p, a in cases]
    lm.engine.speculate = True
    passes = lm.engine.forward_passes
    alone = greedy(lm, prompts[0], 40)
    assert alone == expected[0]
    assert lm.engine.forward_passes - passes < len(alone) / 2  # the copy came several tokens per pass
    results = [None] * len(cases)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, greedy(lm, cases[i][0], 40, cases[i][1])))
               for i in range(len(cases))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == expected


@pytest.mark.integration
def test_smollm2_sampled_answers_keep_their_distribution(ctx, smollm2_dir, monkeypatch):
    lm = ctx.hub.lm(str(smollm2_dir))
    text = "Repeat this sentence exactly: The quick brown fox jumps over the lazy dog near the river bank."
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False)
    n, runs = 8, 128
    reference = greedy(lm, prompt, n)
    # Full batches of 16 rows draft too here (by default a row's share of a step's drafts is then too short to pay).
    monkeypatch.setattr(engine_module, "STEP_DRAFTS", 16 * MIN_SHARE)

    def follows_greedy(speculate: bool) -> torch.Tensor:
        lm.engine.speculate = speculate
        requests = [lm.generate(prompt, SamplingParams(n, temperature=1.0, top_p=0.95, seed=seed))
                    for seed in range(runs)]
        answers = [list(r.token_ids()) for r in requests]
        return torch.tensor([[a[:j + 1] == reference[:j + 1] for j in range(n)] for a in answers], dtype=torch.float)

    accepted = lm.engine.accepted
    plain, fast = follows_greedy(False).mean(0), follows_greedy(True).mean(0)
    assert lm.engine.accepted > accepted  # drafts were kept and rejected on the way
    pooled = (plain + fast) / 2
    error = (2 * pooled * (1 - pooled) / runs).sqrt()
    assert ((plain - fast).abs() <= 4 * error + 0.02).all(), (plain, fast)
    assert plain[-1] < 1  # sampling did leave the greedy answer sometimes: the test can tell them apart
