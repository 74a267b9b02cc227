"""--shard i/N: the share of a run one of N machines runs (a CI matrix, a batch scheduler), so that the N shards
run every test of the run once between them and reports/merge.py puts their reports together.

Every shard collects the same tests in the same order (the same arguments), and keeps:
- the tests that range over the quality prompt set (they ask for the `prompt_share` fixture, directly or through
  another), in every shard, each over its share of the prompts: prompt j (from 0) goes to shard j % N + 1, so
  the expensive rendering is split and reports/merge.py merges their metrics;
- of the others, whole modules, round-robin in the run's order, so that a module's module-scoped fixtures (the
  oracle's renderer, the baseline target's process) start in one shard only; test by test where there are
  fewer modules than shards, so that no shard is left without tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
SHARED = "prompt_share"  # the fixture of the tests that run in every shard, over its share of the prompts


@dataclass(frozen=True)
class Shard:
    index: int  # from 1
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, _, count = text.partition("/")
        if not (index.isdecimal() and count.isdecimal() and 1 <= int(index) <= int(count)):
            raise ValueError(f"--shard {text!r}: give i/N, shard i of N with 1 <= i <= N (e.g. --shard 1/2)")
        return cls(int(index), int(count))

    def share(self, items: Sequence[T]) -> list[T]:
        """This shard's share of ITEMS: the j-th (from 0) goes to shard j % N + 1."""
        return list(items[self.index - 1::self.count])

    def select(self, items: list, shared: Callable[[object], bool]) -> list:
        """The tests of ITEMS (the run's, in its order) this shard runs; SHARED(item): it runs in every shard."""
        own = [item for item in items if not shared(item)]
        by_module = len({item.path for item in own}) >= self.count
        key = (lambda item: item.path) if by_module else (lambda item: item.nodeid)
        mine = set(self.share(list(dict.fromkeys(map(key, own)))))
        return [item for item in items if shared(item) or key(item) in mine]
