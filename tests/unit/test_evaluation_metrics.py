"""Each deterministic evaluation metric equals its reference implementation on the same data."""

from __future__ import annotations

import collections
import re
import string

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import ndcg_score

from services.evaluation import metrics

pytestmark = pytest.mark.unit

ANSWERS = [
    ("The Eiffel Tower is in Paris.", ["Paris", "in Paris, France"]),
    ("the cat sat on the mat", ["A cat sat on the mat."]),
    ("It was built in 1889 by Gustave Eiffel's company.", ["Gustave Eiffel's company built it in 1889."]),
    ("", ["something"]),
    ("Unrelated words entirely", ["nothing in common here"]),
    ("3.14 is pi, roughly; e = 2.718...", ["Pi is about 3.14 and e is 2.718"]),
    ("Café au lait costs $4-5 (tax incl.)", ["A café au lait is 4-5 dollars & tax &amp; tip"]),
    ("new\nline-\nbreak <skipped> text", ["new linebreak text"]),
    ("repeat repeat repeat repeat", ["repeat once"]),
    ("A long answer that rambles on about many many things before it gets to the point, which is 42.", ["42"]),
]


def _random_corpus(seed: int, count: int) -> list[tuple[str, list[str]]]:
    # Small vocabulary so n-grams overlap often; punctuation and digits exercise the tokenizers.
    rng = np.random.default_rng(seed)
    vocabulary = "the a cat dog sat on mat ran fast 42 3.5 , . ! ? don't Paris paris-based (x) & ; é".split()

    def sentence() -> str:
        return " ".join(rng.choice(vocabulary, size=int(rng.integers(1, 15))))

    return [(sentence(), [sentence() for _ in range(int(rng.integers(1, 4)))]) for _ in range(count)]


CORPUS = ANSWERS + _random_corpus(7, 200)


# --- SQuAD v1.1 evaluation script (as published, transcribed as the reference) ---------------------


def _squad_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _squad_f1(prediction, ground_truth):
    prediction_tokens = _squad_normalize(prediction).split()
    ground_truth_tokens = _squad_normalize(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _squad_em(prediction, ground_truth):
    return _squad_normalize(prediction) == _squad_normalize(ground_truth)


def test_exact_match_and_token_f1_equal_the_squad_script():
    for prediction, references in CORPUS:
        assert metrics.exact_match(prediction, references) == max(_squad_em(prediction, r) for r in references)
        assert metrics.token_f1(prediction, references) == pytest.approx(
            max(_squad_f1(prediction, r) for r in references), abs=1e-12
        )


def test_exact_match_and_token_f1_on_hand_checked_answers():
    assert metrics.exact_match("The Paris!", ["paris"]) is True
    assert metrics.exact_match("Paris, France", ["Paris"]) is False
    # 2 common tokens ("cat", "sat"), 3 predicted, 4 expected: P = 2/3, R = 1/2, F1 = 4/7.
    assert metrics.token_f1("a cat sat down", ["the cat sat on mat"]) == pytest.approx(
        2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4)
    )
    assert metrics.token_f1("nothing", ["else"]) == 0.0


def test_rouge_l_equals_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for prediction, references in CORPUS:
        expected = scorer.score(references[0], prediction)["rougeL"]
        got = metrics.rouge_l(prediction, references[0])
        assert (got.precision, got.recall, got.f1) == pytest.approx(
            (expected.precision, expected.recall, expected.fmeasure), abs=1e-12
        )


def test_sentence_bleu_equals_sacrebleu():
    for prediction, references in CORPUS:
        expected = sacrebleu.sentence_bleu(prediction, references)
        got = metrics.sentence_bleu(prediction, references)
        assert got.score == pytest.approx(expected.score, abs=1e-9)
        assert got.brevity_penalty == pytest.approx(expected.bp, abs=1e-12)
        assert (got.hypothesis_length, got.reference_length) == (expected.sys_len, expected.ref_len)


def test_corpus_bleu_equals_sacrebleu():
    for corpus in (ANSWERS, _random_corpus(11, 300), _random_corpus(12, 3)):
        hypotheses = [prediction for prediction, _ in corpus]
        depth = max(len(references) for _, references in corpus)
        # sacrebleu takes reference streams; a missing reference in a stream is None.
        streams = [[refs[i] if i < len(refs) else None for _, refs in corpus] for i in range(depth)]
        expected = sacrebleu.corpus_bleu(hypotheses, streams)
        got = metrics.corpus_bleu(hypotheses, [references for _, references in corpus])
        assert got.score == pytest.approx(expected.score, abs=1e-9)
        assert got.precisions == pytest.approx(tuple(expected.precisions), abs=1e-9)


# --- retrieval --------------------------------------------------------------------------------------


def test_retrieval_metrics_on_a_hand_checked_table():
    retrieved = ["d3", "d1", "d7", "d1", "d2", "d9"]  # d1 repeated: counts once, at rank 2
    expected = {"d1", "d2", "d4"}
    # top 3 = d3, d1, d7 -> one hit; top 5 (deduplicated) = d3, d1, d7, d2, d9 -> two hits.
    assert metrics.precision_at_k(retrieved, expected, 3) == pytest.approx(1 / 3)
    assert metrics.precision_at_k(retrieved, expected, 5) == pytest.approx(2 / 5)
    assert metrics.precision_at_k(retrieved, expected, 10) == pytest.approx(2 / 10)
    assert metrics.recall_at_k(retrieved, expected, 3) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(retrieved, expected, 5) == pytest.approx(2 / 3)
    assert metrics.reciprocal_rank(retrieved, expected) == pytest.approx(1 / 2)
    assert metrics.reciprocal_rank(retrieved, expected, k=1) == 0.0
    assert metrics.reciprocal_rank(["x"], expected) == 0.0
    # Nothing expected: recall and MRR are undefined, not zero.
    assert metrics.recall_at_k(retrieved, set(), 3) is None
    assert metrics.reciprocal_rank(retrieved, []) is None
    assert metrics.ndcg_at_k(retrieved, [], 3) is None
    with pytest.raises(ValueError):
        metrics.precision_at_k(retrieved, expected, 0)


def test_ndcg_equals_scikit_learn():
    rng = np.random.default_rng(3)
    for _ in range(300):
        documents = [f"d{i}" for i in range(20)]
        retrieved = list(rng.permutation(documents)[: int(rng.integers(3, 15))])
        grades = {d: float(rng.integers(0, 4)) for d in rng.choice(documents, size=int(rng.integers(1, 8)))}
        if not any(grades.values()):
            continue
        k = int(rng.integers(1, len(retrieved) + 1))
        # scikit-learn scores every document: retrieved ones by rank, the rest below all of them.
        scores = [len(retrieved) - retrieved.index(d) if d in retrieved else -1.0 for d in documents]
        truth = [grades.get(d, 0.0) for d in documents]
        expected = ndcg_score([truth], [scores], k=k)
        assert metrics.ndcg_at_k(retrieved, grades, k) == pytest.approx(expected, abs=1e-12)


def test_ndcg_with_binary_relevance_on_a_hand_checked_case():
    # Relevant at ranks 2 and 3 of 3 expected: DCG = 1/log2(3) + 1/log2(4); ideal = 1 + 1/log2(3) + 1/2.
    got = metrics.ndcg_at_k(["x", "a", "b"], {"a", "b", "c"}, 3)
    assert got == pytest.approx((1 / np.log2(3) + 0.5) / (1 + 1 / np.log2(3) + 0.5))


def test_oversized_text_is_refused_before_any_work():
    with pytest.raises(ValueError):
        metrics.rouge_l("x" * (metrics.MAX_TEXT_CHARS + 1), "x")
