# Copyright 2026 The Akshara-HF authors. Licensed under the MIT License.
"""Akshara: the nanochat GPT as a transformers model, both generations from one file.

Late 2025 is the default. nanochat 2026's additions are config switches (`AksharaConfig`): value embeddings, per-layer
sliding windows, residual and x0 lambdas, smear, backout, a q/k scale, rope theta and rotary-table dtype; with every
switch at its default the model computes exactly what it computed before they existed.

Published to the Hub as remote code, so it imports only torch and transformers. Module and parameter names are
nanochat's (`transformer.wte`, `transformer.h.{i}.attn.c_q`, ... , `lm_head`), so a nanochat state dict loads as is;
nanochat 2026's top-level `value_embeds`, lambdas, `smear_*` and `backout_lambda` live in the backbone here
(`transformer.value_embeds...`): TRL's loss runs the backbone alone, so everything that shapes the hidden states must.
"""

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import AttentionInterface, PreTrainedModel

try:
    from transformers.modeling_utils import slice_logits_to_keep
except ImportError:  # transformers 5.16-5.19 (vLLM's range) lack it: the slicing modeling_llama.py did inline

    def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        return hidden_states[:, slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep, :]


# The standard eager attention (GQA via `module.num_key_value_groups`); SDPA/flash/flex come from the interface.
from transformers.models.llama.modeling_llama import eager_attention_forward
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_akshara import AksharaConfig


class AksharaRMSNorm(nn.Module):
    """Parameter-free RMSNorm: nanochat's `F.rms_norm(x, (x.size(-1),))` (no weight, torch's default eps)."""

    def __init__(self, eps: float | None = None):
        super().__init__()
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(hidden_states, (hidden_states.size(-1),), eps=self.eps)

    def extra_repr(self):
        return f"eps={self.eps}"


def rope_frequencies(config: AksharaConfig, device=None, seq_len=None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and attention scaling for `config.rope_parameters`: nanochat's formula for "default" (bit
    for bit), transformers' `ROPE_INIT_FUNCTIONS` for the scaled types (linear, dynamic, yarn, llama3)."""
    rope = config.rope_parameters
    if rope["rope_type"] == "default":
        channels = torch.arange(0, config.head_dim, 2, dtype=torch.float32, device=device)
        return 1.0 / (rope["rope_theta"] ** (channels / config.head_dim)), 1.0
    return ROPE_INIT_FUNCTIONS[rope["rope_type"]](config, device, seq_len=seq_len)


def rotary_tables(
    positions: torch.Tensor, inv_freq: torch.Tensor, scaling: float, dtype: str | None = "bfloat16"
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of `positions x inv_freq` (`(..., head_dim // 2)`), times the attention scaling (yarn's), in `dtype`
    (`config.rotary_dtype`): rounded to bf16 as late-2025 nanochat stores its tables, or fp32 for None (nanochat 2026
    keeps them in the compute dtype; they are cast to the activations' dtype where used)."""
    freqs = positions.float().unsqueeze(-1) * inv_freq
    cos, sin = freqs.cos(), freqs.sin()
    if scaling != 1.0:
        cos, sin = cos * scaling, sin * scaling
    dtype = getattr(torch, dtype) if dtype is not None else torch.float32
    return cos.to(dtype), sin.to(dtype)


def compute_rotary_tables(config: AksharaConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables for positions `0 .. rotary_cache_factor * max_position_embeddings - 1`, `(positions, head_dim // 2)`."""
    inv_freq, scaling = rope_frequencies(config, device)
    positions = torch.arange(config.rotary_cache_factor * config.max_position_embeddings, device=device)
    return rotary_tables(positions, inv_freq, scaling, config.rotary_dtype)


class AksharaRotaryEmbedding(nn.Module):
    """Looks up precomputed tables (bf16; fp32 for nanochat 2026: `rotary_dtype`), non-persistent buffers recomputed
    in `_init_weights` after loading.

    "dynamic" RoPE (NTK) rescales its base by the current length, so its tables are computed per forward, from the
    length as a tensor (no host sync), like transformers' `dynamic_rope_update` but without a cache of the last one."""

    def __init__(self, config: AksharaConfig):
        super().__init__()
        self.config = config
        self.dynamic = config.rope_parameters["rope_type"] == "dynamic"
        inv_freq, self.attention_scaling = rope_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # transformers' name: what the tables hold
        cos, sin = compute_rotary_tables(config)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def reset_tables(self) -> None:
        """Recompute the non-persistent buffers (`from_pretrained` leaves them empty; `_init_weights` calls this)."""
        inv_freq, _ = rope_frequencies(self.config, device=self.inv_freq.device)
        cos, sin = compute_rotary_tables(self.config, device=self.cos.device)
        init.copy_(self.inv_freq, inv_freq)
        init.copy_(self.cos, cos)
        init.copy_(self.sin, sin)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(cos, cos)` and `(sin, -sin)` of shape `(batch, seq, head_dim)` (transformers' layout) in `x`'s dtype,
        built once per forward for every layer. bf16 tables widen losslessly, and same-dtype products stay on the
        vectorised path."""
        if self.dynamic:
            inv_freq, scaling = rope_frequencies(self.config, x.device, seq_len=position_ids.max() + 1)
            cos, sin = rotary_tables(position_ids, inv_freq, scaling, self.config.rotary_dtype)
        else:
            cos, sin = self.cos[position_ids], self.sin[position_ids]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return torch.cat((cos, cos), dim=-1), torch.cat((sin, -sin), dim=-1)

    def check_positions(self, position_ids: torch.LongTensor, past_key_values: Cache | None) -> None:
        """A position beyond the tables is a clear error, not an index error deep in torch (a device-side assert on a
        GPU). Checked without a device-to-host sync: a non-sliding static cache no longer than the tables bounds the
        positions already; `generate` checks its `max_length` once (`_validate_generated_length`); tensors on the CPU
        are checked here; under `torch.compile` the check is left to those two."""
        if torch.compiler.is_compiling():
            return
        limit = self.cos.shape[0]
        if past_key_values is not None and past_key_values.is_compileable and not any(past_key_values.is_sliding):
            if 0 < past_key_values.get_max_length() <= limit:
                return
        if position_ids.device.type == "cpu" and position_ids.numel() and int(position_ids.max()) >= limit:
            raise ValueError(
                f"position {int(position_ids.max())} is beyond the rotary tables ({limit} positions = "
                "rotary_cache_factor x max_position_embeddings)"
            )


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1) -> torch.Tensor:
    """nanochat's rotary (`y1 = x1 cos + x2 sin`, `y2 = x1 (-sin) + x2 cos` on the two halves of `head_dim`) on
    `(batch, heads, seq, head_dim)`, as one product with the widened `(batch, seq, head_dim)` tables from
    `AksharaRotaryEmbedding` (broadcast over the heads at `unsqueeze_dim`, as in `modeling_llama.py`): the same
    products and sums, so the same bits, in fewer operations."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    d = x.shape[-1] // 2
    return x * cos + torch.cat((x[..., d:], x[..., :d]), dim=-1) * sin


def sdpa_varlen_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA; on a padding-free row (TRL's collator: sequences concatenated, boundaries in `cu_seq_lens_*`), one causal
    SDPA per sequence.

    Written by hand because transformers has no variable-length SDPA: its SDPA attends over the whole row through the
    dense block-diagonal mask built from `position_ids`, (sum of lengths)^2 work where the sequences need the sum of
    their squares (bench/README.md has the measured cost), and the varlen kernels
    (flash-attention) need a GPU. `cu_seq_lens_*` define the sequences: TRL derives them from the same `position_ids`
    resets the block-diagonal mask is built from (its padding-free batches carry no `attention_mask`).
    """
    varlen = (
        cu_seq_lens_q is not None
        and query.shape[0] == 1
        and query.shape[2] == key.shape[2]  # not decoding against a cache
        and (cu_seq_lens_k is None or torch.equal(cu_seq_lens_q, cu_seq_lens_k))
    )
    if not varlen:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    lengths = cu_seq_lens_q.diff().tolist()
    window = getattr(module, "sliding_window", None)
    # `split`, not slicing: its backward is one `cat`, where each slice's backward would fill a whole-row zero tensor.
    outputs = [
        sdpa_attention_forward(module, q, k, v, _window_mask(q.shape[2], window, q.device), **kwargs)[0]
        for q, k, v in zip(*(tensor.split(lengths, dim=2) for tensor in (query, key, value)))
    ]
    return torch.cat(outputs, dim=1), None


def _window_mask(length: int, window: int | None, device) -> torch.Tensor | None:
    """Causal mask keeping the last `window` keys (the query's own included), or None (plain causal) when the sequence
    fits in the window."""
    if window is None or length <= window:
        return None
    distance = torch.arange(length, device=device)[:, None] - torch.arange(length, device=device)[None, :]
    return ((distance >= 0) & (distance < window))[None, None]


# transformers' interface with "sdpa" overridden for this model only (the local mapping AttentionInterface provides).
ALL_ATTENTION_FUNCTIONS = AttentionInterface()
ALL_ATTENTION_FUNCTIONS["sdpa"] = sdpa_varlen_attention_forward


VE_GATE_CHANNELS = 12  # nanochat 2026's ve_gate reads the first 12 channels of the block's normalised input
SMEAR_CHANNELS = 24  # and smear_gate the first 24 of the normalised token embedding


class AksharaAttention(nn.Module):
    """project -> rotary on q, k -> QK-norm (after rotary) -> causal attention (GQA) -> c_proj."""

    def __init__(self, config: AksharaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        hidden, kv_dim = config.hidden_size, config.num_key_value_heads * self.head_dim
        self.c_q = nn.Linear(hidden, config.num_attention_heads * self.head_dim, bias=False)
        self.c_k = nn.Linear(hidden, kv_dim, bias=False)
        self.c_v = nn.Linear(hidden, kv_dim, bias=False)
        self.c_proj = nn.Linear(config.num_attention_heads * self.head_dim, hidden, bias=False)
        self.c_proj.zero_init = True  # nanochat starts the block's output projections at zero
        self.q_norm = AksharaRMSNorm(config.rms_norm_eps)
        self.k_norm = AksharaRMSNorm(config.rms_norm_eps)
        self.qk_scale = config.qk_scale
        # Keys a query sees, its own included (None: all before it): nanochat 2026's per-layer left window + 1.
        self.sliding_window = config.layer_window(layer_idx)
        # nanochat 2026: a value embedding of the token ids mixed into v, gated per KV head from the input's first 12
        # channels, on every other layer (always the last).
        self.ve_gate = (
            nn.Linear(VE_GATE_CHANNELS, config.num_key_value_heads, bias=False)
            if config.has_value_embedding(layer_idx)
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        value_embedding: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.c_q(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.c_k(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.c_v(hidden_states).view(hidden_shape)
        if self.ve_gate is not None:
            gate = 3 * torch.sigmoid(self.ve_gate(hidden_states[..., :VE_GATE_CHANNELS]))
            value = value + gate.unsqueeze(-1) * value_embedding.view(hidden_shape).to(value.dtype)
        value = value.transpose(1, 2)

        cos, sin = position_embeddings
        query, key = apply_rotary_emb(query, cos, sin), apply_rotary_emb(key, cos, sin)
        query, key = self.q_norm(query), self.k_norm(key)
        if self.qk_scale is not None:  # nanochat 2026 scales q and k each (1.2), SDPA keeps 1/sqrt(head_dim)
            query, key = query * self.qk_scale, key * self.qk_scale

        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            sliding_window=self.sliding_window,  # flash/flex attention read it; SDPA/eager get it in the mask
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.c_proj(attn_output), attn_weights


class AksharaMLP(nn.Module):
    def __init__(self, config: AksharaConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.c_proj.zero_init = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(hidden_states)).square())


class AksharaBlock(GradientCheckpointingLayer):
    def __init__(self, config: AksharaConfig, layer_idx: int):
        super().__init__()
        self.attn = AksharaAttention(config, layer_idx)
        self.mlp = AksharaMLP(config)
        self.input_layernorm = AksharaRMSNorm(config.rms_norm_eps)
        self.post_attention_layernorm = AksharaRMSNorm(config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Cache | None = None,
        value_embedding: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attn_output, _ = self.attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            value_embedding=value_embedding,
            **kwargs,
        )
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class AksharaCache(DynamicCache):
    """`DynamicCache` that also carries smear's state: the last position's normalised token embedding (before smear).

    nanochat 2026's smear mixes the previous token's embedding into each position; decoding one token needs the
    previous one's, which nanochat's KV cache keeps (`prev_embedding`). Here it lives in the cache too, so generation
    keeps it, beam search reorders it and batch expansion repeats it along with the keys and values."""

    smear_embedding: torch.Tensor | None = None

    def reset(self):
        super().reset()
        self.smear_embedding = None

    def reorder_cache(self, beam_idx: torch.LongTensor):
        super().reorder_cache(beam_idx)
        if self.smear_embedding is not None:
            self.smear_embedding = self.smear_embedding.index_select(0, beam_idx.to(self.smear_embedding.device))

    def batch_repeat_interleave(self, repeats: int):
        super().batch_repeat_interleave(repeats)
        if self.smear_embedding is not None:
            self.smear_embedding = self.smear_embedding.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor):
        super().batch_select_indices(indices)
        if self.smear_embedding is not None:
            self.smear_embedding = self.smear_embedding[indices]

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove and self.smear_embedding is not None:
            # Only the last position's embedding is kept: an earlier one cannot be restored.
            raise NotImplementedError("AksharaCache cannot be cropped once smear has stored an embedding (assisted decoding)")
        super().crop(tokens_to_remove)


class AksharaPreTrainedModel(PreTrainedModel):
    config: AksharaConfig
    config_class = AksharaConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["AksharaBlock"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": AksharaBlock, "attentions": AksharaAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """nanochat's init for new models: every matrix `normal(0, fan_in^-0.5 * min(1, sqrt(fan_out / fan_in)))`, the
        embedding `normal(0, 1)`, zero where the owning module marked its output projection `zero_init` (each block's
        two output projections and the head). Also restores the rotary tables, which `from_pretrained` leaves empty.

        The owners mark their projections when built, because transformers never calls this on them: for remote-code
        models it skips every module without parameters of its own (`_initialize_weights`), i.e. all parents.

        With `config.initializer_range` set, every matrix and embedding is `normal(0, initializer_range)` instead
        (transformers' convention; the lambdas and tables are set as always)."""
        if self.config.initializer_range is not None and isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            return
        if self.config.is_nanochat_2026:
            return self._init_weights_2026(module)
        if isinstance(module, nn.Linear):
            if getattr(module, "zero_init", False):
                init.zeros_(module.weight)
            else:
                fan_out, fan_in = module.weight.shape
                init.normal_(module.weight, mean=0.0, std=fan_in**-0.5 * min(1.0, (fan_out / fan_in) ** 0.5))
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, AksharaRotaryEmbedding):
            module.reset_tables()

    def _init_weights_2026(self, module: nn.Module) -> None:
        """nanochat 2026's `init_weights` (uniform block matrices, zero output projections, a tiny head, its lambdas)."""
        bound = 3**0.5 * self.config.hidden_size**-0.5  # uniform with the std of normal(0, 1/sqrt(n_embd))
        head = self.get_output_embeddings()
        if isinstance(module, nn.Linear):
            backbone = self._backbone()
            gates = [block.attn.ve_gate for block in backbone.h] + [backbone.smear_gate]
            if module is head:
                init.normal_(module.weight, mean=0.0, std=0.001)
            elif getattr(module, "zero_init", False):  # c_proj of attention and MLP
                init.zeros_(module.weight)
            elif any(module is gate for gate in gates):
                init.uniform_(module.weight, 0.0, 0.02)  # ve_gate, smear_gate: gates start slightly above neutral
            elif any(module is block.mlp.c_fc for block in backbone.h):
                init.uniform_(module.weight, -0.4 * bound, 0.4 * bound)
            else:
                init.uniform_(module.weight, -bound, bound)  # c_q, c_k, c_v
        elif isinstance(module, nn.Embedding):
            if module is self._backbone().wte:
                init.normal_(module.weight, mean=0.0, std=0.8)
            else:
                init.uniform_(module.weight, -bound, bound)  # value embeddings, like c_v
        elif isinstance(module, AksharaModel):
            n = self.config.num_hidden_layers
            steps = torch.arange(n, dtype=torch.float32) / max(n - 1, 1)
            if module.resid_lambdas is not None:
                init.copy_(module.resid_lambdas, 1.15 - 0.10 * steps)
                init.copy_(module.x0_lambdas, 0.20 - 0.15 * steps)
            if module.smear_lambda is not None:
                init.zeros_(module.smear_lambda)
            if module.backout_lambda is not None:
                init.constant_(module.backout_lambda, 0.2)
        elif isinstance(module, AksharaRotaryEmbedding):
            module.reset_tables()

    def save_pretrained(self, *args, **kwargs):
        """transformers writes `auto_map` for the saved class alone (`AutoModelForCausalLM`), but loaders that build
        the backbone from remote code need its entry too (vLLM's transformers backend reads `AutoModel` and adds its
        own head): every class registered at the bottom of this file goes into `auto_map`, pointing at this file."""
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(*args, **kwargs)

    def _resize_token_embeddings(self, new_num_tokens, pad_to_multiple_of=None, mean_resizing=True):
        """transformers resizes the token embedding and the head; nanochat 2026's value embeddings are tables over the
        same vocabulary, so they are resized with them (as transformers resizes the embedding)."""
        embeddings = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        value_embeds = self._backbone().value_embeds
        for name, table in (value_embeds or {}).items():
            resized = self._get_resized_embeddings(table, embeddings.weight.shape[0], mean_resizing=mean_resizing)
            value_embeds[name] = resized.requires_grad_(table.weight.requires_grad)
        return embeddings

    def _backbone(self) -> "AksharaModel":
        return getattr(self, self.base_model_prefix, self)


class AksharaModel(AksharaPreTrainedModel):
    """The backbone: embedding, norm, blocks, final norm (inside, so TRL's fused loss sees normed states)."""

    def __init__(self, config: AksharaConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.h = nn.ModuleList([AksharaBlock(config, i) for i in range(config.num_hidden_layers)])
        self.embedding_norm = AksharaRMSNorm(config.rms_norm_eps)
        self.norm = AksharaRMSNorm(config.rms_norm_eps)
        self.rotary_emb = AksharaRotaryEmbedding(config)
        # nanochat 2026 (absent, None, in late-2025 models; nanochat keeps these at its top level)
        self.value_embeds = (
            nn.ModuleDict({
                str(i): nn.Embedding(config.vocab_size, config.num_key_value_heads * config.head_dim)
                for i in range(config.num_hidden_layers) if config.has_value_embedding(i)
            })
            if config.use_value_embeddings else None
        )  # fmt: skip
        if config.use_residual_lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(config.num_hidden_layers))
            self.x0_lambdas = nn.Parameter(torch.zeros(config.num_hidden_layers))
        else:
            self.resid_lambdas = self.x0_lambdas = None
        if config.use_smear:
            self.smear_gate = nn.Linear(SMEAR_CHANNELS, 1, bias=False)
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        else:
            self.smear_gate = self.smear_lambda = None
        self.backout_lambda = nn.Parameter(torch.full((1,), 0.2)) if config.use_backout else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.wte = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if self.value_embeds is not None and input_ids is None:
            raise ValueError("this model has value embeddings (nanochat 2026), which are looked up from input_ids")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        # transformers 5.24+ `generate` passes the cache as `cache` (its new name for `past_key_values`): read as
        # the old name, decoding steps ran without the prompt's keys and values (wrong tokens, no error)
        cache = kwargs.pop("cache", None)
        if past_key_values is None:
            past_key_values = cache
        if use_cache and past_key_values is None:
            past_key_values = AksharaCache(config=self.config)
        if position_ids is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0) + past_seen

        masks = self._attention_masks(inputs_embeds, attention_mask, past_key_values, position_ids)
        self.rotary_emb.check_positions(position_ids, past_key_values)
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)

        hidden_states = self.embedding_norm(inputs_embeds)
        if self.smear_gate is not None:
            hidden_states = self._smear(hidden_states, position_ids, past_key_values, attention_mask)
        x0 = hidden_states
        backout_layer, x_backout = self.config.num_hidden_layers // 2, None
        for i, block in enumerate(self.h):
            if self.resid_lambdas is not None:
                hidden_states = self.resid_lambdas[i] * hidden_states + self.x0_lambdas[i] * x0
            value_embedding = self.value_embeds[str(i)](input_ids) if block.attn.ve_gate is not None else None
            hidden_states = block(
                hidden_states,
                attention_mask=masks[i],
                position_embeddings=position_embeddings,
                past_key_values=past_key_values,
                position_ids=position_ids,
                value_embedding=value_embedding,
                **kwargs,
            )
            if i == backout_layer and self.backout_lambda is not None:
                x_backout = hidden_states
        if x_backout is not None:  # nanochat 2026: subtract part of the mid-depth residual stream
            hidden_states = hidden_states - self.backout_lambda.to(hidden_states.dtype) * x_backout
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), past_key_values=past_key_values)

    def _attention_masks(self, inputs_embeds, attention_mask, past_key_values, position_ids) -> list:
        """Each layer's mask, from masking_utils: one per distinct (layer type, window), causal or sliding. A dict
        from `create_masks_for_generate` (compiled generation) is already keyed by layer type."""
        types = self.config.layer_types or ["full_attention"] * len(self.h)
        if isinstance(attention_mask, dict):
            return [attention_mask[kind] for kind in types]
        masks = {}
        for i, (block, kind) in enumerate(zip(self.h, types)):
            window = block.attn.sliding_window
            if (kind, window) in masks:
                continue
            arguments = dict(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, past_key_values=past_key_values,
                position_ids=position_ids,
            )  # fmt: skip
            if window is None:
                masks[kind, window] = create_causal_mask(config=self.config, **arguments)
            else:
                # masking_utils reads the window from the config, and sizes the mask from this layer's cache.
                config = copy.copy(self.config)
                config.sliding_window = window
                masks[kind, window] = create_sliding_window_causal_mask(config=config, layer_idx=i, **arguments)
        return [masks[kind, block.attn.sliding_window] for block, kind in zip(self.h, types)]

    def _smear(self, embeddings: torch.Tensor, position_ids: torch.Tensor, cache: Cache | None,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """nanochat 2026's smear: `x[t] += smear_lambda * sigmoid(smear_gate(x[t, :24])) * x[t-1]` where position t has
        a predecessor (position id > 0: not the first token of a sequence, a packed conversation or a left-padded
        row). Decoding continues from the embedding the cache kept from the previous forward; without it, a token
        whose predecessor is not in the input is refused (`_refuse_missing_predecessors`)."""
        previous = getattr(cache, "smear_embedding", None) if cache is not None else None
        if previous is None:
            _refuse_missing_predecessors(position_ids, attention_mask)
        first = torch.zeros_like(embeddings[:, :1]) if previous is None else previous.to(embeddings.dtype)
        if cache is not None:
            cache.smear_embedding = embeddings[:, -1:].detach()
        previous_tokens = torch.cat([first, embeddings[:, :-1]], dim=1)
        gate = self.smear_lambda.to(embeddings.dtype) * torch.sigmoid(self.smear_gate(embeddings[..., :SMEAR_CHANNELS]))
        has_previous = (position_ids > 0).unsqueeze(-1)
        return embeddings + torch.where(has_previous, gate * previous_tokens, torch.zeros_like(embeddings))


SMEAR_REFUSAL = (
    "smear (nanochat 2026) needs the previous token's embedding, which this call lacks: a token at position > 0 "
    "starts the input or follows a position-id restart, and no AksharaCache holds the previous token's state "
    "(a runtime that decodes without the model's cache, e.g. vLLM, would produce wrong tokens)"
)


def _refuse_missing_predecessors(position_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    """Refuse a forward in which a token has a predecessor (position id > 0) that is neither in the same input (the
    element before it, one position earlier) nor in a cache: smear would silently mix in zeros instead. This is what a
    runtime calling the model without its cache does when it decodes (one token per request at position > 0) or
    continues a prefix from its own cache, flattened batches included. Packed rows (position ids restarting at 0)
    and left or right padding (positions the 2-D attention mask marks 0) pass.

    Checked with one host sync (only in a forward without smear state: a prefill, not generate's decoding steps);
    under `torch.compile` (vLLM compiles the model) as a graph assertion that raises the same message at run time."""
    if position_ids.shape[-1] == 0:
        return
    predecessor_in_input = torch.zeros_like(position_ids, dtype=torch.bool)
    predecessor_in_input[..., 1:] = position_ids[..., 1:] == position_ids[..., :-1] + 1
    missing = (position_ids > 0) & ~predecessor_in_input
    if torch.is_tensor(attention_mask) and attention_mask.dim() == 2 and attention_mask.shape == position_ids.shape:
        missing = missing & attention_mask.bool()  # padding needs no predecessor
    if torch.compiler.is_compiling():
        torch._assert_async(~missing.any(), SMEAR_REFUSAL)
    elif missing.any():
        raise ValueError(SMEAR_REFUSAL)


def _keep_cache_as_graph_input(cache: Cache | None) -> None:
    """Drop dynamo's static-address mark from a cache's tensors (see `AksharaForCausalLM.get_compiled_call`)."""
    for layer in getattr(cache, "layers", ()):
        for tensor in vars(layer).values():
            if isinstance(tensor, torch.Tensor) and hasattr(tensor, "_dynamo_static_input_type"):
                del tensor._dynamo_static_input_type


class AksharaForCausalLM(AksharaPreTrainedModel, GenerationMixin):
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    _fsdp_plan = {"lm_head": "keep_full_weight"}

    def __init__(self, config: AksharaConfig):
        super().__init__(config)
        self.transformer = AksharaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.zero_init = True
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        """generate's default cache is a plain `DynamicCache`; a smear model needs `AksharaCache`, which carries the
        previous token's embedding (and beam search reorders it)."""
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        cache = model_kwargs.get("past_key_values")
        if self.config.use_smear and type(cache) is DynamicCache and not getattr(cache, "_is_user_defined", False):
            replacement = AksharaCache(config=self.config.get_text_config(decoder=True))
            if getattr(cache, "_is_assistant", False) or getattr(generation_config, "is_assistant", False):
                replacement.activate_past_recording()
            model_kwargs["past_key_values"] = replacement

    def get_compiled_call(self, compile_config):
        """`CompileConfig(options={"freezing": True, ...})` compiles the decoding step with the weights as constants
        (inference only). On a CPU, inductor's max-autotune can then pack them for its own GEMM kernels (measured in
        bench/README.md). transformers hands the options to inductor only, but whether parameters are frozen is
        decided when dynamo traces, from inductor's global config, so it is set around each call here. Under freezing,
        dynamo also turns every static-address tensor into a constant of the graph, and transformers' StaticCache marks
        its tensors so: the next `generate` with a new cache would read and write the first one (wrong tokens, no
        error). Its tensors are unmarked here and stay inputs of the graph. Dynamo guards the frozen weights' addresses,
        not their values: weights changed in place since (an optimizer step, `load_state_dict`) are seen from their
        version counters, once per `generate`, and everything is compiled again (`torch._dynamo.reset`)."""
        config = compile_config or getattr(self.generation_config, "compile_config", None)
        if not (getattr(config, "options", None) or {}).get("freezing"):
            return super().get_compiled_call(compile_config)
        versions = tuple(parameter._version for parameter in self.parameters())
        if getattr(self, "_frozen_weight_versions", versions) != versions:
            torch._dynamo.reset()
        self._frozen_weight_versions = versions
        compiled = super().get_compiled_call(compile_config)

        def call(*args, **kwargs):
            from torch._inductor import config as inductor_config

            _keep_cache_as_graph_input(kwargs.get("past_key_values"))
            with inductor_config.patch(freezing=True):
                return compiled(*args, **kwargs)

        return call

    def _validate_generated_length(self, generation_config, input_ids_length, has_default_max_length):
        """`generate`'s one look at the final length: refuse a `max_length` past the rotary tables here, once, so that
        the decoding steps need no bound check (no device sync per token, nothing for `torch.compile` to break on)."""
        super()._validate_generated_length(generation_config, input_ids_length, has_default_max_length)
        limit = self.transformer.rotary_emb.cos.shape[0]
        if generation_config.max_length > limit:
            raise ValueError(
                f"generate: prompt + new tokens = {generation_config.max_length} positions, beyond the rotary tables "
                f"({limit} positions = rotary_cache_factor x max_position_embeddings); shorten the prompt or "
                "max_new_tokens"
            )

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep)).float()
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


# The Auto classes each model class is registered with, as `auto_map` names them (module = this file's name).
AUTO_MAP = {"AutoModel": "modeling_akshara.AksharaModel", "AutoModelForCausalLM": "modeling_akshara.AksharaForCausalLM"}

if not __name__.startswith("transformers_modules"):  # the installed package, not a folder's copy run as remote code
    from transformers import AutoModel, AutoModelForCausalLM

    AutoModel.register(AksharaConfig, AksharaModel, exist_ok=True)
    AutoModelForCausalLM.register(AksharaConfig, AksharaForCausalLM, exist_ok=True)
    # save_pretrained then copies configuration_akshara.py/modeling_akshara.py and writes `auto_map`, so saved
    # folders load with trust_remote_code=True where this package is not installed.
    AksharaModel.register_for_auto_class("AutoModel")
    AksharaForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["AksharaPreTrainedModel", "AksharaModel", "AksharaForCausalLM"]
