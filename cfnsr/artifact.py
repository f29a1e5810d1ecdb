"""What every cfnsr artifact says about itself, and reading it back whatever the artifact's kind.

The bottom layer shared by export (which writes artifacts) and the runtimes (which read them): the labels, the
``cfnsr.*`` metadata codec and its schema number, the ``inputs`` entry (names, shapes, dtypes, layouts of the
tensors), and ``read_metadata(path)`` for ONNX files, AOTInductor packages and TensorRT engines (their sidecar).
It imports neither torch nor any backend.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .errors import ArtifactError

# The eight RAVDESS emotions in label-id order (file-name code minus one).
EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

META_PREFIX = "cfnsr."
# Version of the metadata contract; runtimes (the C++ one too) refuse a schema newer than they read.
METADATA_SCHEMA = 1

INPUT_NAMES = ("video", "audio")  # a features artifact (the default, --inputs features)
MEDIA_INPUT_NAMES = ("frames", "pcm")  # a media artifact (--inputs media): the front end is in the graph
INPUT_KINDS = ("features", "media")  # cfnsr.input_kind; what an artifact without the entry is: the first
OUTPUT_NAME = "logits"
SIDECAR_FORMAT = "cfnsr-engine"  # the JSON beside a TensorRT engine (engines are raw plans, for trtexec and C++)
LAYOUTS = {"video": "NCTHW", "audio": "NCL (MFCC bins x frames)", OUTPUT_NAME: "NK (RAVDESS emotion ids)",
           "frames": "NTHWC (uint8 RGB face crops)", "pcm": "NL (mono float32 at the spec's rate, offset and duration)"}


def input_kind(metadata: dict, source: str = "the artifact") -> str:
    """What an artifact takes, from its ``cfnsr.input_kind`` entry (one without the entry takes features): "media"
    (uint8 face crops + PCM, the front end in the graph) or "features" (normalised video + MFCC). A kind this cfnsr
    does not know is refused, naming ``source``, as the C++ runtime refuses it."""
    kind = metadata.get("input_kind", INPUT_KINDS[0])
    if kind not in INPUT_KINDS:
        raise ArtifactError(f"{source}: input kind {kind!r} (written by a newer cfnsr?); this cfnsr reads "
                            f"{', '.join(INPUT_KINDS)}")
    return kind


def input_names(kind: str) -> tuple[str, ...]:
    """The graph inputs of an artifact of ``kind``, in the order its runners and the C++ runtime list them."""
    return MEDIA_INPUT_NAMES if kind == "media" else INPUT_NAMES


def tensor_entry(name: str, kind: str, shape: list, dtype: str = "float32") -> dict:
    """One tensor of the ``inputs`` metadata entry (``kind`` input or output; a str axis is dynamic)."""
    return {"name": name, "kind": kind, "shape": list(shape), "dtype": dtype, "layout": LAYOUTS.get(name, "")}


def encode_metadata(entries: dict) -> dict[str, str]:
    """``cfnsr.*`` string entries (values JSON-encoded unless already strings): ONNX metadata_props, pt2 package
    metadata and the engine sidecar carry the same ones."""
    return {META_PREFIX + k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in entries.items()}


def decode_metadata(pairs) -> dict:
    """The ``cfnsr.*`` entries of (key, value) string pairs, prefix dropped and JSON values decoded."""
    out = {}
    for key, value in pairs:
        if key.startswith(META_PREFIX):
            try:
                out[key[len(META_PREFIX):]] = json.loads(value)
            except json.JSONDecodeError:
                out[key[len(META_PREFIX):]] = value
    return out


def base_metadata(inputs: list[dict], precision: str, preprocess: dict, source_sha256: str) -> dict:
    """The metadata every artifact carries (contract): schema, version, precision, labels, inputs, preprocess,
    source_sha256 (and calibration for int8, added by the exporter)."""
    from . import __version__

    return {"schema": METADATA_SCHEMA, "version": __version__, "precision": precision, "labels": list(EMOTIONS),
            "inputs": inputs, "preprocess": preprocess, "source_sha256": source_sha256}


def package_metadata(entries: dict[str, str]) -> dict:
    """``cfnsr.*`` entries of an AOTInductor package's metadata, decoded, plus torch's own ``AOTI_*`` entries."""
    out = decode_metadata(entries.items())
    out["aoti"] = {k: v for k, v in entries.items() if k.startswith("AOTI_")}
    if "inputs" not in out:
        raise ArtifactError("the package carries no cfnsr metadata (was it written by `cfnsr export --format pt2`?)")
    return out


def sidecar_path(engine) -> Path:
    return Path(str(engine) + ".json")


def read_sidecar(engine: Path) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise ArtifactError(f"{engine} has no sidecar {path.name}: build it with `cfnsr build` (the sidecar records "
                            "the TensorRT version and GPU it was built for)")
    try:
        side = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
        raise ArtifactError(f"{path} is not a cfnsr engine sidecar")
    missing = [k for k in ("tensorrt_version", "gpu", "compute_capability", "profile", "cfnsr") if k not in side]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}: rebuild the engine with `cfnsr build`")
    return side


def read_metadata(path_or_model) -> dict:
    """The ``cfnsr.*`` metadata of an artifact, JSON values decoded, whatever its kind: an ONNX file (or a loaded
    ``onnx.ModelProto``), an AOTInductor ``.pt2`` package, or a TensorRT engine (read from its sidecar)."""
    if not isinstance(path_or_model, (str, Path)):  # an onnx.ModelProto
        return decode_metadata((p.key, p.value) for p in path_or_model.metadata_props)
    path = Path(path_or_model)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".engine", ".plan"):
        return read_sidecar(path)["cfnsr"]
    if suffix == ".pt2":
        try:
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("_metadata.json")), None)
                if name is None:
                    raise ArtifactError(f"{path} is an archive without AOTInductor metadata")
                return package_metadata(json.loads(z.read(name)))
        except (zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise ArtifactError(f"{path} is not a readable AOTInductor package ({e})") from e
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ArtifactError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e})") from e
    return decode_metadata((p.key, p.value) for p in model.metadata_props)
