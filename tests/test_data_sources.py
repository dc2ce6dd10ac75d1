"""Converters on the shipped Telugu samples: exact text of known rows, prompts, determinism, bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, DatasetDict

from akshara_hf.data.prompts import PARAPHRASE_PROMPTS, SUMMARY_PROMPTS
from akshara_hf.data.sources import FEATURES, KINDS, convert_source
from akshara_hf.tokenization.chat import conversation_problem
from akshara_hf.errors import AksharaError

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
BROKEN = SAMPLES / "broken"

datasets.disable_progress_bars()


@pytest.fixture
def convert(tmp_path):
    """convert_source with a per-test cache, so nothing lands in ~/.cache."""

    def run(kind, path, **options):
        return convert_source(kind, path, cache_dir=tmp_path / "cache", **options)

    return run


def user_assistant(dataset, index):
    messages = dataset[index]["messages"]
    return messages[-2]["content"], messages[-1]["content"]


def raw_rows(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --- prompts and the conversation rule ---------------------------------------------------------------


def test_prompts_are_the_seed_write_up_prompts_byte_for_byte():
    # Digests of the prompts as listed in docs/akshara-runs.md (UTF-8, "\n"-joined).
    assert hashlib.sha256("\n".join(SUMMARY_PROMPTS).encode()).hexdigest() == (
        "0029a3db681a917b3d988114cfe8767d0db056e4dcaccf599f20ebd5bbefaef5")
    assert hashlib.sha256("\n".join(PARAPHRASE_PROMPTS).encode()).hexdigest() == (
        "c6667497750567838b87a15770361e3d96088bdd889d13ca058423f7f35cde9e")
    assert len(set(SUMMARY_PROMPTS)) == 5 and len(set(PARAPHRASE_PROMPTS)) == 10
    assert SUMMARY_PROMPTS[1] == "ఈ వ్యాసం యొక్క సారాంశం రాయండి"
    assert PARAPHRASE_PROMPTS[3].endswith(".")  # kept verbatim


def conversation(*roles, content="పాఠం"):
    return [{"role": role, "content": content} for role in roles]


@pytest.mark.parametrize("messages", [
    conversation("user", "assistant"),
    conversation("system", "user", "assistant"),
    conversation("user", "assistant", "user", "assistant"),
    conversation("user", "assistant", "user"),  # nanochat does not require ending on the assistant
])
def test_valid_conversations(messages):
    assert conversation_problem(messages, allow_parts=False) is None


@pytest.mark.parametrize("messages, problem", [
    ("text", "must be a list"),
    ([], "at least 2 messages"),
    (conversation("system", "user"), "at least 2 messages after the system message, has 1"),
    (conversation("user"), "at least 2 messages"),
    (conversation("assistant", "user"), "message 1 is 'assistant' where 'user' was expected"),
    (conversation("user", "user"), "message 2 is 'user' where 'assistant' was expected"),
    (conversation("user", "system", "assistant"), "message 2 is 'system'"),
    (conversation("system", "system", "user", "assistant"), "message 2 is 'system'"),
    (conversation("user", "bot"), "unknown role 'bot'"),
    ([{"role": "user", "content": "ప్రశ్న"}, {"content": "జవాబు"}], "message 2 has no role"),
    ([{"role": "user", "content": "ప్రశ్న"}, {"role": "assistant"}], "message 2 (assistant) has no content"),
    ([{"role": "user", "content": "ప్రశ్న"}, {"role": "assistant", "content": 42}], "content is a int"),
    ([{"role": "user", "content": "ప్రశ్న"}, {"role": "assistant", "content": "  \n"}], "empty content"),
    ([{"role": "user", "content": "ప్రశ్న"}, "జవాబు"], "message 2 is a str"),
])
def test_invalid_conversations(messages, problem):
    assert problem in conversation_problem(messages, allow_parts=False)


# --- each converter on its sample --------------------------------------------------------------------


def test_every_kind_has_a_sample_and_the_common_columns(convert):
    samples = {"smoltalk": "smoltalk/train.jsonl", "identity": "identity/identity.jsonl", "news": "news/train.jsonl",
               "tesum": "tesum/train.jsonl", "xlsum": "xlsum/telugu_train.parquet",
               "paraphrase": "paraphrase/train.jsonl", "stories": "stories"}
    assert set(samples) == set(KINDS)
    for kind, path in samples.items():
        dataset = convert(kind, SAMPLES / path).dataset
        assert dataset.features == FEATURES
        assert set(dataset["source"]) == {kind}
        assert all(conversation_problem(m, allow_parts=False) is None for m in dataset["messages"])


def test_smoltalk_keeps_messages_as_is(convert):
    dataset = convert("smoltalk", SAMPLES / "smoltalk/train.jsonl").dataset
    assert len(dataset) == 24
    assert dataset[1]["messages"] == [
        {"role": "system", "content": "మీరు సహాయకారి అయిన తెలుగు సహాయకుడు. సమాధానాలు క్లుప్తంగా ఇవ్వండి."},
        {"role": "user", "content": "ఒక వారంలో ఎన్ని గంటలు ఉంటాయి?"},
        {"role": "assistant",
         "content": "ఒక రోజులో 24 గంటలు, ఒక వారంలో 7 రోజులు. కాబట్టి ఒక వారంలో 24 × 7 = 168 గంటలు ఉంటాయి."},
    ]
    assert [m["role"] for m in dataset[18]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert dataset[18]["messages"][3]["content"] == "240 × 20 ÷ 100 = 48."
    assert [row["messages"] for row in raw_rows(SAMPLES / "smoltalk/train.jsonl")] == dataset["messages"]


def test_smoltalk_limit_takes_the_first_rows(convert):
    full = convert("smoltalk", SAMPLES / "smoltalk/train.jsonl").dataset
    limited = convert("smoltalk", SAMPLES / "smoltalk/train.jsonl", limit=5).dataset
    assert limited["messages"] == full["messages"][:5]


def test_identity_reads_nanochat_lists_and_message_records_alike(convert):
    lines = convert("identity", SAMPLES / "identity/identity.jsonl").dataset
    records = convert("identity", SAMPLES / "identity/identity.json").dataset
    assert len(lines) == 16
    assert lines["messages"] == records["messages"]
    assert lines[0]["messages"] == [
        {"role": "user", "content": "నీ పేరు ఏమిటి?"},
        {"role": "assistant", "content": "నా పేరు అక్షర. నేను తెలుగులో మాట్లాడే కృత్రిమ మేధ సహాయకారిని."},
    ]


def test_identity_json_file_holding_json_lines(convert, tmp_path):
    path = tmp_path / "identity.json"  # nanochat's files are JSONL whatever their suffix
    shutil.copy(SAMPLES / "identity/identity.jsonl", path)
    assert len(convert("identity", path).dataset) == 16


def test_news_maps_inputs_and_targets_without_a_prompt(convert):
    dataset = convert("news", SAMPLES / "news/train.jsonl").dataset
    assert len(dataset) == 20
    user, assistant = user_assistant(dataset, 1)
    assert user.startswith("కింది వార్తా కథనానికి తగిన శీర్షిక ఇవ్వండి:\n\nగత రెండు రోజులుగా")
    assert assistant == "జిల్లాలో భారీ వర్షాలు, లోతట్టు ప్రాంతాలు జలమయం"
    assert [(u, a) for u, a in (user_assistant(dataset, i) for i in range(20))] == [
        (row["inputs"], row["targets"]) for row in raw_rows(SAMPLES / "news/train.jsonl")]


# Prompt indices random.Random(0) draws for the first 16 rows (5 prompts): pinned so rebuilds stay identical.
SEED0_SUMMARY = [3, 3, 0, 2, 4, 3, 3, 2, 3, 2, 4, 1, 4, 1, 2, 1]


def test_tesum_joins_sentence_lists_and_prompts(convert):
    dataset = convert("tesum", SAMPLES / "tesum/train.jsonl").dataset
    assert len(dataset) == 16
    user, assistant = user_assistant(dataset, 11)
    assert user == (
        "ఈ వ్యాసం యొక్క సారాంశం రాయండి:\n\n"  # SUMMARY_PROMPTS[1], drawn for row 12
        "పట్టణాల్లో వీధి కుక్కల సంఖ్య పెరగడంతో పాదచారులు ఇబ్బంది పడుతున్నారు. "
        "ముఖ్యంగా ఉదయం పాఠశాలలకు వెళ్లే పిల్లలు భయపడుతున్నారు. "
        "కుక్కలకు సంతాన నియంత్రణ శస్త్రచికిత్సలు, టీకాలు వేయించాలని జంతు సంక్షేమ సంస్థలు సూచిస్తున్నాయి.")
    assert assistant == ("పట్టణాల్లో పెరిగిన వీధి కుక్కల బెడదకు సంతాన నియంత్రణ, టీకాలే పరిష్కారమని "
                         "జంతు సంక్షేమ సంస్థలు సూచిస్తున్నాయి.")
    # Two summary sentences become one string with a single space between them.
    assert user_assistant(dataset, 2)[1] == ("పీచు, ఖనిజాలు అధికంగా ఉండే చిరుధాన్యాలు ఆరోగ్యానికి మంచివి. "
                                             "తక్కువ నీటితో పండటం వల్ల రైతులకూ అనుకూలం.")
    prompts = [user_assistant(dataset, i)[0].split(":\n\n", 1)[0] for i in range(16)]
    assert prompts == [SUMMARY_PROMPTS[i] for i in SEED0_SUMMARY]


def test_prompt_choice_is_seeded(convert):
    def prompts(seed):
        dataset = convert("tesum", SAMPLES / "tesum/train.jsonl", seed=seed).dataset
        return [m[0]["content"].split(":\n\n", 1)[0] for m in dataset["messages"]]

    assert prompts(7) == prompts(7)
    assert prompts(7) != prompts(0)
    assert set(prompts(7)) <= set(SUMMARY_PROMPTS)


def test_xlsum_parquet_and_jsonl_agree(convert):
    parquet = convert("xlsum", SAMPLES / "xlsum/telugu_train.parquet").dataset
    jsonl = convert("xlsum", SAMPLES / "xlsum/telugu_train.jsonl").dataset
    assert len(parquet) == 16 and parquet["messages"] == jsonl["messages"]
    user, assistant = user_assistant(parquet, 0)
    row = raw_rows(SAMPLES / "xlsum/telugu_train.jsonl")[0]
    assert user == f"{SUMMARY_PROMPTS[SEED0_SUMMARY[0]]}:\n\n{row['text']}"
    assert user.endswith("అందుకే పలు దేశాల అంతరిక్ష సంస్థలు ఈ ప్రాంతంపై దృష్టి పెట్టాయి.")
    assert assistant == ("చంద్రుడి దక్షిణ ధ్రువ ప్రాంతంలో మంచు రూపంలో నీరు ఉండే అవకాశంపై "
                         "శాస్త్రవేత్తలు పరిశోధనలు కొనసాగిస్తున్నారు.")


def test_paraphrase_both_field_spellings_and_the_verbatim_prompt(convert):
    dataset = convert("paraphrase", SAMPLES / "paraphrase/train.jsonl").dataset
    assert len(dataset) == 24
    # random.Random(0) draws prompt 3 (the one ending in ".") for row 12.
    assert user_assistant(dataset, 11) == ("ఈ వాక్యాన్ని పునర్వ్యాఖ్యానించండి.:\n\nదయచేసి తలుపు మూసివేయండి.",
                                           "దయచేసి తలుపు వేయండి.")
    assert user_assistant(dataset, 0) == (f"{PARAPHRASE_PROMPTS[6]}:\n\nనేను రేపు ఉదయం మార్కెట్‌కు వెళ్తాను.",
                                          "రేపు పొద్దున నేను బజారుకు వెళ్తాను.")
    assert {m[0]["content"].split(":\n\n", 1)[0] for m in dataset["messages"]} <= set(PARAPHRASE_PROMPTS)
    plural = convert("paraphrase", SAMPLES / "paraphrase/inputs_targets.jsonl").dataset
    assert len(plural) == 6
    assert user_assistant(plural, 0)[0].endswith(":\n\nఆకాశం మేఘావృతమై ఉంది.")
    assert user_assistant(plural, 0)[1] == "ఆకాశాన్ని మబ్బులు కమ్మేశాయి."


def test_stories_dataset_dict_splits(convert, tmp_path):
    train = convert("stories", SAMPLES / "stories").dataset
    validation = convert("stories", SAMPLES / "stories", split="validation").dataset
    assert (len(train), len(validation)) == (16, 4)
    assert train[0]["messages"][0] == {"role": "user", "content": "ఒక తెలివైన కాకి గురించి చిన్న కథ రాయండి."}
    assert validation[0]["messages"][1]["content"].startswith("ఒక ఆకు మీద చిన్న గొంగళిపురుగు ఉండేది.")
    single = tmp_path / "single"  # a plain Dataset folder, not a DatasetDict
    Dataset.from_list(raw_rows(SAMPLES / "source_text/stories_validation.jsonl")).save_to_disk(str(single))
    assert convert("stories", single).dataset["messages"] == validation["messages"]
    with pytest.raises(AksharaError, match="no split 'test' \\(has train, validation\\)"):
        convert("stories", SAMPLES / "stories", split="test")


def test_hub_ids_go_through_load_dataset(convert, monkeypatch):
    rows = raw_rows(SAMPLES / "xlsum/telugu_validation.jsonl")
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return DatasetDict({"train": Dataset.from_list(rows[:1]), "validation": Dataset.from_list(rows)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = convert("xlsum", "csebuetnlp/xlsum", config="telugu", revision="refs/convert/parquet",
                      split="validation").dataset
    assert calls[0] == ("csebuetnlp/xlsum", "telugu", {"revision": "refs/convert/parquet"})
    assert [m[1]["content"] for m in dataset["messages"]] == [row["summary"] for row in rows]


def test_hub_failure_is_one_line(convert, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub\n(long traceback text)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(AksharaError) as error:
        convert("xlsum", "someone/missing-dataset")
    assert "loading it from the Hugging Face Hub failed: Couldn't reach the Hub" in str(error.value)
    assert "\n" not in str(error.value)


def test_converted_data_is_memory_mapped_arrow(convert):
    dataset = convert("smoltalk", SAMPLES / "smoltalk/train.jsonl").dataset
    assert dataset.cache_files and all(Path(f["filename"]).suffix == ".arrow" for f in dataset.cache_files)


def test_a_fresh_conversion_after_editing_the_file(convert, tmp_path):
    path = tmp_path / "news.jsonl"
    shutil.copy(SAMPLES / "news/train.jsonl", path)
    assert len(convert("news", path).dataset) == 20
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"inputs": "ప్రశ్న", "targets": "జవాబు"}, ensure_ascii=False) + "\n")
    assert len(convert("news", path).dataset) == 21  # the cache fingerprint follows the file


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, name, row, problem", [
    ("smoltalk", "smoltalk_bad_roles.jsonl", 2, "message 2 is 'user' where 'assistant' was expected"),
    ("identity", "identity_bad_content.jsonl", 2, "message 2 (assistant) has empty content"),
    ("news", "news_missing_targets.jsonl", 2, "missing field 'targets'"),
    ("tesum", "tesum_bad_fields.jsonl", 2, "field 'summary' must be a list of sentence strings"),
    ("paraphrase", "paraphrase_invalid_json.jsonl", 2, "invalid JSON"),
    ("xlsum", "xlsum_empty_summary.parquet", 3, "field 'summary' is empty"),
    ("stories", "stories_bad_roles", 2, "message 1 is 'assistant' where 'user' was expected"),
])
def test_first_bad_row_is_an_error_naming_file_row_and_problem(convert, kind, name, row, problem):
    with pytest.raises(AksharaError) as error:
        convert(kind, BROKEN / name)
    message = str(error.value)
    assert name in message and f"row {row}: " in message and problem in message
    assert "\n" not in message


@pytest.mark.parametrize("kind, name, kept, dropped", [
    ("smoltalk", "smoltalk_bad_roles.jsonl", 2, {
        "message 2 is 'user' where 'assistant' was expected (roles must alternate)": [2],
        "message 2 is 'system' where 'assistant' was expected (roles must alternate)": [3],
        "needs at least 2 messages after the system message, has 1": [4]}),
    ("identity", "identity_bad_content.jsonl", 2, {
        "message 2 (assistant) has empty content": [2],
        "message 2 (assistant) content is a int, not a string": [3],
        "message 2 has no role": [4],
        "invalid JSON (Expecting ',' delimiter)": [6]}),
    ("news", "news_missing_targets.jsonl", 2, {"missing field 'targets'": [2, 3]}),
    ("tesum", "tesum_bad_fields.jsonl", 1, {
        "field 'summary' must be a list of sentence strings": [2], "missing field 'cleaned_text'": [3]}),
    ("xlsum", "xlsum_empty_summary.parquet", 3, {"field 'summary' is empty": [3]}),
])
def test_skip_mode_drops_and_counts_by_reason(convert, kind, name, kept, dropped):
    result = convert(kind, BROKEN / name, on_bad_row="skip")
    assert len(result.dataset) == kept
    assert {reason: d.rows for reason, d in result.dropped.items()} == dropped
    assert result.dropped_count == sum(len(rows) for rows in dropped.values())
    assert all(conversation_problem(m, allow_parts=False) is None for m in result.dataset["messages"])


def test_skipped_rows_do_not_shift_other_rows_prompts(convert, tmp_path):
    good = raw_rows(SAMPLES / "tesum/train.jsonl")[:4]
    bad = [dict(row) for row in good]
    bad[1]["summary"] = "ఒక వాక్యం"  # a string: row 2 is dropped
    for name, rows in (("good.jsonl", good), ("bad.jsonl", bad)):
        (tmp_path / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    kept = convert("tesum", tmp_path / "bad.jsonl", on_bad_row="skip").dataset["messages"]
    full = convert("tesum", tmp_path / "good.jsonl").dataset["messages"]
    assert kept == [full[0], full[2], full[3]]


def test_whole_file_problems(convert, tmp_path):
    cases = [
        ("identity", BROKEN / "identity_not_array.json",
         "expected a JSON array of records (or JSON Lines), got a dict"),
        ("xlsum", BROKEN / "not_parquet.parquet", "not a readable parquet file"),
        ("smoltalk", tmp_path / "missing.jsonl", "no such file or folder"),
        ("smoltalk", SAMPLES / "README.md", "unsupported file type '.md'"),
        ("stories", SAMPLES / "tesum", "not a datasets save_to_disk folder"),
        ("tesum", SAMPLES / "tesum/train.jsonl", "`split` applies to folders and Hub ids"),
        ("nonsense", SAMPLES / "tesum/train.jsonl", "unknown source kind 'nonsense'"),
    ]
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    cases.append(("news", tmp_path / "empty.jsonl", "has no rows"))
    (tmp_path / "broken.json").write_text('[{"messages": [}]', encoding="utf-8")
    cases.append(("identity", tmp_path / "broken.json", "invalid JSON at line 1 column 16"))
    for kind, path, problem in cases:
        options = {"split": "train"} if "split" in problem else {}
        with pytest.raises(AksharaError) as error:
            convert(kind, path, **options)
        assert problem in str(error.value) and "\n" not in str(error.value), (kind, path, str(error.value))
        if kind in KINDS:
            assert str(path) in str(error.value)
