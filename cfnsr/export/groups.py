"""Layer groups: the unit in which a precision is chosen, named from the network's structure.

A group is a part of CFN-SR as ``cfnsr/model/network.py`` writes it: the video ``stem``; per ResNeXt stage N the
``stageN.reduce`` (1x1x1), ``stageN.grouped`` (grouped 3x3x3), ``stageN.expand`` (1x1x1) and ``stageN.downsample``
(the projection shortcut) convolutions; the ``audio`` convolutions; the ``attention`` (the transformer over the audio
sequence: its projections and feed-forward layers); the ``fusion`` projections of the cross-modal attention; and the
``classifier``. Stages group all their blocks, so the tiny and the paper-size networks have the same vocabulary.

Every Conv, MatMul and Gemm of an exported graph belongs to exactly one group. The module a node came from is read
from the node's ``pkg.torch.onnx.name_scopes`` (or ``namespace``) metadata, which ``torch.onnx.export(dynamo=True)``
writes; a graph without it (or a node that matches no group) is refused, so a group can never silently lose a layer.
The grouped convolutions are checked against the graph as well (``group > 1``).

``--int8-scope`` values are unions of groups (``SCOPE_GROUPS``): one vocabulary for the plain scopes and for
``--precision auto``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import onnx

from ..errors import ArtifactError, CfnsrError
from .onnx_graph import attribute

QUANT_OPS = ("Conv", "MatMul", "Gemm")
PARTS = ("reduce", "grouped", "expand", "downsample")
_PART_OF_LAYER = {"1": "reduce", "2": "grouped", "3": "expand"}  # conv1/bn1 -> reduce, ... (BN folds into its Conv)
STAGES = (1, 2, 3, 4)

DESCRIPTIONS = {
    "stem": "video stem (7x7x7)",
    "reduce": "reduce 1x1x1",
    "grouped": "grouped 3x3x3",
    "expand": "expand 1x1x1",
    "downsample": "downsample 1x1x1 (projection shortcut)",
    "audio": "audio convolutions",
    "attention": "audio transformer (attention projections and feed-forward)",
    "fusion": "fusion projections (cross-modal attention)",
    "classifier": "classifier",
}


def all_groups() -> tuple[str, ...]:
    """Every group name, in network order."""
    return ("stem", *(f"stage{s}.{p}" for s in STAGES for p in PARTS), "audio", "attention", "fusion", "classifier")


def describe(group: str) -> str:
    """"grouped 3x3x3, stage 2" for ``stage2.grouped``; the description for the others."""
    if group.startswith("stage"):
        stage, part = group.split(".")
        return f"{DESCRIPTIONS[part]}, stage {stage[5:]}"
    return DESCRIPTIONS[group]


def _video_groups(exclude_parts=(), exclude_stem=False) -> set[str]:
    return ({"stem"} if not exclude_stem else set()) | {f"stage{s}.{p}" for s in STAGES for p in PARTS
                                                         if p not in exclude_parts}


_NON_VIDEO = {"audio", "attention", "fusion", "classifier"}
# The --int8-scope values as unions of groups.
SCOPE_GROUPS: dict[str, frozenset[str]] = {
    "all": frozenset(all_groups()),
    "no-stem": frozenset(_video_groups(exclude_stem=True) | _NON_VIDEO),
    "no-grouped": frozenset(_video_groups(exclude_parts=("grouped",)) | _NON_VIDEO),
    "no-stem-grouped": frozenset(_video_groups(exclude_parts=("grouped",), exclude_stem=True) | _NON_VIDEO),
    "audio-fusion": frozenset(_NON_VIDEO),
}


def scope_groups(scope: str) -> frozenset[str]:
    if scope not in SCOPE_GROUPS:
        raise CfnsrError(f"unknown --int8-scope {scope!r}; choose one of: {', '.join(SCOPE_GROUPS)}")
    return SCOPE_GROUPS[scope]


def _module_path(node: onnx.NodeProto) -> list[str]:
    """The module paths the exporter recorded for ``node`` (outermost first)."""
    meta = {p.key: p.value for p in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" in meta:
        try:
            return [s for s in ast.literal_eval(meta["pkg.torch.onnx.name_scopes"]) if s]
        except (ValueError, SyntaxError):
            pass
    if "namespace" in meta:  # ": cfnsr...CFNSR/video: ...VideoBranch/video.layer1: ...Sequential/..."
        return [part.split(":")[0].strip() for part in meta["namespace"].split("/") if part.split(":")[0].strip()]
    return []


def group_of(node: onnx.NodeProto) -> str | None:
    """The group of a Conv/MatMul/Gemm node from its module path, or None when it matches none."""
    scopes = _module_path(node)
    joined = " ".join(scopes)
    m = re.search(r"\bvideo\.layer(\d)\.\d+\.downsample\b", joined)
    if m:
        return f"stage{m.group(1)}.downsample"
    m = re.search(r"\bvideo\.layer(\d)\.\d+\.(?:conv|bn)(\d)\b", joined)
    if m and m.group(2) in _PART_OF_LAYER:
        return f"stage{m.group(1)}.{_PART_OF_LAYER[m.group(2)]}"
    if re.search(r"\bvideo\.(?:conv1|bn1)\b", joined):
        return "stem"
    if any(s == "audio" or s.startswith("audio.") for s in scopes):
        return "audio"
    if any(s.startswith("fusion.audio_attention") for s in scopes):
        return "attention"
    if any(s.startswith("fusion.") for s in scopes):
        return "fusion"
    if any(s == "fc" or s.startswith("fc.") for s in scopes):
        return "classifier"
    return None


@dataclass(frozen=True)
class Grouping:
    """{node name: group} for every Conv/MatMul/Gemm of one graph."""

    of_node: dict[str, str]

    def nodes(self, groups) -> set[str]:
        groups = set(groups)
        return {n for n, g in self.of_node.items() if g in groups}

    def present(self) -> list[str]:
        """The groups this graph has, in network order."""
        have = set(self.of_node.values())
        return [g for g in all_groups() if g in have]


def grouping(model: onnx.ModelProto) -> Grouping:
    """Each Conv/MatMul/Gemm of ``model`` (a cfnsr fp32 export) in its group; refuses a node it cannot place."""
    out, unplaced = {}, []
    for n in model.graph.node:
        if n.op_type not in QUANT_OPS:
            continue
        g = group_of(n)
        if g is None:
            unplaced.append(n.name)
            continue
        if g.endswith(".grouped") != (n.op_type == "Conv" and attribute(n, "group", 1) > 1) and g.startswith("stage"):
            raise ArtifactError(f"layer {n.name} was named {g} from its module path, but it is "
                                f"{'not ' if g.endswith('.grouped') else ''}a grouped convolution in the graph")
        if g == "stem" and n.input[0] != "video":
            raise ArtifactError(f"layer {n.name} was named the video stem but does not read the video input")
        out[n.name] = g
    if unplaced:
        raise ArtifactError(f"{len(unplaced)} layers carry no module path that names their group (first: "
                            f"{unplaced[0]}): the graph must come from `cfnsr export` (torch.onnx.export with "
                            "dynamo=True, which records each node's module)")
    return Grouping(out)
