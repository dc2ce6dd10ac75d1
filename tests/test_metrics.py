"""Tests for akshara_hf.evaluation.metrics: ROUGE on Telugu, sacrebleu-compatible chrF, nanochat-style bpb.

Expected values are worked out by hand in the comments. ROUGE and chrF are computed by rouge_score and
sacrebleu (our Telugu tokenizer plugged into rouge_score); the shipped-samples test keeps the figures the
project's earlier hand-written implementation gave, so switching to the libraries changed no reported number.
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from akshara_hf.errors import AksharaError
from akshara_hf.evaluation.metrics import (
    Score,
    bits_per_byte,
    bpb_from_losses,
    corpus_chrf,
    corpus_rouge,
    rouge,
    rouge_l,
    rouge_n,
    score_pairs,
    sentence_chrf,
    tokenize,
)


def assert_score(score, precision, recall, fmeasure):
    assert isinstance(score, Score)
    assert score.precision == pytest.approx(precision, abs=1e-12)
    assert score.recall == pytest.approx(recall, abs=1e-12)
    assert score.fmeasure == pytest.approx(fmeasure, abs=1e-12)


# ----------------------------------------------------------------------------- tokenizer

# rouge-score's default tokenizer, reproduced in one line: lowercase, non-[a-z0-9] -> space.
def rouge_score_default_tokenize(text):
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def test_telugu_words_survive_tokenization_where_ascii_tokenizer_drops_them():
    text = "రాముడు అడవికి వెళ్ళాడు"
    assert rouge_score_default_tokenize(text) == []  # why Telugu scores 0 with rouge-score
    assert tokenize(text) == ["రాముడు", "అడవికి", "వెళ్ళాడు"]


def test_combining_marks_stay_inside_the_word():
    # వెళ్ళాడు = వ ె(Mn vowel sign) ళ ్(Mn virama) ళ ా(Mn) డ ు(Mc): four marks, still one word.
    word = "\u0c35\u0c46\u0c33\u0c4d\u0c33\u0c3e\u0c21\u0c41"
    assert word == "వెళ్ళాడు"
    assert tokenize(word) == [word]
    # Anusvara (Mc) and visarga (Mc) at the end of a word.
    assert tokenize("సంతోషం దుఃఖం") == ["సంతోషం", "దుఃఖం"]


def test_zwnj_and_zwj_are_removed_not_split():
    # ZWNJ/ZWJ only change how the virama renders; the word is the same with or without them.
    assert tokenize("వెళ్\u200cళాడు") == ["వెళ్ళాడు"]
    assert tokenize("వెళ్\u200dళాడు") == ["వెళ్ళాడు"]
    assert rouge_n("వెళ్\u200cళాడు", "వెళ్ళాడు", 1).fmeasure == 1.0
    # ZERO WIDTH SPACE is a separator, as its name says.
    assert tokenize("రాముడు\u200bఅడవికి") == ["రాముడు", "అడవికి"]


def test_nfc_normalization_matches_composed_and_decomposed_vowel_sign():
    # U+0C48 (AI) canonically decomposes to U+0C46 U+0C56; NFC makes both spellings one token.
    composed, decomposed = "\u0c15\u0c48", "\u0c15\u0c46\u0c56"
    assert composed != decomposed
    assert tokenize(decomposed) == [composed]
    assert rouge_n(decomposed, composed, 1).fmeasure == 1.0


def test_punctuation_and_symbols_separate_digits_join():
    assert tokenize("రాముడు, అడవికి! (వెళ్ళాడు)।") == ["రాముడు", "అడవికి", "వెళ్ళాడు"]
    assert tokenize("౨౦౨౪లో 2024-25") == ["౨౦౨౪లో", "2024", "25"]  # Telugu digits are Nd


def test_ascii_tokenization_equals_rouge_score_default():
    for text in ["The quick brown fox.", "don't STOP-me_now 42x", "  a,,b  ", ""]:
        assert tokenize(text) == rouge_score_default_tokenize(text)


# ----------------------------------------------------------------------------- ROUGE


def test_rouge_telugu_one_word_substituted():
    # ref  = రాముడు అడవికి వెళ్ళాడు, pred = రాముడు ఇంటికి వెళ్ళాడు (3 words each)
    # R1: common unigrams {రాముడు, వెళ్ళాడు} = 2 -> P = R = F = 2/3
    # R2: ref bigrams {రాముడు అడవికి, అడవికి వెళ్ళాడు}, pred {రాముడు ఇంటికి, ఇంటికి వెళ్ళాడు}: none shared -> 0
    # RL: LCS = రాముడు వెళ్ళాడు = 2 -> P = R = F = 2/3
    scores = rouge("రాముడు ఇంటికి వెళ్ళాడు", "రాముడు అడవికి వెళ్ళాడు")
    assert_score(scores["rouge1"], 2 / 3, 2 / 3, 2 / 3)
    assert_score(scores["rouge2"], 0.0, 0.0, 0.0)
    assert_score(scores["rougeL"], 2 / 3, 2 / 3, 2 / 3)


def test_rouge_telugu_shorter_prediction():
    # ref  = నేను ఈ రోజు బడికి వెళ్ళాను (5), pred = నేను బడికి వెళ్ళాను (3)
    # R1: 3 common -> P = 3/3 = 1, R = 3/5, F = 2*1*0.6/1.6 = 3/4
    # R2: pred bigrams {నేను బడికి, బడికి వెళ్ళాను}; ref has బడికి వెళ్ళాను only -> P = 1/2, R = 1/4,
    #     F = 2*(1/8)/(3/4) = 1/3
    # RL: LCS = the whole prediction (3) -> same as R1
    pred, ref = "నేను బడికి వెళ్ళాను", "నేను ఈ రోజు బడికి వెళ్ళాను"
    assert_score(rouge_n(pred, ref, 1), 1.0, 3 / 5, 3 / 4)
    assert_score(rouge_n(pred, ref, 2), 1 / 2, 1 / 4, 1 / 3)
    assert_score(rouge_l(pred, ref), 1.0, 3 / 5, 3 / 4)
    # Swapping the arguments swaps precision and recall.
    assert_score(rouge_n(ref, pred, 2), 1 / 4, 1 / 2, 1 / 3)


def test_rouge_english_word_order_and_clipping():
    # ref = the cat sat on the mat, pred = the cat on the mat sat (6 words each, same multiset)
    # R1 = 1. R2: ref {the cat, cat sat, sat on, on the, the mat}, pred {the cat, cat on, on the,
    # the mat, mat sat}: 3 shared of 5 -> 3/5. RL: LCS "the cat on the mat" = 5 -> 5/6.
    scores = rouge("the cat on the mat sat", "The cat sat on the mat.")
    assert_score(scores["rouge1"], 1.0, 1.0, 1.0)
    assert_score(scores["rouge2"], 3 / 5, 3 / 5, 3 / 5)
    assert_score(scores["rougeL"], 5 / 6, 5 / 6, 5 / 6)
    # Clipping: pred "the the the" vs ref "the the": overlap min(3, 2) = 2 -> P = 2/3, R = 1, F = 0.8
    assert_score(rouge_n("the the the", "the the", 1), 2 / 3, 1.0, 0.8)


def test_rouge_english_matches_rouge_score_readme_example():
    # rouge-score's README pair (target first there). Values from RougeScorer(use_stemmer=False):
    # R1 P = 6/8, R = 6/9; RL: LCS "the quick brown jumps the" = 5 -> P = 5/8, R = 5/9.
    scores = rouge("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog")
    assert_score(scores["rouge1"], 6 / 8, 6 / 9, 12 / 17)
    assert_score(scores["rouge2"], 2 / 7, 2 / 8, 4 / 15)
    assert_score(scores["rougeL"], 5 / 8, 5 / 9, 10 / 17)


def test_rouge_identical_and_empty():
    text = "రాముడు అడవికి వెళ్ళాడు."
    for score in rouge(text, text).values():
        assert_score(score, 1.0, 1.0, 1.0)
    for pred in ["", "   ", "!!"]:  # nothing to tokenize
        for score in rouge(pred, text).values():
            assert_score(score, 0.0, 0.0, 0.0)
    # A single-word pair has no bigrams: ROUGE-2 is 0 even though the words are identical.
    assert rouge_n("రాముడు", "రాముడు", 2).fmeasure == 0.0


def test_corpus_rouge_is_mean_of_pair_scores():
    preds = ["రాముడు ఇంటికి వెళ్ళాడు", "నేను బడికి వెళ్ళాను"]
    refs = ["రాముడు అడవికి వెళ్ళాడు", "నేను ఈ రోజు బడికి వెళ్ళాను"]
    corpus = corpus_rouge(preds, refs)
    # R1: P = (2/3 + 1)/2, R = (2/3 + 3/5)/2, F = (2/3 + 3/4)/2 (mean of F, not F of means)
    assert_score(corpus["rouge1"], 5 / 6, 19 / 30, 17 / 24)
    assert_score(corpus["rouge2"], 1 / 4, 1 / 8, 1 / 6)


def test_rouge_rejects_bad_input():
    with pytest.raises(AksharaError, match="str"):
        rouge(None, "x")
    for n in (0, 10, True, 1.0):
        with pytest.raises(AksharaError, match="n must be"):
            rouge_n("a", "a", n)
    with pytest.raises(AksharaError, match="reference must be a str"):
        rouge_l("a", b"a")
    with pytest.raises(AksharaError, match="prediction must be a str"):
        sentence_chrf(None, "a")


# ----------------------------------------------------------------------------- chrF


def test_chrf_hand_cases():
    # "ab" vs "ab": n=1 P=R=1, n=2 P=R=1, n>=3 neither side has n-grams (not counted) -> 100
    assert sentence_chrf("ab", "ab") == pytest.approx(100.0)
    # Whitespace is removed before taking n-grams: "a b" -> "ab"
    assert sentence_chrf("a b", "ab") == pytest.approx(100.0)
    # "ab" vs "ac": n=1 {a,b} vs {a,c}: P=R=1/2; n=2 {ab} vs {ac}: 0. avgP=avgR=1/4 -> F=1/4 -> 25
    assert sentence_chrf("ab", "ac") == pytest.approx(25.0)
    # "abc" vs ref "ab": n=1 P=2/3 R=1; n=2 P=1/2 R=1; n=3: ref has no trigram, so (as sacrebleu)
    # the hyp count is 0 and the order is skipped. avgP=7/12, avgR=1,
    # F2 = 5PR/(4P+R) = (35/12)/(40/12) = 7/8 -> 87.5
    assert sentence_chrf("abc", "ab") == pytest.approx(87.5)
    # "ab" vs ref "abc": n=1 P=1 R=2/3; n=2 P=1 R=1/2; n=3 hyp has none -> skipped.
    # avgP=1, avgR=7/12, F2 = (35/12)/(4+7/12) = 35/55 = 7/11
    assert sentence_chrf("ab", "abc") == pytest.approx(700 / 11)
    # Telugu is scored per code point: కి = క + ి, కీ = క + ీ. n=1: P=R=1/2; n=2: 0 -> 25
    assert sentence_chrf("కి", "కీ") == pytest.approx(25.0)
    assert sentence_chrf("", "ab") == 0.0
    assert sentence_chrf("ab", "") == 0.0


def test_corpus_chrf_sums_statistics_not_sentence_scores():
    # Pairs ("abc","ab") and ("ab","ac"). Summed stats: n=1 hyp 3+2, ref 2+2, match 2+1 -> P=3/5,
    # R=3/4; n=2 hyp 2+1, ref 1+1, match 1+0 -> P=1/3, R=1/2. avgP=7/15, avgR=5/8,
    # F2 = 5PR/(4P+R) = 175/299 = 58.528...; the mean of sentence scores would be (87.5+25)/2 = 56.25.
    assert corpus_chrf(["abc", "ab"], ["ab", "ac"]) == pytest.approx(17500 / 299)
    assert corpus_chrf(["ab"], ["ac"]) == pytest.approx(sentence_chrf("ab", "ac"))


def test_chrf_telugu_nonzero_and_identity():
    pred, ref = "రాముడు ఇంటికి వెళ్ళాడు", "రాముడు అడవికి వెళ్ళాడు"
    assert 0.0 < sentence_chrf(pred, ref) < 100.0
    assert sentence_chrf(ref, ref) == pytest.approx(100.0)


# ----------------------------------------------------------------------------- bits per byte


def test_bpb_hand_computation_with_special_and_ignored_targets():
    # vocab: id 0 is a special token (0 bytes); ids 1..4 have 1, 3, 2, 4 bytes.
    token_bytes = torch.tensor([0, 1, 3, 2, 4], dtype=torch.int32)
    targets = torch.tensor([[2, 0, -100], [4, 1, 3]])
    losses = torch.tensor([[0.5, 9.0, float("nan")], [1.0, 2.0, 0.25]])
    # Scored: (id 2: 0.5 nats, 3 B), (id 4: 1.0, 4 B), (id 1: 2.0, 1 B), (id 3: 0.25, 2 B).
    # The special token's 9.0 and the ignored target's NaN are excluded.
    # nats = 3.75, bytes = 10, bpb = 3.75 / (ln 2 * 10)
    nats, num_bytes = bpb_from_losses(losses, targets, token_bytes)
    assert nats == pytest.approx(3.75)
    assert num_bytes == 10
    assert bits_per_byte(nats, num_bytes) == pytest.approx(0.375 / math.log(2))
    # nanochat marks ignored targets with -1; any negative id is ignored.
    assert bpb_from_losses(losses, torch.where(targets == -100, -1, targets), token_bytes) == (nats, num_bytes)


def test_bpb_matches_cross_entropy_pipeline():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.tensor([[1, 2, 0, -100, 6], [5, 5, 0, 3, -100]])
    token_bytes = torch.tensor([0, 1, 2, 3, 1, 2, 5])
    loss = F.cross_entropy(logits.view(-1, 7), targets.view(-1), ignore_index=-100, reduction="none")
    nats, num_bytes = bpb_from_losses(loss.view(2, 5), targets, token_bytes)
    keep = [(b, t) for b in range(2) for t in range(5) if targets[b, t] > 0]  # id 0 = 0 bytes
    expected_nats = sum(-torch.log_softmax(logits[b, t], -1)[targets[b, t]].item() for b, t in keep)
    assert nats == pytest.approx(expected_nats, rel=1e-6)
    assert num_bytes == sum(int(token_bytes[targets[b, t]]) for b, t in keep) == 1 + 2 + 5 + 2 + 2 + 3


def test_bpb_rejects_bad_input():
    tb = torch.tensor([0, 1])
    with pytest.raises(AksharaError, match="out of range"):
        bpb_from_losses(torch.zeros(2), torch.tensor([1, 2]), tb)
    with pytest.raises(AksharaError, match="shape"):
        bpb_from_losses(torch.zeros(3), torch.tensor([1, 1]), tb)
    with pytest.raises(AksharaError, match="integer"):
        bpb_from_losses(torch.zeros(2), torch.tensor([1.0, 1.0]), tb)
    with pytest.raises(AksharaError, match="num_bytes must be > 0"):
        bits_per_byte(1.0, 0)
    with pytest.raises(AksharaError, match="int"):
        bits_per_byte(1.0, 2.5)


# ----------------------------------------------------------------------------- score_pairs


def test_score_pairs():
    preds = ["రాముడు ఇంటికి వెళ్ళాడు", "ab"]
    refs = ["రాముడు అడవికి వెళ్ళాడు", "ab"]
    out = score_pairs(preds, refs)
    assert set(out) == {"rouge1", "rouge2", "rougeL", "chrf"}
    # Mean F1 x 100: R1 (2/3 + 1)/2, R2 (0 + 0)/2 ("ab" is one word, no bigram), RL as R1.
    assert out["rouge1"] == pytest.approx(250 / 3)
    assert out["rouge2"] == pytest.approx(0.0)
    assert out["rougeL"] == pytest.approx(250 / 3)
    assert out["chrf"] == pytest.approx(corpus_chrf(preds, refs))
    same = score_pairs(refs, refs)
    assert all(v == pytest.approx(100.0) for k, v in same.items() if k != "rouge2")
    assert score_pairs([""], ["రాముడు అడవికి వెళ్ళాడు"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "chrf": 0.0}


def test_score_pairs_rejects_bad_input():
    with pytest.raises(AksharaError, match="1 predictions but 2 references"):
        score_pairs(["a"], ["a", "b"])
    with pytest.raises(AksharaError, match="no prediction"):
        score_pairs([], [])
    with pytest.raises(AksharaError, match=r"predictions\[1\] must be a str"):
        score_pairs(["a", 3], ["a", "b"])
    with pytest.raises(AksharaError, match="list of str"):
        score_pairs("abc", "abc")


# ----------------------------------------------------------------------------- the shipped samples

SAMPLES = Path(__file__).parents[1] / "data" / "samples"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sample_pairs():
    """Simple baselines on the shipped samples: paraphrase input vs target, lead sentence vs summary."""
    para = _jsonl(SAMPLES / "paraphrase" / "train.jsonl")
    xlsum = _jsonl(SAMPLES / "xlsum" / "telugu_train.jsonl")
    tesum = _jsonl(SAMPLES / "tesum" / "train.jsonl")
    return {
        "paraphrase": ([r["input"] for r in para], [r["target"] for r in para]),
        "xlsum_lead": ([r["text"].split(". ")[0] for r in xlsum], [r["summary"] for r in xlsum]),
        "tesum_lead": ([r["cleaned_text"][0] for r in tesum], [" ".join(r["summary"]) for r in tesum]),
    }


# score_pairs on those pairs with the hand-written ROUGE/chrF this module had before it used rouge_score and
# sacrebleu (measured on the same files, the commit before the switch).
HAND_WRITTEN_FIGURES = {
    "paraphrase": {"rouge1": 28.65109427609428, "rouge2": 3.273809523809524, "rougeL": 26.289983164983173,
                   "chrf": 35.90057525332396},
    "xlsum_lead": {"rouge1": 24.707507661215256, "rouge2": 11.094637945324443, "rougeL": 23.620551139476127,
                   "chrf": 30.28015426027823},
    "tesum_lead": {"rouge1": 23.296175220660345, "rouge2": 7.758853655878828, "rougeL": 21.051811291513808,
                   "chrf": 26.54193973414893},
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN_FIGURES))
def test_library_scores_equal_the_earlier_figures_on_the_shipped_samples(name):
    predictions, references = _sample_pairs()[name]
    assert len(predictions) >= 16
    scores = score_pairs(predictions, references)
    for metric, expected in HAND_WRITTEN_FIGURES[name].items():
        assert scores[metric] == pytest.approx(expected, abs=1e-9), metric


def test_rouge_uses_the_telugu_tokenizer_inside_rouge_score():
    from rouge_score.rouge_scorer import RougeScorer

    pred, ref = "రాముడు ఇంటికి వెళ్ళాడు", "రాముడు అడవికి వెళ్ళాడు"
    assert RougeScorer(["rouge1"]).score(ref, pred)["rouge1"].fmeasure == 0.0  # its default tokenizer drops Telugu
    assert rouge(pred, ref)["rouge1"].fmeasure == pytest.approx(2 / 3)
