"""What each mixture source is, for the card: a readable name and the public dataset it stands for.

A row's `hub_id` (run facts) says whether its data were read from that Hub dataset; only such rows go into the
YAML `datasets`. Rows read from local files (the shipped samples, or private copies) are named with a link to the
public dataset they follow, where one exists, and marked as local."""

from __future__ import annotations

# kind (akshara_hf.data source kind) -> (name, the public Hub dataset it is or derives from, or None)
SOURCES: dict[str, tuple[str, str | None]] = {
    "smoltalk": ("SmolTalk, Telugu translation", "HuggingFaceTB/smol-smoltalk"),
    "identity": ("Identity and personality conversations (custom)", None),
    "news": ("Telugu news, article ↔ title", None),
    "tesum": ("TeSum (IIIT Hyderabad), summaries", None),
    "xlsum": ("XL-Sum, Telugu, summaries", "csebuetnlp/xlsum"),
    "paraphrase": ("IndicParaphrase, Telugu", "ai4bharat/IndicParaphrase"),
    "indicparaphrase": ("IndicParaphrase, Telugu", "ai4bharat/IndicParaphrase"),
    "stories": ("Telugu tiny stories", None),
}


def _key(source: str) -> str:
    return "".join(ch for ch in source.lower() if ch.isalnum())


def describe(source: str) -> tuple[str, str | None]:
    """(name, reference Hub id) of a source given by kind ("paraphrase") or by a name that starts with one
    ("IndicParaphrase, Telugu"); an unknown source keeps its own text and has no reference."""
    key = _key(source)
    if key in SOURCES:
        return SOURCES[key]
    for kind, (_, hub) in SOURCES.items():
        if key.startswith(kind) or key.startswith(_key(SOURCES[kind][0])):
            return source, hub
    return source, None


def hub_datasets(facts: dict) -> list[str]:
    """The YAML `datasets`: the run's explicit list, else the Hub datasets the mixture's rows were read from."""
    if facts["datasets"]:
        return list(dict.fromkeys(facts["datasets"]))
    return list(dict.fromkeys(row["hub_id"] for row in facts["mixture"] if row.get("hub_id")))
