"""A mixture never trains on its own validation rows: one input listed twice (each copy would hold out other rows),
or one entry's validation input being another's train input, is refused; `repeat` is the way to use a source twice."""

import json
import os
import shutil
from pathlib import Path

import datasets
import pytest
import yaml

from akshara_hf.cli import main as cli
from akshara_hf.data import mixture
from akshara_hf.data.mixture import DataSection, build_mixture
from akshara_hf.errors import AksharaError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
RECIPES = ROOT / "training" / "recipes"

datasets.disable_progress_bars()


def recipe(folder: Path, sources: list, name: str = "recipe.yaml", fraction: float = 0.2) -> Path:
    path = folder / name
    data = {"seed": 3, "validation_fraction": fraction, "sources": sources}
    path.write_text(yaml.safe_dump({"data": data}, allow_unicode=True), encoding="utf-8")
    return path


def rows(split) -> list[str]:
    return [json.dumps(messages, ensure_ascii=False, sort_keys=True) for messages in split["messages"]]


SMOLTALK = str(SAMPLES / "smoltalk" / "train.jsonl")


def test_the_duplicate_mistake_really_leaks(tmp_path, monkeypatch):
    """Guards the tests below: without the path check and the content deduplication, the two copies hold out
    different rows, which the other trains on; the deduplication alone already prevents it."""
    monkeypatch.setattr(mixture, "_check_distinct_sources", lambda section: None)
    twice = recipe(tmp_path, [{"kind": "smoltalk", "path": SMOLTALK}] * 2)
    built = build_mixture(twice, tmp_path / "deduplicated")
    assert rows(built["validation"]) and not set(rows(built["validation"])) & set(rows(built["train"]))
    monkeypatch.setattr(mixture, "_drop_seen", lambda split, seen: (split, 0))
    built = build_mixture(twice, tmp_path / "out")
    assert set(rows(built["validation"])) & set(rows(built["train"]))


def test_one_file_listed_twice_is_refused_naming_both_entries(tmp_path, capsys):
    news = str(SAMPLES / "news" / "train.jsonl")
    path = recipe(tmp_path, [{"kind": "smoltalk", "path": SMOLTALK}, {"kind": "news", "path": news},
                             {"kind": "smoltalk", "path": SMOLTALK, "limit": 5}])
    assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "data.sources[0] and data.sources[2] both read" in err and "repeat: 2" in err
    assert not (tmp_path / "out").exists()


def test_other_spellings_of_the_same_file_are_the_same_input(tmp_path):
    (tmp_path / "link.jsonl").symlink_to(SMOLTALK)
    relative = os.path.relpath(SMOLTALK, tmp_path)
    dotted = str(SAMPLES / "smoltalk" / ".." / "smoltalk" / "train.jsonl")
    for other in (relative, str(tmp_path / "link.jsonl"), dotted):
        path = recipe(tmp_path, [{"kind": "smoltalk", "path": SMOLTALK}, {"kind": "identity", "path": other}])
        with pytest.raises(AksharaError, match=r"data.sources\[0\] and data.sources\[1\] both read"):
            build_mixture(path, tmp_path / "out")


def test_a_validation_input_that_is_a_train_input_is_refused(tmp_path):
    tesum = SAMPLES / "tesum"
    files = sorted(p.name for p in tesum.iterdir())
    train, other = str(tesum / files[0]), str(tesum / files[-1])
    leak = recipe(tmp_path, [{"kind": "tesum", "path": train},
                             {"kind": "tesum", "path": other, "validation_path": train}])
    with pytest.raises(AksharaError, match=r"sources\[1\].validation_path reads the train input of data.sources\[0\]"):
        build_mixture(leak, tmp_path / "out")
    itself = recipe(tmp_path, [{"kind": "tesum", "path": train, "validation_path": train}])
    with pytest.raises(AksharaError, match=r"sources\[0\].validation_path reads the train input of data.sources\[0\]"):
        build_mixture(itself, tmp_path / "out")


def test_hub_ids_compare_by_id_config_and_split(tmp_path):
    """No network: the check runs on the parsed section, before anything is loaded."""
    def section(*entries):
        return DataSection.from_mapping({"sources": list(entries)}, tmp_path / "r.yaml", tmp_path)

    xlsum = {"kind": "xlsum", "path": "csebuetnlp/xlsum", "config": "telugu"}
    with pytest.raises(AksharaError, match="both read"):
        mixture._check_distinct_sources(section(xlsum, dict(xlsum)))
    with pytest.raises(AksharaError, match="both read"):  # no split reads the train split
        mixture._check_distinct_sources(section(xlsum, {**xlsum, "split": "train"}))
    mixture._check_distinct_sources(section(xlsum, {**xlsum, "config": "hindi"}))
    mixture._check_distinct_sources(section(xlsum, {**xlsum, "split": "test"}))


def test_repeat_uses_a_source_twice_without_leaking(tmp_path):
    built = build_mixture(recipe(tmp_path, [{"kind": "smoltalk", "path": SMOLTALK, "repeat": 2}]), tmp_path / "out")
    train, validation = rows(built["train"]), rows(built["validation"])
    assert validation and not set(validation) & set(train)
    assert all(train.count(row) == 2 for row in set(train))


def test_the_tiny_mid_mixture_has_no_validation_row_in_train(tmp_path):
    """tiny-mid mirrors the seed mid recipe (identity included twice via `repeat: 2`)."""
    built = build_mixture(RECIPES / "tiny-mid.yaml", tmp_path / "mid")
    assert not set(rows(built["validation"])) & set(rows(built["train"]))


# --- bad text: each row named, never a traceback or a file-only message ----------------------------------------

def good(number: int = 0) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"hi {number}"},
                                    {"role": "assistant", "content": "yo"}]})


GOOD = good()
SURROGATE = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\\udc80 x"}]}'
DEEP = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.mark.parametrize("bad, reason", [(SURROGATE, "message 2 content has an unpaired surrogate"),
                                         (DEEP, "JSON nested too deeply")], ids=["surrogate", "deep"])
def test_bad_text_rows_name_the_file_and_row(tmp_path, bad, reason):
    source = tmp_path / "chats.jsonl"
    source.write_text(f"{good(1)}\n{good(2)}\n{bad}\n{good(3)}\n", encoding="utf-8")
    with pytest.raises(AksharaError) as error:
        build_mixture(recipe(tmp_path, [{"kind": "smoltalk", "path": str(source)}]), tmp_path / "out")
    assert f"{source}, row 3: {reason}" in str(error.value) and "\n" not in str(error.value)
    skipping = tmp_path / "skip.yaml"
    skipping.write_text(yaml.safe_dump({"data": {"on_bad_row": "skip", "validation_fraction": 0.34,
                                                 "sources": [{"kind": "smoltalk", "path": str(source)}]}}))
    built = build_mixture(skipping, tmp_path / "skipped")
    assert len(built["train"]) + len(built["validation"]) == 3


def test_a_recipe_nested_too_deeply_is_one_line(tmp_path, capsys):
    """PyYAML recurses once per level: a recipe of 100,000 `{a: ` ended in a RecursionError traceback."""
    path = tmp_path / "deep.yaml"
    path.write_text("data: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n")
    assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"akshara-hf build-mixture: error: {path}: not valid YAML (nested too deeply)", err


def test_deeply_nested_json_array_is_one_line(tmp_path):
    source = tmp_path / "identity.json"
    source.write_text(f"[{GOOD}, {DEEP}]", encoding="utf-8")
    with pytest.raises(AksharaError, match="JSON nested too deeply"):
        build_mixture(recipe(tmp_path, [{"kind": "smoltalk", "path": str(source)}]), tmp_path / "out")


@pytest.mark.parametrize("bad, reason", [('{"text": "a \\ud800 b"}', "unpaired surrogate"),
                                         ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", "not a JSON object")],
                         ids=["surrogate", "deep"])
def test_train_tokenizer_names_the_bad_line(tmp_path, capsys, bad, reason):
    source = tmp_path / "texts.jsonl"
    source.write_text('{"text": "fine"}\n' + bad + "\n", encoding="utf-8")
    assert cli(["train-tokenizer", str(source), "--vocab-size", "300", "--output", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{source}:2:" in err and reason in err and "\n" not in err


# --- the same conversations under other names: deduplicated by content before the split ----------------------

IDENTITY = SAMPLES / "identity"


def contents(split) -> set[str]:
    """Conversations by content (as `conversation_key` compares them: whitespace runs and Unicode form aside)."""
    import unicodedata

    return {json.dumps([[m["role"], " ".join(unicodedata.normalize("NFC", m["content"]).split())] for m in messages],
                       ensure_ascii=False) for messages in split["messages"]}


def respaced(line: str) -> str:
    """The same conversation as another tool might write it: trailing whitespace, NFD, other JSON spacing."""
    import unicodedata

    record = json.loads(line)
    for message in record["messages"]:
        message["content"] = unicodedata.normalize("NFD", message["content"]) + "  \n"
    return json.dumps(record, ensure_ascii=True, indent=1).replace("\n", " ")


def leak_byte_copy(tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(Path(SMOLTALK).read_bytes())
    return [{"kind": "smoltalk", "path": SMOLTALK}, {"kind": "smoltalk", "path": str(copy)}], 24


def leak_json_beside_jsonl(tmp_path):
    return [{"kind": "identity", "path": str(IDENTITY / "identity.json")},
            {"kind": "identity", "path": str(IDENTITY / "identity.jsonl")}], 16


def leak_repeated_rows(tmp_path):
    lines = Path(SMOLTALK).read_text(encoding="utf-8").splitlines()
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text("\n".join(lines + lines[:10] + lines[:5]) + "\n", encoding="utf-8")
    return [{"kind": "smoltalk", "path": str(repeated)}], 15


def leak_respaced_copy(tmp_path):
    lines = Path(SMOLTALK).read_text(encoding="utf-8").splitlines()
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(respaced(line) for line in lines[:12]) + "\n", encoding="utf-8")
    return [{"kind": "smoltalk", "path": SMOLTALK}, {"kind": "stories", "path": str(other)}], 12


def leak_validation_copy(tmp_path):
    """One entry's validation file holds conversations another entry trains on: they stay validation rows."""
    lines = Path(SMOLTALK).read_text(encoding="utf-8").splitlines()
    validation = tmp_path / "validation.jsonl"
    validation.write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(good(number) + "\n" for number in range(8)), encoding="utf-8")
    return [{"kind": "smoltalk", "path": SMOLTALK},
            {"kind": "smoltalk", "path": str(other), "validation_path": str(validation)}], 6


LEAKS = {"byte copy": leak_byte_copy, "identity.json beside identity.jsonl": leak_json_beside_jsonl,
         "rows repeated in one file": leak_repeated_rows, "re-spaced NFD copy": leak_respaced_copy,
         "validation file copied into train": leak_validation_copy}


@pytest.mark.parametrize("case", LEAKS)
def test_copies_build_without_a_validation_conversation_in_train(tmp_path, case, capsys):
    sources, duplicates = LEAKS[case](tmp_path)
    path = recipe(tmp_path, sources)
    assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 0, capsys.readouterr().err
    built = datasets.load_from_disk(str(tmp_path / "out"))
    assert len(built["validation"]) and not contents(built["validation"]) & contents(built["train"])
    assert len(contents(built["train"])) == len(built["train"])  # no conversation twice in train either
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["totals"]["duplicate_rows"] == duplicates
    assert f"{duplicates} duplicate conversations dropped" in capsys.readouterr().out


def test_duplicates_are_dropped_before_repeat_which_still_weights_train(tmp_path):
    lines = Path(SMOLTALK).read_text(encoding="utf-8").splitlines()
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text("\n".join(lines + lines[:4]) + "\n", encoding="utf-8")
    built = build_mixture(recipe(tmp_path, [{"kind": "smoltalk", "path": str(repeated), "repeat": 3}]), tmp_path / "out")
    train, validation = rows(built["train"]), rows(built["validation"])
    assert len(set(train)) + len(validation) == 24 and not set(validation) & set(train)
    assert all(train.count(row) == 3 for row in set(train))


# --- the same file or folder by inode or containment: refused, naming both entries -------------------------------


def test_a_hard_link_is_the_same_input(tmp_path, capsys):
    os.link(SMOLTALK, tmp_path / "linked.jsonl")
    path = recipe(tmp_path, [{"kind": "smoltalk", "path": SMOLTALK},
                             {"kind": "smoltalk", "path": str(tmp_path / "linked.jsonl")}])
    assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "data.sources[0] and data.sources[1] both read" in err, err


@pytest.mark.parametrize("inner, key", [("stories/train", "path"), ("stories/validation", "validation_path")])
def test_a_folder_and_something_inside_it_are_refused(tmp_path, capsys, inner, key):
    stories = tmp_path / "stories"
    shutil.copytree(SAMPLES / "stories", stories)
    second = {"kind": "smoltalk", "path": SMOLTALK, key: str(tmp_path / inner)}
    if key == "path":
        second = {"kind": "stories", "path": str(tmp_path / inner)}
    path = recipe(tmp_path, [{"kind": "stories", "path": str(stories)}, second])
    assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"data.sources[0].path ({stories}) contains data.sources[1].{key}" in err, err
    assert not (tmp_path / "out").exists()


# --- named pipes and devices: refused at once, never a read that waits forever -----------------------------------


@pytest.mark.parametrize("where", ["source", "validation_path", "file in a dataset folder", "recipe"])
def test_a_named_pipe_is_refused_at_once(tmp_path, capsys, where, no_hang):
    pipe = tmp_path / "rows.jsonl"
    os.mkfifo(pipe)
    sources = [{"kind": "smoltalk", "path": str(pipe)}]
    if where == "validation_path":
        sources = [{"kind": "smoltalk", "path": SMOLTALK, "validation_path": str(pipe)}]
    elif where == "file in a dataset folder":
        stories = tmp_path / "stories"
        shutil.copytree(SAMPLES / "stories", stories)
        (stories / "train" / "state.json").unlink()
        os.mkfifo(stories / "train" / "state.json")
        sources, pipe = [{"kind": "stories", "path": str(stories)}], stories / "train" / "state.json"
    path = recipe(tmp_path, sources)
    if where == "recipe":
        os.unlink(pipe)
        pipe = path.with_name("pipe.yaml")
        os.mkfifo(pipe)
        path = pipe
    with no_hang():
        assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{pipe}: is a named pipe, not a regular file" in err, err


def test_a_device_is_refused_as_a_data_file(tmp_path, no_hang):
    with no_hang(), pytest.raises(AksharaError, match="/dev/zero: is a character device, not a regular file"):
        build_mixture(recipe(tmp_path, [{"kind": "smoltalk", "path": "/dev/zero"}]), tmp_path / "out")


@pytest.mark.parametrize("repeat", [10**9, 1001])
def test_an_absurd_repeat_is_refused_before_any_work(tmp_path, capsys, no_hang, repeat):
    """`repeat: 1000000000` built a billion-entry list of copies (minutes, then the memory) before one line."""
    path = recipe(tmp_path, [{"kind": "smoltalk", "path": SMOLTALK, "repeat": repeat}])
    with no_hang(30):
        assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"akshara-hf build-mixture: error: {path}: data.sources[0].repeat: {repeat} copies; at most "
                   "1000 (repeat weights a source)"), err
    assert not (tmp_path / "out").exists()


def test_a_data_key_given_twice_is_refused(tmp_path, capsys):
    """`validation_fraction: 0.2` then `validation_fraction: 0.5` held out the second silently."""
    path = tmp_path / "recipe.yaml"
    path.write_text(f"data:\n  validation_fraction: 0.2\n  validation_fraction: 0.5\n  sources:\n"
                    f"    - {{kind: smoltalk, path: {SMOLTALK}}}\n", encoding="utf-8")
    assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (f"akshara-hf build-mixture: error: {path}: not valid YAML at line 3 "
                                               "('validation_fraction' given twice (first on line 2))")


def _alias_bomb(levels: int, width: int) -> str:
    """`levels` lines, each a list of `width` aliases of the line above: width**levels values once expanded."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("anchors, value", [(_alias_bomb(7, 8), "*l6"), ("", "&loop [1, *loop]")],
                         ids=["8**7 values", "an alias inside itself"])
def test_yaml_aliases_past_a_million_values_are_refused(tmp_path, capsys, no_hang, anchors, value):
    """Nine lines of aliases are 9**9 values to whatever walks them: `seed: *l8` was refused with its repr in the
    message, which filled the memory until the process was killed (8**7 here keeps the old behaviour bearable)."""
    path = tmp_path / "recipe.yaml"
    path.write_text(f"{anchors}data:\n  seed: {value}\n  sources:\n    - {{kind: smoltalk, path: {SMOLTALK}}}\n",
                    encoding="utf-8")
    with no_hang(60):
        assert cli(["build-mixture", str(path), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (f"akshara-hf build-mixture: error: {path}: not valid YAML (more than "
                                               "1,000,000 values once its aliases are expanded)")
