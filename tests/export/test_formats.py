"""Each export choice exists once: click's choices and defaults, the option checks and the README's table all read
``cfnsr.export.formats``."""

from pathlib import Path

import click

from cfnsr.cli import main
from cfnsr.export import formats

README = Path(__file__).resolve().parents[2] / "README.md"
# click's parameter name -> ExportOptions field
PARAMS = {"precision": "precision", "fmt": "fmt", "calib_method": "calib_method", "int8_scope": "int8_scope",
          "high_precision": "high_precision", "inputs": "inputs"}


def _params(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in main.commands[command].params}


def test_click_choices_and_defaults_are_the_formats_table():
    from cfnsr.export.pipeline import ExportOptions

    params, defaults = _params("export"), ExportOptions()
    assert set(PARAMS.values()) == set(formats.CHOICES)
    for name, field in PARAMS.items():
        assert tuple(params[name].type.choices) == tuple(formats.CHOICES[field]), name
        assert params[name].default == getattr(defaults, field), name  # "given" is judged against the default
    assert tuple(_params("validate")["precision"].type.choices) == formats.PRECISIONS
    assert formats.FORMAT_CHOICES == (*formats.FORMATS, "auto")


def test_every_choice_a_route_needs_is_known_downstream():
    from cfnsr.artifact import INPUT_KINDS
    from cfnsr.export.pipeline import ROUTES

    assert {f.route for f in formats.FORMATS.values()} == set(ROUTES)
    assert formats.CHOICES["inputs"] == INPUT_KINDS
    assert set(formats.NARROWER_SCOPE) == set(formats.INT8_SCOPES)
    assert {v for v in formats.NARROWER_SCOPE.values() if v} <= set(formats.INT8_SCOPES)
    for name, f in formats.FORMATS.items():
        assert set(f.options) <= set(formats.OPTION_FLAGS), name
        assert set(f.precisions) <= set(formats.PRECISIONS), name


def test_readme_table_is_the_formats_table():
    assert formats.markdown_table() in README.read_text()


def test_config_names_come_from_the_model_registry(tmp_path):
    from click.testing import CliRunner

    from cfnsr.model.config import _REGISTRY, list_configs

    assert list_configs() == sorted(_REGISTRY)
    res = CliRunner().invoke(main, ["preprocess", str(tmp_path), "-o", str(tmp_path / "c"), "--config", "nope"])
    assert res.exit_code == 2 and all(name in res.output for name in list_configs())
