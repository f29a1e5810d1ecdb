import json
import subprocess
import sys

from click.testing import CliRunner

from cfnsr import __version__
from cfnsr.cli import main
from cfnsr.sysinfo import probe_backends


def test_help_imports_no_heavy_backend():
    code = (
        "import sys\n"
        "from cfnsr.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('tensorrt', 'openvino', 'onnxruntime', 'torch') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "export" in out or "Commands" in out


def test_version():
    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_info_reports_a_missing_backend_with_the_extra_to_install():
    import importlib

    def fake_import(name):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return importlib.import_module(name)

    backends = {b.name: b for b in probe_backends(fake_import)}
    assert backends["torch"].usable and backends["onnxruntime"].usable
    assert not backends["openvino"].usable
    assert "pip install 'cfnsr[openvino]'" in backends["openvino"].detail
    assert backends["aoti"].usable and "CPU packages target" in backends["aoti"].detail


def test_cli_backend_choices_match_the_engines_table():
    from cfnsr.cli import BACKEND_CHOICE
    from cfnsr.engines import BACKENDS

    assert list(BACKEND_CHOICE.choices) == list(BACKENDS)


def test_info_cli_json():
    res = CliRunner().invoke(main, ["info", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    names = [b["name"] for b in report["backends"]]
    assert names == ["torch", "onnxruntime", "tensorrt", "openvino", "aoti"]
    for b in report["backends"]:
        assert isinstance(b["usable"], bool) and b["detail"]  # a version when usable, the reason when not


def test_summary_paper_configuration():
    res = CliRunner().invoke(main, ["summary", "cfn-sr"])
    assert res.exit_code == 0, res.output
    assert "26,301,417" in res.output
    assert "113.2 GFLOPs" in res.output


def test_summary_unknown_model():
    res = CliRunner().invoke(main, ["summary", "nothing-like-this"])
    assert res.exit_code == 1 and "neither a configuration" in res.output
