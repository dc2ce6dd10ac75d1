"""Hostile chat templates in a model folder. `serve` and `export-native` check a folder's template against nanochat's
layout before using it: a template that loops for hours or asks for gigabytes is refused within the probe's bounds
(the check hung `serve` start-up and `export-native` for good), one that diverges only past the second message is
refused (the check rendered a system and a user message only), and what serves or is exported afterwards is the
package's own template, whatever the folder's did on inputs no probe has."""

import json
import shutil
import socket
import time

import pytest
from transformers import AutoTokenizer

from akshara_hf.cli import main
from akshara_hf.errors import AksharaError
from akshara_hf.tokenization import chat
from akshara_hf.tokenization.chat import check_chat_template, load_chat_template, render_for_generation

NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
TURNS = "{%- for message in turns"  # where the package's template starts its loop over the messages


def _ours_with(prefix: str = "", loop_guard: str = "") -> str:
    template = load_chat_template()
    assert TURNS in template
    return prefix + template.replace(TURNS, loop_guard + TURNS, 1)


HOSTILE = {
    "nested loops": (NESTED_LOOPS, "did not render 4 short conversations in 3 s"),
    "ten gigabytes": ("{{ 'x' * 10**10 }}", "(system user + generation prompt): MemoryError"),
    "ten megabytes": ("{{ 'x' * 10**7 }}", "(system user + generation prompt) as 'xxxxxxxx"),
    "raises at turn 3": (_ours_with(loop_guard="{%- if messages|length > 2 %}{{ raise_exception('no') }}{% endif %}"),
                         "does not render a conversation (system user assistant user + generation prompt): "
                         "TemplateError: no"),
    "extra token past turn 2": (_ours_with(prefix="{% if messages|length > 2 %}<|bos|>{% endif %}"),
                                "renders a conversation (system user assistant user + generation prompt) as "
                                "'<|bos|><|bos|><|user_start|>"),
    "no end of the last turn": (load_chat_template().replace("{{- text ~ '<|assistant_end|>' -}}",
                                                             "{{- text ~ ('' if loop.last else '<|assistant_end|>') -}}"),
                                "renders a conversation (user assistant user assistant) as "),
}


@pytest.fixture(scope="module")
def tokenizer(converted_folder):
    return AutoTokenizer.from_pretrained(converted_folder)


@pytest.fixture
def quick_probe(monkeypatch):
    monkeypatch.setattr(chat, "PROBE_SECONDS", 3)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_template_is_refused_within_bounds(tokenizer, name, quick_probe, no_hang):
    template, fragment = HOSTILE[name]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = template
    start = time.monotonic()
    with no_hang(30), pytest.raises(AksharaError) as refused:
        check_chat_template(tokenizer, "folder/chat_template.jinja")
    message = str(refused.value)
    assert message.startswith("folder/chat_template.jinja: ") and fragment in message, message
    assert "\n" not in message and len(message) < 800
    assert time.monotonic() - start < 20


def test_templates_that_render_nanochats_layout_pass(tokenizer):
    """The package's template, in process, and a byte-different copy of it (rendered by the bounded child)."""
    for template in (load_chat_template(), load_chat_template() + "{# a comment #}"):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
        tokenizer.chat_template = template
        check_chat_template(tokenizer, "folder")


def _folder_with_template(converted_folder, tmp_path, name: str, template: str):
    folder = tmp_path / name.replace(" ", "-")
    shutil.copytree(converted_folder, folder)
    (folder / "chat_template.jinja").write_text(template)
    return folder


@pytest.mark.parametrize("name", ["nested loops", "raises at turn 3", "extra token past turn 2"])
def test_serve_and_export_native_refuse_a_hostile_template_in_one_line(converted_folder, tmp_path, capsys, name,
                                                                      quick_probe, no_hang):
    template, fragment = HOSTILE[name]
    folder = _folder_with_template(converted_folder, tmp_path, name, template)
    with socket.socket() as free:  # refused before it listens; a port it could listen on all the same
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    for argv in (["serve", str(folder), "--port", port], ["export-native", str(folder), str(tmp_path / "n")]):
        with no_hang(60):
            assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "n").exists()


# Renders nanochat's layout on every probe, and a control token wherever a user writes "magic".
DIVERGES_ON_MAGIC = _ours_with(prefix="{% if 'magic' in messages[-1]['content'] %}<|python_start|>{% endif %}")
MAGIC = [{"role": "user", "content": "magic words"}]


def test_what_serves_and_exports_is_the_packages_template(converted_folder, tmp_path):
    """A template can agree with nanochat's layout on every probe and still diverge on some input: the check cannot
    see it, so the server prompts, and export-native writes, with the package's template."""
    from akshara_hf.cli.serve import _model_manager_class, prompt_ids
    from akshara_hf.conversion.convert import export_native

    folder = _folder_with_template(converted_folder, tmp_path, "magic", DIVERGES_ON_MAGIC)
    theirs = AutoTokenizer.from_pretrained(folder)
    assert theirs.apply_chat_template(MAGIC, add_generation_prompt=True)["input_ids"] != \
        render_for_generation(MAGIC, theirs)  # the folder's own template is wrong here
    manager = _model_manager_class()("m", str(folder), device="cpu")
    served = next(iter(manager.loaded_models.values())).processor
    assert served.chat_template == load_chat_template()
    assert prompt_ids(MAGIC, served, {}) == render_for_generation(MAGIC, served)
    export_native(folder, tmp_path / "native")
    assert (tmp_path / "native" / "chat_template.jinja").read_text() == load_chat_template()
    native = AutoTokenizer.from_pretrained(tmp_path / "native")
    assert native.apply_chat_template(MAGIC, add_generation_prompt=True)["input_ids"] == \
        render_for_generation(MAGIC, native)
    assert json.loads((tmp_path / "native" / "config.json").read_text())["model_type"] == "nanochat"
