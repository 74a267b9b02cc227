"""Prompt sets: a file of one prompt a line (`#` starts a comment), or JSON Lines of {"prompt", "category"}.

The quality suite compares the target with the reference over the first `quality_prompts` of the set, so the
shipped set (harness/data/prompts.jsonl: 56 prompts of the project's own writing, in eight categories) takes
the categories in turn: any prefix spans them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT = Path(__file__).parent / "data" / "prompts.jsonl"


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str = ""


def load(path: str | Path = DEFAULT) -> list[Prompt]:
    """The prompts of PATH; ValueError naming the file, the line and the rule for anything else."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--prompts {str(path)!r}: cannot read it ({e})") from None
    jsonl = path.suffix == ".jsonl"
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or not jsonl and line.startswith("#"):
            continue
        if not jsonl:
            prompts.append(Prompt(line))
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"--prompts {path}:{number}: not JSON ({e.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) \
                or not isinstance(item.get("category", ""), str):
            raise ValueError(f"--prompts {path}:{number}: give {{\"prompt\": TEXT, \"category\": NAME}}, "
                             f"not {line[:60]!r}")
        prompts.append(Prompt(item["prompt"], item.get("category", "")))
    if not prompts:
        raise ValueError(f"--prompts {str(path)!r}: holds no prompt")
    return prompts
