# Copyright 2026 The Akshara-HF authors. Licensed under the MIT License.
"""Akshara model configuration (published to the Hub as remote code: imports only transformers)."""

import functools
import math

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

# nanochat's `GPTConfig` field -> our HF-standard field.
NANOCHAT_CONFIG_KEYS = {
    "sequence_len": "max_position_embeddings",
    "vocab_size": "vocab_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_kv_head": "num_key_value_heads",
    "n_embd": "hidden_size",
}

# nanochat 2026's `window_pattern` characters -> transformers' layer types (`S`: the short window, `L`: the long one).
WINDOW_LAYER_TYPES = {"S": "sliding_attention", "L": "full_attention"}
# Switches that make the 2026 architecture (all off: late 2025).
NANOCHAT_2026_SWITCHES = ("use_value_embeddings", "use_residual_lambdas", "use_smear", "use_backout")

# RoPE types the model implements: nanochat's, and transformers' scalings whose frequencies do not switch per length
# range (longrope does; proportional is for partial rotary).
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


@strict
class AksharaConfig(PreTrainedConfig):
    r"""
    Configuration of an Akshara (nanochat "d"-series) GPT: late-2025 nanochat by default; nanochat 2026 with the
    switches below (`from_nanochat` sets them from a 2026 `model_config`, the one with a `window_pattern`). With
    every switch at its default the model is bit for bit the late-2025 one.

    Field names follow transformers so that the ecosystem reads them: `final_logit_softcapping` is the name TRL's
    fused loss looks for (under another name TRL silently trains without the softcap). Impossible shapes are refused
    with a `ValueError` naming the field, so `from_pretrained` of a broken `config.json` fails there, not in torch.

    Args:
        vocab_size (`int`, defaults to 65536):
            Real vocabulary size (embedding and head rows; nanochat's padding rows are dropped on conversion).
        hidden_size (`int`, defaults to 1280):
            nanochat's `n_embd`.
        intermediate_size (`int`, *optional*):
            MLP width; `4 * hidden_size` (nanochat's) when unset.
        num_hidden_layers (`int`, defaults to 20):
            nanochat's `n_layer`.
        num_attention_heads (`int`, defaults to 10):
            nanochat's `n_head`.
        num_key_value_heads (`int`, *optional*):
            nanochat's `n_kv_head` (GQA when smaller than `num_attention_heads`); `num_attention_heads` when unset.
        head_dim (`int`, *optional*):
            `hidden_size // num_attention_heads` (the only value nanochat's layout allows); derived when unset.
        max_position_embeddings (`int`, defaults to 2048):
            nanochat's `sequence_len`.
        rope_parameters (`RopeParameters`, *optional*):
            transformers' RoPE dict; `{"rope_type": "default", "rope_theta": 10000.0}` (nanochat's) when unset. A
            legacy top-level `rope_theta` (folders written before this field existed) is moved in here.
        rotary_cache_factor (`int`, defaults to 10):
            The rotary tables cover `rotary_cache_factor * max_position_embeddings` positions, as nanochat
            precomputes them (10x).
        final_logit_softcapping (`float`, *optional*, defaults to 15.0):
            `logits = c * tanh(logits / c)`, computed in fp32; `None` switches it off (0 is refused, not "off").
        initializer_range (`float`, *optional*):
            Unset: nanochat's init for new models (each block's output projections and the head start at zero, so
            an untrained model's output depends on neither attention nor its input). A number: transformers'
            convention instead, every matrix and embedding `normal(0, initializer_range)` (what transformers' test
            suite and native NanoChat use). Loaded weights are never re-initialized either way.
        rms_norm_eps (`float`, *optional*):
            `None` reproduces nanochat's `F.rms_norm(x, (d,))`, i.e. torch's default eps, which is
            `finfo(float32).eps` for fp32 *and* bf16 inputs (torch uses the op-math type).
        attention_dropout (`float`, defaults to 0.0):
            Dropout on the attention probabilities in training (nanochat has none).
        use_cache (`bool`, defaults to `True`):
            Whether the model returns its key/value cache.
        tie_word_embeddings (`bool`, defaults to `False`):
            Must be `False`: the embedding and the head are separate matrices.
        layer_types (`list[str]`, *optional*):
            Per layer, "sliding_attention" or "full_attention" (nanochat 2026's `S` / `L`); unset: all full.
        sliding_window (`int`, *optional*):
            Keys a "sliding_attention" query sees, its own included: nanochat's left window `w` is `w + 1` here.
        full_attention_window (`int`, *optional*):
            The same for "full_attention" layers; unset: unlimited. nanochat 2026's `L` layers slide at
            `sequence_len` (`sequence_len + 1` keys), which only matters past `sequence_len` tokens.
        use_value_embeddings (`bool`, defaults to `False`):
            nanochat 2026's value embeddings (`transformer.value_embeds.{i}`, gated by `attn.ve_gate`) on the layers
            with `i % 2 == (num_hidden_layers - 1) % 2`.
        use_residual_lambdas (`bool`, defaults to `False`):
            `x = resid_lambdas[i] * x + x0_lambdas[i] * x0` before each block (nanochat 2026).
        use_smear (`bool`, defaults to `False`):
            Mix the previous token's normalised embedding into each position (`smear_gate`, `smear_lambda`).
        use_backout (`bool`, defaults to `False`):
            Subtract `backout_lambda` times the residual stream after block `num_hidden_layers // 2` before the
            final norm.
        qk_scale (`float`, *optional*):
            Multiply q and k by this after QK-norm (nanochat 2026: 1.2); unset: no scale.
        rotary_dtype (`str`, *optional*, defaults to `"bfloat16"`):
            dtype of the rotary tables: "bfloat16" as late-2025 nanochat rounds them; `None` for the compute dtype
            (nanochat 2026: fp32 on CPU, bf16 on GPU).
    """

    model_type = "akshara"
    keys_to_ignore_at_inference = ["past_key_values"]
    # Tensor parallel (`from_pretrained(..., tp_plan="auto")`): heads split across ranks (q, k, v by output rows,
    # c_proj by input columns), the MLP likewise. QK-norm and rotary act per head, so they need no communication. The
    # token embedding is split on the vocabulary (each rank looks up its rows, the partial lookups are summed), so no
    # rank holds all of it. Models with value embeddings split less (see `__post_init__`).
    base_model_tp_plan = {
        "wte": "embedding_rowwise",
        "h.*.attn.c_q": "colwise",
        "h.*.attn.c_k": "colwise",
        "h.*.attn.c_v": "colwise",
        "h.*.attn.c_proj": "rowwise",
        "h.*.mlp.c_fc": "colwise",
        "h.*.mlp.c_proj": "rowwise",
    }
    # FSDP2 (`DistributedConfig(dp_size=...)`): each block and the token embedding sharded on their own, their full
    # weights freed after use; the final norm kept. (transformers' default names Llama's modules, none of which exist
    # here: `embed_tokens`, `layers.*`.)
    base_model_fsdp_plan = {"wte": "free_full_weight", "h.*": "free_full_weight", "norm": "keep_full_weight"}
    base_model_pp_plan = {
        "wte": (["input_ids"], ["inputs_embeds"]),
        "h": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 65536
    hidden_size: int = 1280
    intermediate_size: int | None = None
    num_hidden_layers: int = 20
    num_attention_heads: int = 10
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rope_parameters: RopeParameters | dict | None = None
    rotary_cache_factor: int = 10
    final_logit_softcapping: float | int | None = 15.0
    initializer_range: float | int | None = None
    rms_norm_eps: float | int | None = None
    attention_dropout: float | int = 0.0
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    layer_types: list[str] | None = None
    sliding_window: int | None = None
    full_attention_window: int | None = None
    use_value_embeddings: bool = False
    use_residual_lambdas: bool = False
    use_smear: bool = False
    use_backout: bool = False
    qk_scale: float | int | None = None
    rotary_dtype: str | None = "bfloat16"

    def __post_init__(self, **kwargs):
        self.validate_architecture()  # before sizes are derived from the given ones
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.layer_types is None:  # transformers' convention (generation's mask and cache builders read it)
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        if self.use_value_embeddings:
            # nanochat 2026's value embeddings (and their per-head gates) are added to the value heads, which
            # transformers' styles cannot split alike (a split embedding table is gathered back to all heads), so
            # attention stays whole on every rank; the MLP, the token embedding and the value-embedding tables split.
            self.base_model_tp_plan = {
                **{name: style for name, style in type(self).base_model_tp_plan.items() if ".attn." not in name},
                "value_embeds.*": "embedding_rowwise",
            }
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Every shape the model cannot be built with, in one place (also run after `__post_init__` by `@strict`)."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings", "rotary_cache_factor"):  # fmt: skip
            _require(getattr(self, name) >= 1, name, "must be >= 1", getattr(self, name))
        for name in ("num_key_value_heads", "intermediate_size"):
            value = getattr(self, name)
            _require(value is None or value >= 1, name, "must be >= 1 (or null)", value)
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads
        _require(self.hidden_size % heads == 0, "hidden_size", f"must be divisible by num_attention_heads {heads}",
                 self.hidden_size)  # fmt: skip
        if kv_heads is not None:
            _require(heads % kv_heads == 0, "num_key_value_heads",
                     f"must divide num_attention_heads {heads}", kv_heads)  # fmt: skip
        head_dim = self.hidden_size // heads
        _require(self.head_dim in (None, head_dim), "head_dim",
                 f"must be hidden_size // num_attention_heads = {head_dim}", self.head_dim)  # fmt: skip
        _require(head_dim % 2 == 0, "hidden_size", f"/ num_attention_heads must be even for rotary (is {head_dim})",
                 self.hidden_size)  # fmt: skip
        cap = self.final_logit_softcapping
        _require(cap is None or (math.isfinite(cap) and cap > 0), "final_logit_softcapping",
                 "must be > 0 and finite, or null to switch the softcap off", cap)  # fmt: skip
        eps = self.rms_norm_eps
        _require(eps is None or (math.isfinite(eps) and eps > 0), "rms_norm_eps",
                 "must be > 0, or null for torch's default", eps)  # fmt: skip
        std = self.initializer_range
        _require(std is None or (math.isfinite(std) and std > 0), "initializer_range",
                 "must be > 0 and finite, or null for nanochat's init", std)  # fmt: skip
        _require(0 <= self.attention_dropout < 1, "attention_dropout", "must be in [0, 1)", self.attention_dropout)
        _require(not self.tie_word_embeddings, "tie_word_embeddings",
                 "must be false: Akshara has untied embeddings (wte and lm_head are separate)", True)  # fmt: skip
        rope = self.rope_parameters or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        _require(rope_type in SUPPORTED_ROPE_TYPES, "rope_parameters.rope_type",
                 f"must be one of {list(SUPPORTED_ROPE_TYPES)}", rope_type)  # fmt: skip
        if rope_type != "default":  # transformers' own check only warns about a bad factor
            factor = rope.get("factor")
            _require(isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor >= 1,
                     "rope_parameters.factor", f"must be >= 1 for rope_type {rope_type!r}", factor)  # fmt: skip
        theta = rope.get("rope_theta", self.default_theta)
        _require(isinstance(theta, (int, float)) and not isinstance(theta, bool) and math.isfinite(theta) and theta > 0,
                 "rope_parameters.rope_theta", "must be a number > 0", theta)  # fmt: skip
        types = self.layer_types
        if types is not None:
            _require(len(types) == self.num_hidden_layers, "layer_types",
                     f"must have one entry per layer ({self.num_hidden_layers})", types)  # fmt: skip
            _require(set(types) <= set(WINDOW_LAYER_TYPES.values()), "layer_types",
                     f"entries must be in {sorted(WINDOW_LAYER_TYPES.values())}", types)  # fmt: skip
            _require("sliding_attention" not in types or self.sliding_window is not None, "sliding_window",
                     "must be set when layer_types has sliding_attention layers", self.sliding_window)  # fmt: skip
        for name in ("sliding_window", "full_attention_window"):
            value = getattr(self, name)
            _require(value is None or value >= 1, name, "must be >= 1 (keys seen, the query's own included)", value)
        _require(self.qk_scale is None or (math.isfinite(self.qk_scale) and self.qk_scale > 0), "qk_scale",
                 "must be > 0 and finite, or null", self.qk_scale)  # fmt: skip
        _require(self.rotary_dtype in (None, "bfloat16", "float32"), "rotary_dtype",
                 "must be 'bfloat16', 'float32' or null (the compute dtype)", self.rotary_dtype)  # fmt: skip
        super().validate_architecture()

    @property
    def is_nanochat_2026(self) -> bool:
        """Whether any nanochat 2026 feature is on (its init and optimizer groups apply)."""
        return any(getattr(self, name) for name in NANOCHAT_2026_SWITCHES)

    @property
    def nanochat_generation(self) -> str:
        """"2026" or "late-2025": which nanochat architecture this config describes (model card, README table)."""
        return "2026" if self.is_nanochat_2026 else "late-2025"

    def layer_window(self, layer_idx: int) -> int | None:
        """Keys a query of layer `layer_idx` sees, its own included; None: all before it."""
        if self.layer_types is not None and self.layer_types[layer_idx] == "sliding_attention":
            return self.sliding_window
        return self.full_attention_window

    def has_value_embedding(self, layer_idx: int) -> bool:
        """nanochat 2026: every other layer, always the last."""
        return self.use_value_embeddings and layer_idx % 2 == (self.num_hidden_layers - 1) % 2

    @classmethod
    def from_depth(
        cls, depth: int, vocab_size: int = 65536, max_position_embeddings: int = 2048, window_pattern=None, **kwargs
    ):
        """nanochat's depth rule: `n_layer = depth`, `n_embd = 64 * depth`, head_dim 128 (`n_head = ceil(n_embd/128)`).
        With a `window_pattern` (e.g. "SSSL"), nanochat 2026's architecture."""
        shape = depth_shape(depth)
        if window_pattern is not None:
            kwargs = {**nanochat_2026_fields(window_pattern, max_position_embeddings, depth), **kwargs}
        return cls(
            vocab_size=vocab_size,
            **shape,
            num_key_value_heads=kwargs.pop("num_key_value_heads", shape["num_attention_heads"]),
            max_position_embeddings=max_position_embeddings,
            **kwargs,
        )

    @classmethod
    def from_nanochat(cls, model_config: dict, **kwargs):
        """Build from a nanochat `meta_*.json["model_config"]` (`GPTConfig`) dict: late 2025, or nanochat 2026 when
        it has a `window_pattern` (value embeddings, windows, lambdas, smear, backout, q/k scale 1.2, theta 1e5)."""
        missing = [key for key in NANOCHAT_CONFIG_KEYS if key not in model_config]
        if missing:
            raise ValueError(f"nanochat model_config lacks {missing} (has {sorted(model_config)})")
        unknown = sorted(set(model_config) - set(NANOCHAT_CONFIG_KEYS) - {"window_pattern"})
        if unknown:
            raise ValueError(
                f"nanochat model_config has fields this architecture does not have: {unknown} "
                "(a newer nanochat architecture?)"
            )
        fields = {ours: model_config[theirs] for theirs, ours in NANOCHAT_CONFIG_KEYS.items()}
        if "window_pattern" in model_config:
            fields.update(nanochat_2026_fields(model_config["window_pattern"], fields["max_position_embeddings"],
                                               fields["num_hidden_layers"]))  # fmt: skip
        return cls(**fields, **kwargs)

    def to_nanochat(self) -> dict:
        """The nanochat `model_config` of this config; `ValueError` when nanochat has no such model (a mix of the two
        generations, another q/k scale, windows off nanochat's rule, ...)."""
        model_config = {theirs: getattr(self, ours) for theirs, ours in NANOCHAT_CONFIG_KEYS.items()}
        if self.is_nanochat_2026:
            types = self.layer_types or ["full_attention"] * self.num_hidden_layers
            chars = ["S" if kind == "sliding_attention" else "L" for kind in types]
            n = self.num_hidden_layers
            period = next((p for p in range(1, n + 1) if [chars[i % p] for i in range(n - 1)] + ["L"] == chars), None)
            model_config["window_pattern"] = "".join(chars[:period]) if period else "?"
        fields = ("rope_parameters", "rotary_dtype", "qk_scale", "layer_types", "sliding_window",
                  "full_attention_window", *NANOCHAT_2026_SWITCHES, "intermediate_size", "final_logit_softcapping")  # fmt: skip
        try:
            reference = type(self).from_nanochat(model_config)
        except ValueError:
            reference = None
        differ = [name for name in fields if reference is None or getattr(self, name) != getattr(reference, name)]
        if differ:
            raise ValueError(
                f"AksharaConfig: no nanochat architecture has these settings: {differ} (nanochat late 2025 has no "
                "2026 features; nanochat 2026 has all of them, with its windows, q/k scale 1.2 and rope theta 1e5)"
            )
        return model_config


def depth_shape(depth: int) -> dict:
    """nanochat's depth rule as our fields: `n_layer = depth`, `n_embd = 64 * depth`, `n_head = ceil(n_embd / 128)`."""
    _require(isinstance(depth, int) and not isinstance(depth, bool) and depth >= 1, "depth", "must be an int >= 1",
             depth)  # fmt: skip
    hidden_size = depth * 64
    return {"hidden_size": hidden_size, "num_hidden_layers": depth,
            "num_attention_heads": max(1, math.ceil(hidden_size / 128))}


def nanochat_2026_fields(window_pattern, sequence_len: int, num_layers: int) -> dict:
    """Our fields for nanochat 2026's architecture: `window_pattern` tiled over the layers (the last always `L`),
    `L` = `sequence_len`, `S` = `ceil(sequence_len / 4 / 128) * 128` left windows (+1 key: the query's own)."""
    pattern = window_pattern.upper() if isinstance(window_pattern, str) else ""
    _require(bool(pattern) and set(pattern) <= set(WINDOW_LAYER_TYPES), "window_pattern",
             "must be a non-empty string of S and L (nanochat 2026)", window_pattern)  # fmt: skip
    types = [WINDOW_LAYER_TYPES[pattern[i % len(pattern)]] for i in range(num_layers)]
    types[-1] = "full_attention"
    short = math.ceil(sequence_len / 4 / 128) * 128
    return {
        "layer_types": types,
        "sliding_window": short + 1 if "sliding_attention" in types else None,
        "full_attention_window": sequence_len + 1,
        **{name: True for name in NANOCHAT_2026_SWITCHES},
        "qk_scale": 1.2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
        "rotary_dtype": None,
    }


def _require(ok: bool, field: str, rule: str, value) -> None:
    if not ok:
        raise ValueError(f"AksharaConfig: {field} {rule}, got {value!r}")


def _one_line_value_errors(init):
    """`@strict` reports a wrongly typed field (`hidden_size: "64"`, `num_hidden_layers: true`) as a multi-line
    `StrictDataclassError`, which is not a `ValueError`; re-raise it as the one-line `ValueError` every other
    invalid value gives, so callers (`from_pretrained`, the CLI) handle one exception type."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except KeyError as error:  # transformers' RoPE validation reports missing keys as KeyError
            raise ValueError(f"AksharaConfig: rope_parameters: {error.args[0]}") from None
        except StrictDataclassError as error:
            cause = error.__cause__ or error
            if isinstance(cause, ValueError) and str(cause).startswith("AksharaConfig: "):
                raise cause from None
            message = " ".join(str(cause).split()).split(". Errors:")[0]  # a union's per-type details add nothing
            raise ValueError(f"AksharaConfig: {message}") from None

    return __init__


AksharaConfig.__init__ = _one_line_value_errors(AksharaConfig.__init__)

if not __name__.startswith("transformers_modules"):  # the installed package, not a folder's copy run as remote code
    from transformers import AutoConfig

    AutoConfig.register(AksharaConfig.model_type, AksharaConfig, exist_ok=True)
    AksharaConfig.register_for_auto_class()  # save_pretrained copies this file and writes `auto_map`
    # The model module registers the model classes with AutoModel / AutoModelForCausalLM: imported here too, so that
    # a process that has only the config (unpickled in a spawned worker, `from akshara_hf import AksharaConfig`) can
    # `AutoModelForCausalLM.from_config(config)`, as with transformers' own configs. (Imported first, the model
    # module is already in `sys.modules` and this is a no-op.)
    import importlib

    importlib.import_module(".modeling_akshara", __package__)

__all__ = ["AksharaConfig"]
