"""What a folder's config.json says about the model: sizes, the nanochat generation, and parameter counts
(`num_parameters` of the model built on the meta device, so the count follows the architecture, 2026 additions
included, without allocating weights)."""

from __future__ import annotations

from pathlib import Path

from akshara_hf.errors import AksharaError

from akshara_hf.loading import read_json

SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
# Config keys that only nanochat's 2026 architecture has (value embeddings, sliding windows, smear/backout).
# AksharaConfig switches these on for 2026 checkpoints (configuration_akshara.NANOCHAT_2026_SWITCHES).
NANOCHAT_2026_KEYS = ("use_value_embeddings", "use_residual_lambdas", "use_smear", "use_backout", "window_pattern")


def nanochat_generation(config: dict) -> str:
    """'2026' or 'late 2025': an explicit `nanochat_generation` in the config wins, else 2026-only keys decide."""
    explicit = config.get("nanochat_generation")
    if isinstance(explicit, str) and explicit.strip():
        return explicit.strip().replace("-", " ")
    return "2026" if any(config.get(key) not in (None, False) for key in NANOCHAT_2026_KEYS) else "late 2025"


def _build_meta_model(config_path: Path, config_dict: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    import akshara_hf.model.modeling_akshara  # noqa: F401  registers model_type "akshara" with the Auto classes

    fields = {k: v for k, v in config_dict.items() if k not in ("model_type", "auto_map", "architectures")}
    try:
        config = AutoConfig.for_model(config_dict["model_type"], **fields)
        with torch.device("meta"):
            return config, AutoModelForCausalLM.from_config(config)
    except (ValueError, TypeError, KeyError) as error:
        reason = " ".join(str(error).split())[:300]
        raise AksharaError(f"{config_path}: not a loadable config ({type(error).__name__}: {reason})") from None


def architecture_from_config(config_path: str | Path, config: dict | None = None) -> dict:
    """Sizes from config.json and the parameter counts of the model it describes. `config`: the configuration itself
    (`PretrainedConfig.to_dict()`), for a model not saved yet; `config_path` then only names it in errors."""
    config_path = Path(config_path)
    config = read_json(config_path) if config is None else config
    if not isinstance(config, dict):
        raise AksharaError(f"{config_path}: must be a JSON object")
    model_type = config.get("model_type")
    if model_type not in ("akshara", "nanochat"):
        raise AksharaError(f"{config_path}: model_type {model_type!r} is not an Akshara/nanochat model")
    for key in SIZE_FIELDS:  # the figures the card prints: named here rather than deep inside the model's init
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise AksharaError(f"{config_path}: {key} must be a positive integer, got {value!r}")
    built, model = _build_meta_model(config_path, config)
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    params = model.num_parameters()
    heads = built.num_attention_heads
    return {
        "model_type": model_type,
        "generation": nanochat_generation(config),
        "layers": built.num_hidden_layers,
        "hidden_size": built.hidden_size,
        "heads": heads,
        "kv_heads": getattr(built, "num_key_value_heads", None) or heads,
        "head_dim": getattr(built, "head_dim", None) or built.hidden_size // heads,
        "intermediate_size": built.intermediate_size,
        "vocab_size": built.vocab_size,
        "context": built.max_position_embeddings,
        "softcap": getattr(built, "final_logit_softcapping", None),
        "params": params,
        "embedding_params": embedding,
        "head_params": head,
        "non_embedding_params": model.num_parameters(exclude_embeddings=True),
    }
