"""`akshara-hf publish`: validation in a fresh process with remote code only, dry run, upload arguments; no network
(every HfApi call that would reach the Hub is replaced, and fails the test unless the test expects it)."""

import json
import pickle
import shutil

import pytest
import tiktoken
import torch
from huggingface_hub import HfApi, ModelCard

import model_card.publish as publish
from akshara_hf.conversion.convert import convert_nanochat
from akshara_hf.tokenization.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN
from model_card import write_model_card
from model_fixtures import TINY_NANOCHAT
from reference_nanochat import random_nanochat_state

REPO_ID = "akshara-org/akshara-tiny"


def make_tiktoken_dir(path):
    """nanochat's tokenizer format at the tiny model's vocabulary: 256 bytes + 35 two-byte merges + 9 specials = 300.
    (tests/nanochat_fixtures.py's make_nanochat_tokenizer_dir was not there yet when this was written.)"""
    ranks = {bytes([i]): i for i in range(256)}
    pairs = [bytes([a, b]) for a in b"abcdefghi" for b in b"abcd"][:35]
    ranks.update({pair: 256 + i for i, pair in enumerate(pairs)})
    encoding = tiktoken.Encoding(
        "akshara-tiny", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
        special_tokens={token: len(ranks) + i for i, token in enumerate(SPECIAL_TOKENS)},
    )
    path.mkdir(parents=True)
    (path / "tokenizer.pkl").write_bytes(pickle.dumps(encoding))
    return path


@pytest.fixture(scope="module")
def valid_folder(tmp_path_factory):
    """What users publish: a nanochat checkpoint converted (weights, remote code, tokenizer, chat template,
    generation config, nanochat_meta.json), with its card written from nanochat_meta.json."""
    root = tmp_path_factory.mktemp("publish")
    checkpoint = root / "chatsft_checkpoints"
    checkpoint.mkdir()
    torch.save(random_nanochat_state(TINY_NANOCHAT), checkpoint / "model_000310.pt")
    meta = {"step": 310, "val_loss": 0.84, "model_config": TINY_NANOCHAT,
            "user_config": {"run": "akshara-tiny", "device_batch_size": 2, "target_examples_per_step": 32}}
    (checkpoint / "meta_000310.json").write_text(json.dumps(meta))
    folder = convert_nanochat(checkpoint, root / "akshara-tiny", make_tiktoken_dir(root / "tokenizer"))
    write_model_card(folder, repo_id=REPO_ID)
    return folder


@pytest.fixture
def folder(valid_folder, tmp_path):
    """A private copy each test may break."""
    return shutil.copytree(valid_folder, tmp_path / "akshara-tiny")


@pytest.fixture
def hub_calls(monkeypatch):
    """Replace every HfApi call that would reach the Hub; record them. Tests that expect none assert it is empty."""
    calls = []

    def recorder(name):
        def call(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            return f"https://huggingface.co/{REPO_ID}/commit/0" if name in ("upload_folder", "create_commit") else None

        return call

    for name in ("create_repo", "create_branch", "upload_folder", "create_commit", "upload_file", "preupload_lfs_files"):
        monkeypatch.setattr(HfApi, name, recorder(name))
    return calls


def _run_leftovers(folder):
    """What a training run and `evaluate` leave beside the model: checkpoints, the built mixture with datasets'
    cache files, evaluation output, pickled trainer state, the run's own record."""
    for name, content in {
        "checkpoint-5/model.safetensors": b"x", "checkpoint-5/optimizer.pt": b"x",
        "mixture/train/data-00000-of-00001.arrow": b"x", "mixture/train/cache-3f2a1b.arrow": b"x" * 1000,
        "mixture/validation/cache-77aa.arrow": b"x", "mixture/report.json": b"{}",
        "eval/eval_results.json": b"{}", "eval/eval_results.md": b"x", "cache-0a1b2c.arrow": b"x",
        "training_args.bin": b"pickle", "run_facts.json": b"{}", "converted_base/config.json": b"{}",
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)


MODEL_FILES = {"README.md", "config.json", "model.safetensors", "modeling_akshara.py", "configuration_akshara.py",
               "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
               "nanochat_meta.json"}


def test_dry_run_lists_the_model_files_only_and_uploads_nothing(folder, hub_calls, capsys):
    before = {p.name for p in folder.iterdir()}
    assert MODEL_FILES <= before and all(p.is_file() for p in folder.iterdir())  # the converted folder as it is
    _run_leftovers(folder)
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert hub_calls == []
    expected = sorted(before - {".akshara-hf.json"})  # the folder's local write marker stays too
    assert [path for path, _ in publish.files_to_upload(folder)] == expected
    assert ("not uploaded: .akshara-hf.json (1 file), cache-0a1b2c.arrow (1 file), checkpoint-5/ (2 files), "
            "converted_base/ (1 file), eval/ (2 files), mixture/ (4 files), run_facts.json (1 file), "
            "training_args.bin (1 file)") in out
    assert ".arrow" not in "".join(line for line in out.splitlines() if not line.startswith("not uploaded"))
    listed = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].replace(",", "").isdigit():
            listed[parts[1]] = int(parts[0].replace(",", ""))
    assert listed == {name: (folder / name).stat().st_size for name in expected}
    assert f"would upload {len(expected)} files" in out and f"to {REPO_ID} (revision main)" in out
    assert "transformers_modules" in out  # the check loaded the folder's own code, not akshara_hf


def test_converted_folder_card_comes_from_nanochat_meta(valid_folder):
    card = ModelCard.load(valid_folder / "README.md")
    assert (card.data.language, card.data.library_name, card.data.pipeline_tag) == ("te", "transformers", "text-generation")
    assert "sft" in card.data.tags and "trl" not in card.data.tags
    assert "# akshara-tiny" in card.text and "| Steps | 310 |" in card.text and "| Final validation loss | 0.84 |" in card.text


def test_upload_passes_repo_private_revision_and_the_listed_files(folder, hub_calls, capsys):
    _run_leftovers(folder)
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID, "--private", "--revision", "v1"]) == 0
    names = [name for name, _, _ in hub_calls]
    assert names == ["create_repo", "create_branch", "create_commit"]
    (_, args, kwargs), (_, _, branch), (_, commit_args, commit) = hub_calls
    assert (args, kwargs["private"], kwargs["exist_ok"]) == ((REPO_ID,), True, True)
    assert branch["branch"] == "v1" and branch["exist_ok"] is True
    assert commit_args[0] == REPO_ID and commit["revision"] == "v1" and commit["repo_type"] == "model"
    # One commit of exactly the dry run's files, with their content: no checkpoint, mixture, cache or pickle.
    sent = {op.path_in_repo: op.path_or_fileobj for op in commit_args[1]}
    assert sorted(sent) == [path for path, _ in publish.files_to_upload(folder)]
    assert MODEL_FILES <= set(sent) and not [path for path in sent if "/" in path or path.endswith((".arrow", ".bin"))]
    assert all(file.name == str(folder.resolve() / path) and file.closed for path, file in sent.items())
    assert f"to {REPO_ID} (revision v1, private)" in capsys.readouterr().out


def test_upload_defaults_to_main_and_namespace_visibility(folder, hub_calls, monkeypatch):
    # Loading is covered above; here only the arguments matter.
    monkeypatch.setattr(publish, "check_loads", lambda f, **_: {"model_class": "stub", "prompt_tokens": 1})
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID]) == 0
    assert [name for name, _, _ in hub_calls] == ["create_repo", "create_commit"]
    assert hub_calls[0][2]["private"] is None and hub_calls[1][2]["revision"] is None


def _remove(name):
    return lambda folder: (folder / name).unlink()


def _write(name, content):
    return lambda folder: (folder / name).write_text(content)


def _truncate_weights(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])  # header intact, tensor data cut short


def _config_without_auto_map(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "breakage, fragment",
    [
        (_remove("model.safetensors"), "no model.safetensors weights"),
        (_write("model.safetensors", "abc"), "model.safetensors: not a safetensors file"),
        (_truncate_weights, "model.safetensors: not a safetensors file"),
        # what convert-nanochat wrote before nanochat_padding.tensors: vLLM read its tensors as a second set of weights
        (lambda folder: (folder / "nanochat_padding.safetensors").write_bytes((folder / "model.safetensors").read_bytes()),
         "nanochat_padding.safetensors: not one of the model's weight files, but vLLM and other loaders would read it "
         "as weights (rename it to nanochat_padding.tensors"),
        (_write("extra.safetensors", "abc"), "extra.safetensors: not one of the model's weight files"),
        (_write("config.json", "{not json"), "config.json: not valid JSON"),
        (_remove("config.json"), "config.json: missing"),
        (_config_without_auto_map, "config.json: model_type 'akshara' without auto_map"),
        (_remove("modeling_akshara.py"), "modeling_akshara.py is not in the folder"),
        (_remove("tokenizer.json"), "tokenizer.json: missing"),
        (_remove("README.md"), "README.md: missing"),
        (_write("README.md", "# Akshara\n\nNo metadata here.\n"), "card metadata lacks language, library_name, pipeline_tag"),
        (_write("README.md", "---\nlanguage: te\nlicense: mit\n---\n# Akshara\n"), "card metadata lacks library_name, pipeline_tag"),
        (_write("README.md", "---\nlanguage: [te\n---\n# Akshara\n"), "card metadata does not parse"),
    ],
)
def test_broken_folder_fails_before_loading_or_uploading(folder, hub_calls, monkeypatch, capsys, breakage, fragment):
    def no_load(folder, **_):
        raise AssertionError("the file checks should have failed first")

    monkeypatch.setattr(publish, "check_loads", no_load)
    breakage(folder)
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID]) == 2
    err = capsys.readouterr().err
    assert hub_calls == []
    assert fragment in err and err.startswith("akshara-hf publish: error: ") and err.count("\n") == 1


def test_folder_without_chat_template_fails_in_the_fresh_process(folder, hub_calls, capsys):
    (folder / "chat_template.jinja").unlink()
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert hub_calls == [] and "the tokenizer has no chat template" in err and err.count("\n") == 1


def test_folder_that_needs_the_package_fails_in_the_fresh_process(folder, hub_calls, capsys):
    modeling = folder / "modeling_akshara.py"
    modeling.write_text("import akshara_hf  # a leak the Hub user would hit\n" + modeling.read_text())
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID]) == 2
    err = capsys.readouterr().err  # not this package's own file: not run without the flag (the trust rule)
    assert f"{modeling}: differs from the installed" in err and err.count("\n") == 1
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID, "--trust-remote-code"]) == 2
    err = capsys.readouterr().err
    assert hub_calls == []
    assert "does not load with remote code alone" in err and "akshara_hf" in err and err.count("\n") == 1


def test_a_card_written_for_another_repo_is_refused(folder, hub_calls, capsys):
    assert publish.main_args(["publish", str(folder), "--repo-id", "akshara-org/other", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "its usage snippets do not load akshara-org/other" in err and "--repo-id akshara-org/other" in err
    assert hub_calls == []


def test_bad_repo_id_is_refused(folder, hub_calls, capsys):
    assert publish.main_args(["publish", str(folder), "--repo-id", "no-namespace", "--dry-run"]) == 2
    assert "--repo-id 'no-namespace': give it as ORG/NAME" in capsys.readouterr().err
    assert hub_calls == []


def test_model_card_command_writes_a_seed_card(folder, capsys):
    assert publish.main_args(["model-card", str(folder), "--seed-run", "nanochat-telugu-d20-sft-v1", "--repo-id", REPO_ID]) == 0
    text = (folder / "README.md").read_text()
    assert "| Steps | 45,102 |" in text and f'from_pretrained("{REPO_ID}"' in text
    assert capsys.readouterr().out.strip() == str(folder / "README.md")


def test_model_card_command_takes_evaluate_results(folder, tmp_path, capsys):
    results = {"split": "validation", "loss": {"targets": 10, "loss": 4.5, "bpb": 1.75}}
    (tmp_path / "eval_results.json").write_text(json.dumps(results))
    assert publish.main_args(["model-card", str(folder), "--repo-id", REPO_ID,
                              "--eval-results", str(tmp_path / "eval_results.json")]) == 0
    data = ModelCard.load(folder / "README.md").data
    assert [(r.metric_type, r.metric_value, r.dataset_split) for r in data.eval_results] == [
        ("loss", 4.5, "validation"), ("bpb", 1.75, "validation")]


# --- only regular files inside the folder ---------------------------------------------------------------------------


def test_a_symlink_is_never_uploaded_and_is_listed_as_skipped(folder, hub_calls, tmp_path, capsys, monkeypatch):
    """`notes.py -> ~/secrets` matches the allow-list (*.py): its content would have gone to the Hub."""
    regular = sorted(p.name for p in folder.iterdir() if p.name != ".akshara-hf.json")
    secret = tmp_path / "secret.py"
    secret.write_text("TOKEN = 'hf_...'\n")
    (folder / "notes.py").symlink_to(secret)
    (folder / "loss_curve.png").symlink_to(tmp_path / "nowhere.png")  # dangling
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (outside / "x.safetensors").write_text("x")
    (folder / "extra").symlink_to(outside, target_is_directory=True)
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert [path for path, _ in publish.files_to_upload(folder)] == regular
    assert "notes.py" not in "".join(line for line in out.splitlines() if not line.startswith("not uploaded"))
    assert "not uploaded (symbolic links, never followed): extra, loss_curve.png, notes.py" in out
    monkeypatch.setattr(publish, "check_loads", lambda f, **_: {"model_class": "stub", "prompt_tokens": 1})
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID]) == 0
    (name, (_, operations), _), = [call for call in hub_calls if call[0] != "create_repo"]
    assert name == "create_commit"
    assert sorted(op.path_in_repo for op in operations) == regular
    assert "not uploaded (symbolic links, never followed): extra, loss_curve.png, notes.py" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["config.json", "README.md", "tokenizer.json", "model.safetensors"])
def test_a_required_file_that_is_a_symlink_is_refused(folder, hub_calls, tmp_path, capsys, name):
    """The check would read the link's target and the upload leave it out: refused, naming it."""
    shutil.move(folder / name, tmp_path / name)
    (folder / name).symlink_to(tmp_path / name)
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{name}: is a symbolic link" in err and err.count("\n") == 1 and hub_calls == []


def test_the_load_check_sees_only_what_is_uploaded(folder, hub_calls, tmp_path, capsys):
    """A symlinked tokenizer_config.json would make the check pass and the Hub copy break: the check loads the files
    that go, so it fails the way the Hub user would."""
    shutil.move(folder / "chat_template.jinja", tmp_path / "chat_template.jinja")
    (folder / "chat_template.jinja").symlink_to(tmp_path / "chat_template.jinja")
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "the tokenizer has no chat template" in err and hub_calls == []


def test_a_file_swapped_for_a_link_after_the_check_is_not_sent(folder, hub_calls, tmp_path, capsys, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("secret")

    def check_then_swap(f, **_):
        (folder / "generation_config.json").unlink()
        (folder / "generation_config.json").symlink_to(secret)
        return {"model_class": "stub", "prompt_tokens": 1}

    monkeypatch.setattr(publish, "check_loads", check_then_swap)
    assert publish.main_args(["publish", str(folder), "--repo-id", REPO_ID]) == 2
    err = capsys.readouterr().err
    assert "generation_config.json: is a symbolic link" in err
    assert [name for name, _, _ in hub_calls] == []
