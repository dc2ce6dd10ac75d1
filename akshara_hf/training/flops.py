"""Training FLOPs as nanochat counts them (its `estimate_flops`), for logs, run facts and MFU."""


def flops_per_token(config, seq_len: int) -> int:
    """`6 * (params - embedding params) + 12 * n_layer * n_head * head_dim * seq_len` (forward + backward).

    The embedding lookup costs no matmul, so `wte` is left out; the head (`lm_head`) is a matmul and stays in.
    """
    hidden, vocab, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    kv_dim = config.num_key_value_heads * config.head_dim
    per_block = hidden * (config.num_attention_heads * config.head_dim) * 2 + hidden * kv_dim * 2
    per_block += 2 * hidden * config.intermediate_size
    matmul_params = layers * per_block + vocab * hidden  # blocks + lm_head
    return 6 * matmul_params + 12 * layers * config.num_attention_heads * config.head_dim * seq_len
