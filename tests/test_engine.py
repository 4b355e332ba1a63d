"""The generation engine: batched decoding that matches plain generate, joins mid-flight, and stops."""

import threading

import torch
from gates import gate_requests, held, open_all

from models import engine as engine_module
from models.engine import SamplingParams
from waiting import wait_for


def reference(lm, prompt, n):
    out = lm.model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id)
    return [t for t in out[0, len(prompt):].tolist()]


def prompts(lm):
    texts = ["Hello there", "The quick brown fox jumps over", "A", "One two three four five six seven"]
    return [lm.tokenizer(t)["input_ids"] for t in texts]


def test_greedy_batched_decoding_matches_generate(ctx, tiny_gpt2_dir):
    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    ids = prompts(lm)
    with held(lm.engine):  # the four requests enter together
        requests = [lm.generate(p, SamplingParams(12, temperature=0)) for p in ids]
        passes = lm.engine.forward_passes
    results = [list(r.token_ids()) for r in requests]
    assert results == [reference(lm, p, 12) for p in ids]
    # Decoded as one batch: one prefill per group of similar prompt lengths, then one pass per step for all four
    # rows (fewer with drafts), not four rows' worth of passes.
    assert lm.engine.forward_passes - passes <= len(_similar_lengths_of(ids)) + 12 - 1


def test_requests_join_a_running_batch(ctx, tiny_chat_dir):
    lm = ctx.hub.lm(str(tiny_chat_dir))
    long_prompt, *others = prompts(lm)
    first = lm.generate(long_prompt, SamplingParams(40, temperature=0))
    tokens = first.token_ids()
    head = [next(tokens) for _ in range(5)]  # the first request is mid-flight when the others join
    joined = [lm.generate(p, SamplingParams(10, temperature=0)) for p in others]
    rest = list(tokens)
    eos = lm.engine.eos_ids
    expected = [t for t in reference(lm, long_prompt, 40)]
    got = head + rest
    assert got == expected[:len(got)] and (len(got) == 40 or expected[len(got)] in eos)
    for request, prompt in zip(joined, others):
        got = list(request.token_ids())
        assert got == reference(lm, prompt, 10)[:len(got)]


def test_stop_ends_a_request_and_the_engine_keeps_serving(ctx, tiny_gpt2_dir, monkeypatch):
    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    made = gate_requests(monkeypatch, armed=True)  # the engine waits in the hand-over of each token till opened
    request = lm.generate(prompts(lm)[0], SamplingParams(100, temperature=1.0, seed=1))
    tokens = request.token_ids()
    next(tokens)
    tokens.close()  # what a closed browser tab or the Stop button does
    passes = lm.engine.forward_passes
    open_all(made)
    wait_for(lambda: not lm.engine.busy, 60, "the engine to let the stopped row go")
    # The row left the batch at the end of the step it was stopped in: no further pass, one token of its 100,
    # and its reader was told it ended.
    assert lm.engine.forward_passes == passes and request.tokens.tokens == 1
    assert request.tokens.get_nowait() is engine_module._END and request.tokens.empty()
    monkeypatch.undo()
    after = list(lm.generate(prompts(lm)[1], SamplingParams(5, temperature=0)).token_ids())
    assert len(after) == 5


def test_seeded_sampling_is_reproducible(ctx, tiny_gpt2_dir):
    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    params = SamplingParams(8, temperature=1.0, top_p=0.9, seed=7)
    runs = [list(lm.generate(prompts(lm)[0], params).token_ids()) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 8


def test_a_row_whose_sampling_fails_fails_alone(ctx, tiny_gpt2_dir):
    import pytest

    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    prompt = prompts(lm)[1]
    broken = lm.generate(prompt, SamplingParams(12, temperature=float("nan")))  # no valid probabilities
    greedy = lm.generate(prompt, SamplingParams(12, temperature=0))
    with pytest.raises(RuntimeError, match="sampling failed"):
        list(broken.token_ids())
    assert list(greedy.token_ids()) == reference(lm, prompt, 12)


def test_one_callers_flood_does_not_delay_anothers_first_token(ctx, tiny_gpt2_dir):
    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    flood = [lm.generate(prompts(lm)[0], SamplingParams(40, temperature=1.0, seed=i), caller=-1)
             for i in range(200)]
    produced = []  # tokens the flood produced, counted by a reader per request
    readers = [threading.Thread(target=lambda r=r: [produced.append(t) for t in r.token_ids()]) for r in flood]
    [t.start() for t in readers]
    wait_for(lambda: len(produced) >= 50, 120, "the flood to generate")
    before = len(produced)
    first = next(lm.generate(prompts(lm)[1], SamplingParams(3, temperature=0), caller=-2).token_ids())
    waited_rows = len(produced) - before
    for request in flood:
        request.stop.set()
    [t.join(timeout=60) for t in readers]
    assert isinstance(first, int)
    # The flood holds at most half the rows (8), so the newcomer joins at the next step: a few steps of the
    # flood's rows at most, not the 200 x 40 tokens queued before it.
    assert waited_rows <= 8 * 4, waited_rows


def test_prompts_of_very_different_lengths_are_prefilled_apart():
    groups = [[len(p) for p in group] for group in _similar_lengths_of([[0] * n for n in (190, 40, 45, 50, 3, 60)])]
    assert groups == [[3], [40, 45, 50, 60], [190]]  # padding 40 to 190 would cost 190's work four more times


def test_long_and_short_prompts_admitted_together_keep_their_answers(ctx, tiny_gpt2_dir):
    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    lm.engine.speculate = False  # one pass per step, so the passes count the prefill batches
    texts = ["Hi", "Hello there", " ".join(["a long prompt"] * 30), "One two three"]
    ids = [lm.tokenizer(t)["input_ids"] for t in texts]
    with held(lm.engine):  # all four requests queue up and are admitted at once
        requests = [lm.generate(p, SamplingParams(8, temperature=0)) for p in ids]
        passes = lm.engine.forward_passes
    answers = [list(r.token_ids()) for r in requests]
    assert answers == [reference(lm, p, 8) for p in ids]
    batches = _similar_lengths_of(ids)
    assert [len(group) for group in batches] == [1, 2, 1]  # "Hi"; "Hello there", "One two three"; the long one
    assert lm.engine.forward_passes - passes == len(batches) + max(map(len, answers)) - 1


def _similar_lengths_of(ids):
    from types import SimpleNamespace

    from models.engine import _similar_lengths

    groups = _similar_lengths([SimpleNamespace(request=SimpleNamespace(prompt_ids=p)) for p in ids])
    return [[r.request.prompt_ids for r in group] for group in groups]
