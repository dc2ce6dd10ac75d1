"""`akshara-hf publish`: check a model folder the way a Hub user will meet it, then upload it.

The check loads the folder in a fresh Python process where `akshara_hf` cannot be imported, with
`trust_remote_code=True` and a temporary modules cache: that is what a user without this package gets, so a folder
that passes cannot depend on the package, on a stale cached copy of the remote code, or on the network. That process
runs the folder's Python, so without `--trust-remote-code` it runs only when that Python is this package's own
(`akshara_hf.loading.check_folder_code(own_files=True)`: the Akshara auto_map, files identical to the installed ones,
no tokenizer or generate code). Nothing is uploaded unless every check passes. The token is whatever huggingface_hub finds (HF_TOKEN, `hf auth login`).

`akshara-hf model-card` writes the README.md the publish check asks for.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from akshara_hf.errors import AksharaError, one_line

REQUIRED_CARD_FIELDS = ("language", "library_name", "pipeline_tag")

# A model repo holds the model folder's own files: weights, config, remote code, tokenizer, chat template, card
# and its figure, the training log. Nothing else in a run folder goes: not the checkpoints, not the built mixture
# and its `cache-*.arrow` files (the card says the mixture is not published), not `evaluate` output, not
# run_facts.json (it records the training machine's paths; the card carries its figures), no pickles.
ALLOW_PATTERNS = [
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "*.py",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "README.md",
    "loss_curve.png",
    "log.jsonl",
    "nanochat_meta.json",
    "nanochat_padding.tensors",  # nanochat's vocab padding rows, for export-nanochat (akshara_hf/conversion/convert.py)
]
# Top level only: huggingface_hub's `filter_repo_objects` matches with fnmatch, where "*" also crosses "/", so every
# path inside a subfolder is ignored explicitly (on top of huggingface_hub's own defaults, .git and .cache/huggingface).
IGNORE_PATTERNS = ["*/*"]

# Runs in the child process: block the package, load with remote code only, one forward on a chat prompt.
_LOAD_CHECK = r"""
import json, sys
sys.modules["akshara_hf"] = None  # the folder must stand on its own remote code
folder = sys.argv[1]
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

def fail(reason):
    print(reason, file=sys.stderr)
    sys.exit(1)

model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
module = type(model).__module__
if not module.startswith("transformers"):
    fail(f"model class {type(model).__name__} came from {module}, not from the folder's remote code")
if not tokenizer.chat_template:
    fail("the tokenizer has no chat template (pipeline() with chat messages would fail)")
ids = tokenizer.apply_chat_template([{"role": "user", "content": "నమస్కారం"}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)["input_ids"]
vocab = model.config.vocab_size
if int(ids.max()) >= vocab:
    fail(f"the tokenizer produced id {int(ids.max())}, beyond the model's vocab_size {vocab}")
with torch.no_grad():
    logits = model(input_ids=ids).logits
if tuple(logits.shape) != (1, ids.shape[1], vocab):
    fail(f"forward gave logits of shape {tuple(logits.shape)}, expected (1, {ids.shape[1]}, {vocab})")
if not torch.isfinite(logits).all():
    fail("forward gave non-finite logits")
print(json.dumps({"model_class": f"{module}.{type(model).__name__}", "prompt_tokens": ids.shape[1], "vocab_size": vocab}))
"""


# ---------------------------------------------------------------------------------------------------------------
# checks


def _safetensors_files(folder: Path) -> list[Path]:
    """The weights, checked cheaply (header only) so a truncated file is named before any process starts."""
    from safetensors import safe_open

    # Loaders that read every *.safetensors of a repo as weights (vLLM) fail on any other one, e.g. the
    # `nanochat_padding.safetensors` that convert-nanochat wrote before it became `nanochat_padding.tensors`.
    index = folder / "model.safetensors.index.json"
    shards = {"model.safetensors"}
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise AksharaError(f"{index}: not a safetensors index ({error})") from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise AksharaError(f"{index}: shards missing from the folder: {missing}")
    elif not (folder / "model.safetensors").is_file():
        raise AksharaError(f"{folder}: no model.safetensors weights (nor a model.safetensors.index.json)")
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        if path.name not in shards:
            hint = " (rename it to nanochat_padding.tensors: the same bytes, where export-nanochat reads them)" \
                if path.name == "nanochat_padding.safetensors" else ""
            raise AksharaError(f"{path}: not one of the model's weight files, but vLLM and other loaders would read "
                               f"it as weights{hint}")
        try:  # safetensors reads the header and checks it against the file's length, without loading tensors
            with safe_open(path, framework="pt"):
                pass
        except Exception as error:  # SafetensorError, OSError: a truncated or foreign file
            raise AksharaError(f"{path}: not a safetensors file ({' '.join(str(error).split())})") from None
    return files


def _check_config(folder: Path) -> dict:
    from akshara_hf.loading import read_config_json

    path = folder / "config.json"
    config = read_config_json(path)
    if not isinstance(config.get("model_type"), str):
        raise AksharaError(f"{path}: not a transformers config (no model_type)")
    auto_map = config.get("auto_map")
    if config["model_type"] == "akshara" and not isinstance(auto_map, dict):
        raise AksharaError(f"{path}: model_type 'akshara' without auto_map: it would not load with trust_remote_code")
    if isinstance(auto_map, dict):
        for reference in auto_map.values():
            for ref in reference if isinstance(reference, list) else [reference]:
                if isinstance(ref, str) and "--" not in ref:  # "repo--module.Class" points elsewhere
                    module = ref.rsplit(".", 1)[0]
                    if not (folder / f"{module}.py").is_file():
                        raise AksharaError(f"{path}: auto_map names {ref} but {module}.py is not in the folder")
    return config


def _check_card(folder: Path) -> None:
    from huggingface_hub import ModelCard

    path = folder / "README.md"
    if not path.is_file():
        raise AksharaError(f"{path}: missing (write it with `akshara-hf model-card`)")
    try:
        data = ModelCard.load(path).data.to_dict()
    except Exception as error:  # yaml and huggingface_hub raise several types for a broken header
        reason = " ".join(str(error).split())
        raise AksharaError(f"{path}: card metadata does not parse ({type(error).__name__}: {reason})") from None
    missing = [field for field in REQUIRED_CARD_FIELDS if not data.get(field)]
    if missing:
        raise AksharaError(f"{path}: card metadata lacks {', '.join(missing)}")


def _no_required_links(folder: Path) -> None:
    """The files a Hub user needs must be regular files: a link would be read by the checks and left out of the upload
    (`_walk`), so the Hub copy would break."""
    config = folder / "config.json"
    required = ["config.json", "tokenizer.json", "README.md", "model.safetensors", "model.safetensors.index.json"]
    if not config.is_symlink() and config.is_file():
        try:
            auto_map = json.loads(config.read_text(encoding="utf-8")).get("auto_map") or {}
            required += [f"{ref.rsplit('.', 1)[0]}.py" for value in auto_map.values()
                         for ref in (value if isinstance(value, list) else [value]) if isinstance(ref, str)]
        except (ValueError, AttributeError):
            pass  # reported by _check_config
    for name in required:
        if (folder / name).is_symlink():
            raise AksharaError(f"{folder / name}: is a symbolic link; publish uploads only regular files inside the "
                               "folder (copy the file in)")


def check_files(folder: str | Path) -> Path:
    """Everything that can be checked without loading: files present (regular files, not links), config, weights'
    headers, card metadata."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AksharaError(f"{folder}: not a directory")
    _no_required_links(folder)
    _check_config(folder)
    _safetensors_files(folder)
    if not (folder / "tokenizer.json").is_file():
        raise AksharaError(f"{folder / 'tokenizer.json'}: missing")
    _check_card(folder)
    return folder


def check_loads(folder: str | Path, timeout: float = 600, trust_remote_code: bool = False) -> dict:
    """Load the folder in a fresh process with remote code only and run one forward; returns what it reported.
    Without `trust_remote_code` the folder's Python must be this package's own (see the module docstring).

    What loads is a view of the files that would be uploaded (links to them in a scratch folder), so a file the
    upload leaves out (a symbolic link, one outside the allow-list) fails the check as it would fail a Hub user."""
    from akshara_hf.loading import check_folder_code

    folder = Path(folder).resolve()
    if not trust_remote_code:
        check_folder_code(str(folder), own_files=True)
    with tempfile.TemporaryDirectory(prefix="akshara-publish-") as scratch:
        view = Path(scratch) / folder.name
        view.mkdir()
        for path, _ in files_to_upload(folder):
            (view / path).symlink_to(folder / path)
        env = {
            **os.environ,
            "HF_MODULES_CACHE": str(Path(scratch) / "modules"),  # a fresh copy of the remote code, never a stale one
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "TQDM_DISABLE": "1",
        }
        try:
            result = subprocess.run(
                [sys.executable, "-c", _LOAD_CHECK, str(view)],
                cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise AksharaError(f"{folder}: loading with remote code took over {timeout:.0f} s") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise AksharaError(f"{folder}: does not load with remote code alone: {reason[:400]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _walk(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """(the regular files under `folder` by repo path, the symbolic links there): links are never followed, so nothing
    outside the folder can be listed (huggingface_hub's `upload_folder` follows them: `glob` + `is_file`)."""
    files, links = {}, []
    for top, dirs, names in os.walk(folder):
        for name in sorted(dirs) + sorted(names):
            path = Path(top) / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                links.append(relative)
            elif name in names and stat.S_ISREG(path.lstat().st_mode):
                files[relative] = path
    return dict(sorted(files.items())), sorted(links)


def files_to_upload(folder: str | Path) -> list[tuple[str, int]]:
    """(path in repo, size in bytes): the folder's regular files, filtered as `upload_folder` would filter them with
    our patterns."""
    from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
    from huggingface_hub.utils import filter_repo_objects

    files, _ = _walk(Path(folder).resolve())
    kept = filter_repo_objects(files, allow_patterns=ALLOW_PATTERNS,
                               ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS)
    return [(path, files[path].lstat().st_size) for path in kept]


def files_left_out(folder: str | Path) -> dict[str, int]:
    """What stays behind, counted per top-level entry (`mixture/`, `checkpoint-10/`, `run_facts.json`); symbolic links
    are `links_left_out`'s."""
    folder = Path(folder).resolve()
    kept = {path for path, _ in files_to_upload(folder)}
    counts: dict[str, int] = {}
    for path in _walk(folder)[0]:
        if path not in kept:
            top = path.split("/", 1)[0] + ("/" if "/" in path else "")
            counts[top] = counts.get(top, 0) + 1
    return counts


def links_left_out(folder: str | Path) -> list[str]:
    """The symbolic links in the folder (never uploaded, never followed), outside subfolders that stay anyway."""
    return [link for link in _walk(Path(folder).resolve())[1] if "/" not in link]


def _open_regular(path: Path):
    """`path` opened for reading, if it is still a regular file (not swapped for a link since it was checked)."""
    try:
        file = open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW))
    except OSError as error:
        reason = "is a symbolic link" if path.is_symlink() else one_line(error)
        raise AksharaError(f"{path}: {reason} (it changed after the checks); nothing uploaded") from None
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        file.close()
        raise AksharaError(f"{path}: not a regular file (it changed after the checks); nothing uploaded")
    return file


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise AksharaError(f"--repo-id {repo_id!r}: {' '.join(str(error).split())}") from None
    if "/" not in repo_id:
        raise AksharaError(f"--repo-id {repo_id!r}: give it as ORG/NAME")


# ---------------------------------------------------------------------------------------------------------------
# publish


def publish(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
            dry_run: bool = False, out=None, trust_remote_code: bool = False) -> list[tuple[str, int]]:
    """Validate, then create the repo (and branch) and upload the folder; with `dry_run`, only say what would go.

    Without `private` the namespace's default visibility applies (create_repo gets private=None).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    out = out or sys.stdout
    _check_repo_id(repo_id)
    folder = check_files(folder)
    card_text = (folder / "README.md").read_text(encoding="utf-8")
    if f'"{repo_id}"' not in card_text:
        raise AksharaError(f"{folder / 'README.md'}: its usage snippets do not load {repo_id}; write the card for it "
                           f"with `akshara-hf model-card {folder} --repo-id {repo_id}`")
    folder = folder.resolve()
    files = files_to_upload(folder)  # listed before the load check, which loads exactly these
    report = check_loads(folder, trust_remote_code=trust_remote_code)
    print(f"ok: {folder} loads with its remote code alone ({report['model_class']}); "
          f"one forward on a {report['prompt_tokens']}-token chat prompt", file=out)
    target = f"{repo_id} (revision {revision or 'main'}{', private' if private else ''})"
    total = sum(size for _, size in files)
    links = links_left_out(folder)
    if dry_run:
        print(f"dry run: would upload {len(files)} files ({total:,} bytes) to {target}", file=out)
        for path, size in files:
            print(f"{size:>15,}  {path}", file=out)
        left = files_left_out(folder)
        if left:
            print("not uploaded: " + ", ".join(f"{name} ({count} file{'s' if count > 1 else ''})"
                                                for name, count in sorted(left.items())), file=out)
    if links:
        print(f"not uploaded (symbolic links, never followed): {', '.join(links)}", file=out)
    if dry_run:
        return files
    # One commit of exactly the listed files, each opened now without following links: `upload_folder` would walk
    # the folder again, following links (see `_walk`).
    with contextlib.ExitStack() as opened:
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=opened.enter_context(
            _open_regular(folder / path))) for path, _ in files]
        api = HfApi()
        api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=f"Upload {folder.name} with akshara-hf",
                                 repo_type="model", revision=revision)
    print(f"uploaded {len(files)} files ({total:,} bytes) to {target}: {getattr(info, 'commit_url', info)}", file=out)
    return files


def _publish_command(args) -> int:
    publish(args.folder, args.repo_id, private=args.private, revision=args.revision, dry_run=args.dry_run,
            trust_remote_code=args.trust_remote_code)
    return 0


def _card_command(args) -> int:
    from . import load_run_facts, seed_run_facts, write_model_card

    facts = None
    if args.seed_run:
        facts = seed_run_facts(args.seed_run)
    elif args.facts:
        facts = load_run_facts(args.facts)
    print(write_model_card(args.folder, facts=facts, repo_id=args.repo_id, license=args.license,
                           eval_results=args.eval_results, overwrite=args.overwrite))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("publish", help="check a model folder loads with remote code alone, then upload it")
    p.add_argument("folder")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo private (else the namespace default)")
    p.add_argument("--revision", default=None, help="branch to upload to (created if missing; default main)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the files; upload nothing")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the load check run the folder's Python even when it is not this package's own "
                        "(edited, another version's, a custom tokenizer): read it first")
    p.set_defaults(func=_publish_command)

    p = subparsers.add_parser("model-card", help="write README.md (model card) into a model folder")
    p.add_argument("folder")
    p.add_argument("--repo-id", default=None, help="ORG/NAME for the usage snippets")
    p.add_argument("--license", default="mit")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--facts", default=None, help="run_facts.json (default: the folder's own)")
    source.add_argument("--seed-run", default=None, help="a published Akshara run name: use its reported figures")
    p.add_argument("--eval-results", default=None,
                   help="eval_results.json from `akshara-hf evaluate --output DIR`: its figures go into the model-index")
    p.add_argument("--overwrite", action="store_true", help="replace a README.md that this command did not write")
    p.set_defaults(func=_card_command)


def main_args(argv: list[str]) -> int:
    """Run one of this module's commands as `akshara-hf` would, without loading the rest of the CLI."""
    from akshara_hf.cli import main

    return main(argv, modules=(__name__,))


if __name__ == "__main__":
    sys.exit(main_args(sys.argv[1:]))
