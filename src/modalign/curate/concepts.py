"""Concept lists for curation: class names of a labelled set, a text file, or nouns mined from captions.

Mining needs no NLP model: captions are lower-cased and split into words; stop words (articles, pronouns,
prepositions, common verbs) and modifiers (colours, sizes, moods) never stand alone as a concept; plurals
fold into a singular seen elsewhere ("flowers" -> "flower"). What is counted, once per caption:
  * single words that are neither stop words nor modifiers       "car", "penguin"
  * two adjacent kept words whose second is not a modifier        "sports car", "fire truck"
Concepts seen in at least `min_count` captions are ranked by count (phrases first on ties); a word that
only ever occurs inside one kept phrase ("solar" of "solar system") is left out.

    mine_concepts(captions, top=30)              # [("flower", 14), ("car", 9), ...]
    concepts_from_file("concepts.txt")           # one concept per line, '#' comments
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from modalign.errors import ConfigError

# function words and caption boilerplate: never part of a concept
_STOPWORDS = """
a an the this that these those there here it its it's he she they them their his her him we us our you your i me my
and or but nor so yet of in on at by for with without from to into onto over under above below up down out off
about around near next behind between through across along against among upon via as than then too very just also
is are was were be been being am has have had do does did doing can could will would shall should may might must
not no yes all any some each every both either neither few many much more most other another such only own same
what which who whom whose when where why how one two three four five six seven eight nine ten first second
get gets got make makes made go goes going gone come comes take takes look looks see seen like likes use used
let lets say says said ready set well still even ever never always often again once now today while during
put puts ahead away back front top side end pair means carry lands part parts lot lots way ways
photo picture image drawing clipart stamp illustration sketch cartoon view kind sort type thing things something
s t don didn isn wasn aren doesn ll ve re d m o
"""
# colours, sizes, moods ...: never a concept, nor the first word of one ("a red car" counts as "car")
_MODIFIERS = """
big small little large tiny huge giant tall short long wide narrow thick thin fat old new young ancient modern
red orange yellow green blue purple pink brown black white grey gray silver golden gold colorful colourful
striped spotted dark light bright pale happy sad angry funny cute scary silly smiling singing flying running
sitting standing sleeping jumping dancing swimming walking hot cold warm cool wet dry round square flat empty full
open closed broken wooden metal plastic glass paper beautiful pretty ugly nice good bad great fine fancy simple
real toy baby male female wild common famous favorite favourite traditional special different electric
"""
STOPWORDS = frozenset(_STOPWORDS.split())
MODIFIERS = frozenset(_MODIFIERS.split())

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-case words of letters (an apostrophe inside a word kept), e.g. "Tux's hat!" -> ["tux's", "hat"]."""
    return _WORD.findall(text.lower())


def _singular(word: str, vocabulary: set[str]) -> str:
    """A plural folded into its singular when that singular occurs in `vocabulary`."""
    candidates = []
    if word.endswith("ies") and len(word) > 4:
        candidates.append(word[:-3] + "y")
    if word.endswith(("ses", "xes", "ches", "shes", "zes")):
        candidates.append(word[:-2])
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        candidates.append(word[:-1])
    return next((c for c in candidates if c in vocabulary), word)


def _kept(word: str) -> bool:
    return len(word) > 2 and word not in STOPWORDS and "'" not in word


def mine_concepts(captions: Iterable[str], top: int = 30, min_count: int = 3) -> list[tuple[str, int]]:
    """The `top` most frequent nouns and two-word noun phrases of the captions, with how many captions hold each."""
    tokenized = [tokenize(c) for c in captions]
    vocabulary = {w for words in tokenized for w in words}
    counts: Counter[str] = Counter()
    for words in tokenized:
        words = [_singular(w, vocabulary) for w in words]
        found = set()
        for i, w in enumerate(words):
            if not _kept(w):
                continue
            if w not in MODIFIERS:
                found.add(w)
            if i + 1 < len(words) and _kept(words[i + 1]) and words[i + 1] not in MODIFIERS and w not in MODIFIERS:
                found.add(f"{w} {words[i + 1]}")
        counts.update(found)  # once per caption
    kept = {c: n for c, n in counts.items() if n >= min_count}
    # a word seen only inside one phrase ("solar" of "solar system") adds nothing beside the phrase
    inside = {w for phrase, n in kept.items() if " " in phrase for w in phrase.split() if kept.get(w) == n}
    ranked = sorted(((c, n) for c, n in kept.items() if c not in inside), key=lambda c: (-c[1], -c[0].count(" "), c[0]))
    return ranked[:top]


def concepts_from_file(path: str | Path) -> list[str]:
    """One concept per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"concept file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    out = merge_concepts([line.strip() for line in lines if line.strip() and not line.strip().startswith("#")])
    if not out:
        raise ConfigError(f"concept file {path} names no concept (one per line, '#' for comments)")
    return out


def concepts_from_dataset(dataset: object) -> list[str]:
    """The class names of a labelled data set (or of a pairs set with labels)."""
    names = getattr(dataset, "classnames", None)
    if not names:
        raise ConfigError(f"data set {getattr(dataset, 'name', dataset)!r} has no class names to use as concepts")
    return list(names)


def merge_concepts(*lists: Sequence[str]) -> list[str]:
    """Concatenated, stripped, duplicates (case-insensitive) removed, first spelling and order kept."""
    seen, out = set(), []
    for lst in lists:
        for c in lst:
            c = " ".join(str(c).split())
            if c and c.lower() not in seen:
                seen.add(c.lower())
                out.append(c)
    return out
