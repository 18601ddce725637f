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
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.resolve(tmp_path / "nope.toml")


def test_reference_lists_every_option():
    text = config.markdown_reference()
    for section, opts in config.OPTIONS.items():
        assert f"[{section}]" in text
        for key in opts:
            assert f"`{key}`" in text
