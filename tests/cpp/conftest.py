"""The C++ runtime built once per session: configured (AOTInductor and media AUTO), built, installed into a prefix,
and the examples built against that install as an application would build them."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from cpptools import CPP, generator, step, unavailable


@pytest.fixture(scope="session")
def cpp(tmp_path_factory):
    """cfnsr_runtime (and cfnsr_media where FFmpeg, libsoxr and OpenCV are found) built and installed into a prefix,
    and the examples built against that install."""
    import torch

    missing = [t for t in ("cmake", "cc", "c++") if shutil.which(t) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not found")
    root = tmp_path_factory.mktemp("cpp")
    build, prefix, app = root / "build", root / "prefix", root / "app"
    # AUTO, not ON: a libtorch without the AOTInductor package loader (JetPack 6.1's torch 2.5.0a0) still builds
    # the runtime, and the .pt2 tests then skip with the reason instead of failing the configure step; likewise a
    # machine without FFmpeg/libsoxr/OpenCV builds the runtime without its media component.
    configured = step(["cmake", "-S", CPP, "-B", build, *generator(), "-DCMAKE_BUILD_TYPE=Release",
                       "-DCFNSR_WITH_AOTI=AUTO", "-DCFNSR_WITH_MEDIA=AUTO",
                       f"-DCFNSR_TORCH_ROOT={Path(torch.__file__).parent}", "-DCFNSR_BUILD_EXAMPLES=OFF"], "configure")
    out = configured.stdout.splitlines()
    backends = next((line.split("backends:", 1)[1].split() for line in out
                     if "cfnsr_runtime" in line and "backends:" in line), [])
    step(["cmake", "--build", build, "-j", "2"], "build")
    step(["cmake", "--install", build, "--prefix", prefix], "install")
    # The examples as an application builds them: its own project, find_package(cfnsr_runtime) from the prefix.
    step(["cmake", "-S", CPP / "examples", "-B", app, *generator(), f"-DCMAKE_PREFIX_PATH={prefix}"],
         "configure example")
    step(["cmake", "--build", app], "build example")
    libs = sorted(prefix.glob("lib*/libcfnsr_runtime.so*")) + sorted(prefix.glob("lib*/*/libcfnsr_runtime.so*"))
    assert libs, f"no libcfnsr_runtime.so installed under {prefix}"
    assert (prefix / "include" / "cfnsr" / "cfnsr.h").is_file()
    why = next((line.split("cfnsr_runtime: ", 1)[1] for line in out
                if "AOTInductor headers not found" in line or "has no lib" in line), "libtorch was not usable")
    media = any("cfnsr_runtime: media component" in line for line in out)
    no_media = next((line.split("cfnsr_runtime: ", 1)[1] for line in out if "no media component" in line),
                    "the media component was not built")
    return SimpleNamespace(build=build, prefix=prefix, lib=libs[0], infer=app / "cfnsr_infer",
                           c_check=build / "cfnsr_c_check",
                           aoti="aoti" in backends, no_aoti_reason=f"built without the AOTInductor backend: {why}",
                           media=media, no_media_reason=no_media, predict=app / "cfnsr_predict",
                           media_check=build / "cfnsr_media_check")


@pytest.fixture
def aoti(cpp):
    """The runtime's libtorch backend; the .pt2 tests skip, with the reason, where libtorch lacks the loader."""
    if not cpp.aoti:
        pytest.skip(cpp.no_aoti_reason)
    return cpp


@pytest.fixture
def media(aoti):
    """The media component (and the .pt2 backend its tests run on); skipped with the reason where FFmpeg, libsoxr or
    OpenCV are missing, a failure where CFNSR_REQUIRE_CPP=1 (CI installs them with scripts/setup.sh)."""
    if not aoti.media:
        unavailable(aoti.no_media_reason)
    return aoti
