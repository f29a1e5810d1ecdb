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
PRECISIONS = ("fp32", "fp16", "int8", "mixed")  # cfnsr.precision: exactly these (case matters: gates key on them)
DTYPES = ("float32", "float16", "uint8", "int8", "int32", "int64")
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


def validate_metadata(meta, where, graph_inputs=None) -> dict:
    """The one check of an artifact's ``cfnsr.*`` metadata, run where the artifact is opened (every runner, every
    command): schema not newer than this cfnsr reads, precision from ``PRECISIONS`` only, an ``inputs`` entry with
    the features or media input names, each with a shape and a dtype, labels a list of as many names as the logits
    have, preprocess values in range; and, given the graph's real inputs as ``{name: (shape, dtype)}`` (a str or
    None axis is dynamic), that they are the ones the metadata names, shape for shape and dtype for dtype.

    Returns ``meta``; raises ArtifactError naming the artifact and the entry."""
    def fail(what):
        return ArtifactError(f"{where}: {what}")

    if not isinstance(meta, dict) or not meta:
        raise fail("no cfnsr metadata (cfnsr.* entries): it was not written by `cfnsr export`")
    schema = meta.get("schema", METADATA_SCHEMA)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise fail(f"cfnsr.schema {schema!r} is not a metadata schema number")
    if schema > METADATA_SCHEMA:
        raise fail(f"cfnsr.schema {schema} is newer than this cfnsr reads ({METADATA_SCHEMA}): upgrade cfnsr to run it")
    precision = meta.get("precision")
    if precision not in PRECISIONS:
        raise fail(f"cfnsr.precision {precision!r} is not one of {', '.join(PRECISIONS)} (lower case)")
    inputs = meta.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise fail("no cfnsr.inputs entry (the names, shapes and dtypes of its tensors): re-export it")
    entries = {}
    for i, t in enumerate(inputs):
        ok = (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("shape"), list)
              and t.get("kind", "input") in ("input", "output") and t.get("dtype", "float32") in DTYPES
              and all((isinstance(d, int) and not isinstance(d, bool) and d >= 0) or isinstance(d, str)
                      for d in t["shape"]))
        if not ok:
            raise fail(f"cfnsr.inputs entry {i} ({t!r:.80}) is not a tensor (name, kind, shape, dtype)")
        entries[(t.get("kind", "input"), t["name"])] = t
    names = tuple(n for k, n in entries if k == "input")
    if sorted(names) not in (sorted(INPUT_NAMES), sorted(MEDIA_INPUT_NAMES)):
        raise fail(f"cfnsr.inputs names inputs {list(names)}; a cfnsr artifact takes {list(INPUT_NAMES)} (features) "
                   f"or {list(MEDIA_INPUT_NAMES)} (media)")
    out = entries.get(("output", OUTPUT_NAME))
    classes = out["shape"][-1] if out and out["shape"] and isinstance(out["shape"][-1], int) else len(EMOTIONS)
    labels = meta.get("labels", list(EMOTIONS))
    if not (isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)
            and len(set(labels)) == len(labels)):
        raise fail(f"cfnsr.labels {labels!r:.80} is not a list of distinct names")
    if len(labels) != classes:
        raise fail(f"cfnsr.labels names {len(labels)} classes and the logits have {classes}")
    preprocess = meta.get("preprocess")
    if preprocess:
        from .data.spec import PreprocessSpec
        from .errors import CfnsrError

        try:
            PreprocessSpec.from_dict(preprocess)
        except (CfnsrError, TypeError, ValueError) as e:
            raise fail(f"its cfnsr.preprocess entry is not a valid preprocessing spec ({e})") from e
    if graph_inputs is not None:
        _match_graph(entries, graph_inputs, fail)
    return meta


def _match_graph(entries: dict, graph_inputs: dict, fail) -> None:
    declared = {n: t for (k, n), t in entries.items() if k == "input"}
    if set(declared) != set(graph_inputs):
        raise fail(f"the graph's inputs are {sorted(graph_inputs)}, its cfnsr.inputs metadata says {sorted(declared)}")
    for name, t in declared.items():
        shape, dtype = graph_inputs[name]
        fixed = lambda dims: [d if isinstance(d, int) and d > 0 else None for d in dims]  # noqa: E731
        if len(shape) != len(t["shape"]) or any(a is not None and b is not None and a != b
                                                for a, b in zip(fixed(shape), fixed(t["shape"]))):
            raise fail(f"input {name!r}: the graph takes shape {list(shape)}, the metadata says {t['shape']}")
        if dtype is not None and dtype != t.get("dtype", "float32"):
            raise fail(f"input {name!r}: the graph takes {dtype}, the metadata says {t.get('dtype', 'float32')}")


def onnx_graph_inputs(model) -> dict:
    """``{name: (shape, dtype)}`` of an ``onnx.ModelProto``'s real inputs (initializers excluded)."""
    import onnx

    inits = {i.name for i in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else None
        out[i.name] = (dims, dtype)
    return out


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


def read_metadata(path_or_model, validate: bool = False) -> dict:
    """The ``cfnsr.*`` metadata of an artifact, JSON values decoded, whatever its kind: an ONNX file (or a loaded
    ``onnx.ModelProto``), an AOTInductor ``.pt2`` package, or a TensorRT engine (read from its sidecar).

    ``validate``: run ``validate_metadata`` on it (for an ONNX file against the graph's real inputs too), as every
    runner does when it opens an artifact."""
    if not isinstance(path_or_model, (str, Path)):  # an onnx.ModelProto
        return decode_metadata((p.key, p.value) for p in path_or_model.metadata_props)
    path = Path(path_or_model)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".engine", ".plan"):
        meta = read_sidecar(path)["cfnsr"]
        return validate_metadata(meta, path) if validate else meta
    if suffix == ".pt2":
        meta = read_package(path)
        return validate_metadata(meta, path) if validate else meta
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ArtifactError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e})") from e
    meta = decode_metadata((p.key, p.value) for p in model.metadata_props)
    return validate_metadata(meta, path, onnx_graph_inputs(model)) if validate else meta


def read_package(path: Path) -> dict:
    """The metadata of an AOTInductor package, after checking the archive is whole: readable, every member's CRC
    right, a compiled model (``.so``) and its metadata present. Checked before torch extracts anything."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            meta_name = next((n for n in names if n.endswith("_metadata.json")), None)
            if meta_name is None:
                raise ArtifactError(f"{path} is an archive without AOTInductor metadata (was it written by "
                                    "`cfnsr export --format pt2`?)")
            if not any(n.endswith((".so", ".pyd", ".dll", ".dylib")) for n in names):
                raise ArtifactError(f"{path} lacks its compiled model (no .so member): the package is incomplete; "
                                    "export it again")
            broken = z.testzip()
            if broken is not None:
                raise ArtifactError(f"{path}: member {broken} is corrupt (CRC mismatch); export it again")
            return package_metadata(json.loads(z.read(meta_name)))
    except (zipfile.BadZipFile, json.JSONDecodeError, EOFError, OSError) as e:
        raise ArtifactError(f"{path} is not a readable AOTInductor package ({e})") from e
