"""The demo's output folder: an earlier run is never replaced without --overwrite, and a folder the demo did not
write is never replaced at all. (The demo itself runs end to end in tests/test_pipeline.py.)"""

import pytest

from akshara_hf.cli.demo import _prepare_output
from akshara_hf.folders import MARKER
from akshara_hf.errors import AksharaError


def test_a_new_or_empty_folder_is_used_and_marked(tmp_path):
    for root in (tmp_path / "new" / "demo", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        _prepare_output(root, overwrite=False)
        assert [p.name for p in root.iterdir()] == [MARKER]


def test_an_earlier_demo_run_needs_overwrite(tmp_path):
    from akshara_hf.folders import claim

    root = tmp_path / "demo"
    _prepare_output(root, overwrite=False)
    claim(root, "sft").mkdir()
    (root / "sft" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(AksharaError, match="holds an earlier demo output; pass --overwrite"):
        _prepare_output(root, overwrite=False)
    assert (root / "sft" / "model.safetensors").read_bytes() == b"weights"
    _prepare_output(root, overwrite=True)
    assert [p.name for p in root.iterdir()] == [MARKER]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_the_demo_did_not_write_is_never_replaced(tmp_path, overwrite):
    root = tmp_path / "thesis"
    root.mkdir()
    (root / "chapter1.tex").write_text("precious")
    with pytest.raises(AksharaError, match="was not written by akshara-hf; refusing to replace it"):
        _prepare_output(root, overwrite=overwrite)
    assert (root / "chapter1.tex").read_text() == "precious"
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(AksharaError, match="exists and is not a folder"):
        _prepare_output(file, overwrite=overwrite)
    assert file.read_text() == "x"


def test_another_commands_output_is_never_replaced(tmp_path):
    root = tmp_path / "converted"
    root.mkdir()
    (root / MARKER).write_text('{"command": "convert-nanochat"}')
    (root / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(AksharaError, match="earlier `akshara-hf convert-nanochat` output"):
        _prepare_output(root, overwrite=True)
    assert (root / "model.safetensors").read_bytes() == b"weights"


def earlier_demo(root, wrote=("tokenizer", "base", "sft")):
    """An earlier demo run's folder: the marker lists what the demo wrote (as `_prepare_output`, `claim` leave it)."""
    import json

    root.mkdir(parents=True)
    (root / MARKER).write_text(json.dumps({"command": "demo", "written_by": "akshara-hf", "wrote": list(wrote)}))
    for name in wrote:
        (root / name).mkdir()
        (root / name / "model.safetensors").write_bytes(b"weights")
    return root


def test_overwrite_removes_only_what_the_demo_wrote_and_reports_the_rest(tmp_path, capsys):
    """`evaluate --output runs/demo/eval` is what the demo's own "try next" suggests: it survives --overwrite."""
    root = earlier_demo(tmp_path / "demo")
    (root / "eval").mkdir()
    (root / "eval" / "eval_results.json").write_text("{}")
    (root / "notes.txt").write_text("mine")
    _prepare_output(root, overwrite=True)
    assert sorted(p.name for p in root.iterdir()) == [MARKER, "eval", "notes.txt"]
    assert (root / "eval" / "eval_results.json").read_text() == "{}" and (root / "notes.txt").read_text() == "mine"
    out = capsys.readouterr().out
    assert f"kept in {root} (not written by the demo): eval/, notes.txt" in out


def test_a_listed_entry_replaced_by_a_link_is_removed_as_a_link(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    root = earlier_demo(tmp_path / "demo", wrote=("tokenizer", "sft"))
    import shutil

    shutil.rmtree(root / "sft")
    (root / "sft").symlink_to(mine, target_is_directory=True)
    _prepare_output(root, overwrite=True)
    assert not (root / "sft").exists() and not (root / "sft").is_symlink()
    assert (mine / "thesis.tex").read_text() == "precious"


def test_a_forged_list_never_reaches_outside_the_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    root = earlier_demo(tmp_path / "demo", wrote=("tokenizer",))
    import json

    marker = json.loads((root / MARKER).read_text())
    marker["wrote"] += ["../outside", str(outside), ".", "..", MARKER, "", 7]
    (root / MARKER).write_text(json.dumps(marker))
    _prepare_output(root, overwrite=True)
    assert (outside / "keep.txt").read_text() == "keep" and not (root / "tokenizer").exists()


def test_a_name_the_demo_writes_that_it_did_not_write_is_refused(tmp_path):
    """A demo folder whose marker does not list `mid` but holds a `mid/`: the user's, never written into or removed."""
    root = earlier_demo(tmp_path / "demo", wrote=("tokenizer",))
    (root / "mid").mkdir()
    (root / "mid" / "mine.txt").write_text("mine")
    with pytest.raises(AksharaError, match=r"demo/mid: not written by the demo"):
        _prepare_output(root, overwrite=True)
    assert (root / "mid" / "mine.txt").read_text() == "mine"


def test_an_older_demo_folder_without_a_list_is_not_emptied(tmp_path):
    root = tmp_path / "demo"
    root.mkdir()
    (root / MARKER).write_text('{"command": "demo", "written_by": "akshara-hf"}')
    (root / "eval").mkdir()
    with pytest.raises(AksharaError, match="does not list what it wrote"):
        _prepare_output(root, overwrite=True)
    assert (root / "eval").is_dir()


def test_the_marker_lists_each_entry_before_it_is_written(tmp_path):
    """An interrupted demo's partial entry is listed, so the next --overwrite removes it."""
    import json

    from akshara_hf.folders import claim

    root = tmp_path / "demo"
    _prepare_output(root, overwrite=False)
    assert json.loads((root / MARKER).read_text())["wrote"] == []
    assert claim(root, "tokenizer") == root / "tokenizer" and not (root / "tokenizer").exists()
    claim(root, "base")
    claim(root, "tokenizer")
    assert json.loads((root / MARKER).read_text())["wrote"] == ["tokenizer", "base"]
    (root / "base").mkdir()
    _prepare_output(root, overwrite=True)
    assert sorted(p.name for p in root.iterdir()) == [MARKER]
