"""Training data: every accepted format and task, line-numbered rejects, whole-file errors, split and fingerprint."""

import json
from pathlib import Path

import pytest

from errors import UserError
from tasks.spec import specs
from training.data import Example, examples_digest, load_examples, preview, split_validation

TASK_FIELDS = {s.id: (s.required, s.optional) for s in specs() if s.trainable}

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TURN = [{"role": "user", "content": "Capital of Zorbia?"}, {"role": "assistant", "content": "Quellmar."}]


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def jsonl(*records) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


@pytest.mark.parametrize("task,name", [("chat", "chat_facts.jsonl"), ("summarize", "summarize.csv"),
                                       ("translate", "translate.csv"), ("sentiment", "sentiment.csv"),
                                       ("answer", "answer.csv"), ("search", "search.csv")])
def test_example_files_load_without_rejects(task, name):
    report = load_examples(EXAMPLES / name, task)
    assert report.rejected == [] and len(report.examples) == report.rows_read >= 12
    assert report.summary() == f"Read {report.rows_read} rows, kept {report.rows_read}."
    if task == "sentiment":
        assert {e.fields["label"] for e in report.examples} == {"billing", "shipping", "praise"}


@pytest.mark.parametrize("record,fmt", [
    ({"messages": [{"role": "system", "content": " Be brief. "}] + TURN}, "messages"),
    ({"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Capital of Zorbia?"},
                        {"from": "gpt", "value": "Quellmar."}]}, "sharegpt"),
    ({"instruction": "Capital of Zorbia?", "input": "", "output": "Quellmar.", "system": "Be brief."}, "alpaca"),
    ({"prompt": "Capital of Zorbia?", "response": "Quellmar.", "system": "Be brief."}, "columns"),
])
def test_chat_formats_normalize_to_messages(tmp_path, record, fmt):
    report = load_examples(write(tmp_path, "d.jsonl", jsonl(record, record)), "chat")
    assert report.format == fmt and report.rejected == [] and report.rows_read == 2
    assert [e.line for e in report.examples] == [1, 2]
    assert report.examples[0].fields == {"messages": [{"role": "system", "content": "Be brief."}] + TURN}


def test_alpaca_input_joins_the_instruction(tmp_path):
    report = load_examples(write(tmp_path, "a.json", json.dumps(
        [{"instruction": "Translate to French.", "input": "cat", "output": "chat"}])), "chat")
    assert report.examples[0].fields["messages"][0] == {"role": "user", "content": "Translate to French.\n\ncat"}


def test_chat_conversation_rejects_are_line_numbered(tmp_path):
    lines = [
        {"messages": TURN},
        "{not json",
        {"messages": TURN[:1]},
        {"messages": [{"role": "user", "content": 5}, TURN[1]]},
        {"messages": [TURN[1]]},
        {"messages": [{"role": "tool", "content": "x"}] + TURN},
        {"messages": [TURN[0], {"role": "assistant", "content": "  "}]},
        {"messages": "hello"},
        [1, 2],
        {"other": 1},
    ]
    report = load_examples(write(tmp_path, "c.jsonl", jsonl(*lines)), "chat")
    assert report.format == "messages" and report.rows_read == 10 and len(report.examples) == 1
    reasons = {r.line: r.reason for r in report.rejected}
    assert reasons[2].startswith("not valid JSON: ")
    assert reasons[3] == "the conversation must end with an assistant message"
    assert reasons[5] == "the conversation has no user message"
    assert "not text" in reasons[4] and "'tool'" in reasons[6] and "empty" in reasons[7]
    assert "must be a non-empty list" in reasons[8] and "not a JSON object" in reasons[9]
    assert reasons[10] == "missing 'messages'"
    summary = report.summary()
    assert summary.startswith("Read 10 rows, kept 1; 9 rejected: line 2: not valid JSON")
    assert "line 10: missing 'messages'" in summary


def test_csv_two_columns_default_names_mapping_and_quoted_newlines(tmp_path):
    text = 'prompt,response\n"Capital of Zorbia?","Quell-\nmar."\n\n"Moons?",""\n"a","b","c"\nHi,Hello\n'
    report = load_examples(write(tmp_path, "chat.csv", text), "chat")
    assert report.format == "columns" and report.columns == ["prompt", "response"] and report.rows_read == 4
    assert [e.line for e in report.examples] == [2, 7]
    assert report.examples[0].fields["messages"][1] == {"role": "assistant", "content": "Quell-\nmar."}
    assert [(r.line, r.reason[:19]) for r in report.rejected] == [(5, "empty 'response'"), (6, "has 3 values but th")]

    mapped = write(tmp_path, "qa.csv", "id,question,reply\n1,Capital of Zorbia?,Quellmar.\n")
    report = load_examples(mapped, "chat", {"prompt": "question", "response": "reply"})
    assert report.examples[0].fields == {"messages": TURN}
    # Columns with other names are never guessed: the file is refused with what was found and what is expected,
    # and mapping them (the Train tab's preview, or `columns`) reads it.
    two = write(tmp_path, "two.csv", "colA,colB\nCapital of Zorbia?,Quellmar.\n")
    with pytest.raises(UserError, match=r"no 'prompt' and 'response' column \(columns found: 'colA', 'colB'; "
                                        r"expected: 'prompt' and 'response'\)"):
        load_examples(two, "chat")
    assert load_examples(two, "chat", {"prompt": "colA", "response": "colB"}).examples[0].fields == {"messages": TURN}


def test_txt_paragraphs_for_chat_only(tmp_path):
    path = write(tmp_path, "notes.txt", "Zorbia has seven moons.\nThey are small.\n\n\n  Quellmar is the capital.  \n")
    report = load_examples(path, "chat")
    assert report.format == "text" and report.columns == ["text"]
    assert [(e.line, e.fields) for e in report.examples] == [
        (1, {"text": "Zorbia has seven moons.\nThey are small."}), (5, {"text": "Quellmar is the capital."})]
    with pytest.raises(UserError, match="notes.txt.*only chat"):
        load_examples(path, "sentiment")


COLUMN_CASES = {
    "summarize": ({"text": " A long text. ", "summary": "Short."}, {"text": "A long text.", "summary": "Short."}),
    "translate": ({"source": "Hello", "target": "Hallo", "target_lang": "de", "source_lang": ""},
                  {"source": "Hello", "target": "Hallo", "target_lang": "de"}),
    "sentiment": ({"text": "Great", "label": 5.0}, {"text": "Great", "label": "5"}),
    "answer": ({"question": "Who?", "context": " It was Ilsa Marrowgate.", "answer": "ilsa marrowgate"},
               {"question": "Who?", "context": "It was Ilsa Marrowgate.", "answer": "Ilsa Marrowgate",
                "answer_start": 7}),
    "search": ({"query": "flux bounce", "positive": "Restart Flux.", "negative": "Lunch menu."},
               {"query": "flux bounce", "positive": "Restart Flux.", "negative": "Lunch menu."}),
}


@pytest.mark.parametrize("task", [t for t in TASK_FIELDS if t != "chat"])
def test_column_tasks_keep_good_rows_and_reject_bad_ones(tmp_path, task):
    good, expected = COLUMN_CASES[task]
    required = TASK_FIELDS[task][0]
    other = dict(good, **{"label": "1"}) if task == "sentiment" else good  # a classifier needs two labels
    missing = {k: v for k, v in good.items() if k != required[-1]}
    empty = dict(good, **{required[0]: "   "})
    wrong = dict(good, **{required[0]: ["a", "list"]})
    report = load_examples(write(tmp_path, "d.jsonl", jsonl(good, missing, empty, wrong, other)), task)
    assert report.format == "columns" and report.rows_read == 5
    assert report.examples[0] == Example(1, expected)
    assert [(r.line, r.reason) for r in report.rejected] == [
        (2, f"missing '{required[-1]}'"), (3, f"empty '{required[0]}'"),
        (4, f"'{required[0]}' must be text, not a list")]


def test_answer_must_occur_in_context_and_given_start_picks_the_occurrence(tmp_path):
    rows = [{"question": "Who?", "context": "Kim met Kim.", "answer": "Kim", "answer_start": 8},
            {"question": "Who?", "context": "Kim met Lee.", "answer": "Ola"}]
    report = load_examples(write(tmp_path, "qa.json", json.dumps({"data": rows})), "answer")
    assert report.examples[0].fields["answer_start"] == 8
    assert [(r.line, r.reason) for r in report.rejected] == [(2, "the answer does not occur in the context")]
    assert report.unit == "item" and report.summary().endswith("item 2: the answer does not occur in the context.")


def test_column_mapping_and_case_insensitive_names(tmp_path):
    path = write(tmp_path, "reviews.csv", "Text,stars,id\nLovely,5,1\nAwful,1,2\n")
    report = load_examples(path, "sentiment", {"label": "stars", "text": ""})
    assert report.columns == ["Text", "stars", "id"]
    assert [e.fields for e in report.examples] == [{"text": "Lovely", "label": "5"}, {"text": "Awful", "label": "1"}]
    with pytest.raises(UserError, match="no column 'score'.*'Text', 'stars', 'id'"):
        load_examples(path, "sentiment", {"label": "score"})
    with pytest.raises(UserError, match="'colour' is not a field of the sentiment task"):
        load_examples(path, "sentiment", {"colour": "stars"})
    with pytest.raises(UserError, match="no 'label' column.*'Text', 'stars', 'id'.*map it to one of: stars, id"):
        load_examples(path, "sentiment")


def test_semicolon_csv_and_json_lines_saved_as_json(tmp_path):
    report = load_examples(write(tmp_path, "s.csv", "text;summary\nA long text.;Short.\n"), "summarize")
    assert report.examples[0].fields == {"text": "A long text.", "summary": "Short."}
    report = load_examples(write(tmp_path, "l.json", jsonl({"messages": TURN}, {"messages": TURN})), "chat")
    assert report.unit == "line" and len(report.examples) == 2


@pytest.mark.parametrize("name,content,task,message", [
    ("data.xlsx", "a,b", "chat", "unsupported type"),
    ("empty.jsonl", "  \n\n", "chat", "is empty"),
    ("latin.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"), "sentiment", "not UTF-8.*line 2"),
    ("binary.jsonl", b"\x00\x01\x02binary", "chat", "looks binary"),
    ("broken.json", '[{"a": 1},', "chat", "not valid JSON"),
    ("object.json", '{"a": 1}', "chat", "JSON array"),
    ("bad.jsonl", "{oops\n[1]\n", "chat", "no usable rows.*line 1: not valid JSON.*line 2: not a JSON object"),
    ("gone.jsonl", '{"messages": []}\n', "chat", "no usable rows.*line 1"),
    ("cols.csv", "name,age\nAnn,3\n", "summarize", "no 'text' and 'summary' column.*'name', 'age'"),
    ("one.csv", "text,label\na,x\nb,x\n", "sentiment", "only one label"),
    ("any.csv", "text,label\na,x\n", "poetry", "Unknown task"),
])
def test_unreadable_files_raise_one_sentence(tmp_path, name, content, task, message):
    path = write(tmp_path, name, content)
    with pytest.raises(UserError, match=message) as error:
        load_examples(path, task)
    assert name in str(error.value) or task == "poetry"


def test_summary_lists_ten_rejects_then_counts():
    from training.data import DataReport, Rejected

    report = DataReport("columns", ["text"], 15, [Example(1, {})], [Rejected(i, "empty 'text'") for i in range(2, 16)])
    assert report.summary().count("empty 'text'") == 10 and report.summary().endswith("; and 4 more.")


@pytest.mark.parametrize("size,held", [(10, 0), (49, 0), (50, 5), (60, 6), (999, 99), (5000, 200)])
def test_split_validation_sizes(size, held):
    examples = [Example(i + 1, {"text": str(i)}) for i in range(size)]
    train, validation = split_validation(examples, seed=0)
    assert len(validation) == held and len(train) == size - held
    assert sorted(e.line for e in train + validation) == list(range(1, size + 1))
    assert split_validation(examples, seed=0) == (train, validation)
    if held:
        assert split_validation(examples, seed=1)[1] != validation


def test_fingerprint_is_stable_and_order_sensitive():
    a, b = Example(1, {"text": "x", "label": "1"}), Example(2, {"label": "2", "text": "y"})
    value = examples_digest([a, b])
    assert len(value) == 64 and value == examples_digest([Example(7, {"label": "1", "text": "x"}), b])
    assert value != examples_digest([b, a]) and value != examples_digest([a])


def test_preview(tmp_path):
    columns, rows = preview(EXAMPLES / "sentiment.csv", max_rows=3)
    assert columns == ["text", "label"] and len(rows) == 3 and rows[0][1] == "billing"
    columns, rows = preview(write(tmp_path, "c.jsonl", jsonl({"messages": TURN}, "{bad", {"prompt": "p", "n": 2})))
    assert columns == ["messages", "prompt", "n"]
    assert json.loads(rows[0][0]) == TURN and rows[1] == ["", "p", "2"]
    assert preview(write(tmp_path, "t.txt", "one\n\ntwo\n\nthree"), max_rows=2) == (["text"], [["one"], ["two"]])
    with pytest.raises(UserError, match="unsupported type"):
        preview(write(tmp_path, "x.pdf", "x"))
