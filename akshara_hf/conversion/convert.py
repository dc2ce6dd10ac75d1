"""Converters: nanochat checkpoints in and out; transformers' native `nanochat` model type out and back in.

Our parameter names are nanochat's, so a nanochat state dict maps onto `AksharaForCausalLM` key for key (after
stripping torch.compile's `_orig_mod.` prefix and nanochat's vocab padding; nanochat 2026's top-level value
embeddings, lambdas and smear/backout tensors live in our backbone, `transformer.`). Anything that does not map
exactly is refused with the offending keys named: a silently dropped tensor would be a different model.

What the HF model cannot hold travels beside it in the converted folder, so that `export-nanochat` gives back the
checkpoint's tensors bit for bit: the vocab padding rows (never read by the forward) in `nanochat_padding.tensors`
(safetensors bytes under a name no weight loader globs: vLLM and others read every `*.safetensors` of a folder as
weights, and these tensors are named like the model's), and each tensor's original dtype (the HF weights are in one dtype, the widest of the checkpoint's: a 2026 bf16 run's
bf16 embeddings are widened to fp32 losslessly) under `"akshara"` in `nanochat_meta.json`. A nanochat 2026
checkpoint's optimizer state travels too, for SFT's warm start (`optimizer_state`: `nanochat_optimizer.tensors`).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

from akshara_hf.bounds import check_model_fits, regular_file
from akshara_hf.errors import AksharaError
from akshara_hf.folders import add_overwrite_flag, check_output, staged_output
from akshara_hf.lazy import lazy_import
from akshara_hf.loading import add_trust_flag, read_json
from akshara_hf.progress import next_phase, with_phases

torch = lazy_import("torch")  # loaded by the first converter that runs, not by `akshara-hf --help`

# Our (= nanochat's) key prefix <-> transformers' native NanoChat key prefix; `{i}` is the layer index.
NATIVE_KEYS = (
    ("transformer.wte.", "model.embed_tokens."),
    ("transformer.h.{i}.attn.c_q.", "model.layers.{i}.self_attn.q_proj."),
    ("transformer.h.{i}.attn.c_k.", "model.layers.{i}.self_attn.k_proj."),
    ("transformer.h.{i}.attn.c_v.", "model.layers.{i}.self_attn.v_proj."),
    ("transformer.h.{i}.attn.c_proj.", "model.layers.{i}.self_attn.o_proj."),
    ("transformer.h.{i}.mlp.c_fc.", "model.layers.{i}.mlp.fc1."),
    ("transformer.h.{i}.mlp.c_proj.", "model.layers.{i}.mlp.fc2."),
    ("lm_head.", "lm_head."),
)


# Config fields with the same name and meaning in AksharaConfig and transformers' NanoChatConfig.
SHARED_CONFIG_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "final_logit_softcapping", "bos_token_id", "eos_token_id",
    "pad_token_id",
)  # fmt: skip


# nanochat 2026 keeps these at the top level of its GPT; our backbone holds them (TRL's loss runs the backbone only),
# so their keys carry `transformer.` here. Names without a dot are parameters, the others modules.
NANOCHAT_TOP_LEVEL_2026 = ("value_embeds", "resid_lambdas", "x0_lambdas", "smear_gate", "smear_lambda", "backout_lambda")
# Tensors with nanochat's padded vocab rows (our names).
VOCAB_ROWS = re.compile(r"(transformer\.wte|lm_head|transformer\.value_embeds\.\d+)\.weight")
PADDING_FILE = "nanochat_padding.tensors"
# Folders converted before the rename hold the same bytes here; read for export, never written.
OLD_PADDING_FILE = "nanochat_padding.safetensors"
NANOCHAT_META_FILE = "nanochat_meta.json"
# The dtypes a weight may have (and that nanochat_meta.json may name): an int8, fp8 or complex tensor is quantized or
# not a weight, and would be cast to float without a word.
WEIGHT_DTYPES = ("float32", "bfloat16", "float16", "float64")


def _top_level_2026(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in NANOCHAT_TOP_LEVEL_2026)


def nanochat_key_to_ours(key: str) -> str:
    return f"transformer.{key}" if _top_level_2026(key) else key


def our_key_to_nanochat(key: str) -> str:
    inner = key.removeprefix("transformer.")
    return inner if inner != key and _top_level_2026(inner) else key


def rename_key(key: str, to_native: bool) -> str | None:
    """Map one state-dict key across the two namings; None when no prefix matches."""
    for ours, native in NATIVE_KEYS:
        source, target = (ours, native) if to_native else (native, ours)
        match = re.match(re.escape(source).replace(r"\{i\}", r"(?P<i>\d+)"), key)
        if match:
            return target.format(**match.groupdict()) + key[match.end():]
    return None


# ---------------------------------------------------------------------------------------------------------------
# nanochat checkpoints


def check_step_size(step, where: str) -> None:
    """A step past int64 (`--step 10**30` wrote a `model_1000000000000000000000000000000.pt` that no reader takes)."""
    if type(step) is int and step >= 2**63:
        raise AksharaError(f"{where} {step}: must be below 2**63 (steps are int64 in nanochat and torch)")


def find_checkpoint(checkpoint_dir: str | Path, step: int | None = None) -> tuple[Path, Path, int]:
    """`model_{step:06d}.pt` and `meta_{step:06d}.json`: the given step, else the newest one."""
    checkpoint_dir = Path(checkpoint_dir)
    if step is not None and (type(step) is not int or step < 0):
        raise AksharaError(f"--step {step}: must be a non-negative integer (nanochat's files are model_NNNNNN.pt)")
    check_step_size(step, "--step")
    if not checkpoint_dir.is_dir():
        raise AksharaError(f"{checkpoint_dir}: not a directory")
    steps = sorted(int(m.group(1)) for p in checkpoint_dir.glob("model_*.pt") if (m := re.fullmatch(r"model_(\d+)\.pt", p.name)))
    if not steps:
        raise AksharaError(f"{checkpoint_dir}: no model_<step>.pt checkpoint")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise AksharaError(f"{checkpoint_dir}: no checkpoint for step {step} (have {steps})")
    model_path, meta_path = checkpoint_dir / f"model_{step:06d}.pt", checkpoint_dir / f"meta_{step:06d}.json"
    if not meta_path.exists():
        raise AksharaError(f"{meta_path}: missing (the model_config is read from it)")
    # A named pipe or device would block the read forever.
    return regular_file(model_path, "checkpoint file"), regular_file(meta_path, "meta file"), step


def find_tokenizer_dir(checkpoint_dir: Path) -> Path:
    """The folder holding nanochat's `tokenizer.pkl`, looked for only where nanochat puts it.

    nanochat writes checkpoints to `BASE/{base,mid,chatsft,chatrl}_checkpoints/TAG/` and the tokenizer to
    `BASE/tokenizer/` (`get_base_dir`, `get_tokenizer`); a copy beside the checkpoint files (or in a `tokenizer/`
    next to them) is also taken. Nothing else is searched: a pickle found in some parent folder is someone else's.
    """
    checkpoint_dir = Path(checkpoint_dir)
    candidates = [checkpoint_dir, checkpoint_dir / "tokenizer"]
    resolved = checkpoint_dir.resolve()
    if resolved.parent.name.endswith("_checkpoints"):
        candidates.append(resolved.parent.parent / "tokenizer")
    for candidate in candidates:
        if (candidate / "tokenizer.pkl").exists():  # not only a regular file: load_tiktoken_encoding says what it is
            return candidate
    where = ", ".join(str(c / "tokenizer.pkl") for c in candidates)
    raise AksharaError(f"{checkpoint_dir}: no nanochat tokenizer (looked for {where}); pass --tokenizer-dir")


def load_nanochat_state(model_path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt or non-tensor pickle
        raise AksharaError(f"{model_path}: not a loadable state dict ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise AksharaError(f"{model_path}: expected a dict of tensors")
    stripped = {}
    for key, value in state.items():
        name = key.removeprefix("_orig_mod.")
        if name in stripped:  # one of the two would be dropped without a word: which is the model?
            raise AksharaError(f"{model_path}: holds both {name} and _orig_mod.{name} (torch.compile's name for the "
                               "same tensor); keep one")
        check_weight_dtype(value.dtype, f"{model_path}: {key}")
        stripped[name] = value
    return stripped


def check_weight_dtype(dtype, where: str) -> None:
    """Weights are floating point (`WEIGHT_DTYPES`); anything else is refused, naming the tensor."""
    name = str(dtype).removeprefix("torch.")
    if name not in WEIGHT_DTYPES:
        raise AksharaError(f"{where} is {name}, not a floating-point weight ({', '.join(WEIGHT_DTYPES)}); a quantized "
                           "or integer tensor would be cast to float without a word")


def read_nanochat_meta(meta_path: Path) -> dict:
    """nanochat's `meta_{step}.json`, checked: a JSON object with a `model_config` object of integer sizes (nanochat
    writes more, e.g. `user_config`; that is kept as it is)."""
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("model_config"), dict):
        raise AksharaError(f"{meta_path}: not a nanochat meta file (a JSON object with a model_config object)")
    step = meta.get("step")
    if step is not None and (type(step) is not int or step < 0):
        raise AksharaError(f"{meta_path}: step must be a non-negative integer, got {step!r}")
    check_step_size(step, f"{meta_path}: step")
    from akshara_hf.model.configuration_akshara import NANOCHAT_CONFIG_KEYS

    for key in NANOCHAT_CONFIG_KEYS:
        value = meta["model_config"].get(key)
        if value is not None and type(value) is not int:
            raise AksharaError(f"{meta_path}: model_config.{key} must be an integer, got {value!r}")
    return meta


def check_nanochat_sizes(model_config: dict, where: str) -> None:
    """A nanochat `model_config` whose model cannot fit this machine is refused before anything is built (the
    estimate counts bf16 weights, nanochat's narrowest, and our rotary tables)."""
    from akshara_hf.model.configuration_akshara import NANOCHAT_CONFIG_KEYS, AksharaConfig

    fields = {ours: model_config.get(theirs) for theirs, ours in NANOCHAT_CONFIG_KEYS.items()}
    fields.update(rotary_cache_factor=AksharaConfig.rotary_cache_factor,
                  use_value_embeddings="window_pattern" in model_config)
    check_model_fits(fields, where, names={ours: theirs for theirs, ours in NANOCHAT_CONFIG_KEYS.items()},
                     given=model_config, bytes_per_parameter=2)


def check_layer_count(state: dict, config, source: str) -> None:
    """The checkpoint's layers are the config's, checked from the key names before a model is built (building
    `n_layer` modules to find the keys missing would take minutes for a wrong n_layer)."""
    found = {int(match.group(1)) for key in state if (match := re.match(r"transformer\.h\.(\d+)\.", key))}
    if found != set(range(config.num_hidden_layers)):
        held = f"layers 0-{max(found)}" if found == set(range(len(found))) and found else f"{len(found)} layers"
        raise AksharaError(f"{source}: holds {held}, the meta file's model_config says n_layer "
                           f"{config.num_hidden_layers}")


def split_nanochat_state(state: dict[str, torch.Tensor], config, source: str = "checkpoint") -> tuple[dict, dict]:
    """Check the keys exactly (nanochat names, `_orig_mod.` already stripped) and split nanochat's vocab padding rows
    off: `(our state dict, {nanochat key: padding rows})`. The padding rows are never indexed (logits are sliced)."""
    from akshara_hf.model.modeling_akshara import AksharaForCausalLM

    with torch.device("meta"):
        expected = AksharaForCausalLM(config).state_dict()
    ours = {nanochat_key_to_ours(key): value for key, value in state.items()}
    unexpected = sorted(our_key_to_nanochat(k) for k in set(ours) - set(expected))
    missing = sorted(our_key_to_nanochat(k) for k in set(expected) - set(ours))
    if unexpected:
        raise AksharaError(f"{source}: tensors this architecture does not have: {unexpected[:8]}")
    if missing:
        raise AksharaError(f"{source}: missing tensors: {missing[:8]}")
    converted, padding = {}, {}
    for key, reference in expected.items():
        tensor = ours[key]
        rows = reference.shape[0] if reference.ndim else 0
        if VOCAB_ROWS.fullmatch(key) and tensor.ndim == 2 and tensor.shape[0] > rows:
            padding[our_key_to_nanochat(key)] = tensor[rows:].clone()
            tensor = tensor[:rows]
        if tuple(tensor.shape) != tuple(reference.shape):
            raise AksharaError(
                f"{source}: {our_key_to_nanochat(key)} has shape {tuple(tensor.shape)}, config says {tuple(reference.shape)}"
            )
        converted[key] = tensor
    return converted, padding


def nanochat_state_to_akshara(state: dict[str, torch.Tensor], config, source: str = "checkpoint") -> dict:
    """Check the keys exactly and drop nanochat's vocab padding rows (never indexed; logits are sliced)."""
    return split_nanochat_state(state, config, source)[0]


def akshara_state_to_nanochat(state: dict[str, torch.Tensor], vocab_size: int, extras: dict | None = None,
                              padding: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Our state dict -> nanochat's (its names, vocab rows padded to a multiple of 64 as its GPT allocates them).

    `padding` (from `nanochat_padding.tensors`) supplies the original padding rows, else they are zeros;
    `extras["dtypes"]` (from `nanochat_meta.json`) gives each tensor's original dtype, else it keeps the model's."""
    padded_vocab = -(-vocab_size // 64) * 64
    dtypes = (extras or {}).get("dtypes", {})
    out = {}
    for key, tensor in state.items():
        name = our_key_to_nanochat(key)
        dtype = getattr(torch, dtypes[name]) if name in dtypes else tensor.dtype
        tensor = tensor.detach().to("cpu", dtype)
        if VOCAB_ROWS.fullmatch(key) and tensor.shape[0] < padded_vocab:
            rows = (padding or {}).get(name)
            if rows is None or tuple(rows.shape) != (padded_vocab - tensor.shape[0], tensor.shape[1]):
                rows = torch.zeros(padded_vocab - tensor.shape[0], tensor.shape[1], dtype=dtype)
            tensor = torch.cat([tensor, rows.to(dtype)])
        out[name] = tensor.contiguous()
    return out


def read_padding(folder: Path) -> dict[str, torch.Tensor] | None:
    """The padding rows `convert-nanochat` kept beside the weights (`nanochat_padding.tensors`, or the
    `nanochat_padding.safetensors` of folders converted before the rename), or None."""
    from safetensors.torch import load

    for name in (PADDING_FILE, OLD_PADDING_FILE):
        path = Path(folder) / name
        if path.exists():
            regular_file(path, "padding file")  # a named pipe would block the read forever
            try:
                padding = load(path.read_bytes())
            except Exception as error:  # SafetensorError (a truncated or foreign file) has no public class
                raise AksharaError(f"{path}: not the padding rows convert-nanochat wrote ({' '.join(str(error).split())})") from None
            for key, tensor in padding.items():  # floating-point rows of the padded tables only
                if not VOCAB_ROWS.fullmatch(nanochat_key_to_ours(key)) or tensor.ndim != 2:
                    raise AksharaError(f"{path}: {key} is not padding rows of a vocabulary table")
                check_weight_dtype(tensor.dtype, f"{path}: {key}")
            return padding
    return None


def _write_atomically(output_dir, command: str, write, overwrite: bool, inputs) -> Path:
    """Write through `folders.staged_output`: refuses to replace anything but an earlier output of `command`, and an
    interrupted conversion never leaves a half-written folder or touches the old one."""
    with staged_output(output_dir, command, overwrite=overwrite, inputs=inputs) as staging:
        write(staging.folder)
    return Path(output_dir)


def save_with_tokenizer(model, tokenizer, output_dir: Path) -> None:
    """Weights, config, remote code, tokenizer, chat template and generation config: what Auto*/pipeline load."""
    from transformers import GenerationConfig

    from akshara_hf.tokenization.chat import generation_config_kwargs

    special = generation_config_kwargs(tokenizer)
    model.config.bos_token_id = special["bos_token_id"]
    model.config.eos_token_id = special["eos_token_id"]
    model.config.pad_token_id = special["pad_token_id"]
    model.generation_config = GenerationConfig(**special)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


@with_phases("convert-nanochat", "reading the checkpoint", "converting the weights", "writing the folder")
def convert_nanochat(
    checkpoint_dir: str | Path,
    output_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    step: int | None = None,
    overwrite: bool = False,
    optimizer: bool = True,
) -> Path:
    """A nanochat checkpoint directory -> an HF folder loadable by AutoModelForCausalLM/AutoTokenizer/pipeline.

    `overwrite` replaces an earlier convert-nanochat output; any other existing folder is refused. `optimizer`: carry a
    nanochat 2026 checkpoint's optimizer state (`optim_{step}_rank*.pt`) into the folder for SFT's warm start
    (`akshara_hf.conversion.optimizer_state`)."""
    from akshara_hf.model.configuration_akshara import AksharaConfig
    from akshara_hf.model.modeling_akshara import AksharaForCausalLM
    from akshara_hf.tokenization.tokenizer import load_tiktoken_encoding, tiktoken_to_fast

    checkpoint_dir = Path(checkpoint_dir)
    model_path, meta_path, step = find_checkpoint(checkpoint_dir, step)
    check_output(output_dir, "convert-nanochat", overwrite=overwrite, inputs=[checkpoint_dir, tokenizer_dir])
    meta = read_nanochat_meta(meta_path)
    model_config = meta["model_config"]
    check_nanochat_sizes(model_config, str(meta_path))  # before anything is loaded or built
    raw = load_nanochat_state(model_path)
    next_phase()
    if isinstance(model_config, dict) and "window_pattern" not in model_config and any(
        _top_level_2026(key) or ".attn.ve_gate." in key for key in raw
    ):  # nanochat 2026's loader reads a missing window_pattern as "L"
        model_config = {**model_config, "window_pattern": "L"}
    try:
        config = AksharaConfig.from_nanochat(model_config)
    except ValueError as error:
        raise AksharaError(f"{meta_path}: {error}") from None
    check_layer_count(raw, config, str(model_path))
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else find_tokenizer_dir(checkpoint_dir)
    encoding = load_tiktoken_encoding(tokenizer_dir)
    tokenizer_file = tokenizer_dir / "tokenizer.pkl" if tokenizer_dir.is_dir() else tokenizer_dir
    print(f"convert-nanochat: tokenizer {tokenizer_file}", file=sys.stderr)
    if encoding.n_vocab != config.vocab_size:
        raise AksharaError(f"{tokenizer_dir}: tokenizer has {encoding.n_vocab} ids, {meta_path} says vocab_size {config.vocab_size}")
    state, padding = split_nanochat_state(raw, config, source=str(model_path))
    # One dtype for the HF weights, the widest in the checkpoint (widening is exact); the originals go to the meta.
    dtype = functools.reduce(torch.promote_types, (tensor.dtype for tensor in state.values()))
    state = {key: tensor.to(dtype) for key, tensor in state.items()}
    extras = {"dtypes": {key: str(tensor.dtype).removeprefix("torch.") for key, tensor in raw.items()}}

    with torch.device("meta"):
        model = AksharaForCausalLM(config)
    model.load_state_dict(state, strict=True, assign=True)
    # Non-persistent rotary tables are not in the state dict: rebuild them on the real device.
    model.transformer.rotary_emb.to_empty(device="cpu")
    model._init_weights(model.transformer.rotary_emb)
    model.config.dtype = dtype
    tokenizer = tiktoken_to_fast(encoding)
    optimizer_state = _optimizer_state(checkpoint_dir, step, raw, config) if optimizer else None
    next_phase()

    def write(folder: Path) -> None:
        save_with_tokenizer(model, tokenizer, folder)
        sources = {"source_checkpoint": f"{checkpoint_dir.name}/{model_path.name}",
                   "source_tokenizer": f"{tokenizer_file.parent.name}/{tokenizer_file.name}", "akshara": extras}
        (folder / "nanochat_meta.json").write_text(json.dumps({**meta, **sources}, indent=2))
        if padding:
            from safetensors.torch import save

            (folder / PADDING_FILE).write_bytes(save(padding))
        if optimizer_state is not None:
            from akshara_hf.conversion.optimizer_state import write_optimizer_state

            write_optimizer_state(folder, *optimizer_state)

    inputs = [checkpoint_dir, tokenizer_dir]
    return _write_atomically(output_dir, "convert-nanochat", write, overwrite, inputs)


def _optimizer_state(checkpoint_dir: Path, step: int, raw: dict, config):
    """The checkpoint's optimizer state for the converted folder, or None (none saved, or not a 2026 model's)."""
    from akshara_hf.conversion.optimizer_state import find_optimizer_files, read_nanochat_optimizer

    files = find_optimizer_files(checkpoint_dir, step)
    if not files:
        return None
    if config.nanochat_generation != "2026":
        print(f"convert-nanochat: {files[0].name}: optimizer state is carried for nanochat 2026 checkpoints only",
              file=sys.stderr)
        return None
    shapes = {key: tuple(tensor.shape) for key, tensor in raw.items()}
    return read_nanochat_optimizer(files, shapes, config.vocab_size, nanochat_key_to_ours)


# ---------------------------------------------------------------------------------------------------------------
# transformers' native `nanochat` model type


def _remap(state: dict, to_native: bool, source: str) -> dict:
    out = {}
    for key, tensor in state.items():
        new = rename_key(key, to_native)
        if new is None:
            raise AksharaError(f"{source}: no mapping for tensor {key}")
        out[new] = tensor
    return out


def akshara_to_native(model):
    """In memory: an `AksharaForCausalLM` -> transformers' `NanoChatForCausalLM` with the same weights. The one
    difference is the rotary tables, which native computes in fp32 where nanochat (and Akshara) round them to bf16."""
    from transformers import NanoChatConfig, NanoChatForCausalLM

    config = model.config
    if config.is_nanochat_2026:
        raise AksharaError(
            "transformers' native nanochat model is the late-2025 architecture: it cannot represent a nanochat 2026 "
            "model (value embeddings, sliding windows, lambdas, smear, backout)"
        )
    native_config = NanoChatConfig(
        **{name: getattr(config, name) for name in SHARED_CONFIG_FIELDS},
        rope_parameters=dict(config.rope_parameters),
        # nanochat's F.rms_norm default eps is finfo(float32).eps in fp32 and bf16 alike (torch uses op-math).
        rms_norm_eps=config.rms_norm_eps if config.rms_norm_eps is not None else torch.finfo(torch.float32).eps,
        tie_word_embeddings=False,
    )
    native_config._attn_implementation = config._attn_implementation
    with torch.device("meta"):
        native = NanoChatForCausalLM(native_config)
    native.load_state_dict(_remap(model.state_dict(), True, "model"), strict=True, assign=True)
    native.model.rotary_emb.to_empty(device=model.device)
    native._init_weights(native.model.rotary_emb)
    native.generation_config = model.generation_config
    return native


def native_to_akshara(native, source: str = "model"):
    """In memory: transformers' `NanoChatForCausalLM` -> `AksharaForCausalLM`; refuses settings Akshara lacks."""
    from akshara_hf.model.configuration_akshara import SUPPORTED_ROPE_TYPES, AksharaConfig
    from akshara_hf.model.modeling_akshara import AksharaForCausalLM

    nc = native.config
    rope = dict(nc.rope_parameters or {"rope_type": "default", "rope_theta": 10000.0})
    rope_type = rope.get("rope_type", "default")
    supported_rope = rope_type if rope_type in SUPPORTED_ROPE_TYPES else f"one of {SUPPORTED_ROPE_TYPES}"
    unsupported = {
        "rope_type": (rope_type, supported_rope),
        "hidden_act": (nc.hidden_act, "relu2"),
        "attention_bias": (nc.attention_bias, False),
        "tie_word_embeddings": (nc.tie_word_embeddings, False),
    }
    bad = {name: got for name, (got, want) in unsupported.items() if got != want}
    if bad:
        raise AksharaError(f"{source}: native settings Akshara does not implement: {bad}")
    config = AksharaConfig(
        **{name: getattr(nc, name) for name in SHARED_CONFIG_FIELDS},
        rope_parameters=rope,
        rms_norm_eps=None if nc.rms_norm_eps == torch.finfo(torch.float32).eps else nc.rms_norm_eps,
    )
    model = AksharaForCausalLM(config)
    model.load_state_dict(_remap(native.state_dict(), False, source), strict=True)
    model.generation_config = native.generation_config
    return model


def _tokenizer_of(folder, trust_remote_code: bool = False, config=None, command: str = ""):
    """The folder's tokenizer, or None for a weights-only folder. A tokenizer saved without a chat template gets the
    package's (nanochat's layout is the only one its special tokens encode), so the converted folder chats and serves."""
    import sys

    from akshara_hf.loading import load_tokenizer
    from akshara_hf.tokenization.chat import check_chat_template, load_chat_template, special_token_ids

    if not (Path(folder) / "tokenizer.json").is_file():
        return None
    tokenizer = load_tokenizer(str(folder), trust_remote_code, config=config)
    if not tokenizer.chat_template:
        try:
            special_token_ids(tokenizer)
        except AksharaError as error:
            raise AksharaError(f"{folder}: no chat template, and {error}") from None
        tokenizer.chat_template = load_chat_template()
        print(f"{folder}: the tokenizer has no chat template; the output gets nanochat's", file=sys.stderr)
    elif command == "export-native":  # an Akshara folder's own template (a broken one was copied on without a word)
        check_chat_template(tokenizer, str(folder))
        tokenizer.chat_template = load_chat_template()  # the same layout on the probes; on every input, ours
    return tokenizer


def _save_converted(model, folder, output_dir, command: str, overwrite: bool, trust_remote_code: bool = False) -> Path:
    tokenizer = _tokenizer_of(folder, trust_remote_code, model.config, command)

    def write(out: Path) -> None:
        model.save_pretrained(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)

    return _write_atomically(output_dir, command, write, overwrite, [folder])


@with_phases("export-native", "loading the model", "converting", "writing the folder")
def export_native(folder: str | Path, output_dir: str | Path, overwrite: bool = False,
                  trust_remote_code: bool = False) -> Path:
    """An Akshara folder -> a folder of transformers' native `nanochat` type (loads without remote code)."""
    from akshara_hf.loading import load_model, resolve_model

    check_output(output_dir, "export-native", overwrite=overwrite, inputs=[folder])
    model = load_model(resolve_model(folder, tokenizer=False), trust_remote_code)
    if model.config.model_type != "akshara":
        raise AksharaError(f"{folder}: model_type {model.config.model_type!r}, expected 'akshara'")
    next_phase()
    native = akshara_to_native(model)
    next_phase()
    return _save_converted(native, folder, output_dir, "export-native", overwrite, trust_remote_code)


@with_phases("import-native", "loading the model", "converting", "writing the folder")
def import_native(folder: str | Path, output_dir: str | Path, overwrite: bool = False,
                  trust_remote_code: bool = False) -> Path:
    """A folder of transformers' native `nanochat` type -> an Akshara folder."""
    from akshara_hf.loading import load_model, resolve_model

    check_output(output_dir, "import-native", overwrite=overwrite, inputs=[folder])
    native = load_model(resolve_model(folder, tokenizer=False), trust_remote_code)
    if native.config.model_type != "nanochat":
        raise AksharaError(f"{folder}: model_type {native.config.model_type!r}, expected 'nanochat'")
    next_phase()
    model = native_to_akshara(native, str(folder))
    next_phase()
    return _save_converted(model, folder, output_dir, "import-native", overwrite, trust_remote_code)


# ---------------------------------------------------------------------------------------------------------------
# Back to nanochat


def read_sidecar_meta(path: Path, tensor_names: set[str]) -> dict:
    """A converted folder's `nanochat_meta.json`, checked field by field: it decides the exported file names (`step`)
    and each tensor's dtype (`akshara.dtypes`, from `WEIGHT_DTYPES` only, for tensors the model has)."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise AksharaError(f"{path}: must be a JSON object, got {type(meta).__name__}")
    step = meta.get("step", 0)
    if type(step) is not int or step < 0:
        raise AksharaError(f"{path}: step must be a non-negative integer, got {step!r}")
    check_step_size(step, f"{path}: step")
    for key, kind in (("model_config", dict), ("source_checkpoint", str), ("source_tokenizer", str)):
        if key in meta and not isinstance(meta[key], kind):
            raise AksharaError(f"{path}: {key} must be a {kind.__name__}, got {meta[key]!r}")
    extras = meta.get("akshara", {})
    if not isinstance(extras, dict) or set(extras) - {"dtypes"} or not isinstance(extras.get("dtypes", {}), dict):
        raise AksharaError(f"{path}: akshara must be an object with a dtypes object, got {extras!r}")
    for name, dtype in extras.get("dtypes", {}).items():
        if name not in tensor_names:
            raise AksharaError(f"{path}: akshara.dtypes names {name!r}, a tensor this model does not have")
        if dtype not in WEIGHT_DTYPES:
            raise AksharaError(f"{path}: akshara.dtypes.{name} is {dtype!r}, not one of {', '.join(WEIGHT_DTYPES)}")
    return meta


def _same_nanochat_model(first: dict, second: dict) -> bool:
    from akshara_hf.model.configuration_akshara import AksharaConfig

    try:
        return AksharaConfig.from_nanochat(first).to_nanochat() == AksharaConfig.from_nanochat(second).to_nanochat()
    except ValueError:
        return False


@with_phases("export-nanochat", "loading the model", "converting the weights", "writing the checkpoint")
def export_nanochat(folder: str | Path, output_dir: str | Path, step: int | None = None,
                    overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """An Akshara folder -> a nanochat checkpoint directory: `model_{step:06d}.pt`, `meta_{step:06d}.json` and the
    tokenizer (`tokenizer.pkl`, `token_bytes.pt`) beside them, as nanochat's `load_checkpoint` and `get_tokenizer`
    read them (copy the two tokenizer files to nanochat's `BASE/tokenizer/`). A folder converted from nanochat gives
    back its checkpoint's tensors bit for bit (padding rows and dtypes from the files described above) and its meta;
    any other folder gets zero padding rows, its own dtypes and `step` (default 0)."""
    from akshara_hf.loading import load_model, load_tokenizer, resolve_model
    from akshara_hf.tokenization.tokenizer import fast_to_tiktoken, save_nanochat_tokenizer

    if step is not None and (type(step) is not int or step < 0):
        raise AksharaError(f"--step {step}: must be a non-negative integer (nanochat's file names are model_NNNNNN.pt)")
    check_step_size(step, "--step")
    check_output(output_dir, "export-nanochat", overwrite=overwrite, inputs=[folder])
    folder = Path(resolve_model(folder, tokenizer=False))
    model = load_model(str(folder), trust_remote_code, dtype="auto")
    if model.config.model_type != "akshara":
        raise AksharaError(f"{folder}: model_type {model.config.model_type!r}, expected 'akshara'")
    next_phase()
    try:
        model_config = model.config.to_nanochat()
    except ValueError as error:
        raise AksharaError(f"{folder}: {error}") from None
    names = {our_key_to_nanochat(key) for key in model.state_dict()}
    meta = read_sidecar_meta(folder / NANOCHAT_META_FILE, names) if (folder / NANOCHAT_META_FILE).exists() else {}
    extras = meta.pop("akshara", {})
    for key in ("source_checkpoint", "source_tokenizer"):
        meta.pop(key, None)
    step = step if step is not None else meta.get("step", 0)
    if not (folder / "tokenizer.json").is_file():
        raise AksharaError(f"{folder}: no tokenizer.json (nanochat's loader needs the tokenizer beside the weights)")
    source = meta.get("model_config")
    if isinstance(source, dict) and all(source.get(key) == model_config[key] for key in model_config
                                        if key != "window_pattern") and _same_nanochat_model(source, model_config):
        model_config = source  # the same model, as its checkpoint spelled it (e.g. window_pattern "SSSL", not "S")
    meta = {**meta, "step": step, "model_config": model_config}
    padding = read_padding(folder)
    state = akshara_state_to_nanochat(model.state_dict(), model.config.vocab_size, extras, padding)
    # Converted before anything is written: a tokenizer.json that is not nanochat's kind is one line, not a half
    # written folder.
    tokenizer = load_tokenizer(str(folder), trust_remote_code, config=model.config)
    try:
        encoding = fast_to_tiktoken(tokenizer)
    except AksharaError as error:
        raise AksharaError(f"{folder / 'tokenizer.json'}: {error}") from None
    next_phase()

    def write(out: Path) -> None:
        torch.save(state, out / f"model_{step:06d}.pt")
        (out / f"meta_{step:06d}.json").write_text(json.dumps(meta, indent=2))
        save_nanochat_tokenizer(encoding, out)

    return _write_atomically(output_dir, "export-nanochat", write, overwrite, [folder])


# ---------------------------------------------------------------------------------------------------------------
# CLI


def register(subparsers) -> None:
    p = subparsers.add_parser("convert-nanochat", help="nanochat checkpoint dir -> HF folder")
    p.add_argument("checkpoint_dir")
    p.add_argument("output_dir")
    p.add_argument("--tokenizer-dir", default=None,
                   help="folder with tokenizer.pkl (default: beside the checkpoint, else nanochat's BASE/tokenizer/)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--no-optimizer", dest="optimizer", action="store_false",
                   help="leave out the checkpoint's optimizer state (optim_STEP_rank*.pt; carried by default, for "
                        "SFT's warm_start_optimizer)")
    add_overwrite_flag(p)
    p.set_defaults(func=lambda a: print(convert_nanochat(a.checkpoint_dir, a.output_dir, a.tokenizer_dir, a.step,
                                                         overwrite=a.overwrite, optimizer=a.optimizer)))

    p = subparsers.add_parser("export-nanochat", help="Akshara folder -> nanochat checkpoint dir (model, meta, tokenizer)")
    p.add_argument("folder")
    p.add_argument("output_dir")
    p.add_argument("--step", type=int, default=None, help="step in the file names (default: the source's, else 0)")
    add_overwrite_flag(p)
    add_trust_flag(p)
    p.set_defaults(func=lambda a: print(export_nanochat(a.folder, a.output_dir, a.step, overwrite=a.overwrite,
                                                        trust_remote_code=a.trust_remote_code)))

    p = subparsers.add_parser("export-native", help="Akshara folder -> transformers' native nanochat folder")
    p.add_argument("folder")
    p.add_argument("output_dir")
    add_overwrite_flag(p)
    add_trust_flag(p)
    p.set_defaults(func=lambda a: print(export_native(a.folder, a.output_dir, overwrite=a.overwrite,
                                                      trust_remote_code=a.trust_remote_code)))

    p = subparsers.add_parser("import-native", help="transformers' native nanochat folder -> Akshara folder")
    p.add_argument("folder")
    p.add_argument("output_dir")
    add_overwrite_flag(p)
    add_trust_flag(p)
    p.set_defaults(func=lambda a: print(import_native(a.folder, a.output_dir, overwrite=a.overwrite,
                                                      trust_remote_code=a.trust_remote_code)))
