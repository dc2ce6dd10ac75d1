"""Akshara model configuration (published to the Hub as remote code: imports only transformers)."""

import math

from transformers import PreTrainedConfig

# nanochat's `GPTConfig` field -> our HF-standard field.
NANOCHAT_CONFIG_KEYS = {
    "sequence_len": "max_position_embeddings",
    "vocab_size": "vocab_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_kv_head": "num_key_value_heads",
    "n_embd": "hidden_size",
}


class AksharaConfig(PreTrainedConfig):
    r"""
    Configuration of an Akshara (nanochat "d"-series, late-2025 architecture) GPT.

    Field names follow transformers so that the ecosystem reads them: `final_logit_softcapping` is the name TRL's
    fused loss looks for (under another name TRL silently trains without the softcap).

    Args:
        vocab_size: real vocabulary size (embedding and head rows; nanochat's padding rows are dropped on conversion).
        hidden_size: `n_embd`.
        intermediate_size: MLP width, `4 * hidden_size` in nanochat.
        num_hidden_layers: `n_layer`.
        num_attention_heads: `n_head`.
        num_key_value_heads: `n_kv_head` (GQA when smaller than `num_attention_heads`).
        max_position_embeddings: nanochat's `sequence_len`.
        rope_theta: rotary base (10000 in this architecture).
        rotary_cache_factor: the rotary tables cover `rotary_cache_factor * max_position_embeddings` positions,
            as nanochat precomputes them (10x).
        final_logit_softcapping: `logits = c * tanh(logits / c)`, computed in fp32.
        rms_norm_eps: `None` reproduces nanochat's `F.rms_norm(x, (d,))`, i.e. torch's default eps, which is
            `finfo(float32).eps` for fp32 *and* bf16 inputs (torch uses the op-math type).
    """

    model_type = "akshara"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 65536,
        hidden_size: int = 1280,
        intermediate_size: int | None = None,
        num_hidden_layers: int = 20,
        num_attention_heads: int = 10,
        num_key_value_heads: int | None = None,
        max_position_embeddings: int = 2048,
        rope_theta: float = 10000.0,
        rotary_cache_factor: int = 10,
        final_logit_softcapping: float | None = 15.0,
        rms_norm_eps: float | None = None,
        attention_dropout: float = 0.0,
        use_cache: bool = True,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}")
        num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        if num_attention_heads % num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads "
                f"{num_key_value_heads}"
            )
        if tie_word_embeddings:
            raise ValueError("Akshara has untied embeddings (wte and lm_head are separate matrices)")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = 4 * hidden_size if intermediate_size is None else intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = hidden_size // num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rotary_cache_factor = rotary_cache_factor
        self.final_logit_softcapping = final_logit_softcapping
        self.rms_norm_eps = rms_norm_eps
        self.attention_dropout = attention_dropout
        self.use_cache = use_cache
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=False,
            **kwargs,
        )

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int = 65536, max_position_embeddings: int = 2048, **kwargs):
        """nanochat's depth rule: `n_layer = depth`, `n_embd = 64 * depth`, head_dim 128 (`n_head = ceil(n_embd/128)`)."""
        hidden_size = depth * 64
        num_heads = max(1, math.ceil(hidden_size / 128))
        return cls(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_hidden_layers=depth,
            num_attention_heads=num_heads,
            num_key_value_heads=kwargs.pop("num_key_value_heads", num_heads),
            max_position_embeddings=max_position_embeddings,
            **kwargs,
        )

    @classmethod
    def from_nanochat(cls, model_config: dict, **kwargs):
        """Build from a nanochat `meta_*.json["model_config"]` (`GPTConfig`) dict."""
        missing = [key for key in NANOCHAT_CONFIG_KEYS if key not in model_config]
        if missing:
            raise ValueError(f"nanochat model_config lacks {missing} (has {sorted(model_config)})")
        unknown = sorted(set(model_config) - set(NANOCHAT_CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"nanochat model_config has fields this architecture does not have: {unknown} "
                "(a newer nanochat architecture?)"
            )
        fields = {ours: model_config[theirs] for theirs, ours in NANOCHAT_CONFIG_KEYS.items()}
        return cls(**fields, **kwargs)

    def to_nanochat(self) -> dict:
        return {theirs: getattr(self, ours) for theirs, ours in NANOCHAT_CONFIG_KEYS.items()}


__all__ = ["AksharaConfig"]
