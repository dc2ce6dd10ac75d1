"""Scoring functions for evaluating Akshara (Telugu) outputs: ROUGE-1/2/L, chrF and bits per byte.

Why our own ROUGE: the `rouge-score` package's default tokenizer keeps only [a-z0-9] and so scores
every Telugu pair 0. Tokenization here follows XL-Sum's multilingual ROUGE (csebuetnlp/xl-sum,
`multilingual_rouge_scoring`): Unicode-aware words, no stemming. The n-gram / LCS arithmetic is
rouge-score's, so ASCII text scores exactly as rouge-score does without a stemmer.

chrF reproduces sacrebleu's default chrF (signature `chrF2|nc:6|nw:0|space:no`), and bits per byte
reproduces nanochat's `evaluate_bpb`. Only the standard library and torch are used.

Argument order is (prediction, reference) everywhere, as in sacrebleu; note that rouge-score's
`RougeScorer.score` takes (target, prediction), the other way round.
"""

from __future__ import annotations

import math
import operator
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .errors import AksharaError

__all__ = [
    "Score",
    "tokenize",
    "rouge_n",
    "rouge_l",
    "rouge",
    "corpus_rouge",
    "chrf_statistics",
    "sentence_chrf",
    "corpus_chrf",
    "bits_per_byte",
    "bpb_from_losses",
    "score_pairs",
]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
CHRF_CHAR_ORDER = 6  # sacrebleu CHRF defaults: char_order=6, word_order=0, beta=2, whitespace=False
CHRF_BETA = 2


class Score(NamedTuple):
    """Precision, recall and F1 in [0, 1], the same fields as rouge-score's `Score`."""

    precision: float
    recall: float
    fmeasure: float


# --------------------------------------------------------------------------- tokenization

_WORD, _DROP, _SEP = 0, 1, 2
_ZERO_WIDTH_SPACE = "\u200b"


def _char_kind(ch: str) -> int:
    cat = unicodedata.category(ch)
    if cat[0] in "LMN":  # letters, combining marks (Telugu vowel signs, virama, anusvara), digits
        return _WORD
    if cat == "Cf" and ch != _ZERO_WIDTH_SPACE:
        return _DROP
    return _SEP


def tokenize(text: str) -> list[str]:
    """Split text into ROUGE words: lowercase, NFC, maximal runs of Unicode letters/marks/digits.

    Combining marks (category M) stay inside the word, so a Telugu akshara such as "ళ్ళా" is never
    cut apart. Format characters (category Cf: ZWNJ U+200C, ZWJ U+200D, soft hyphen, bidi marks) are
    deleted rather than treated as separators, as XL-Sum's tokenizer does: in Telugu ZWNJ/ZWJ only
    pick a glyph form (e.g. a visible virama instead of a conjunct), so "వెళ్\u200cళాడు" and
    "వెళ్ళాడు" are the same word. ZERO WIDTH SPACE (U+200B) is the one Cf character that separates
    words, as its name says. Everything else (whitespace, punctuation such as the danda, symbols)
    separates. Deletion happens before NFC so a ZWNJ cannot block a composition. Scripts written
    without spaces (Chinese, Thai) are not segmented; no stemming is done (none exists for Telugu).
    """
    _check_str(text, "text")
    kept = [ch for ch in text.lower() if _char_kind(ch) != _DROP]
    text = unicodedata.normalize("NFC", "".join(kept))
    tokens: list[str] = []
    word: list[str] = []
    for ch in text:
        if _char_kind(ch) == _WORD:
            word.append(ch)
        elif word:
            tokens.append("".join(word))
            word = []
    if word:
        tokens.append("".join(word))
    return tokens


# --------------------------------------------------------------------------- ROUGE


def _fmeasure(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _score_ngrams(pred_tokens: list[str], ref_tokens: list[str], n: int) -> Score:
    pred, ref = _ngrams(pred_tokens, n), _ngrams(ref_tokens, n)
    overlap = sum(min(count, pred[g]) for g, count in ref.items())
    # max(.., 1) as rouge-score: an empty side gives 0 instead of a division error.
    precision = overlap / max(sum(pred.values()), 1)
    recall = overlap / max(sum(ref.values()), 1)
    return Score(precision, recall, _fmeasure(precision, recall))


def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(b) > len(a):
        a, b = b, a
    prev = [0] * (len(b) + 1)  # one DP row: O(len(b)) memory instead of the full table
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _score_lcs(pred_tokens: list[str], ref_tokens: list[str]) -> Score:
    if not pred_tokens or not ref_tokens:
        return Score(0.0, 0.0, 0.0)
    lcs = _lcs_length(pred_tokens, ref_tokens)
    precision, recall = lcs / len(pred_tokens), lcs / len(ref_tokens)
    return Score(precision, recall, _fmeasure(precision, recall))


def rouge_n(prediction: str, reference: str, n: int) -> Score:
    """ROUGE-N of one pair: clipped n-gram overlap over prediction (P) and reference (R) n-grams."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise AksharaError(f"ROUGE-N order n must be an int >= 1, got {n!r}")
    return _score_ngrams(tokenize(prediction), tokenize(reference), n)


def rouge_l(prediction: str, reference: str) -> Score:
    """Sentence-level ROUGE-L (rouge-score's `rougeL`, not `rougeLsum`): LCS over the whole text."""
    return _score_lcs(tokenize(prediction), tokenize(reference))


def rouge(prediction: str, reference: str) -> dict[str, Score]:
    """ROUGE-1, ROUGE-2 and ROUGE-L of one pair, tokenizing each text once."""
    pred, ref = tokenize(prediction), tokenize(reference)
    return {
        "rouge1": _score_ngrams(pred, ref, 1),
        "rouge2": _score_ngrams(pred, ref, 2),
        "rougeL": _score_lcs(pred, ref),
    }


def corpus_rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Score]:
    """Mean over pairs of each per-pair precision, recall and F1, in [0, 1].

    This is the exact arithmetic mean, i.e. what rouge-score's BootstrapAggregator estimates as
    its `mid` (HF `evaluate`'s rouge reports that mid F1); we skip the bootstrap resampling so the
    number is deterministic. A pair where either side has no words scores 0, as in rouge-score.
    """
    _check_pairs(predictions, references)
    totals = {key: [0.0, 0.0, 0.0] for key in ROUGE_TYPES}
    for pred, ref in zip(predictions, references):
        for key, score in rouge(pred, ref).items():
            for i, value in enumerate(score):
                totals[key][i] += value
    count = len(predictions)
    return {key: Score(*(v / count for v in vals)) for key, vals in totals.items()}


# --------------------------------------------------------------------------- chrF


def _char_ngrams(text: str) -> list[Counter]:
    text = "".join(text.split())  # sacrebleu removes all whitespace before taking n-grams
    return [Counter(text[i : i + n] for i in range(len(text) - n + 1)) for n in range(1, CHRF_CHAR_ORDER + 1)]


def chrf_statistics(prediction: str, reference: str) -> list[int]:
    """Sufficient statistics of one pair: [hyp, ref, match] counts for n = 1..6, flattened (18 ints).

    Corpus chrF sums these over pairs before computing the score, so they are exposed for
    accumulating across batches or ranks. As in sacrebleu, hypothesis n-grams of an order the
    reference has none of are not counted (hyp count 0), and n-grams are over code points with no
    Unicode normalization or lowercasing (sacrebleu's defaults), so a Telugu akshara of k code
    points contributes k unigrams.
    """
    _check_str(prediction, "prediction")
    _check_str(reference, "reference")
    stats: list[int] = []
    for hyp, ref in zip(_char_ngrams(prediction), _char_ngrams(reference)):
        match = sum(min(count, ref[g]) for g, count in hyp.items() if g in ref)
        stats.extend([sum(hyp.values()) if ref else 0, sum(ref.values()), match])
    return stats


def _chrf_from_statistics(stats: Sequence[int]) -> float:
    # sacrebleu 2.x CHRF._compute_f_score with eps_smoothing=False: average P and R over the
    # orders where both sides have n-grams ("effective order"), then one F-beta of the averages.
    factor = CHRF_BETA**2
    avg_prec = avg_rec = 0.0
    effective_order = 0
    for i in range(CHRF_CHAR_ORDER):
        n_hyp, n_ref, n_match = stats[3 * i : 3 * i + 3]
        if n_hyp > 0 and n_ref > 0:
            avg_prec += n_match / n_hyp
            avg_rec += n_match / n_ref
            effective_order += 1
    if effective_order == 0:
        return 0.0
    avg_prec /= effective_order
    avg_rec /= effective_order
    if avg_prec + avg_rec == 0:
        return 0.0
    score = (1 + factor) * avg_prec * avg_rec
    score /= factor * avg_prec + avg_rec  # same operation order as sacrebleu, so floats agree exactly
    return 100 * score


def sentence_chrf(prediction: str, reference: str) -> float:
    """chrF (0..100) of one pair, as sacrebleu's `CHRF().sentence_score(prediction, [reference])`."""
    return _chrf_from_statistics(chrf_statistics(prediction, reference))


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0..100) from statistics summed over pairs, as sacrebleu's `corpus_score`.

    Not the mean of sentence chrF: long pairs weigh more, which is how chrF is normally reported.
    """
    _check_pairs(predictions, references)
    totals = [0] * (3 * CHRF_CHAR_ORDER)
    for pred, ref in zip(predictions, references):
        totals = [a + b for a, b in zip(totals, chrf_statistics(pred, ref))]
    return _chrf_from_statistics(totals)


# --------------------------------------------------------------------------- bits per byte


def bits_per_byte(nll_sum_nats: float, num_bytes: int) -> float:
    """Summed negative log-likelihood in nats -> bits per UTF-8 byte: nats / (ln 2 * bytes).

    Bits per byte compares models with different tokenizers, since the byte count does not depend
    on how the text was split into tokens.
    """
    if isinstance(num_bytes, bool):
        raise AksharaError(f"num_bytes must be an int, got {num_bytes!r}")
    try:
        num_bytes = operator.index(num_bytes)
        nll = float(nll_sum_nats)
    except (TypeError, ValueError, RuntimeError):
        raise AksharaError(
            f"bits_per_byte needs a number of nats and an int byte count, got {nll_sum_nats!r}, {num_bytes!r}"
        ) from None
    if num_bytes <= 0:
        raise AksharaError(f"num_bytes must be > 0 to compute bits per byte, got {num_bytes} (no scored bytes)")
    if nll < 0:
        raise AksharaError(f"nll_sum_nats must be >= 0 (a sum of negative log-likelihoods), got {nll}")
    return nll / (math.log(2) * num_bytes)


def bpb_from_losses(
    per_token_loss: torch.Tensor, target_ids: torch.Tensor, token_bytes: torch.Tensor
) -> tuple[float, int]:
    """Sum of losses (nats) and of target bytes over the scored targets, as nanochat's evaluate_bpb.

    A target is scored when its id is >= 0 and token_bytes[id] > 0: ignored targets (-100 here,
    -1 in nanochat: any negative id) and special tokens (0 bytes) drop out of both sums. Returning
    the two sums instead of a ratio lets callers add them over batches and ranks, then call
    `bits_per_byte(nats, bytes)` once. Losses at unscored positions are never read, so a NaN there
    does not leak into the sum. Sums are taken in float64 / int64.
    """
    for name, t in (("per_token_loss", per_token_loss), ("target_ids", target_ids), ("token_bytes", token_bytes)):
        if not isinstance(t, torch.Tensor):
            raise AksharaError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not per_token_loss.is_floating_point():
        raise AksharaError(f"per_token_loss must be a float tensor, got {per_token_loss.dtype}")
    for name, t in (("target_ids", target_ids), ("token_bytes", token_bytes)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise AksharaError(f"{name} must be an integer tensor, got {t.dtype}")
    if per_token_loss.shape != target_ids.shape:
        raise AksharaError(
            f"per_token_loss shape {tuple(per_token_loss.shape)} != target_ids shape {tuple(target_ids.shape)}"
        )
    if token_bytes.dim() != 1:
        raise AksharaError(
            f"token_bytes must be 1-D (one byte count per vocab id), got shape {tuple(token_bytes.shape)}"
        )
    if token_bytes.numel() and int(token_bytes.min()) < 0:
        raise AksharaError("token_bytes has negative byte counts")
    targets = target_ids.reshape(-1).to(torch.int64)
    losses = per_token_loss.reshape(-1)
    valid = targets >= 0
    if valid.any() and int(targets.max()) >= token_bytes.numel():
        raise AksharaError(
            f"target id {int(targets.max())} is out of range for token_bytes of vocab size {token_bytes.numel()}"
        )
    table = token_bytes.to(device=targets.device, dtype=torch.int64)
    num_bytes = torch.where(valid, table[torch.where(valid, targets, 0)], 0)
    scored = num_bytes > 0
    nats = torch.where(scored, losses.to(torch.float64), 0.0).sum()
    return float(nats), int(num_bytes.sum())


# --------------------------------------------------------------------------- summary


def score_pairs(predictions: list[str], references: list[str]) -> dict[str, float]:
    """All text metrics of an eval set on a 0..100 scale, for logging and model cards.

    rouge1/rouge2/rougeL: mean per-pair F1 x 100 (see `corpus_rouge`); chrf: corpus chrF from
    summed statistics (see `corpus_chrf`).
    """
    rouge_scores = corpus_rouge(predictions, references)
    result = {key: 100 * rouge_scores[key].fmeasure for key in ROUGE_TYPES}
    result["chrf"] = corpus_chrf(predictions, references)
    return result


# --------------------------------------------------------------------------- validation


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise AksharaError(f"{name} must be a str, got {type(value).__name__}")


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    for name, seq in (("predictions", predictions), ("references", references)):
        if isinstance(seq, str) or not isinstance(seq, Sequence):
            raise AksharaError(f"{name} must be a list of str, got {type(seq).__name__}")
    if len(predictions) != len(references):
        raise AksharaError(f"got {len(predictions)} predictions but {len(references)} references; they must pair up")
    if not predictions:
        raise AksharaError("no prediction/reference pairs to score")
    for name, seq in (("predictions", predictions), ("references", references)):
        for i, value in enumerate(seq):
            _check_str(value, f"{name}[{i}]")
