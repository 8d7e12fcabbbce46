"""Counting what a loader drops (empty captions, rows without an image ...) and saying so once.

Loaders drop structurally broken rows themselves; undecodable files are left to the store. Each loader
counts its drops per reason with a `SkipCounter`, logs one warning with the counts, and attaches the
counts to the data set it returns (`skipped_of(dataset)` reads them back):

    skips = SkipCounter("rows")
    skips.add("empty caption", "row 7")
    skips.log(logger, "pairs.csv")      # WARNING pairs.csv: dropped 1 of rows: empty caption: 1 (e.g. row 7)
    attach_skips(dataset, skips)
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

SKIPS_ATTR = "skipped"  # attribute of a loaded data set holding {reason: count}


class SkipCounter:
    """Counts dropped things per reason and keeps the first example of each reason."""

    def __init__(self, what: str = "items"):
        self.what = what  # what is being dropped, for the log line: "rows", "stamps", "images"
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, reason: str, example: str | None = None) -> None:
        self.counts[reason] += 1
        if example is not None and reason not in self.examples:
            self.examples[reason] = example

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def summary(self) -> str:
        """'empty caption: 2 (e.g. row 5); svg only: 163 (e.g. food/x.svg)'; most frequent first."""
        parts = []
        for reason, n in self.counts.most_common():
            ex = self.examples.get(reason)
            parts.append(f"{reason}: {n}" + (f" (e.g. {ex})" if ex else ""))
        return "; ".join(parts)

    def log(self, logger: logging.Logger, source: str, level: int = logging.WARNING) -> None:
        """One log line for all drops of `source`; nothing when nothing was dropped."""
        if self.total:
            logger.log(level, "%s: dropped %d %s: %s", source, self.total, self.what, self.summary())


def attach_skips(dataset: Any, skips: SkipCounter | dict[str, int]) -> None:
    """Records the per-reason drop counts on a loaded data set (read them with `skipped_of`)."""
    counts = skips.as_dict() if isinstance(skips, SkipCounter) else dict(skips)
    setattr(dataset, SKIPS_ATTR, counts)


def skipped_of(dataset: Any) -> dict[str, int]:
    """{reason: count} of what the loader dropped; {} for data sets built by hand or derived by subset."""
    return dict(getattr(dataset, SKIPS_ATTR, None) or {})
