"""A config can neither exhaust the machine nor flood the terminal: YAML alias bombs are refused
before validation, and an error quotes at most a few hundred characters of a value. And
export.c_array_name cannot break the generated C (keywords, the application's own names)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tinyvision.config import load_config, validate_config
from tinyvision.errors import ConfigError

# six levels of nine aliases: 531,441 strings from a few hundred bytes (more levels: gigabytes)
BOMB = """\
data: {source: {format: folder, root: images}}
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
model: {alpha: *f}
"""


def test_a_yaml_alias_bomb_is_refused_before_validation(tmp_path):
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB)
    assert len(BOMB) < 500
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert "expands to more than 100,000 values" in message and "alias" in message
    assert len(message) < 500


def test_a_self_referencing_config_is_refused(tmp_path):
    config = tmp_path / "loop.yaml"
    config.write_text("data: {source: {format: folder, root: images}}\nmodel: &m {alpha: *m}\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(config)


@pytest.mark.parametrize("value", ["x" * 100_000, list(range(50_000)),
                                   {f"k{i}": i for i in range(5000)}])
def test_an_error_quotes_at_most_a_few_hundred_characters_of_a_value(tmp_path, value):
    raw = {"data": {"source": {"format": "folder", "root": str(tmp_path)}},
           "model": {"alpha": value}}
    with pytest.raises(ConfigError, match=r"model\.alpha") as caught:
        validate_config(raw)
    assert len(str(caught.value)) < 800


def test_an_override_cannot_smuggle_a_bomb(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{source: {{format: folder, root: {tmp_path}}}}}\n")
    levels = ["&l0 [" + ", ".join(["1"] * 10) + "]"]
    for k in range(1, 6):  # each level: ten copies of the last, 10**5 values at the end
        levels.append(f"&l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(config, ["model.alpha=[" + ", ".join(levels) + "]"])


# ---- export.c_array_name ----------------------------------------------------------------------
def _with_name(tmp_path: Path, name: str) -> dict:
    return {"data": {"source": {"format": "folder", "root": str(tmp_path)}},
            "export": {"c_array_name": name}}


@pytest.mark.parametrize("name, why", [
    ("int", "C/C++ keyword"), ("class", "C/C++ keyword"), ("_Alignas", "C/C++ keyword"),
    ("model", "the generated application"), ("g_arena", "the generated application"),
    ("kArenaBytes", "the generated application"), ("main", "the generated application"),
    ("tflite", "the generated application"), ("tv_preprocess", "the generated application"),
    ("printf", "the C library"), ("uint8_t", "the C library"),
    ("_model", "reserved"), ("my__model", "reserved"), ("TV_INPUT_BYTES", "the generated"),
    ("tinyvision_aligned", "the generated"),
])
def test_c_array_names_that_break_the_generated_c_are_refused(tmp_path, name, why):
    with pytest.raises(ConfigError, match=rf"export\.c_array_name.*{name!r}.*{re.escape(why)}"):
        validate_config(_with_name(tmp_path, name))


def test_a_good_c_array_name_is_kept(tmp_path):
    assert validate_config(_with_name(tmp_path, "person_model")).export.c_array_name == \
        "person_model"


def test_every_name_the_application_declares_beside_the_array_is_refused(tmp_path):
    """The file-scope names of the generated main.cc and model_ops.h, main's parameters and the
    `model` declared with the array's use: none can be the array's name (config/run.py lists
    them; this keeps the list in step with deploy/app.py)."""
    from tinyvision.deploy.app import main_source, ops_header

    output = {"shape": [1, 3], "scale": 1 / 256, "zero_point": -128, "index": 0}
    quantization = {"input": {"shape": [1, 8, 8, 3], "scale": 1.0, "zero_point": -128},
                    "output": output, "outputs": [output]}
    text = main_source(quantization, "ARRAY", "model_int8.h", 1000) + ops_header(["CONV_2D"])
    declared = re.compile(r"^(?:alignas\(\d+\)\s+)?(?:[A-Za-z_][\w:<>]*[*&]?\s+)+"
                          r"([A-Za-z_]\w*)\s*(?:\[|=|\(|;|\{)", re.M)
    names = set(declared.findall(text)) | set(re.findall(r"^using (\w+)", text, re.M))
    names |= {*re.search(r"main\(int (\w+), char\*\* (\w+)\)", text).groups(), "model"}
    assert {"g_arena", "g_frame", "kArenaBytes", "ReadFrame", "RegisterModelOps"} <= names
    for name in names:
        with pytest.raises(ConfigError, match="c_array_name"):
            validate_config(_with_name(tmp_path, name))
