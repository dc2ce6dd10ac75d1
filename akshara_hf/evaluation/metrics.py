"""Scoring functions for evaluating Akshara (Telugu) outputs: ROUGE-1/2/L, chrF and bits per byte.

ROUGE is Google's `rouge_score` with a Telugu-aware tokenizer plugged in: its default tokenizer keeps only
[a-z0-9] and so scores every Telugu pair 0. `tokenize` below follows XL-Sum's multilingual ROUGE
(csebuetnlp/xl-sum, `multilingual_rouge_scoring`): Unicode-aware words, no stemming; on ASCII text it splits as
rouge_score's default does. chrF is sacrebleu's `CHRF()` (signature `chrF2|nc:6|nw:0|space:no`), and bits per byte
reproduces nanochat's `evaluate_bpb` (no library computes it from our token byte table).

Argument order is (prediction, reference) everywhere, as in sacrebleu; note that rouge_score's
`RougeScorer.score` takes (target, prediction), the other way round.
"""

from __future__ import annotations

import math
import operator
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import torch
from rouge_score.scoring import Score

from akshara_hf.errors import AksharaError

__all__ = [
    "Score",
    "tokenize",
    "rouge_n",
    "rouge_l",
    "rouge",
    "corpus_rouge",
    "sentence_chrf",
    "corpus_chrf",
    "bits_per_byte",
    "bpb_from_losses",
    "score_pairs",
]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


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


class _TeluguTokenizer:
    """The `tokenizer` object rouge_score accepts (anything with `tokenize(text) -> list[str]`)."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return tokenize(text)


@lru_cache(maxsize=None)
def _scorer(rouge_types: tuple[str, ...]):
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(rouge_types), use_stemmer=False, tokenizer=_TeluguTokenizer())


def _score(prediction: str, reference: str, rouge_types: tuple[str, ...]) -> dict[str, Score]:
    _check_str(prediction, "prediction")
    _check_str(reference, "reference")
    return _scorer(rouge_types).score(reference, prediction)  # rouge_score takes (target, prediction)


def rouge_n(prediction: str, reference: str, n: int) -> Score:
    """ROUGE-N of one pair: clipped n-gram overlap over prediction (P) and reference (R) n-grams."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 9:
        raise AksharaError(f"ROUGE-N order n must be an int from 1 to 9 (rouge_score's range), got {n!r}")
    return _score(prediction, reference, (f"rouge{n}",))[f"rouge{n}"]


def rouge_l(prediction: str, reference: str) -> Score:
    """Sentence-level ROUGE-L (rouge_score's `rougeL`, not `rougeLsum`): LCS over the whole text."""
    return _score(prediction, reference, ("rougeL",))["rougeL"]


def rouge(prediction: str, reference: str) -> dict[str, Score]:
    """ROUGE-1, ROUGE-2 and ROUGE-L of one pair."""
    return _score(prediction, reference, ROUGE_TYPES)


def corpus_rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Score]:
    """Mean over pairs of each per-pair precision, recall and F1, in [0, 1].

    This is the exact arithmetic mean, i.e. what rouge_score's BootstrapAggregator estimates as
    its `mid` (HF `evaluate`'s rouge reports that mid F1); we skip the bootstrap resampling so the
    number is deterministic. A pair where either side has no words scores 0, as in rouge_score.
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


def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()  # defaults: char_order 6, word_order 0, beta 2, whitespace removed


def sentence_chrf(prediction: str, reference: str) -> float:
    """chrF (0..100) of one pair: sacrebleu's `CHRF().sentence_score(prediction, [reference])`."""
    _check_str(prediction, "prediction")
    _check_str(reference, "reference")
    return _chrf().sentence_score(prediction, [reference]).score


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0..100): sacrebleu's `corpus_score`, from n-gram statistics summed over pairs.

    Not the mean of sentence chrF: long pairs weigh more, which is how chrF is normally reported.
    """
    _check_pairs(predictions, references)
    return _chrf().corpus_score(list(predictions), [list(references)]).score


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
