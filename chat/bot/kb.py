"""Matching a visitor's question to the knowledge base: tokens (jieba for Chinese, words for English),
BM25 to rank, and a confidence in [0, 1] compared with the group's threshold.

Each entry is indexed once per phrasing (its question and every alternative); an entry scores as its
best phrasing. BM25 ranks; the confidence is how much of the question the phrasing covers and how
much of the phrasing the question covers, both weighted by IDF (an F1 of the two), so "how do I reset
my password" matches "reset password" fully while "password" alone matches it at about two thirds.
Words nobody indexed weigh as the rarest words, so a question about something else scores low.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jieba

# Words that carry no meaning for matching (a small list: BM25's IDF does the rest).
_STOP_EN = """a an the is are was were be been am i me my we our you your he she it its they them their
this that these those to of in on at for with and or but if do does did doing have has had can could would
should will shall may might must please hi hello hey how what when where why who which there here not no
yes so just about any some get got want need like"""
_STOP_ZH = """的 了 吗 呢 吧 啊 呀 是 我 你 他 她 它 我们 你们 他们 在 有 和 与 及 或 就 都
也 还 要 想 请 请问 怎么 怎样 如何 什么 哪里 哪儿 为什么 可以 能 能否
一下 这个 那个 这 那 个 么 嘛 哦 呃 您 好 你好 您好"""
STOPWORDS = frozenset(_STOP_EN.split() + _STOP_ZH.split())
_CHAR_STOP = frozenset(
    "的了吗呢吧啊呀是我你他她它们在有和与及或就都也还要想请怎么样如何什哪里儿为可以能否一下这那个嘛哦呃您好"
)
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?|[\u3400-\u4dbf\u4e00-\u9fff]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_lock = threading.Lock()

MAX_QUERY_CHARS = 500
K1 = 1.5
B = 0.75


def warm_up() -> None:
    """Load jieba's dictionary now (about a second), so the first visitor's question does not wait
    for it; the web process calls this on its thread pool at start-up."""
    import logging

    jieba.setLogLevel(logging.WARNING)
    with _lock:
        jieba.initialize()


def _stem(word: str) -> str:
    """A light English stemmer: plural and -ing/-ed endings ("passwords" ~ "password")."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + keep
    return word


def tokenize(text: str) -> list[str]:
    """Tokens for matching: lower-case English words (lightly stemmed) and jieba's words for Chinese
    (search mode, so a long word also yields its parts), without stopwords.

    >>> tokenize("How do I reset my passwords?")
    ['reset', 'password']
    """
    out: list[str] = []
    for piece in _WORD.findall(text[:MAX_QUERY_CHARS].lower()):
        if _CJK.match(piece):
            with _lock:  # jieba's lazy initialisation is not thread-safe
                words = jieba.lcut_for_search(piece)
            out.extend(w for w in words if w.strip() and w not in STOPWORDS)
            # Characters too: jieba may cut a phrase differently from the stored one ("开发票" as
            # 开发 + 票); shared characters still tell the two apart from an unrelated question.
            out.extend(ch for ch in piece if ch not in _CHAR_STOP and (len(piece) > 1 or ch not in out))
        else:
            word = piece.replace("’", "'").split("'")[0]
            if word and word not in STOPWORDS:
                out.append(_stem(word))
    return out


@dataclass(frozen=True)
class Match:
    key: int  # the entry (or flow) id
    score: float  # BM25
    confidence: float  # 0..1, compared with the threshold
    phrase: str  # the phrasing that matched best


class Index:
    """BM25 over phrasings; `key` groups the phrasings of one entry."""

    def __init__(self, phrasings: Iterable[tuple[int, str]]) -> None:
        self.docs: list[tuple[int, str, Counter[str]]] = []
        for key, phrase in phrasings:
            tokens = tokenize(phrase)
            if tokens:
                self.docs.append((key, phrase, Counter(tokens)))
        self.n = len(self.docs)
        df: Counter[str] = Counter()
        for _, _, tf in self.docs:
            df.update(tf.keys())
        self.idf = {t: math.log(1 + (self.n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        self.unknown_idf = math.log(1 + (self.n + 0.5) / 0.5)
        self.avg_len = sum(sum(tf.values()) for _, _, tf in self.docs) / self.n if self.n else 0.0

    def _weight(self, token: str) -> float:
        return self.idf.get(token, self.unknown_idf)

    def bm25(self, query: Sequence[str], tf: Counter[str]) -> float:
        length = sum(tf.values())
        score = 0.0
        for token in set(query):
            f = tf.get(token, 0)
            if f:
                norm = f + K1 * (1 - B + B * length / (self.avg_len or 1.0))
                score += self.idf.get(token, 0.0) * f * (K1 + 1) / norm
        return score

    def confidence(self, query: Sequence[str], tf: Counter[str]) -> float:
        q = set(query)
        d = set(tf)
        common = q & d
        if not common:
            return 0.0
        q_cov = sum(self._weight(t) for t in common) / sum(self._weight(t) for t in q)
        d_cov = sum(self._weight(t) for t in common) / sum(self._weight(t) for t in d)
        return 2 * q_cov * d_cov / (q_cov + d_cov)

    def search(self, text: str, *, limit: int = 3) -> list[Match]:
        """The best phrasing of each entry that shares a word with `text`, best first."""
        query = tokenize(text)
        if not query or not self.n:
            return []
        best: dict[int, Match] = {}
        for key, phrase, tf in self.docs:
            score = self.bm25(query, tf)
            if score <= 0:
                continue
            match = Match(key, score, round(self.confidence(query, tf), 4), phrase)
            have = best.get(key)
            if have is None or (match.confidence, match.score) > (have.confidence, have.score):
                best[key] = match
        ranked = sorted(best.values(), key=lambda m: (-m.confidence, -m.score, m.key))
        return ranked[:limit]

    def best(self, text: str, *, threshold: float) -> Match | None:
        """The best match at or above `threshold`, else None."""
        found = self.search(text, limit=1)
        return found[0] if found and found[0].confidence >= threshold else None
