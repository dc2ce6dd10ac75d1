"""Never replace or delete a folder the project did not write: every folder-writing command, tried as a hostile
(or careless) user would: a user's folder, the input itself, the nanochat base dir, symlinks, interrupted runs."""

import json
import os
import socket
from pathlib import Path

import pytest
import yaml
from model_fixtures import make_nanochat_run
from nanochat_fixtures import corpus, make_nanochat_tokenizer_dir

from akshara_hf.conversion import convert
from akshara_hf.cli import main as cli
from akshara_hf.conversion.convert import convert_nanochat, export_native
from akshara_hf.data.mixture import build_mixture
from akshara_hf.errors import AksharaError
from akshara_hf.folders import MARKER, STAGING_INFIX, STAGING_MARKER, output_marker, staged_output

ROOT = Path(__file__).resolve().parents[1]
STORIES = ROOT / "data" / "samples" / "stories"
COMMANDS = ("convert-nanochat", "export-native", "import-native", "build-mixture", "train-tokenizer",
            "convert-tokenizer")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One input of each kind: a nanochat base dir, an Akshara folder, a native folder, a recipe, a text corpus."""
    root = tmp_path_factory.mktemp("world")
    base, checkpoints, _ = make_nanochat_run(root / "nanochat")
    akshara = convert_nanochat(checkpoints, root / "akshara")
    native = export_native(akshara, root / "native")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"seed": 1, "sources": [{"kind": "stories", "path": str(STORIES)}]}}))
    text = root / "corpus.txt"
    text.write_text("\n".join(corpus()), encoding="utf-8")
    return {"base": base, "checkpoints": checkpoints, "akshara": akshara, "native": native, "recipe": recipe,
            "text": text, "tokenizer": base / "tokenizer"}


def argv(world, command, output, *extra):
    inputs = {
        "convert-nanochat": [str(world["checkpoints"]), str(output)],
        "export-native": [str(world["akshara"]), str(output)],
        "import-native": [str(world["native"]), str(output)],
        "build-mixture": [str(world["recipe"]), str(output)],
        "train-tokenizer": [str(world["text"]), "--vocab-size", "300", "--output", str(output)],
        "convert-tokenizer": [str(world["tokenizer"]), str(output)],
    }[command]
    return [command, *inputs, *extra]


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error(capsys, command) -> str:
    """The one error line of the last command (earlier successful commands' progress bars are ignored)."""
    return one_error_of(capsys.readouterr().err, command)


def one_error_of(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("akshara-hf ")]
    assert len(lines) == 1 and lines[0].startswith(f"akshara-hf {command}: error:") and "Traceback" not in err, err
    return lines[0]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if STAGING_INFIX in p.name)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_users_folder_is_refused_and_survives(world, tmp_path, capsys, command):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("years of work")
    for extra in ([], ["--overwrite"]):
        assert cli(argv(world, command, mine, *extra)) == 2
        assert "not written by akshara-hf" in one_error(capsys, command)
    assert tree(mine) == {"important.txt": b"years of work"}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_an_earlier_output_is_replaced_only_with_overwrite(world, tmp_path, capsys, command):
    out = tmp_path / "out"
    assert cli(argv(world, command, out)) == 0
    assert output_marker(out)["command"] == command
    first = tree(out)
    (out / "extra.txt").write_text("added later")
    assert cli(argv(world, command, out)) == 2
    assert "pass --overwrite" in one_error(capsys, command)
    assert (out / "extra.txt").exists()
    assert cli(argv(world, command, out, "--overwrite")) == 2  # replacing the folder would delete the user's file
    assert "extra.txt, which" in one_error(capsys, command) and (out / "extra.txt").read_text() == "added later"
    (out / "extra.txt").unlink()
    assert cli(argv(world, command, out, "--overwrite")) == 0
    assert set(tree(out)) == set(first)
    assert leftovers(tmp_path) == []


def test_an_older_marker_without_a_list_is_replaced_as_before(world, tmp_path):
    out = tmp_path / "out"
    assert cli(argv(world, "export-native", out)) == 0
    (out / MARKER).write_text(json.dumps({"command": "export-native", "written_by": "akshara-hf"}))
    (out / "extra.txt").write_text("added later")
    assert cli(argv(world, "export-native", out, "--overwrite")) == 0
    assert not (out / "extra.txt").exists()


def test_another_commands_output_is_refused_even_with_overwrite(world, capsys):
    # world["native"] is an export-native output; convert-nanochat must not replace it.
    before = tree(world["native"])
    assert cli(argv(world, "convert-nanochat", world["native"], "--overwrite")) == 2
    assert "earlier `akshara-hf export-native` output" in one_error(capsys, "convert-nanochat")
    assert tree(world["native"]) == before


def test_the_nanochat_base_dir_or_the_input_as_output_is_refused(world, capsys):
    base, checkpoints = world["base"], world["checkpoints"]
    before = tree(base)
    for output, why in ((base, "contains the input"), (checkpoints, "is the input"),
                        (checkpoints / "hf", "lies inside the input"), (base / "tokenizer", "is the input")):
        assert cli(["convert-nanochat", str(checkpoints), str(output), "--overwrite",
                    "--tokenizer-dir", str(base / "tokenizer")]) == 2
        assert why in one_error(capsys, "convert-nanochat")
    assert tree(base) == before  # checkpoints and tokenizer untouched, nothing added


@pytest.mark.parametrize("command, key", [("export-native", "akshara"), ("import-native", "native"),
                                          ("convert-tokenizer", "tokenizer")])
def test_output_equal_to_or_inside_the_input_is_refused(world, capsys, command, key):
    source = world[key]
    before = tree(source)
    for output, why in ((source, "is the input"), (source / "sub", "lies inside the input"),
                        (source.parent, "contains the input")):
        assert cli([command, str(source), str(output), "--overwrite"]) == 2
        assert why in one_error(capsys, command)
    assert tree(source) == before


def test_a_recipe_or_its_sources_inside_the_output_are_refused(world, tmp_path, capsys):
    assert cli(["build-mixture", str(world["recipe"]), str(world["recipe"].parent), "--overwrite"]) == 2
    assert "contains the input" in one_error(capsys, "build-mixture")
    assert cli(["build-mixture", str(world["recipe"]), str(STORIES / "out")]) == 2
    assert "lies inside the input" in one_error(capsys, "build-mixture")
    assert not (STORIES / "out").exists()


def test_a_symlink_to_a_users_folder_is_not_followed(world, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("keep")
    (tmp_path / "link").symlink_to(mine, target_is_directory=True)
    assert cli(argv(world, "convert-nanochat", tmp_path / "link", "--overwrite")) == 2
    assert "symbolic link" in one_error(capsys, "convert-nanochat")
    # Even a link to our own earlier output: the link is refused, never resolved into a deletion.
    out = tmp_path / "out"
    assert cli(argv(world, "convert-nanochat", out)) == 0
    (tmp_path / "link2").symlink_to(out, target_is_directory=True)
    assert cli(argv(world, "convert-nanochat", tmp_path / "link2", "--overwrite")) == 2
    assert "symbolic link" in one_error(capsys, "convert-nanochat")
    # A symlink added inside our earlier output is not ours: named, and --overwrite stops; the target survives.
    (out / "link-to-mine").symlink_to(mine, target_is_directory=True)
    assert cli(argv(world, "convert-nanochat", out, "--overwrite")) == 2
    assert "holds link-to-mine, which convert-nanochat did not write" in one_error(capsys, "convert-nanochat")
    assert tree(mine) == {"important.txt": b"keep"} and (out / "link-to-mine").is_symlink()


def test_a_users_folder_at_a_name_we_wrote_as_a_file_stops_overwrite(world, tmp_path, capsys):
    """config.json replaced by the user's folder of notes: the marker listed the name, so --overwrite deleted the
    folder and the notes in it (exit 0)."""
    out = tmp_path / "out"
    assert cli(argv(world, "convert-nanochat", out)) == 0
    (out / "config.json").unlink()
    (out / "config.json").mkdir()
    (out / "config.json" / "notes.txt").write_text("keep")
    assert cli(argv(world, "convert-nanochat", out, "--overwrite")) == 2
    assert "holds config.json, which convert-nanochat did not write" in one_error(capsys, "convert-nanochat")
    assert tree(out / "config.json") == {"notes.txt": b"keep"}


def test_a_symlinked_or_forged_marker_does_not_count(world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "important.txt").write_text("keep")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"command": "convert-nanochat"}))
    (out / MARKER).symlink_to(tmp_path / "elsewhere.json")
    assert cli(argv(world, "convert-nanochat", out, "--overwrite")) == 2
    assert "not written by akshara-hf" in one_error(capsys, "convert-nanochat")
    (out / MARKER).unlink()
    (out / MARKER).write_text("not json")
    assert cli(argv(world, "convert-nanochat", out, "--overwrite")) == 2
    assert (out / "important.txt").read_text() == "keep"


def test_a_file_as_output_is_refused(world, tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("keep")
    assert cli(argv(world, "convert-tokenizer", path, "--overwrite")) == 2
    assert "not a folder" in one_error(capsys, "convert-tokenizer")
    assert path.read_text() == "keep"


def test_an_empty_folder_is_used(world, tmp_path):
    (tmp_path / "empty").mkdir()
    assert cli(argv(world, "convert-tokenizer", tmp_path / "empty")) == 0
    assert (tmp_path / "empty" / "tokenizer.json").is_file()


def test_an_interrupted_write_keeps_the_old_output_and_leaves_no_staging(world, tmp_path, monkeypatch):
    out = convert_nanochat(world["checkpoints"], tmp_path / "out")
    before = tree(out)

    def half_then_fail(model, tokenizer, folder):
        (folder / "config.json").write_text("{half")
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "save_with_tokenizer", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        convert_nanochat(world["checkpoints"], out, overwrite=True)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failing_mixture_keeps_the_old_output(world, tmp_path):
    out = tmp_path / "mix"
    build_mixture(world["recipe"], out)
    before = tree(out)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"sources": [{"kind": "stories", "path": str(tmp_path / "nowhere")}]}}))
    with pytest.raises(AksharaError):
        build_mixture(bad, out, overwrite=True)
    assert tree(out) == before and leftovers(tmp_path) == []


def killed_writer(output: Path, command: str) -> None:
    """A run of `command` that dies mid-write (a forked child: no cleanup runs), leaving its staging folder."""
    pid = os.fork()
    if pid == 0:
        try:
            with staged_output(output, command) as staging:
                (staging.folder / "half.bin").write_bytes(b"x" * 1000)
                os._exit(0)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)


def test_stale_staging_folders_of_a_dead_run_are_cleaned_and_nothing_else(world, tmp_path):
    out = tmp_path / "out"
    killed_writer(out, "convert-nanochat")
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and (tmp_path / stale[0] / "output" / "half.bin").exists()
    # Look-alikes that do not prove they are ours, or belong to a live run, or to another command, are kept.
    lookalike = tmp_path / f".out{STAGING_INFIX}users"
    lookalike.mkdir()
    (lookalike / "data.txt").write_text("not ours")
    live = tmp_path / f".out{STAGING_INFIX}live"
    live.mkdir()
    (live / STAGING_MARKER).write_text(json.dumps({"command": "convert-nanochat", "output": "out",
                                                   "host": socket.gethostname(), "pid": os.getpid()}))
    killed_writer(out, "export-native")
    other = [name for name in leftovers(tmp_path) if name not in (*stale, lookalike.name, live.name)]
    convert_nanochat(world["checkpoints"], out)
    assert leftovers(tmp_path) == sorted([lookalike.name, live.name, *other])
    assert (lookalike / "data.txt").read_text() == "not ours"


def test_stale_legacy_mixture_staging_is_cleaned(world, tmp_path):
    legacy = tmp_path / ".mix.building-ab12cd34"
    (legacy / "cache").mkdir(parents=True)
    (legacy / "cache" / "x.arrow").write_bytes(b"x")
    not_ours = tmp_path / ".mix.building-users-folder"
    not_ours.mkdir()
    with_previous = tmp_path / ".mix.building-zz12cd34"
    (with_previous / "previous").mkdir(parents=True)
    build_mixture(world["recipe"], tmp_path / "mix")
    assert not legacy.exists() and not_ours.exists() and with_previous.exists()


def test_staged_output_refuses_before_running_the_body(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a").write_text("a")
    ran = []
    with pytest.raises(AksharaError):
        with staged_output(tmp_path / "mine", "convert-nanochat", overwrite=True):
            ran.append(True)
    assert ran == [] and leftovers(tmp_path) == []


# --- a run killed between the two renames of a staged write ------------------------------------------------------


def dead_pid() -> int:
    """The id of a process that has ended (a forked child that exits at once)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def crashed_between_renames(out: Path, command: str, *, second_rename_done: bool = False) -> Path:
    """The state a `kill -9` leaves in `staged_output` after `os.replace(target, previous)` (and, with
    `second_rename_done`, after the new output went into place): the old output in the staging folder's previous/."""
    root = out.parent / f".{out.name}{STAGING_INFIX}crashed"
    root.mkdir()
    (root / STAGING_MARKER).write_text(json.dumps({"command": command, "output": out.name,
                                                   "host": socket.gethostname(), "pid": dead_pid()}))
    (root / "output").mkdir()
    (root / "output" / "half.bin").write_bytes(b"new, complete")
    (root / "output" / MARKER).write_text(json.dumps({"command": command, "written_by": "akshara-hf"}))
    os.replace(out, root / "previous")
    if second_rename_done:
        os.replace(root / "output", out)
    return root


@pytest.mark.parametrize("next_command", ["convert-nanochat", "export-native"])
def test_a_kill_between_the_renames_is_undone_by_the_next_run_never_deleted(world, tmp_path, capsys, next_command):
    """The old output (and a user's file inside it) comes back, whichever command runs next on that output; the
    next run then treats it as what it is (an earlier convert-nanochat output: --overwrite needed)."""
    out = convert_nanochat(world["checkpoints"], tmp_path / "out")
    (out / "my-notes.txt").write_text("added by the user")
    before = tree(out)
    staging = crashed_between_renames(out, "convert-nanochat")
    assert not out.exists()
    capsys.readouterr()
    assert cli(argv(world, next_command, out)) == 2
    assert tree(out) == before
    err = capsys.readouterr().err
    assert f"{out}: restored the earlier output" in err
    expected = "pass --overwrite" if next_command == "convert-nanochat" else "earlier `akshara-hf convert-nanochat`"
    assert expected in one_error_of(err, next_command)
    assert not (staging / "previous").exists()
    # The same command with --overwrite now replaces it the normal way (once the user's file is moved out), and the
    # dead staging folder is cleaned.
    assert cli(argv(world, "convert-nanochat", out, "--overwrite")) == 2 and (out / "my-notes.txt").exists()
    (out / "my-notes.txt").unlink()
    assert cli(argv(world, "convert-nanochat", out, "--overwrite")) == 0
    assert leftovers(tmp_path) == []


def test_a_kill_after_both_renames_finishes_the_replacement(world, tmp_path):
    out = convert_nanochat(world["checkpoints"], tmp_path / "out")
    staging = crashed_between_renames(out, "convert-nanochat", second_rename_done=True)
    assert (out / "half.bin").exists()  # the new output is in place; previous/ is what --overwrite replaced
    convert_nanochat(world["checkpoints"], tmp_path / "other")  # another output: nothing of out's touched
    assert staging.exists()
    convert_nanochat(world["checkpoints"], out, overwrite=True)
    assert not staging.exists() and leftovers(tmp_path) == []


def test_an_old_output_the_user_rebuilt_over_is_kept_in_staging(world, tmp_path, capsys):
    """After the crash the user made a new folder at the output's place: neither it nor previous/ is deleted."""
    out = convert_nanochat(world["checkpoints"], tmp_path / "out")
    before = tree(out)
    staging = crashed_between_renames(out, "convert-nanochat")
    out.mkdir()
    (out / "fresh.txt").write_text("the user's new folder")
    assert cli(argv(world, "convert-nanochat", out, "--overwrite")) == 2
    assert "not written by akshara-hf" in one_error(capsys, "convert-nanochat")
    assert tree(staging / "previous") == before and tree(out) == {"fresh.txt": b"the user's new folder"}
    (out / "fresh.txt").unlink()  # now empty: a new output may go there, and the old one still stays aside
    assert cli(argv(world, "convert-nanochat", out)) == 0
    assert tree(staging / "previous") == before and (out / "config.json").is_file()
    assert "previous" in capsys.readouterr().err  # said where it is


def test_an_interrupt_between_the_renames_puts_the_old_output_back(world, tmp_path, monkeypatch):
    """Ctrl-C (an exception) right after the first rename: the finally block puts it back at once."""
    from akshara_hf import folders

    out = convert_nanochat(world["checkpoints"], tmp_path / "out")
    before = tree(out)
    real = os.replace
    calls = []

    def interrupted(src, dst):
        real(src, dst)
        calls.append(dst)
        if Path(dst).name == "previous":
            raise KeyboardInterrupt

    monkeypatch.setattr(folders.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_nanochat(world["checkpoints"], out, overwrite=True)
    monkeypatch.setattr(folders.os, "replace", real)
    assert tree(out) == before and leftovers(tmp_path) == []
