"""`akshara-hf evaluate`: loss and bits-per-byte against a hand computation, task scores, the command's outputs."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from akshara_hf.tokenization.chat import render_conversation
from akshara_hf.cli import main as cli
from akshara_hf.errors import AksharaError
from akshara_hf.evaluation.evaluate import evaluate, evaluate_loss, evaluate_tasks, generate_replies
from akshara_hf.data.packing import token_byte_lengths

CONVERSATIONS = [
    [{"role": "user", "content": "రాముడు ఎక్కడికి వెళ్ళాడు?"}, {"role": "assistant", "content": "అడవికి వెళ్ళాడు."}],
    [{"role": "system", "content": "నువ్వు అక్షర."}, {"role": "user", "content": "hello"},
     {"role": "assistant", "content": "నమస్తే! 2024"}, {"role": "user", "content": "ok"},
     {"role": "assistant", "content": "సరే."}],
]


@pytest.fixture(scope="module")
def model_and_tokenizer(converted_folder):
    return AutoModelForCausalLM.from_pretrained(converted_folder), AutoTokenizer.from_pretrained(converted_folder)


def test_loss_and_bpb_equal_a_hand_computation(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    result = evaluate_loss(model, tokenizer, Dataset.from_list([{"messages": m} for m in CONVERSATIONS]), batch_size=2)
    token_bytes = token_byte_lengths(tokenizer)
    nll_sum, count, bpb_nats, bpb_bytes = 0.0, 0, 0.0, 0
    for messages in CONVERSATIONS:  # one conversation at a time, no padding: a different code path
        ids, mask = render_conversation(messages, tokenizer)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        for t, (target, supervised) in enumerate(zip(ids[1:], mask[1:])):
            if supervised:
                nll_sum, count = nll_sum + float(nll[t]), count + 1
                if token_bytes[target] > 0:
                    bpb_nats, bpb_bytes = bpb_nats + float(nll[t]), bpb_bytes + int(token_bytes[target])
    assert result["targets"] == count and result["bytes"] == bpb_bytes
    assert abs(result["loss"] - nll_sum / count) < 1e-5
    assert abs(result["bpb"] - bpb_nats / (math.log(2) * bpb_bytes)) < 1e-5


def test_plain_text_scores_every_token_after_bos(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    text = "నది ప్రవహిస్తుంది. The river flows."
    result = evaluate_loss(model, tokenizer, Dataset.from_list([{"text": text}]))
    assert result["targets"] == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    with pytest.raises(AksharaError, match="row 0: needs a 'messages' or a 'text' column"):
        evaluate_loss(model, tokenizer, Dataset.from_list([{"prompt": "x"}]))


def test_batched_left_padded_replies_equal_one_by_one(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [[{"role": "user", "content": "నమస్తే"}], CONVERSATIONS[1][:4]]
    batched = generate_replies(model, tokenizer, prompts, batch_size=2, max_new_tokens=6)
    single = [generate_replies(model, tokenizer, [p], batch_size=1, max_new_tokens=6)[0] for p in prompts]
    assert batched == single


def test_tasks_score_held_out_rows_by_source(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    reference = "వర్షం పడింది"
    rows = Dataset.from_list([
        {"messages": [{"role": "user", "content": "సారాంశం:\n\nనిన్న వర్షం పడింది."}, {"role": "assistant", "content": reference}],
         "source": "tesum"},
        {"messages": CONVERSATIONS[0], "source": "smoltalk"},
    ])
    results = evaluate_tasks(model, tokenizer, rows, tasks=("summarization",), max_new_tokens=4)
    assert list(results) == ["summarization"] and results["summarization"]["rows"] == 1
    assert set(results["summarization"]) >= {"rouge1", "rouge2", "rougeL", "chrf"}
    assert results["summarization"]["examples"][0]["reference"] == reference
    with pytest.raises(AksharaError, match="unknown task"):
        evaluate_tasks(model, tokenizer, rows, tasks=("translation",))
    with pytest.raises(AksharaError, match="nothing to evaluate: --no-loss with --tasks ''"):
        evaluate("never-loaded", "never-read", tasks=(), loss=False)


def test_evaluate_command_writes_json_and_markdown(converted_folder, tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text("\n".join(json.dumps({"messages": m, "source": "paraphrase"}, ensure_ascii=False) for m in CONVERSATIONS))
    assert cli(["evaluate", str(converted_folder), "--data", str(data), "--tasks", "paraphrase", "--max-new-tokens", "4",
                "--output", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["loss"]["targets"] > 0 and results["tasks"]["paraphrase"]["rows"] == 2
    assert "| paraphrase | 2 |" in (tmp_path / "out" / "eval_results.md").read_text()
    rerun = ["evaluate", str(converted_folder), "--data", str(data), "--tasks", "", "--output", str(tmp_path / "out")]
    assert cli(rerun) == 2  # an earlier output is replaced only with --overwrite
    assert cli([*rerun, "--overwrite"]) == 0 and "tasks" not in json.loads((tmp_path / "out" / "eval_results.json").read_text())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "eval_results.json").write_text("my notes")
    assert cli([*rerun[:-1], str(mine), "--overwrite"]) == 2  # a folder evaluate did not write is never replaced
    assert (mine / "eval_results.json").read_text() == "my notes"
    assert cli([*rerun[:-1], str(converted_folder / "eval")]) == 2  # not inside the model folder
    assert cli(["evaluate", str(converted_folder), "--data", str(tmp_path / "missing.jsonl")]) == 2
