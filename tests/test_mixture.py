"""Recipe `data:` sections and mixtures: counts, repeat, hold-out, determinism, bad input, safety, CLI."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
import yaml

from akshara_hf import cli
from akshara_hf.data import mixture
from akshara_hf.data.mixture import build_mixture, load_data_section
from akshara_hf.data.prompts import PARAPHRASE_PROMPTS, SUMMARY_PROMPTS
from akshara_hf.tokenization.chat import conversation_problem
from akshara_hf.errors import AksharaError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
RECIPES = ROOT / "training" / "recipes"

datasets.disable_progress_bars()


def write_recipe(folder: Path, sources: list, name: str = "recipe.yaml", **data) -> Path:
    data.setdefault("seed", 42)
    data.setdefault("validation_fraction", 0.1)
    path = folder / name
    path.write_text(yaml.safe_dump({"data": {**data, "sources": sources}}, allow_unicode=True), encoding="utf-8")
    return path


def sample(relative: str) -> str:
    return str(SAMPLES / relative)


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.arrow"))}


@pytest.fixture(scope="module")
def tiny_mid(tmp_path_factory):
    """tiny-mid.yaml (the nanochat-telugu-d20-mid-v1-akshara mirror) built once from the samples."""
    output = tmp_path_factory.mktemp("mid") / "tiny-mid"
    return output, build_mixture(RECIPES / "tiny-mid.yaml", output)


# --- the recipe's data section --------------------------------------------------------------------------


def test_data_section_resolves_paths_against_the_recipe(tmp_path):
    recipe = write_recipe(tmp_path, [
        {"kind": "tesum", "path": "../../data/samples/tesum/train.jsonl"},
        {"kind": "xlsum", "path": "csebuetnlp/xlsum", "config": "telugu", "revision": "refs/convert/parquet"},
    ])
    section = load_data_section(RECIPES / "tiny-mid.yaml")
    assert section.seed == 42 and section.on_bad_row == "error" and section.validation_fraction == 0.1
    assert [s.kind for s in section.sources] == ["smoltalk", "news", "tesum", "xlsum", "paraphrase", "stories",
                                                 "identity"]
    assert section.sources[2].location == str(SAMPLES / "tesum/train.jsonl")
    assert section.sources[2].validation_location == str(SAMPLES / "tesum/dev.jsonl")
    assert section.sources[6].repeat == 2
    hub = load_data_section(recipe).sources[1]
    assert (hub.location, hub.config, hub.revision) == ("csebuetnlp/xlsum", "telugu", "refs/convert/parquet")


def test_every_shipped_recipe_has_a_valid_data_section():
    names = {p.name for p in RECIPES.glob("*.yaml")}
    runs = {"nanochat-telugu-d20-mid-smoltalk-100k", "nanochat-telugu-d20-mid-v1-akshara",
            "nanochat-telugu-d20-sft-smoltalk-10k", "nanochat-telugu-d20-sft-summary",
            "nanochat-telugu-d20-sft-paraphrase", "nanochat-telugu-d20-sft-smoltalk-news-articles",
            "nanochat-telugu-d20-sft-smoltalk-stories", "nanochat-telugu-d20-sft-v1"}
    assert {f"{run}.yaml" for run in runs} | {"tiny-mid.yaml", "tiny-sft.yaml"} <= names
    kinds = {run: [s.kind for s in load_data_section(RECIPES / f"{run}.yaml").sources] for run in runs}
    assert Counter(kinds["nanochat-telugu-d20-mid-v1-akshara"]) == Counter(
        ["smoltalk", "news", "tesum", "xlsum", "paraphrase", "stories", "identity"])
    v1 = load_data_section(RECIPES / "nanochat-telugu-d20-mid-v1-akshara.yaml").sources
    assert [s.repeat for s in v1 if s.kind == "identity"] == [2]
    assert sorted(kinds["nanochat-telugu-d20-sft-v1"]) == sorted(kinds["nanochat-telugu-d20-mid-v1-akshara"])
    smoltalk_10k = load_data_section(RECIPES / "nanochat-telugu-d20-sft-smoltalk-10k.yaml").sources
    assert [s.limit for s in smoltalk_10k] == [10000]


@pytest.mark.parametrize("data, problem", [
    ({"seed": 1, "sources": [{"kind": "news", "path": "x.jsonl"}], "shuffle": True},
     "data: unknown key 'shuffle'"),
    ({"sources": [{"kind": "news", "path": "x.jsonl", "limt": 5}]}, "data.sources[0]: unknown key 'limt'"),
    ({"sources": [{"kind": "poems", "path": "x.jsonl"}]}, "data.sources[0].kind: 'poems' is not one of"),
    ({"sources": [{"kind": "news"}]}, "data.sources[0]: missing `path`"),
    ({"sources": [{"kind": "news", "path": "x.jsonl", "limit": 0}]}, "data.sources[0].limit: must be a positive"),
    ({"sources": [{"kind": "news", "path": "x.jsonl", "repeat": True}]}, "data.sources[0].repeat: must be a positive"),
    ({"sources": [{"kind": "news", "path": "x.jsonl", "split": 3}]}, "data.sources[0].split: must be a non-empty"),
    ({"sources": []}, "data.sources must be a non-empty list"),
    ({"sources": ["news"]}, "data.sources[0]: must be a mapping"),
    ({"seed": "42", "sources": [{"kind": "news", "path": "x.jsonl"}]}, "data.seed must be a non-negative integer"),
    ({"on_bad_row": "warn", "sources": [{"kind": "news", "path": "x.jsonl"}]}, "data.on_bad_row must be"),
    ({"validation_fraction": 1.5, "sources": [{"kind": "news", "path": "x.jsonl"}]},
     "data.validation_fraction must be a number in [0, 1)"),
])
def test_data_section_is_checked_strictly(tmp_path, data, problem):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"depth": 20}, "data": data}), encoding="utf-8")
    with pytest.raises(AksharaError) as error:
        load_data_section(recipe)
    assert str(error.value).startswith(f"{recipe}: ") and problem in str(error.value)


def test_recipe_file_problems(tmp_path):
    (tmp_path / "bad.yaml").write_text("data:\n  sources: [\n", encoding="utf-8")
    (tmp_path / "nodata.yaml").write_text("model: {depth: 20}\n", encoding="utf-8")
    for name, problem in (("bad.yaml", "not valid YAML at line"), ("nodata.yaml", "needs a `data:` mapping"),
                          ("missing.yaml", "no such recipe file")):
        with pytest.raises(AksharaError, match=problem):
            load_data_section(tmp_path / name)


# --- the tiny-mid mixture (mirror of nanochat-telugu-d20-mid-v1-akshara) -----------------------------------


def test_tiny_mid_counts_per_source(tiny_mid):
    output, built = tiny_mid
    assert set(built) == {"train", "validation"}
    assert built["train"].column_names == ["messages", "source"]
    # Held out ceil(rows * 0.1) (datasets' train_test_split rounding) where a source has no split of its own;
    # identity's 14 train rows count twice.
    assert Counter(built["train"]["source"]) == {"smoltalk": 21, "news": 18, "tesum": 16, "xlsum": 16,
                                                 "paraphrase": 21, "stories": 16, "identity": 28}
    assert Counter(built["validation"]["source"]) == {"smoltalk": 3, "news": 2, "tesum": 4, "xlsum": 4,
                                                      "paraphrase": 3, "stories": 4, "identity": 2}
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    assert report["totals"]["train_rows"] == len(built["train"]) == 136
    assert report["totals"]["validation_rows"] == len(built["validation"]) == 22
    assert [e["validation_from"] for e in report["sources"]] == [
        "held out 3", "held out 2", "dev.jsonl", "telugu_validation.parquet", "held out 3", "split validation",
        "held out 2"]
    assert report["size_unit"] == "utf8_bytes" and report["totals"]["dropped_rows"] == 0
    assert report["totals"]["train_size"] == sum(
        len(m["content"].encode()) for row in built["train"]["messages"] for m in row)


def test_tiny_mid_rows_are_valid_and_repeat_without_leaking(tiny_mid):
    _, built = tiny_mid
    train, validation = built["train"], built["validation"]
    assert all(conversation_problem(m, allow_parts=False) is None for m in list(train["messages"]) + list(validation["messages"]))
    key = lambda messages: json.dumps(messages, ensure_ascii=False)  # noqa: E731
    identity = Counter(key(m) for m, s in zip(train["messages"], train["source"]) if s == "identity")
    assert len(identity) == 14 and set(identity.values()) == {2}
    assert not {key(m) for m in validation["messages"]} & set(map(key, train["messages"]))
    for messages, source in zip(train["messages"], train["source"]):
        if source in ("tesum", "xlsum", "paraphrase"):
            prompt = messages[0]["content"].split(":\n\n", 1)[0]
            assert prompt in (PARAPHRASE_PROMPTS if source == "paraphrase" else SUMMARY_PROMPTS)
    order = list(train["source"])  # shuffled: concatenated sources in order would change kind only 6 times
    assert sum(a != b for a, b in zip(order, order[1:])) > 60


def test_tiny_mid_report_files_and_print(tiny_mid, tmp_path, capsys):
    output, _ = tiny_mid
    assert (output / "report.md").read_text(encoding="utf-8").startswith("# Mixture report:")
    build_mixture(RECIPES / "tiny-mid.yaml", tmp_path / "again")
    printed = capsys.readouterr().out
    assert "| 6 | identity | ../../data/samples/identity/identity.jsonl | 2 | 28 | 2 | held out 2 |" in printed
    assert "No rows dropped." in printed
    assert printed == (tmp_path / "again" / "report.md").read_text(encoding="utf-8")
    assert digests(tmp_path / "again") == digests(output)  # same seed: byte-identical rows, same order


def test_tiny_sft_builds(tmp_path):
    built = build_mixture(RECIPES / "tiny-sft.yaml", tmp_path / "sft")
    assert Counter(built["train"]["source"]) == {"smoltalk": 10, "identity": 14, "paraphrase": 21, "news": 18,
                                                 "tesum": 16, "xlsum": 16, "stories": 16}


def test_another_seed_gives_another_order_and_prompts(tmp_path):
    sources = [{"kind": "paraphrase", "path": sample("paraphrase/train.jsonl")}]
    one = build_mixture(write_recipe(tmp_path, sources, "one.yaml", seed=1), tmp_path / "one")["train"]["messages"]
    two = build_mixture(write_recipe(tmp_path, sources, "two.yaml", seed=2), tmp_path / "two")["train"]["messages"]
    assert one != two
    assert sorted(m[0]["content"] for m in one) != sorted(m[0]["content"] for m in two)  # other prompts drawn


def test_limit_repeat_and_hold_out(tmp_path):
    recipe = write_recipe(tmp_path, [{"kind": "smoltalk", "path": sample("smoltalk/train.jsonl"), "limit": 10,
                                      "repeat": 3}], validation_fraction=0.2)
    built = build_mixture(recipe, tmp_path / "out")
    assert (len(built["train"]), len(built["validation"])) == (24, 2)
    lines = (SAMPLES / "smoltalk/train.jsonl").read_text(encoding="utf-8").splitlines()
    first_ten = {json.dumps(json.loads(line)["messages"]) for line in lines[:10]}
    assert Counter(Counter(json.dumps(m) for m in built["train"]["messages"]).values()) == {3: 8}
    assert {json.dumps(m) for m in list(built["train"]["messages"]) + list(built["validation"]["messages"])} \
        == first_ten


def test_token_counts_use_the_tokenizer(tmp_path, monkeypatch):
    class FakeTokenizer:
        name_or_path = "fake-tokenizer"

    monkeypatch.setattr(mixture, "count_tokens", lambda messages, tokenizer: 10 * len(messages))
    recipe = write_recipe(tmp_path, [{"kind": "identity", "path": sample("identity/identity.jsonl")}])
    build_mixture(recipe, tmp_path / "out", tokenizer=FakeTokenizer())
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["size_unit"] == "tokens" and report["tokenizer"] == "fake-tokenizer"
    # 16 conversations: 13 of 2 messages, 2 multi-turn of 4, 1 of 3 (system, user, assistant).
    assert report["totals"]["train_size"] + report["totals"]["validation_size"] == 10 * (13 * 2 + 2 * 4 + 3)


# --- bad rows ------------------------------------------------------------------------------------------------


def bad_sources():
    return [{"kind": "smoltalk", "path": sample("broken/smoltalk_bad_roles.jsonl")},
            {"kind": "identity", "path": sample("broken/identity_bad_content.jsonl"), "repeat": 2},
            {"kind": "news", "path": sample("news/train.jsonl")}]


def test_bad_row_is_an_error_naming_recipe_source_file_and_row(tmp_path):
    recipe = write_recipe(tmp_path, bad_sources())
    with pytest.raises(AksharaError) as error:
        build_mixture(recipe, tmp_path / "out")
    assert str(error.value) == (
        f"{recipe}: data.sources[0] (smoltalk): {sample('broken/smoltalk_bad_roles.jsonl')}, row 2: "
        "message 2 is 'user' where 'assistant' was expected (roles must alternate)")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [recipe]


def test_skip_mode_drops_counts_and_prints(tmp_path, capsys):
    # validation_fraction 0: the validation rows come from the stories' own split.
    recipe = write_recipe(tmp_path, bad_sources() + [{"kind": "stories", "path": sample("stories")}],
                          on_bad_row="skip", validation_fraction=0.0)
    built = build_mixture(recipe, tmp_path / "out")
    assert Counter(built["train"]["source"]) == {"smoltalk": 2, "identity": 4, "news": 20, "stories": 16}
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert [e["dropped_rows"] for e in report["sources"]] == [3, 4, 0, 0]
    assert report["sources"][1]["dropped"]["message 2 has no role"] == {"count": 1, "first_rows": [4]}
    printed = capsys.readouterr().out
    assert "Dropped rows (on_bad_row: skip), 7 in all:" in printed
    assert (f"- sources[0] smoltalk ({sample('broken/smoltalk_bad_roles.jsonl')}): 1 × needs at least 2 "
            "messages after the system message, has 1 (rows 4)") in printed


@pytest.mark.parametrize("limit, fraction, held_out", [(5, 0.1, 1), (10, 0.1, 1), (11, 0.1, 2), (2, 0.5, 1), (1, 0.5, 0)])
def test_hold_out_rounds_up_as_datasets_does(tmp_path, limit, fraction, held_out):
    """datasets' train_test_split rounds a fractional test share up (5 rows x 0.1 -> 1); a one-row source trains."""
    recipe = write_recipe(tmp_path, [{"kind": "smoltalk", "path": sample("smoltalk/train.jsonl"), "limit": limit},
                                     {"kind": "news", "path": sample("news/train.jsonl")}],
                          validation_fraction=fraction)
    built = build_mixture(recipe, tmp_path / "out")
    assert Counter(built["validation"]["source"])["smoltalk"] == held_out
    assert Counter(built["train"]["source"])["smoltalk"] == limit - held_out


def test_empty_validation_split_is_an_error(tmp_path):
    recipe = write_recipe(tmp_path, [{"kind": "news", "path": sample("news/train.jsonl")}], validation_fraction=0.0)
    with pytest.raises(AksharaError, match="the validation split is empty"):
        build_mixture(recipe, tmp_path / "out")


def test_source_file_problems_name_the_recipe_entry(tmp_path):
    recipe = write_recipe(tmp_path, [{"kind": "news", "path": "nowhere/news.jsonl"}])
    with pytest.raises(AksharaError, match=r"data.sources\[0\] \(news\): .*nowhere/news.jsonl: no such file"):
        build_mixture(recipe, tmp_path / "out")
    recipe = write_recipe(tmp_path, [{"kind": "news", "path": sample("news/train.jsonl"), "validation_split": "dev"}])
    with pytest.raises(AksharaError, match="validation_split 'dev' given, but this input has no splits"):
        build_mixture(recipe, tmp_path / "out")


# --- output safety -----------------------------------------------------------------------------------------


def small_recipe(tmp_path, name="recipe.yaml"):
    return write_recipe(tmp_path, [{"kind": "stories", "path": sample("stories")}], name)


def test_rebuild_replaces_an_earlier_output_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "out"
    build_mixture(small_recipe(tmp_path), out)
    (out / "stale.txt").write_text("from the old build")
    with pytest.raises(AksharaError, match="pass --overwrite"):
        build_mixture(small_recipe(tmp_path), out)
    # a file the build did not write is never deleted, --overwrite or not: the user moves it out first
    with pytest.raises(AksharaError, match="stale.txt, which build-mixture did not write"):
        build_mixture(small_recipe(tmp_path), out, overwrite=True)
    assert (out / "stale.txt").read_text() == "from the old build"
    (out / "stale.txt").unlink()
    build_mixture(small_recipe(tmp_path), out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "recipe.yaml"]


def test_a_failed_or_interrupted_build_keeps_the_old_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    build_mixture(small_recipe(tmp_path), out)
    before = digests(out)
    bad = write_recipe(tmp_path, bad_sources(), "bad.yaml")
    with pytest.raises(AksharaError):
        build_mixture(bad, out, overwrite=True)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_mixture(small_recipe(tmp_path), out, overwrite=True)
    assert digests(out) == before and (out / "report.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "out", "recipe.yaml"]


def test_refuses_to_replace_a_folder_that_is_not_a_mixture(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(AksharaError, match="not written by akshara-hf; refusing to replace it"):
        build_mixture(small_recipe(tmp_path), tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


# --- command line -----------------------------------------------------------------------------------------------


@pytest.fixture
def only_our_command(monkeypatch):
    # Other commands are written by others at the same time; an import problem there must not fail these tests.
    assert "akshara_hf.data.mixture" in cli.COMMAND_MODULES
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("akshara_hf.data.mixture",))


def test_cli_builds_a_mixture(tmp_path, capsys, only_our_command):
    assert cli.main(["build-mixture", str(small_recipe(tmp_path)), str(tmp_path / "out")]) == 0
    assert "| 0 | stories |" in capsys.readouterr().out
    assert len(datasets.load_from_disk(str(tmp_path / "out"))["train"]) == 16


def test_cli_bad_input_is_exit_2_and_one_line(tmp_path, capsys, only_our_command):
    bad = write_recipe(tmp_path, bad_sources(), "bad.yaml")
    assert cli.main(["build-mixture", str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("akshara-hf build-mixture: error: ")
    assert "smoltalk_bad_roles.jsonl, row 2: message 2 is 'user'" in err
    assert cli.main(["build-mixture", str(small_recipe(tmp_path)), str(tmp_path / "out"),
                     "--tokenizer", str(tmp_path / "no-tokenizer")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tokenizer" in err and "could not load a tokenizer" in err
