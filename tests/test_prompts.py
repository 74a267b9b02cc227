"""Prompt sets: the files --prompts reads, the set shipped for the quality suite, and bad files refused by
line."""
from __future__ import annotations

import pytest

from harness import prompts
from runs import run_suites


def test_a_file_of_lines_or_of_json_lines(tmp_path):
    lines = tmp_path / "set.txt"
    lines.write_text("# a comment\na fox\n\na cat\n")
    assert prompts.load(lines) == [prompts.Prompt("a fox"), prompts.Prompt("a cat")]
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text('{"prompt": "a fox", "category": "animals"}\n{"prompt": "# not a comment"}\n')
    assert prompts.load(jsonl) == [prompts.Prompt("a fox", "animals"), prompts.Prompt("# not a comment")]


@pytest.mark.parametrize("name,text,error", [
    ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', r"bad.jsonl:2: not JSON"),
    ("bad.jsonl", '{"text": "a"}\n', r"bad.jsonl:1: give \{\"prompt\": TEXT"),
    ("bad.jsonl", '{"prompt": "a", "category": 3}\n', r"bad.jsonl:1: give"),
    ("empty.txt", "# only a comment\n\n", r"'.*empty.txt': holds no prompt"),
])
def test_a_bad_file_is_refused_naming_the_line(tmp_path, name, text, error):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=error):
        prompts.load(tmp_path / name)
    with pytest.raises(ValueError, match="cannot read it"):
        prompts.load(tmp_path / "missing.txt")


def test_the_shipped_set_spans_its_categories_in_any_prefix():
    shipped = prompts.load()
    categories = {p.category for p in shipped}
    assert len(shipped) >= 50 and len({p.text for p in shipped}) == len(shipped)
    assert categories >= {"objects", "counting", "spatial", "text", "people", "scenes", "styles"}
    assert {p.category for p in shipped[: len(categories)]} == categories


def test_run_tests_refuses_a_bad_prompt_file_before_any_test(tmp_path):
    (tmp_path / "bad.jsonl").write_text("not json\n")
    code, output, report = run_suites("--prompts", str(tmp_path / "bad.jsonl"), out=tmp_path / "out")
    assert code == 2 and "bad.jsonl:1: not JSON" in output and report is None
