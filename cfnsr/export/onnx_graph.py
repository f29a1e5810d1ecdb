"""fp32 ONNX export, metadata, and the small graph queries the other steps share."""

from __future__ import annotations

import logging
import os
import warnings

import onnx
import torch

from ..artifact import (  # noqa: F401  (re-exported: the export layer's view of the artifact layer)
    INPUT_NAMES,
    MEDIA_INPUT_NAMES,
    META_PREFIX,
    METADATA_SCHEMA,
    OUTPUT_NAME,
    base_metadata,
    decode_metadata,
    encode_metadata,
    read_metadata,
    tensor_entry,
)
from ..errors import ArtifactError
from ..model.network import CFNSR

OPSET = 18


def export_fp32(model: CFNSR, path: str | os.PathLike, media_spec=None) -> onnx.ModelProto:
    """``torch.onnx.export(dynamo=True)``, opset 18, dynamic batch axis.

    ``media_spec``: ``model`` is a ``frontend.MediaModel`` taking ``frames``/``pcm`` (this spec's shapes) instead
    of ``video``/``audio`` features. The example batch is 2: with a batch-1 example the exporter specialises the
    batch axis to 1.
    """
    from ..model.summary import example_inputs

    model = model.eval()
    if media_spec is not None:
        from .frontend import media_example_inputs

        example, names = media_example_inputs(media_spec, batch=2), list(MEDIA_INPUT_NAMES)
    else:
        example = example_inputs(model.config, batch=2, generator=torch.Generator().manual_seed(0))
        names = list(INPUT_NAMES)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter logs a warning per torchvision op it cannot register; cfnsr uses none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, tuple(example), dynamo=True, opset_version=OPSET, input_names=names,
            output_names=[OUTPUT_NAME], dynamic_shapes={n: {0: batch} for n in _forward_args(model)}, verbose=False,
        )
    program.save(str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    for value in list(proto.graph.input) + list(proto.graph.output):
        first = value.type.tensor_type.shape.dim[0]
        if first.dim_value:
            raise ArtifactError(f"export left the batch axis of {value.name!r} fixed at {first.dim_value}")
    return proto


def _forward_args(model) -> list[str]:
    import inspect

    return list(inspect.signature(model.forward).parameters)


def input_spec(model: onnx.ModelProto) -> list[dict]:
    """The ``inputs`` metadata entry of a graph: name, shape (strings for symbolic axes), dtype and layout of each
    graph input and output."""
    out = []
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            t = v.type.tensor_type
            out.append(tensor_entry(v.name, kind, [d.dim_param or d.dim_value for d in t.shape.dim],
                                    onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
    return out


def set_metadata(model: onnx.ModelProto, **entries) -> None:
    """Write ``cfnsr.*`` metadata_props (values are JSON-encoded unless already strings)."""
    existing = {p.key: p for p in model.metadata_props}
    for full, text in encode_metadata(entries).items():
        if full in existing:
            existing[full].value = text
        else:
            model.metadata_props.append(onnx.StringStringEntryProto(key=full, value=text))


def attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of ``node``'s attribute ``name``, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def reachable_from(model: onnx.ModelProto, tensor: str) -> set[str]:
    """Names of the nodes downstream of ``tensor``."""
    cons = consumers(model)
    seen, stack = set(), [tensor]
    while stack:
        for node in cons.get(stack.pop(), []):
            if node.name not in seen:
                seen.add(node.name)
                stack.extend(node.output)
    return seen


def constant_arrays(model: onnx.ModelProto):
    """(name, array) of every initializer and Constant-node value."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        yield init.name, numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    yield node.output[0], numpy_helper.to_array(a.t)


def topological_sort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Graph rewriters (ORT's quantizer and fp16 converter) append nodes out of order; ONNX wants them sorted."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    wrapped = ONNXModel(model)
    wrapped.topological_sort()
    return wrapped.model
