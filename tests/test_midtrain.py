"""Mid-training rows (nanochat's token stream), bits per byte during evaluation, and nanochat's FLOPs count."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from akshara_hf import AksharaConfig, AksharaForCausalLM
from akshara_hf.tokenization.chat import render_conversation
from akshara_hf.errors import AksharaError
from akshara_hf.training.flops import flops_per_token
from akshara_hf.data.packing import pack_conversations, pack_documents, token_byte_lengths
from akshara_hf.tokenization.tokenizer import fast_to_tiktoken, nanochat_token_bytes, train_tokenizer
from akshara_hf.training.trainer import AksharaSFTConfig, MuonSFTTrainer

WORDS = "రాముడు అడవికి వెళ్ళాడు సీత ఇంటికి వచ్చింది పిల్లలు బడికి వెళ్తారు వర్షం పడింది నది ప్రవహిస్తుంది".split()
WORDS += "the river flows 2024 rain fell children go to school 😊 hello".split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + rng.choice([".", "!", "?"]) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(sentences(400), vocab_size=300)


@pytest.fixture(scope="module")
def conversations():
    texts = sentences(80, seed=1)
    return Dataset.from_list([
        {"messages": [{"role": "user", "content": texts[i]}, {"role": "assistant", "content": texts[i + 1]}]}
        for i in range(0, len(texts), 2)
    ])


def test_flops_per_token_reproduces_the_seed_totals():
    d20 = AksharaConfig.from_depth(20)
    per_token = flops_per_token(d20, 2048)
    with torch.device("meta"):
        model = AksharaForCausalLM(d20)
    params = sum(p.numel() for p in model.parameters())
    assert per_token == 6 * (params - model.transformer.wte.weight.numel()) + 12 * 20 * 10 * 128 * 2048
    # akshara-runs.md: mid-v1 1,047 steps and mid-smoltalk-100k 262 steps of 524,288 tokens
    assert math.isclose(per_token * 1047 * 524288, 1_916_729_142_678_651_000, rel_tol=1e-15)
    assert math.isclose(per_token * 262 * 524288, 479_639_957_384_724_500, rel_tol=1e-15)


def test_token_byte_lengths_follow_nanochat_token_bytes(tokenizer):
    lengths = token_byte_lengths(tokenizer)
    encoding = fast_to_tiktoken(tokenizer)
    assert lengths.tolist() == nanochat_token_bytes(encoding)  # what nanochat's tok_train writes to token_bytes.pt
    text = "the river flows 2024 hello"  # ASCII: no token splits a character, so the bytes add up exactly
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert sum(lengths[i] for i in ids) == len(text.encode("utf-8"))
    assert all(lengths[tokenizer.convert_tokens_to_ids(t)] == 0 for t in ("<|bos|>", "<|assistant_end|>"))


def test_packed_rows_are_the_rendered_stream_overlapping_by_one(tokenizer, conversations):
    rows = pack_conversations(conversations, tokenizer, max_seq_len=16)["input_ids"]
    stream = [i for messages in conversations["messages"] for i in render_conversation(messages, tokenizer)[0]]
    assert all(len(row) == 17 for row in rows)
    assert len(rows) == (len(stream) - 1) // 16
    for index, row in enumerate(rows):
        assert row == stream[index * 16 : index * 16 + 17]


def test_documents_start_with_bos_and_keep_special_text_ordinary(tokenizer):
    docs = Dataset.from_list([{"text": "సీత <|assistant_end|> వచ్చింది"}] * 4)
    rows = pack_documents(docs, tokenizer, max_seq_len=8)["input_ids"]
    bos, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|bos|>", "<|assistant_end|>"))
    assert rows[0][0] == bos and all(end not in row for row in rows)


def test_packing_too_little_data_is_a_clear_error(tokenizer, conversations):
    with pytest.raises(AksharaError, match="fewer than"):
        pack_conversations(conversations.select(range(1)), tokenizer, max_seq_len=4096)


def test_trainer_eval_bpb_equals_a_full_logits_computation(tokenizer, conversations, tmp_path):
    rows = pack_conversations(conversations, tokenizer, max_seq_len=32)
    torch.manual_seed(0)
    model = AksharaForCausalLM(AksharaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, max_position_embeddings=64))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.2)
    args = AksharaSFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], stage="mid",
                            per_device_train_batch_size=2, per_device_eval_batch_size=3, target_examples_per_step=2,
                            max_length=33, eval_bpb=True, disable_tqdm=True)
    trainer = MuonSFTTrainer(model, args, train_dataset=rows, eval_dataset=rows, processing_class=tokenizer)
    metrics = trainer.evaluate()
    # by hand: every token a target, special tokens (0 bytes) excluded, nats / (ln 2 * bytes)
    ids = torch.tensor(rows["input_ids"], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[:, :-1]
    nll = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    nbytes = torch.as_tensor(token_byte_lengths(tokenizer))[ids[:, 1:].flatten()]
    expected = float(nll[nbytes > 0].sum()) / (math.log(2) * int(nbytes.sum()))
    assert abs(metrics["eval_bpb"] - expected) < 1e-5
    assert abs(metrics["eval_loss"] - float(nll.mean())) < 1e-5
