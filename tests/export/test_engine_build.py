"""The TensorRT build and run path as far as it runs without TensorRT: the Polygraphy loaders and config we
construct, the device-keyed timing cache, the sidecar checks and the DLA refusal.

Polygraphy imports TensorRT lazily, on a loader's call; the few TensorRT enums our config needs come from a stand-in
module here, so what is checked is the objects cfnsr builds, not TensorRT.
"""

import enum
import sys
import types

import pytest
from click.testing import CliRunner

from cfnsr.cli import main
from cfnsr.errors import ArtifactError, CfnsrError
from cfnsr.export import engine as engine_mod
from cfnsr.export.engine import BuildOptions

pytest.importorskip("polygraphy")

SHAPES = {"video": (3, 20, 64, 64), "audio": (13, 212)}


@pytest.fixture
def trt_enums(monkeypatch):
    """A stand-in ``tensorrt`` with only the enums cfnsr's config passes to Polygraphy (when TensorRT is absent)."""
    try:
        import tensorrt  # noqa: F401
        return
    except ImportError:
        pass
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0"
    fake.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    fake.HardwareCompatibilityLevel = enum.Enum("HardwareCompatibilityLevel", "NONE AMPERE_PLUS")
    fake.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", "LAYER_NAMES_ONLY NONE DETAILED")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)


def test_network_loader_is_strongly_typed(tmp_path):
    loader = engine_mod.network_loader(tmp_path / "m.int8.onnx")
    assert type(loader).__name__ == "NetworkFromOnnxPath"
    assert loader.strongly_typed is True and loader.path == str(tmp_path / "m.int8.onnx")


def test_config_has_the_batch_profile_workspace_and_no_precision_flags(trt_enums):
    import tensorrt as trt

    cfg = engine_mod.config_loader(SHAPES, BuildOptions(batch=(1, 4, 16), workspace_mb=512))
    assert type(cfg).__name__ == "CreateConfig"
    (profile,) = cfg.profiles
    assert tuple(profile["video"].min) == (1, 3, 20, 64, 64) and tuple(profile["video"].opt) == (4, 3, 20, 64, 64)
    assert tuple(profile["audio"].max) == (16, 13, 212)
    assert cfg.memory_pool_limits == {trt.MemoryPoolType.WORKSPACE: 512 << 20}
    # Strongly typed: the precision is in the graph, never in builder flags.
    assert not (cfg.fp16 or cfg.int8 or cfg.bf16 or cfg.fp8 or cfg.tf32) and cfg.calibrator is None
    assert not cfg.version_compatible and cfg.hardware_compatibility_level is None
    compat = engine_mod.config_loader(SHAPES, BuildOptions(version_compatible=True, hardware_compatible=True))
    assert compat.version_compatible
    assert compat.hardware_compatibility_level == trt.HardwareCompatibilityLevel.AMPERE_PLUS


def test_profile_refuses_other_dynamic_axes(trt_enums):
    with pytest.raises(ArtifactError, match="input video has dynamic axes besides the batch"):
        engine_mod.batch_profile({"video": (3, "T", 64, 64)}, (1, 1, 8))


def test_build_options_are_checked_and_dla_is_refused():
    with pytest.raises(CfnsrError, match="need 1 <= min <= opt <= max"):
        BuildOptions(batch=(4, 2, 8))
    with pytest.raises(CfnsrError, match="cfnsr does not build DLA engines.*Q/DQ"):
        BuildOptions(dla_core=0)
    # The CLI refuses before any TensorRT is needed, with one line and no traceback.
    res = CliRunner().invoke(main, ["build", "m.int8.onnx", "--dla-core", "0"])
    assert res.exit_code != 0 and "cfnsr does not build DLA engines" in res.output and "Traceback" not in res.output


def test_timing_cache_is_keyed_by_device_and_a_refused_one_is_not_used(tmp_path):
    a = engine_mod.timing_cache_file(tmp_path, {"gpu": "Orin (nvgpu)", "compute_capability": "8.7"}, "10.3.0.30")
    h100 = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    b = engine_mod.timing_cache_file(tmp_path, h100, "10.3.0.30")
    c = engine_mod.timing_cache_file(tmp_path, {"gpu": "Orin (nvgpu)", "compute_capability": "8.7"}, "10.16.0")
    assert len({a, b, c}) == 3 and a.name == "timing-orin-nvgpu-sm87-trt10.3.0.30.cache"

    class Config:  # IBuilderConfig's timing-cache surface
        def __init__(self, accept):
            self.accept, self.set = accept, []

        def create_timing_cache(self, blob):
            return ("cache", blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            assert ignore_mismatch is False  # never merge a cache from another device
            self.set.append(cache)
            return self.accept or cache[1] == b""

    a.write_bytes(b"from another device")
    logs = []
    refused = Config(accept=False)
    engine_mod._apply_timing_cache(refused, a, logs.append)
    assert refused.set == [("cache", b"from another device"), ("cache", b"")]  # replaced by an empty cache
    assert logs and "TensorRT refused the timing cache" in logs[0]
    taken = Config(accept=True)
    engine_mod._apply_timing_cache(taken, a, logs.append)
    assert taken.set == [("cache", b"from another device")] and len(logs) == 1
    engine_mod._apply_timing_cache(Config(True), tmp_path / "absent.cache", logs.append)  # none yet: nothing to do


def test_version_compatible_engines_run_forward_only(tmp_path):
    from cfnsr.engines.tensorrt import check_compatible

    here = {"gpu": "Orin", "compute_capability": "8.7"}
    side = {"tensorrt_version": "10.13.0", "gpu": "Orin", "compute_capability": "8.7", "version_compatible": True,
            "source_onnx": "m.onnx"}
    engine = tmp_path / "m.engine"
    check_compatible(side, engine, "10.13.0", here)
    check_compatible(side, engine, "10.16.1", here)  # newer TensorRT of the same major: fine
    with pytest.raises(ArtifactError, match=r"runs on that or a newer TensorRT 10\.x only; this is TensorRT 10\.3"):
        check_compatible(side, engine, "10.3.0", here)  # older: refused (it skipped every check before)
    with pytest.raises(ArtifactError, match="this is TensorRT 11.4.0"):
        check_compatible(side, engine, "11.4.0", here)  # another major
    with pytest.raises(ArtifactError, match="built for DLA"):
        check_compatible({**side, "dla_core": 0}, engine, "10.13.0", here)


def test_sidecar_without_required_fields_is_refused(tmp_path):
    from cfnsr.artifact import read_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "m.engine.json").write_text('{"format": "cfnsr-engine", "gpu": "Orin"}')
    with pytest.raises(ArtifactError, match="lacks tensorrt_version, compute_capability, profile, cfnsr"):
        read_sidecar(engine)
