"""One validator per artifact kind: the metadata every cfnsr artifact carries, and cfnsr checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch

from cfnsr.artifact import EMOTIONS, METADATA_SCHEMA, tensor_entry, validate_metadata
from cfnsr.data.spec import PreprocessSpec
from cfnsr.errors import ArtifactError, CheckpointError

SPEC = PreprocessSpec(frames=20, image_size=64)
META = {"schema": METADATA_SCHEMA, "version": "0", "precision": "fp32", "labels": list(EMOTIONS),
        "inputs": [tensor_entry("video", "input", ["batch", 3, 20, 64, 64]),
                   tensor_entry("audio", "input", ["batch", 13, 212]),
                   tensor_entry("logits", "output", ["batch", 8])],
        "preprocess": SPEC.to_dict(), "source_sha256": "0" * 64}
GRAPH = {"video": (["batch", 3, 20, 64, 64], "float32"), "audio": ([None, 13, 212], "float32")}


def changed(**kw):
    m = copy.deepcopy(META)
    for k, v in kw.items():
        if v is None:
            m.pop(k)
        else:
            m[k] = v
    return m


def test_a_valid_artifact_passes_with_its_graph():
    assert validate_metadata(META, "m.onnx", GRAPH) is META


@pytest.mark.parametrize("meta, graph, message", [
    ({}, None, "no cfnsr metadata"),
    (changed(schema=METADATA_SCHEMA + 98), None, "newer than this cfnsr reads"),
    (changed(schema="1"), None, "is not a metadata schema number"),
    (changed(precision="FP32"), None, "cfnsr.precision 'FP32' is not one of fp32, fp16, int8, mixed"),
    (changed(precision=None), None, "cfnsr.precision None"),
    (changed(labels=["a", "b", "c"]), None, "names 3 classes and the logits have 8"),
    (changed(labels=[*EMOTIONS[:7], "neutral"]), None, "is not a list of distinct names"),
    (changed(labels="neutral,calm"), None, "is not a list of distinct names"),
    (changed(inputs=None), None, "no cfnsr.inputs entry"),
    (changed(inputs=[{"name": "video"}]), None, "is not a tensor"),
    (changed(inputs=[tensor_entry("x", "input", [1, 4])]), None, "a cfnsr artifact takes ['video', 'audio']"),
    (changed(preprocess={**SPEC.to_dict(), "frames": 0}), None, "preprocess frames is 0"),
    (changed(preprocess={**SPEC.to_dict(), "std": [0.2, 0.0, 0.2]}), None, "preprocess std"),
    (changed(preprocess={**SPEC.to_dict(), "audio_duration": -1.0}), None, "preprocess audio_duration"),
    (META, {"video": GRAPH["video"]}, "the graph's inputs are ['video']"),
    (META, {**GRAPH, "video": (["batch", 3, 20, 63, 64], "float32")}, "input 'video': the graph takes shape"),
    (META, {**GRAPH, "audio": (["batch", 13, 212], "float16")}, "input 'audio': the graph takes float16"),
])
def test_each_broken_entry_is_named(meta, graph, message):
    with pytest.raises(ArtifactError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate_metadata(meta, "m.onnx", graph)


@pytest.fixture
def ckpt(tiny_model, tmp_path):
    from cfnsr.model.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", tiny_model, preprocess=SPEC.to_dict(),
                           split={"protocol": "honest", "fold": 1, "folds": 4, "train": [5, 6, 7, 8], "val": [3, 4],
                                  "test": [1, 2]})
    return torch.load(path, weights_only=True)


def _model(ckpt: dict, tmp_path):
    """The network of a checkpoint dict, through the loader every command uses."""
    from cfnsr.model.checkpoint import Checkpoint

    torch.save(ckpt, tmp_path / "edited.pt")
    return Checkpoint.load(tmp_path / "edited.pt").model()


def test_a_valid_checkpoint_loads(ckpt, tmp_path):
    assert _model(ckpt, tmp_path).config.name == "cfn-sr-tiny"


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("state_dict"), "has no state_dict"),
    (lambda c: c.update(state_dict=[1, 2]), "has no state_dict .*it is a list"),
    (lambda c: c["state_dict"].update({next(iter(c["state_dict"])): "hello"}), "is a str, not a tensor"),
    (lambda c: c.update(format_version="1"), "format_version is '1', not an integer"),
    (lambda c: c.update(format_version=99), "format version 99; this cfnsr reads up to 1"),
    (lambda c: c.pop("model_config"), "has no model_config"),
    (lambda c: c.update(split={"protocol": "honest", "fold": 1}), "invalid split: the entry is incomplete"),
    (lambda c: c.update(split={**c["split"], "train": [1, 5]}), "training actors are also validation or test"),
    (lambda c: c.update(preprocess={**c["preprocess"], "frames": -3}), "invalid preprocess"),
    (lambda c: c["state_dict"].pop(next(iter(c["state_dict"]))), "missing keys"),
    (lambda c: c.update(state_dict={k: v.to(torch.int64) if v.is_floating_point() else v
                                    for k, v in c["state_dict"].items()}), "weights must be floating-point"),
])
def test_each_broken_checkpoint_entry_is_named(ckpt, change, message, tmp_path):
    change(ckpt)
    with pytest.raises(CheckpointError, match=message):
        _model(ckpt, tmp_path)


def test_engine_and_package_metadata_go_through_the_same_validator(tmp_path):
    import json
    import zipfile

    from cfnsr.artifact import SIDECAR_FORMAT, encode_metadata, read_metadata

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    side = {"format": SIDECAR_FORMAT, "tensorrt_version": "10.3", "gpu": "x", "compute_capability": "8.7",
            "profile": {}, "cfnsr": changed(schema=METADATA_SCHEMA + 1)}
    (tmp_path / "m.engine.json").write_text(json.dumps(side))
    assert read_metadata(engine)["schema"] == METADATA_SCHEMA + 1  # reading alone does not judge
    with pytest.raises(ArtifactError, match="m.engine: cfnsr.schema 2 is newer"):
        read_metadata(engine, validate=True)
    package = tmp_path / "m.pt2"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("m/data/aotinductor/model/x.so", b"\x7fELF")
        z.writestr("m/data/aotinductor/model/x_metadata.json", json.dumps(encode_metadata(changed(labels=["a"]))))
    with pytest.raises(ArtifactError, match="m.pt2: cfnsr.labels names 1 classes"):
        read_metadata(package, validate=True)
