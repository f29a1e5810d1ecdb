"""fp32 ONNX export, metadata, and the small graph queries the other steps share."""

from __future__ import annotations

import logging
import os
import warnings

import onnx
import torch

from ..artifact import INPUT_NAMES, OUTPUT_NAME, encode_metadata, tensor_entry
from ..errors import ArtifactError

OPSET = 18


def torch_to_onnx(module: torch.nn.Module, example: tuple, input_names: list[str], output_names: list[str],
                  opset: int = OPSET) -> onnx.ModelProto:
    """``module`` (eval mode) through ``torch.onnx.export(dynamo=True)`` at ``opset``, the first axis of every input
    dynamic: the one torch -> ONNX step of the network and of the media front end.

    The example batch must be 2 or more: with a batch-1 example the exporter specialises the batch axis to 1.
    """
    import inspect
    from pathlib import Path

    from ..fileio import temp_dir

    batch = torch.export.Dim("batch", min=1, max=4096)
    args = list(inspect.signature(module.forward).parameters)
    # The exporter logs a warning per torchvision op it cannot register; cfnsr uses none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with temp_dir("onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(), tuple(example), dynamo=True, opset_version=opset, input_names=input_names,
            output_names=output_names, dynamic_shapes={n: {0: batch} for n in args}, verbose=False,
        )
        path = Path(tmp) / "model.onnx"
        program.save(str(path))
        return onnx.load(str(path))


def export_fp32(model: torch.nn.Module, path: str | os.PathLike) -> onnx.ModelProto:
    """The CFN-SR network as fp32 ONNX (opset 18, dynamic batch axis), saved at ``path`` (the calibrator and the
    divergence report read the file), then checked and returned shape-inferred."""
    from ..model.summary import example_inputs

    example = example_inputs(model.config, batch=2, generator=torch.Generator().manual_seed(0))
    proto = torch_to_onnx(model, example, list(INPUT_NAMES), [OUTPUT_NAME])
    onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    for value in list(proto.graph.input) + list(proto.graph.output):
        first = value.type.tensor_type.shape.dim[0]
        if first.dim_value:
            raise ArtifactError(f"export left the batch axis of {value.name!r} fixed at {first.dim_value}")
    return proto


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


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """The node that writes each tensor."""
    return {o: n for n in model.graph.node for o in n.output}


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
