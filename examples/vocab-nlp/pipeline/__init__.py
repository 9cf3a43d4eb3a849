"""A tiny stand-in for the app's `pipeline` package: picks words a learner at a level should study."""

import pathlib
import re

DATA_DIR = pathlib.Path(__file__).parent.parent / "data"
LANGUAGES = ("nl", "sr", "en")
LEVELS = {"A0": 2, "A1": 4, "A2": 8}


def trim_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:4096]


def load_frequencies(lang: str) -> dict:
    ranks = {}
    for i, word in enumerate((DATA_DIR / f"{lang}_freq.txt").read_text().split()):
        ranks[word] = i
    return ranks


def extract(text: str, lang: str, level: str = "A0") -> list:
    """Words of `text` within the level's frequency band, most frequent first."""
    ranks = load_frequencies(lang)
    words = {w.lower() for w in re.findall(r"\w+", trim_text(text))}
    known = sorted((ranks[w], w) for w in words if w in ranks and ranks[w] < LEVELS[level])
    return [w for _, w in known]
