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
    root = tmp_path / "demo"
    _prepare_output(root, overwrite=False)
    (root / "sft").mkdir()
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
