"""Deterministic metrics: answer text against a reference, retrieved context against the expected one.

Each function scores one example; `statistics` turns a column of these into an interval. A value
that cannot be defined for an example (recall with no expected context) is None, never a silent 0,
so it is counted as unmeasured rather than averaged in.

The text metrics follow their reference implementations exactly: exact match and token F1 the SQuAD
v1.1 evaluation script, ROUGE-L the `rouge-score` package (its tokenizer, no stemming), BLEU
`sacrebleu` (13a tokenizer, exponential smoothing, closest reference length), nDCG scikit-learn's
`ndcg_score` (linear gain, log2 discount).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

MAX_TEXT_CHARS = 200_000
MAX_NGRAM_ORDER = 4


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class BleuScore:
    """BLEU on sacrebleu's 0-100 scale with the parts it is made of."""

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    hypothesis_length: int
    reference_length: int


def _bounded(text: str) -> str:
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text longer than {MAX_TEXT_CHARS} characters")
    return text


# --- exact match and token F1 (SQuAD v1.1) ---------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and English articles, collapse whitespace."""
    text = "".join(ch for ch in _bounded(text).lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: Sequence[str]) -> bool:
    """True when the normalized prediction equals any normalized reference."""
    normalized = normalize_answer(prediction)
    return any(normalized == normalize_answer(reference) for reference in _references(references))


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """The best bag-of-tokens F1 between the normalized prediction and any reference."""
    return max(_token_f1_one(prediction, reference) for reference in _references(references))


def _token_f1_one(prediction: str, reference: str) -> float:
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(reference).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _references(references: Sequence[str]) -> Sequence[str]:
    if isinstance(references, str):
        return [references]
    if not references:
        raise ValueError("at least one reference is required")
    return references


# --- ROUGE-L (rouge-score) -------------------------------------------------------------------------

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's tokenizer: lower case, alphanumeric runs only (non-ASCII letters are dropped)."""
    return _NON_ALPHANUMERIC.sub(" ", _bounded(text).lower()).split()


def rouge_l(prediction: str, reference: str) -> PrecisionRecall:
    """Longest-common-subsequence precision, recall and F1 over rouge-score's tokens."""
    predicted = rouge_tokens(prediction)
    expected = rouge_tokens(reference)
    if not predicted or not expected:
        return PrecisionRecall(0.0, 0.0, 0.0)
    lcs = _lcs_length(expected, predicted)
    precision = lcs / len(predicted)
    recall = lcs / len(expected)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return PrecisionRecall(precision, recall, f1)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    # One row at a time: O(len(b)) memory for texts of any length.
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0] * (len(b) + 1)
        for j, token_b in enumerate(b, start=1):
            current[j] = previous[j - 1] + 1 if token_a == token_b else max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


# --- BLEU (sacrebleu) ------------------------------------------------------------------------------

_BLEU_PUNCTUATION = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)


def bleu_tokens(text: str) -> list[str]:
    """sacrebleu's default 13a tokenizer (mteval-v13a, as used by WMT)."""
    line = _bounded(text).rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _BLEU_PUNCTUATION:
        line = pattern.sub(replacement, line)
    return line.split()


@dataclass(frozen=True)
class _BleuCounts:
    hypothesis_length: int
    reference_length: int
    correct: tuple[int, ...]
    total: tuple[int, ...]


def _ngrams(tokens: Sequence[str]) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, MAX_NGRAM_ORDER + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i : i + n])] += 1
    return counts


def _bleu_counts(hypothesis: str, references: Sequence[str]) -> _BleuCounts:
    hypothesis_tokens = bleu_tokens(hypothesis)
    reference_max: Counter[tuple[str, ...]] = Counter()
    reference_lengths = []
    for reference in _references(references):
        tokens = bleu_tokens(reference)
        reference_lengths.append(len(tokens))
        for ngram, count in _ngrams(tokens).items():
            reference_max[ngram] = max(reference_max[ngram], count)
    # The closest reference length, the shorter one on a tie.
    hypothesis_length = len(hypothesis_tokens)
    reference_length = min(reference_lengths, key=lambda length: (abs(hypothesis_length - length), length))
    correct = [0] * MAX_NGRAM_ORDER
    total = [0] * MAX_NGRAM_ORDER
    for ngram, count in _ngrams(hypothesis_tokens).items():
        total[len(ngram) - 1] += count
        correct[len(ngram) - 1] += min(count, reference_max.get(ngram, 0))
    return _BleuCounts(hypothesis_length, reference_length, tuple(correct), tuple(total))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> BleuScore:
    """Corpus BLEU: n-gram counts summed over all segments, then one score (sacrebleu.corpus_bleu).

    `references[i]` holds the references of `hypotheses[i]`.
    """
    if len(hypotheses) != len(references):
        raise ValueError("one list of references per hypothesis is required")
    counts = [_bleu_counts(hypothesis, refs) for hypothesis, refs in zip(hypotheses, references, strict=True)]
    return _bleu_score(
        _BleuCounts(
            sum(c.hypothesis_length for c in counts),
            sum(c.reference_length for c in counts),
            tuple(sum(c.correct[n] for c in counts) for n in range(MAX_NGRAM_ORDER)),
            tuple(sum(c.total[n] for c in counts) for n in range(MAX_NGRAM_ORDER)),
        ),
        effective_order=False,
    )


def sentence_bleu(hypothesis: str, references: Sequence[str]) -> BleuScore:
    """One segment's BLEU with effective order, so short answers are not zeroed (sacrebleu.sentence_bleu)."""
    return _bleu_score(_bleu_counts(hypothesis, references), effective_order=True)


def _bleu_score(counts: _BleuCounts, *, effective_order: bool) -> BleuScore:
    sys_len, ref_len = counts.hypothesis_length, counts.reference_length
    penalty = 1.0
    if sys_len < ref_len:
        penalty = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * MAX_NGRAM_ORDER
    if not any(counts.correct):
        return BleuScore(0.0, tuple(precisions), penalty, sys_len, ref_len)
    smoothing = 1.0
    order = MAX_NGRAM_ORDER
    for n in range(MAX_NGRAM_ORDER):
        if counts.total[n] == 0:
            break
        if effective_order:
            order = n + 1
        if counts.correct[n] == 0:
            # NIST "exp" smoothing: each further zero-match order halves the pseudo-count.
            smoothing *= 2
            precisions[n] = 100.0 / (smoothing * counts.total[n])
        else:
            precisions[n] = 100.0 * counts.correct[n] / counts.total[n]
    log_sum = sum(math.log(p) if p > 0 else -9999999999 for p in precisions[:order])
    return BleuScore(penalty * math.exp(log_sum / order), tuple(precisions), penalty, sys_len, ref_len)


# --- retrieval against expected_retrieved_context --------------------------------------------------


def _ranked(retrieved: Sequence[str]) -> list[str]:
    # A document retrieved twice counts once, at its best rank.
    return list(dict.fromkeys(retrieved))


def _check_k(k: int) -> int:
    if k < 1:
        raise ValueError("k must be at least 1")
    return k


def precision_at_k(retrieved: Sequence[str], expected: Collection[str], k: int) -> float:
    """Share of the top k slots holding an expected document (fewer than k retrieved: empty slots miss)."""
    top = _ranked(retrieved)[: _check_k(k)]
    expected_set = set(expected)
    return sum(1 for doc in top if doc in expected_set) / k


def recall_at_k(retrieved: Sequence[str], expected: Collection[str], k: int) -> float | None:
    """Share of the expected documents found in the top k; None when nothing is expected."""
    expected_set = set(expected)
    if not expected_set:
        return None
    top = _ranked(retrieved)[: _check_k(k)]
    return sum(1 for doc in top if doc in expected_set) / len(expected_set)


def reciprocal_rank(retrieved: Sequence[str], expected: Collection[str], k: int | None = None) -> float | None:
    """1 / rank of the first expected document (0 if none in the top k); None when nothing is expected."""
    expected_set = set(expected)
    if not expected_set:
        return None
    ranked = _ranked(retrieved)
    if k is not None:
        ranked = ranked[: _check_k(k)]
    for rank, doc in enumerate(ranked, start=1):
        if doc in expected_set:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved: Sequence[str], relevance: Mapping[str, float] | Collection[str], k: int) -> float | None:
    """Normalized DCG at k with linear gain and log2(rank + 1) discount.

    `relevance` maps document id to graded relevance, or is a collection of relevant ids (relevance 1).
    None when no document is relevant: the ideal ranking then has no gain to normalize by.
    """
    grades = dict(relevance) if isinstance(relevance, Mapping) else dict.fromkeys(relevance, 1.0)
    if any(grade < 0 for grade in grades.values()):
        raise ValueError("relevance grades must not be negative")
    _check_k(k)
    ideal = sorted(grades.values(), reverse=True)[:k]
    ideal_dcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, start=1))
    if ideal_dcg == 0:
        return None
    top = _ranked(retrieved)[:k]
    dcg = sum(grades.get(doc, 0.0) / math.log2(rank + 1) for rank, doc in enumerate(top, start=1))
    return dcg / ideal_dcg
