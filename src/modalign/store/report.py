"""What an encode did: items encoded and skipped (by reason), shards reused and written, time taken."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# a token that names a file: a path, or a name with a short extension ("cat.png", "/a/b")
_FILE_TOKEN = re.compile(r"^\S*[/\\]\S*$|^\S+\.[A-Za-z0-9]{1,5}$")


def reason_category(reason: str) -> str:
    """'undecodable image cat.png: OSError: ...' -> 'undecodable image'; 'missing file: /a/b.png' -> 'missing file'.

    The text before the first ':' or ';', without file names, so that reasons count per cause.
    """
    head = re.split(r"[:;]", reason, maxsplit=1)[0]
    words = [w for w in head.split() if not _FILE_TOKEN.match(w)]
    return " ".join(words) or reason.strip()[:60] or "unknown"


def count_reasons(skipped: dict[str, str]) -> Counter[str]:
    return Counter(reason_category(r) for r in skipped.values())


@dataclass
class EncodeReport:
    n_items: int  # rows in the column
    n_encoded: int  # rows with a vector
    n_skipped: int  # rows skipped (missing, corrupt, undecodable ...)
    reasons: Counter[str] = field(default_factory=Counter)  # reason category -> count
    shards_reused: int = 0  # complete shards found on disk and kept
    shards_written: int = 0  # shards computed by this call
    items_copied: int = 0  # items of those shards copied from other entries (same encoder, equal content)
    seconds: float = 0.0  # wall time of this call

    def summary(self) -> str:
        """'encoded 12, skipped 3 (reasons: missing file: 2, undecodable image: 1)', most frequent first."""
        text = f"encoded {self.n_encoded}, skipped {self.n_skipped}"
        if self.reasons:
            text += f" (reasons: {', '.join(f'{r}: {n}' for r, n in sorted(self.reasons.items(), key=lambda x: (-x[1], x[0])))})"
        if self.items_copied:
            text += f"; {self.items_copied} copied from other store entries, not encoded again"
        return text
