"""One training run from a recipe: what `training/mid_train.py`, `training/sft.py` and the demo call.

A recipe is one YAML file: `AksharaSFTConfig` fields (TRL's `SFTConfig` plus nanochat's optimizer fields and
`stage`), the `AksharaRunArguments` below, and the `data:` section (`DataSection`, paths relative to the recipe),
all parsed by `akshara_hf.training.recipe.RecipeParser` (TRL's `TrlParser`). Flags override the YAML, every key included
(`--config RECIPE --max_steps 10`, `--data '{sources: [...]}'`). Stages (`stage:` decides the schedule too):
  - "sft": conversations rendered with nanochat's mask, pad-to-longest batches (or TRL's padding-free/packing);
  - "mid": conversations rendered and concatenated into rows of `max_seq_len + 1`, every token a target;
  - "base": every message text as a plain document (`<|bos|>` + text), packed like "mid" (the demo's base stage).
Everything the recipe names (files, folders, values) is checked before any model or data is loaded; each problem
is one line and exit status 2. The output folder is an HF model folder (as is every `checkpoint-*` inside it) with
`run_facts.json`, `log.jsonl` and a model card.
"""

import json
import os
import re
import sys

import yaml
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from akshara_hf.training.adapters import AksharaPeftArguments
from akshara_hf.data.mixture import DataSection, load_yaml, yaml_where
from akshara_hf.bounds import regular_tree
from akshara_hf.errors import AksharaError, one_line
from akshara_hf.folders import MARKER, check_run_folder, output_marker, replace_file
from akshara_hf.training.help import ALL_STAGES as STAGES, SCRIPT_STAGES


@dataclass
class AksharaRunArguments(AksharaPeftArguments):
    """Run-level recipe keys (everything that is not a trainer setting), TRL's PEFT keys (`use_peft`, `lora_r`, ...)
    included."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "HF folder or Hub id, or a nanochat checkpoint dir (converted first)."}
    )
    model_config: dict | str | None = field(
        default=None,
        metadata={"help": "Train a new model: AksharaConfig fields, or {depth: N} for nanochat's rule (YAML or JSON)."},
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Default: the model's own tokenizer."})
    data: DataSection | str | None = field(
        default=None,
        metadata={"help": "The mixture: the recipe's data: section, or on the command line YAML/JSON text "
                          "'{sources: [{kind: news, path: data/samples/news/train.jsonl}], validation_fraction: 0.1}' "
                          "(replaces the recipe's; relative paths from the current folder)."},
    )
    mixture_dir: str | None = field(default=None, metadata={"help": "A prebuilt build-mixture output to train on."})
    max_seq_len: int = field(default=2048, metadata={"help": "mid/base: tokens per row (nanochat's max_seq_len)."})
    eval_tokens: int | None = field(default=None, metadata={"help": "mid/base: validation tokens per evaluation."})
    hardware: str | None = field(default=None, metadata={"help": "Recorded in run_facts.json (default: detected)."})
    base_model: str | None = field(default=None, metadata={"help": "Parent checkpoint name for the model card."})

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.data, str):
            self.data = DataSection.from_text(self.data, "--data")
        elif isinstance(self.data, dict):
            self.data = DataSection.from_mapping(self.data, "data")
        if isinstance(self.model_config, str):  # YAML or JSON, as `--data` and the recipe itself
            try:
                self.model_config = load_yaml(self.model_config)
            except yaml.YAMLError as error:
                raise AksharaError(f"model_config: not valid YAML or JSON{yaml_where(error)}") from None
        if self.model_config is not None and not isinstance(self.model_config, dict):
            raise AksharaError(f"model_config must be a mapping of AksharaConfig fields, got {self.model_config!r}")
        if self.model_config is not None:
            _check_model_config_fields(self.model_config)
            check_model_config_size(self.model_config, None, self.max_seq_len)
        for key in ("max_seq_len", "eval_tokens"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise AksharaError(f"{key} must be a positive integer, got {value!r}")
        for key in ("model_name_or_path", "tokenizer_name_or_path", "mixture_dir"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise AksharaError(f"{key} must be a non-empty string, got {value!r}")


def _check_model_config_fields(spec: dict) -> None:
    """A misspelt field is refused: `AksharaConfig(**spec)` keeps unknown keywords as attributes, so `{dpeth: 2}` would
    build (and train) a default-sized model without a word."""
    import dataclasses

    from akshara_hf.model.configuration_akshara import AksharaConfig

    known = {field.name for field in dataclasses.fields(AksharaConfig)} | {"depth", "window_pattern", "rope_theta"}
    unknown = sorted(str(key) for key in spec if key not in known)
    if unknown:
        raise AksharaError(f"model_config: unknown field(s) {unknown}; give AksharaConfig fields, or depth (and "
                           "window_pattern for nanochat 2026) for nanochat's shape at that depth")


def check_model_config_size(spec: dict, vocab_size: int | None, max_seq_len) -> None:
    """A new model that cannot fit this machine is refused before its config is built (AksharaConfig makes per-layer
    lists: `{depth: 1000000000}` would fill the memory there already). Without the tokenizer's `vocab_size` yet, the
    estimate leaves the vocabulary out (a lower bound)."""
    from akshara_hf.bounds import check_model_fits
    from akshara_hf.model.configuration_akshara import AksharaConfig, depth_shape

    fields = {"vocab_size": vocab_size or 0, "max_position_embeddings": max_seq_len,
              "rotary_cache_factor": AksharaConfig.rotary_cache_factor, **spec,
              "use_value_embeddings": spec.get("use_value_embeddings") or "window_pattern" in spec}
    names = {}
    if "depth" in spec:
        try:
            fields.update(depth_shape(spec["depth"]))
        except ValueError:
            return  # AksharaConfig.from_depth reports it, naming the field
        names = {key: "depth" for key in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
    if "max_position_embeddings" not in spec:
        names["max_position_embeddings"] = "max_seq_len"
    check_model_fits(fields, "model_config", names=names, given={**spec, "max_seq_len": max_seq_len})


def check_model_source(name: str, key: str) -> None:
    """A model or tokenizer that is not a local folder must be a Hub repo (`akshara_hf.loading.is_hub_id`'s rule), and
    one the Hub (or, offline, its cache) has: asked once with a timeout, so a folder that does not exist yet
    (`runs/tiny-base` on a fresh clone, no `runs/` here either) is one line in about a second instead of
    transformers' minute of Hub retries and a traceback about connecting."""
    from akshara_hf.loading import is_hub_id

    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise AksharaError(f"{key} {name}: is a file, not a model folder")
    if not is_hub_id(name):
        raise AksharaError(f"{key} {name}: no such folder")
    from huggingface_hub import HfApi, try_to_load_from_cache

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        if any(isinstance(try_to_load_from_cache(name, file), str) for file in ("config.json", "tokenizer_config.json")):
            return
        raise AksharaError(f"{key} {name}: no such folder, and not in the Hub cache (HF_HUB_OFFLINE is set)")
    try:
        HfApi().model_info(name, timeout=10)
    except Exception as error:  # not found, gated, no network: all mean this name cannot be loaded as given
        raise AksharaError(f"{key} {name}: no such folder, and not a model on the Hugging Face Hub "
                           f"({one_line(error)})") from None


def _is_nanochat_checkpoint_dir(source: str) -> bool:
    """A nanochat checkpoint directory (model_STEP.pt files): converted first, with tokenizer_name_or_path if given."""
    return Path(source).is_dir() and any(Path(source).glob("model_*.pt"))


def _check_before_work(args, run) -> None:
    """Everything the recipe names, checked before a model or any data is loaded."""
    if run.model_name_or_path is None and run.model_config is None:
        raise AksharaError("the recipe needs model_name_or_path, or model_config with tokenizer_name_or_path")
    if run.model_config is not None and run.model_name_or_path is not None:
        # model_config built a new model and model_name_or_path only lent it a tokenizer and the card's base_model:
        # the parent's weights went unused without a word
        raise AksharaError(f"model_name_or_path {run.model_name_or_path} and model_config both given: model_config "
                           "builds a new model, so the parent's weights would go unused; give one (a new model's "
                           "tokenizer: tokenizer_name_or_path; on the command line, --model_config null drops a "
                           "recipe's)")
    if run.model_config is not None and run.tokenizer_name_or_path is None:
        raise AksharaError("model_config needs tokenizer_name_or_path (a new model has no tokenizer of its own)")
    if run.model_name_or_path is not None:
        check_model_source(run.model_name_or_path, "model_name_or_path")
        if run.tokenizer_name_or_path is not None and not _is_nanochat_checkpoint_dir(run.model_name_or_path):
            # it was ignored without a word: a model folder trains with the tokenizer it was trained with
            raise AksharaError(f"tokenizer_name_or_path {run.tokenizer_name_or_path}: a model folder brings its own "
                               "tokenizer, so this one would be ignored (it is for a nanochat checkpoint directory "
                               "or a new model's model_config); drop it")
    if run.tokenizer_name_or_path is not None:
        check_model_source(run.tokenizer_name_or_path, "tokenizer_name_or_path")
    if run.mixture_dir is not None:
        folder = Path(run.mixture_dir)
        if folder.is_dir():
            regular_tree(folder, depth=3)  # datasets opens the files it lists: a named pipe would block forever
        if not (folder / "dataset_dict.json").is_file():
            raise AksharaError(f"mixture_dir {folder}: not a build-mixture output (no dataset_dict.json); build one "
                               "with `akshara-hf build-mixture RECIPE FOLDER`")
        try:
            splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        except (ValueError, AttributeError) as error:
            raise AksharaError(f"mixture_dir {folder}: dataset_dict.json is not a datasets DatasetDict file "
                               f"({one_line(error)})") from None
        if not isinstance(splits, list) or "train" not in splits or "validation" not in splits:
            raise AksharaError(f"mixture_dir {folder}: needs train and validation splits, has {splits}")
    elif run.data is None:
        raise AksharaError("no data: give the recipe a data: section (or --data, or mixture_dir)")
    else:
        from akshara_hf.data.mixture import check_source_files

        check_source_files(run.data)
    if args.warm_start_optimizer:
        _check_warm_start(run)
    resume = args.resume_from_checkpoint
    if isinstance(resume, bool):  # YAML `true`: the Trainer's meaning, the last checkpoint-* in output_dir
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
        if resume and found is None:
            raise AksharaError(f"resume_from_checkpoint true: {args.output_dir} holds no checkpoint-* folder to "
                               "resume from")
        resume = args.resume_from_checkpoint = found
    elif resume is not None and not isinstance(resume, str):
        raise AksharaError(f"resume_from_checkpoint must be a checkpoint folder (or true: output_dir's last), got "
                           f"{resume!r}")
    if resume is not None and not (Path(resume) / "trainer_state.json").is_file():
        raise AksharaError(f"resume_from_checkpoint {resume}: not a checkpoint folder (no trainer_state.json)")
    _check_output_dir(Path(args.output_dir), run, resume, args.save_total_limit)


def _check_warm_start(run) -> None:
    """`warm_start_optimizer` needs a model that comes with an optimizer state: a nanochat checkpoint directory with
    its newest step's `optim_*_rank*.pt`, or a folder convert-nanochat wrote from one."""
    from akshara_hf.conversion.convert import find_checkpoint
    from akshara_hf.conversion.optimizer_state import OPTIMIZER_LAYOUT, find_optimizer_files

    if run.model_config is not None:
        raise AksharaError("warm_start_optimizer: a new model (model_config) has no optimizer state to start from; "
                           "give model_name_or_path a nanochat 2026 checkpoint or the folder convert-nanochat made of it")
    source = Path(run.model_name_or_path)
    if not source.is_dir():
        raise AksharaError(f"warm_start_optimizer: {source} is not a local folder; the optimizer state comes from a "
                           "nanochat 2026 checkpoint directory or the folder convert-nanochat made of it")
    if any(source.glob("model_*.pt")):
        _, _, step = find_checkpoint(source)
        if not find_optimizer_files(source, step):
            raise AksharaError(f"warm_start_optimizer: {source} has no optim_{step:06d}_rank*.pt (the checkpoint was "
                               "saved without its optimizer state)")
    elif not (source / OPTIMIZER_LAYOUT).is_file():
        raise AksharaError(f"warm_start_optimizer: {source} has no {OPTIMIZER_LAYOUT} (convert-nanochat writes it "
                           "from a nanochat 2026 checkpoint's optim_*_rank*.pt)")


def _check_checkpoint_pickles(checkpoint: Path) -> None:
    """The Trainer reads a checkpoint's optimizer, scheduler and RNG pickles with `weights_only=True`, so a crafted one
    never runs, but it stopped the run with a traceback naming no file: each is read here the same way first (mapped,
    not copied into memory), and a refused one is one line naming it."""
    import torch
    from transformers.trainer_pt_utils import safe_globals  # the Trainer's own allowlist: numpy's RNG state arrays

    from akshara_hf.bounds import regular_file

    for path in sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
        regular_file(path, "checkpoint file")  # a named pipe would block the read
        try:
            with safe_globals():
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # pickle.UnpicklingError for a global outside torch's allowlist; others if damaged
            found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(error))
            if found:
                why = f"a pickle calling {found.group(1)}, which is not a tensor; refused, never run"
            elif "Weights only load failed" in str(error):  # torch's advice (weights_only=False) is not ours to give
                why = "a pickle holding more than tensors; refused, never run"
            else:
                why = f"not a readable checkpoint file ({type(error).__name__}: {one_line(error, limit=200)})"
            raise AksharaError(f"resume_from_checkpoint {path}: {why}") from None


def _check_checkpoint_shapes(model, checkpoint: Path) -> None:
    """Resuming from another model's checkpoint is one line naming the first tensor that differs, before any data is
    built, not the Trainer's `load_state_dict` traceback after it (the weights' shapes come from the safetensors
    header; no tensor is read)."""
    from safetensors import safe_open

    weights = checkpoint / "model.safetensors"
    if not weights.is_file():
        raise AksharaError(f"resume_from_checkpoint {checkpoint}: no model.safetensors (a full-model checkpoint of "
                           "this run's model is needed)")
    try:
        with safe_open(str(weights), framework="pt") as file:
            saved = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except Exception as error:  # safetensors raises its own error types for a damaged file
        raise AksharaError(f"resume_from_checkpoint {weights}: not a readable safetensors file "
                           f"({one_line(error)})") from None
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    for name, shape in expected.items():
        if name not in saved:
            raise AksharaError(f"resume_from_checkpoint {weights}: has no {name} (the checkpoint is of another "
                               "model; resume with the recipe and model_config that wrote it)")
        if saved[name] != shape:
            raise AksharaError(f"resume_from_checkpoint {weights}: {name} is {list(saved[name])}, this run's model "
                               f"has {list(shape)} (the checkpoint is of another model; resume with the recipe and "
                               "model_config that wrote it)")
    extra = sorted(set(saved) - set(expected))
    if extra:
        raise AksharaError(f"resume_from_checkpoint {weights}: {extra[0]} is not in this run's model (the checkpoint "
                           "is of another model)")


TRAIN_COMMAND = "train"  # the marker's command in a training run's output_dir


def _check_output_dir(output: Path, run, resume: str | None, save_total_limit: int | None = None) -> None:
    """The project's output rule (`akshara_hf.folders.check_run_folder`): a run writes its weights, model card,
    log and checkpoints into `output_dir`, so never into a file, a symbolic link, a folder we did not write (file names
    prove nothing: only our marker does) or one holding a link, nor into or around what it reads (parent model,
    tokenizer, resume checkpoint, mixture_dir, data files). An earlier run's output_dir is written into again: the
    checkpoint it resumes from may lie inside it."""
    inputs = [run.model_name_or_path, run.tokenizer_name_or_path, resume, run.mixture_dir]
    if run.data is not None and not run.mixture_dir:
        inputs += [location for spec in run.data.sources for location in (spec.location, spec.validation_location)]
    try:
        check_run_folder(output, TRAIN_COMMAND, inputs=inputs, may_contain=[resume])
        _check_can_be_made(output)
        _check_files_written_again(output, save_total_limit)
    except AksharaError as error:
        raise AksharaError(f"output_dir {error}") from None


def _check_can_be_made(output: Path) -> None:
    """Checked by every process (only the main one makes the folder: the others' errors were about its absence)."""
    ancestor = output.absolute()
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise AksharaError(f"{output}: cannot be made: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise AksharaError(f"{output}: cannot be made or written: {ancestor} is not writable")


def _check_files_written_again(output: Path, save_total_limit: int | None = None) -> None:
    """An earlier run's folder is written into again: its log is appended to (a named pipe there blocked the run) and
    its card and loss curve are rewritten, so a user's own README.md or loss_curve.png there was replaced without a
    word (in a checkpoint-N saved again, the run stopped at that save). With `save_total_limit` the Trainer's
    rotation deletes the oldest checkpoint-* folders whole: one holding anything the run did not save there (what its
    marker listed) is the user's too. All refused before any work."""
    from akshara_hf.folders import CARD_FILES, foreign_card_files, regular_file_or_absent, unlisted_entries

    for name in ("log.jsonl", "run_facts.json"):
        regular_file_or_absent(output / name, name)
    checkpoints = sorted(output.glob("checkpoint-*")) if output.is_dir() else []
    for path in checkpoints:
        if not path.is_dir() or path.is_symlink():  # the Trainer saves checkpoint-N folders: it stopped at that save
            raise AksharaError(f"{path}: not a folder; the Trainer saves its checkpoint folders at these names (move "
                               "it out first)")
    for path in (foreign for folder in [output, *checkpoints] for foreign in foreign_card_files(folder)):
        raise AksharaError(f"{path}: a {path.name} the run did not write; the run writes its {CARD_FILES[path.name]} "
                           "there (move yours out first)")
    for folder in checkpoints if save_total_limit else ():
        unlisted = unlisted_entries(output, folder)
        if unlisted is None and not (folder / "trainer_state.json").is_file():
            raise AksharaError(f"{folder}: not a checkpoint the Trainer wrote (no trainer_state.json); "
                               "save_total_limit would delete it (move it out first)")
        if unlisted:
            raise AksharaError(f"{folder}: holds {', '.join(unlisted[:3])}{', ...' if len(unlisted) > 3 else ''}, "
                               "which the run did not save there; save_total_limit would delete it with the "
                               "checkpoint (move it out first)")


# The recipe's `trust_remote_code` is TRL's SFTConfig field (default false), spelled as a recipe key or flag.
TRUST_KEY = "trust_remote_code: true (recipe key, or --trust_remote_code true)"


def _load_model_and_tokenizer(run, output_dir: Path, trust_remote_code: bool = False, writes: bool = True):
    from akshara_hf.model.configuration_akshara import AksharaConfig, nanochat_2026_fields
    from akshara_hf.conversion.convert import convert_nanochat
    from akshara_hf.loading import load_model, load_tokenizer
    from akshara_hf.model.modeling_akshara import AksharaForCausalLM
    from akshara_hf.tokenization.chat import load_chat_template

    source = run.model_name_or_path
    if source and _is_nanochat_checkpoint_dir(source):
        # The run owns output_dir/converted_base (as its mixture/): a rerun or resume there converts again.
        converted = output_dir / "converted_base"
        source = str(convert_nanochat(source, converted, run.tokenizer_name_or_path, overwrite=True) if writes
                     else written_by_the_main_process(converted))
    tokenizer_source = run.tokenizer_name_or_path if run.model_config else source
    tokenizer = load_tokenizer(tokenizer_source, trust_remote_code, flag=TRUST_KEY)
    # The run renders its data in nanochat's layout (`render_conversation`), so the folder it writes gets that layout's
    # template, whatever the parent's tokenizer held (a foreign one was saved on and prompted the trained model wrongly).
    tokenizer.chat_template = load_chat_template()
    if run.model_config is not None:
        spec = dict(run.model_config)
        spec.setdefault("vocab_size", len(tokenizer))
        spec.setdefault("max_position_embeddings", run.max_seq_len)
        check_model_config_size(spec, len(tokenizer), run.max_seq_len)  # with the vocabulary, before building
        try:
            if "window_pattern" in spec and "depth" not in spec:  # nanochat 2026 (from_depth takes it itself)
                spec.update(nanochat_2026_fields(spec.pop("window_pattern"), spec["max_position_embeddings"],
                                                 spec.get("num_hidden_layers", 20)))  # fmt: skip
            config = AksharaConfig.from_depth(**spec) if "depth" in spec else AksharaConfig(**spec)
        except (TypeError, ValueError) as error:
            raise AksharaError(f"model_config {json.dumps(run.model_config)}: {one_line(error)}") from None
        if config.vocab_size != len(tokenizer):
            raise AksharaError(f"model_config vocab_size {config.vocab_size} != tokenizer size {len(tokenizer)}")
        return AksharaForCausalLM(config), tokenizer
    return load_model(source, trust_remote_code, TRUST_KEY), tokenizer  # config checked, weights that do not fit refused


def _mixture(run, output_dir: Path, tokenizer, writes: bool = True):
    """(the DatasetDict, the folder holding it). Only the process that `writes` builds output_dir/mixture."""
    from datasets import load_from_disk

    from akshara_hf.data.mixture import build_mixture

    if run.mixture_dir:
        try:
            mixture = load_from_disk(run.mixture_dir)
            columns = {split: mixture[split].column_names for split in ("train", "validation")}
        except Exception as error:  # datasets' FileNotFoundError / KeyError / pyarrow errors for a damaged folder
            raise AksharaError(f"mixture_dir {run.mixture_dir}: cannot load it ({one_line(error)})") from None
        if any("messages" not in names for names in columns.values()):
            raise AksharaError(f"mixture_dir {run.mixture_dir}: needs a `messages` column in train and validation "
                               f"(has {columns}); build it with `akshara-hf build-mixture`")
        return mixture, Path(run.mixture_dir)
    if not writes:
        return load_from_disk(str(written_by_the_main_process(output_dir / "mixture"))), output_dir / "mixture"
    # The run owns output_dir/mixture: a rerun replaces its own earlier build (never anything else).
    return build_mixture(run.data, output_dir / "mixture", tokenizer=tokenizer, overwrite=True), output_dir / "mixture"


def _no_rows(split: str, conversations: int, max_length: int | None) -> str:
    """Why an SFT split has no rows although the mixture has conversations (`_tokenize` drops those without targets)."""
    return (f"no {split} rows: none of the {conversations} {split} conversations has an assistant token within "
            f"max_length {max_length or 2048}; raise max_length")


def _documents(conversations):
    """The base stage's plain text: each message's text as its own document."""
    from datasets import Dataset

    def texts():
        for messages in conversations["messages"]:
            for message in messages:
                content = message["content"]
                yield {"text": content if isinstance(content, str) else "".join(p["text"] for p in content)}

    return Dataset.from_generator(texts)


def _tokenize(stage: str, split, tokenizer, max_seq_len: int, max_length: int | None, assistant_only: bool = True):
    from akshara_hf.tokenization.chat import render_conversation
    from akshara_hf.data.packing import pack_conversations, pack_documents

    if stage == "sft":
        def render(example):
            ids, mask = render_conversation(example["messages"], tokenizer, max_tokens=max_length or 2048)
            return {"input_ids": ids, "assistant_masks": mask}

        rows = split.map(render, remove_columns=split.column_names, desc="rendering conversations")
        if not assistant_only:  # assistant_only_loss false: every token a target (TRL applies a mask column always)
            return rows.remove_columns("assistant_masks")
        # A conversation whose assistant tokens all lie beyond max_length has nothing to learn from; TRL drops such
        # rows only when it truncates itself (not with padding_free / max_length None), and a micro-batch made only of
        # them would give a NaN loss (nanochat's too). Drop them here, always, and say how many.
        kept = rows.filter(lambda row: any(row["assistant_masks"]), desc="dropping rows without targets")
        if len(kept) < len(rows):
            print(f"{len(rows) - len(kept)} of {len(rows)} conversations have no assistant token within "
                  f"{max_length or 2048} tokens; dropped", file=sys.stderr)
        return kept
    if stage == "mid":
        return pack_conversations(split, tokenizer, max_seq_len)
    return pack_documents(_documents(split), tokenizer, max_seq_len)


def recipe_parser(script: str | None = None):
    """The recipe parser of a training script: its name in errors and `--help`, its first stage the default."""
    from akshara_hf.training import help
    from akshara_hf.training.recipe import recipe_parser as parser

    return parser(AksharaRunArguments, prog=script, description=help.description(script),
                  defaults={"stage": help.stages_of(script)[0]}, helps={"stage": help.stage_help(script)})


def parse_recipe(argv: list[str] | None = None, script: str | None = None):
    """(trainer config, run arguments) of a recipe and flags, checked; `script` ("sft.py" / "mid_train.py") names
    the command in errors and `--help` and limits the stages it runs."""
    stages = SCRIPT_STAGES.get(script, STAGES)
    args, run = recipe_parser(script).parse_args_and_config(argv)
    if args.stage not in stages:
        other = next(name for name, allowed in SCRIPT_STAGES.items() if args.stage in allowed)
        raise AksharaError(f"stage {args.stage!r}: {script} runs stage {' or '.join(stages)}; run this recipe "
                           f"with training/{other} (akshara-hf {other[:-3].replace('_', '-')})")
    if args.stage in ("mid", "base"):
        args.max_length = run.max_seq_len + 1  # rows carry one extra token: the last target
    _cap_steps(args)
    _check_before_work(args, run)
    return args, run


MAX_STEPS_ENV = "AKSHARA_MAX_STEPS"


def _cap_steps(args) -> None:
    """`AKSHARA_MAX_STEPS=N` stops every run after at most N steps (the recipe's schedule fitted to them, as with
    `--max_steps N`): quick looks at the README's commands and the demo, which runs its stages through here. Said
    on stderr, so a shortened run is never mistaken for the recipe's."""
    value = os.environ.get(MAX_STEPS_ENV)
    if value is None or value == "":
        return
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap < 1:
        raise AksharaError(f"{MAX_STEPS_ENV}={value!r}: must be a positive whole number of steps (or unset)")
    if args.max_steps < 1 or args.max_steps > cap:
        print(f"{MAX_STEPS_ENV}={cap}: this run stops after {cap} steps", file=sys.stderr)
        args.max_steps = cap


def train(argv: list[str] | None = None, script: str | None = None, card_writer=None) -> Path:
    """Run one recipe; returns the output folder. `card_writer` writes the model cards (the trainer's card hook calls
    it at every checkpoint and the final save): the training scripts pass `model_card.write_model_card` (this package
    does not import model_card, which imports it). A full disk is one line naming the file being written (the
    Trainer's torch.save / safetensors errors do not)."""
    from akshara_hf.folders import disk_full_error

    output: list[Path] = []  # the run's output_dir, once known
    try:
        return _train(argv, script, card_writer, output)
    except Exception as error:
        full = disk_full_error(error, output[0]) if output else None
        if full is None:
            raise
        raise AksharaError(f"{full} (checkpoints saved before it are complete)") from None


def _train(argv: list[str] | None, script: str | None, card_writer, output: list[Path]) -> Path:
    import torch
    from transformers import GenerationConfig, set_seed

    from akshara_hf.progress import use_step_progress
    from akshara_hf.training.adapters import peft_config
    from akshara_hf.tokenization.chat import generation_config_kwargs
    from akshara_hf.training.trainer import MuonSFTTrainer, check_akshara_model
    from akshara_hf.training.training_log import (CheckpointSteps, JsonlLogCallback, RunClock, SavedEntries, run_facts,
                                                  wait_for_every_process)

    argv = list(sys.argv[1:] if argv is None else argv)
    args, run = parse_recipe(argv, script)
    output_dir = Path(args.output_dir)
    output.append(output_dir)
    # What the run writes before training (its marker, converted_base/, mixture/) the main process alone writes, once
    # every process has checked everything (one process checking output_dir, or building mixture/, while another
    # wrote there was a race: a 2-process run failed at random); the others then read what it wrote.
    writes = args.process_index == 0
    wait_for_every_process(args)
    with args.main_process_first(local=False, desc="the run's marker, converted base and mixture"):
        if writes:
            output_dir.mkdir(parents=True, exist_ok=True)
            if output_marker(output_dir) is None:  # ours from the start: a run failing before its first save reruns
                replace_file(output_dir / MARKER,
                             json.dumps({"command": TRAIN_COMMAND, "written_by": "akshara-hf"}) + "\n")
        set_seed(args.seed)  # before the model exists: a new model's weights are the recipe's seed's
        model, tokenizer = _load_model_and_tokenizer(run, output_dir, args.trust_remote_code, writes)
        check_akshara_model(model)  # before any data is built
        if args.resume_from_checkpoint is not None:
            _check_checkpoint_pickles(Path(args.resume_from_checkpoint))
        if args.resume_from_checkpoint is not None and not run.use_peft:
            _check_checkpoint_shapes(model, Path(args.resume_from_checkpoint))
        # Packed rows carry one token more than their inputs: the last target (mid/base, and SFT's bos_bestfit rows).
        extra = int(args.stage != "sft" or (args.packing and args.packing_strategy == "bos_bestfit"))
        row_length = (run.max_seq_len if args.stage != "sft" else args.max_length or 2048) + extra
        positions = model.config.rotary_cache_factor * model.config.max_position_embeddings
        if row_length > positions:
            key = "max_seq_len" if args.stage != "sft" else "max_length"
            raise AksharaError(f"{key} {row_length - extra}: rows of {row_length} tokens exceed the "
                               f"model's {positions} positions (rotary_cache_factor x max_position_embeddings)")
        model.generation_config = GenerationConfig(**generation_config_kwargs(tokenizer))
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(model.config, key, getattr(model.generation_config, key))
        mixture, mixture_folder = _mixture(run, output_dir, tokenizer, writes)
    train_rows = _tokenize(args.stage, mixture["train"], tokenizer, run.max_seq_len, args.max_length,
                           args.assistant_only_loss)
    if len(train_rows) == 0:  # TRL would stop with a StopIteration traceback looking at its first row
        raise AksharaError(_no_rows("training", len(mixture["train"]), args.max_length))
    eval_rows = _tokenize(args.stage, mixture["validation"], tokenizer, run.max_seq_len, args.max_length,
                          args.assistant_only_loss)
    if run.eval_tokens is not None and args.stage != "sft":
        eval_rows = eval_rows.select(range(min(len(eval_rows), max(1, run.eval_tokens // run.max_seq_len))))
    if args.eval_strategy != "no" and len(eval_rows) == 0:
        raise AksharaError(_no_rows("validation", len(mixture["validation"]), args.max_length) if len(
            mixture["validation"]) else "the validation split is empty; set validation_fraction in the data section")
    seq_len = run.max_seq_len if args.stage != "sft" else args.max_length or 2048
    if args.stage == "sft" and args.padding_free and not args.packing:
        # The rows are cut to max_length above; TRL refuses padding_free with a max_length (it would not enforce it).
        args.max_length = None
    # The whole run's tokens live in the Trainer's state (saved in checkpoints, restored on resume). Padded SFT
    # batches count their attention mask; packed and padding-free rows have no padding to leave out.
    padded = args.stage == "sft" and not (args.padding_free or args.packing)
    args.include_num_input_tokens_seen = "non_padding" if padded else "all"

    clock, checkpoints = RunClock(), CheckpointSteps()
    facts_so_far = partial(run_facts, run=run, mixture=mixture, torch=torch, seq_len=seq_len,
                           mixture_folder=mixture_folder, clock=clock, checkpoints=checkpoints)
    trainer = MuonSFTTrainer(
        model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows if len(eval_rows) else None,
        processing_class=tokenizer,
        callbacks=[JsonlLogCallback(output_dir / "log.jsonl"), clock, checkpoints, SavedEntries()],
        peft_config=peft_config(run),  # TRL's PEFT keys (use_peft, lora_r, ...): the folder holds the adapter
        # The trainer's card hook writes our card, from the facts at each save, into output_dir and every checkpoint
        # (the run owns their README.md). A PEFT run's folder is an adapter, with PEFT's own README.
        card_writer=None if run.use_peft else card_writer,
        card_facts=facts_so_far,
    )
    use_step_progress(trainer)  # step i/N, ETA, loss and tokens/s: tqdm on a terminal, whole lines in a log
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if len(eval_rows):
        _final_evaluation(trainer)  # logged: the facts' final validation figures are the last evaluation's
    trainer.save_model(str(output_dir))  # with the final card (the trainer's card hook)
    facts_so_far(trainer).write(output_dir)
    if run.use_peft:
        print(f"LoRA adapter saved in {output_dir} (base: {model.name_or_path}); merge it with "
              "AutoPeftModelForCausalLM.from_pretrained(FOLDER).merge_and_unload()", file=sys.stderr)
    return output_dir


def written_by_the_main_process(path: Path) -> Path:
    """What the main process wrote for the run (converted_base/, mixture/), as another process finds it; a run on
    several machines needs output_dir on a filesystem they share."""
    if not path.is_dir():
        raise AksharaError(f"{path}: not found by this process; the main process writes it (did it stop with an "
                           "error?), so a run on several machines needs output_dir on a filesystem they share")
    return path


def _final_evaluation(trainer) -> dict:
    """The evaluation at the last step: the one the Trainer just logged (eval_steps dividing the step count), else a
    new one; never the same evaluation twice in the logs."""
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return entry
    return trainer.evaluate()


def main(script: str | None = None, card_writer=None) -> int:
    """The training scripts' entry point: the output folder on stdout, or one error line and exit status 2. `--help`
    answers from the light description of the options (`akshara_hf.training.help`), before torch is imported; the
    CPU threads are chosen before it too (`akshara_hf.threads`)."""
    from akshara_hf.progress import quiet_library_bars_off_terminal
    from akshara_hf.threads import configure_threads
    from akshara_hf.training.help import print_help_if_asked

    script = script or Path(sys.argv[0]).name
    if print_help_if_asked(sys.argv[1:], script):
        return 0
    configure_threads()  # before torch is imported: OpenMP's idle threads sleep instead of spinning
    quiet_library_bars_off_terminal()
    try:
        print(train(script=script, card_writer=card_writer))
        return 0
    except AksharaError as error:
        print(f"{script}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file or folder the run could not read or write (as the akshara-hf commands say it)
        print(f"{script}: error: {one_line(error, limit=2000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's 128 + SIGINT; checkpoints already saved stay
        print(f"{script}: interrupted", file=sys.stderr)
        return 130
