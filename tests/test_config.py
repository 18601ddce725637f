from __future__ import annotations

import pytest

from beckmann import config


def test_layers_and_types(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[mesh]\nn = 10\n[solver]\ndegree = 3\nrtol = 1\n')
    cfg = config.resolve(f, ["mesh.n=12", 'target.expr="1 + x"'])
    assert cfg["mesh"]["n"] == 12  # command line beats file
    assert cfg["solver"]["degree"] == 3  # file beats default
    assert cfg["solver"]["rtol"] == 1.0 and isinstance(cfg["solver"]["rtol"], float)
    assert cfg["target"]["expr"] == "1 + x"
    assert cfg["output"]["times"] == config.OPTIONS["output"]["times"].default


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[mesh]\nm = 3\n", "unknown config key mesh.m"),
        ("[meshes]\nn = 3\n", r"unknown config section \[meshes\]"),
        ("[mesh]\nn = 'a'\n", "mesh.n must be of type int"),
        ("[mesh]\nkind = 'torus'\n", "is not one of"),
        ("[mesh\n", "not valid TOML"),
    ],
)
def test_bad_configs(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(config.ConfigError, match=match):
        config.resolve(f)


def test_bad_set_and_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="section.key=value"):
        config.resolve(sets=["meshn3"])
    with pytest.raises(ValueError, match="config file .*nope.toml' does not exist"):
        config.resolve(tmp_path / "nope.toml")


def test_reference_lists_every_option():
    text = config.markdown_reference()
    for section, opts in config.OPTIONS.items():
        assert f"[{section}]" in text
        for key in opts:
            assert f"`{key}`" in text


def test_toml_round_trip_keeps_infinities_and_refuses_nan():
    import math
    import tomllib

    from beckmann.store import toml_dumps

    cfg = config.resolve(sets=["mesh.n=7", "target.params={a=-inf}"])
    cfg["output"]["times"] = [0.0, 1.0]
    back = tomllib.loads(toml_dumps(cfg))
    assert back == cfg and back["target"]["params"]["a"] == -math.inf
    cfg["source"]["floor"] = math.nan
    with pytest.raises(ValueError, match="round trip"):
        toml_dumps(cfg)
    with pytest.raises(ValueError, match="TOML"):
        toml_dumps({"a": {"b": None}})


def test_strict_json():
    import json

    import numpy as np

    from beckmann.store import dumps_json, jsonable

    data = {"a": np.float64(np.nan), "b": [np.inf, -np.inf, 1.5], "c": np.arange(2), "d": (1, 2)}
    assert jsonable(data) == {"a": None, "b": [None, None, 1.5], "c": [0, 1], "d": [1, 2]}
    text = dumps_json(data)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["b"] == [None, None, 1.5]


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("source.min_density=-1", r"source\.min_density must be >= 0, got -1\.0"),
        ("target.min_density=-inf", r"target\.min_density must be a finite number"),
        ("mesh.h=nan", r"mesh\.h must be a finite number, got nan"),
        ("solver.rtol=inf", r"solver\.rtol must be a finite number"),
    ],
)
def test_out_of_range_values_name_the_option(item, fragment):
    with pytest.raises(config.ConfigError, match=fragment):
        config.resolve(sets=[item])
