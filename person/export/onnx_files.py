"""torch -> ONNX files: the export itself, the simplifier, and the op tables printed before and after.

The TorchScript-based exporter (`dynamo=False`) is used: it exports these small static graphs in well under a
second, names each node after the module it came from (`/blocks.0/attn/Softmax`), which is what an op-check
error quotes, and takes an explicit opset. Dynamic axes are named (`batch`, `length`) for the generic target;
the NPU target exports static shapes.
"""
from __future__ import annotations

import collections
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphReport:
    """What the command prints for one graph: ops before and after simplification, and what the simplifier did."""

    name: str
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    bytes_before: int
    bytes_after: int
    simplified: str  # "onnxsim", or why it was left as exported


def export_onnx(graph: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, input_names: Sequence[str],
                output_name: str, opset: int, dynamic: Mapping[str, Mapping[int, str]] | None) -> onnx.ModelProto:
    """Export `graph` on the example `inputs`; `dynamic` names the dynamic axes (None: static shapes)."""
    with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding are not for users
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.eval(), inputs, str(path), dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=[output_name],
                          dynamic_axes=dict(dynamic) if dynamic else None, do_constant_folding=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """onnxsim's simplification (constant folding, shape ops resolved), or the model as it is and why."""
    try:
        import onnxsim
    except ImportError:
        return model, "not simplified: onnxsim is not installed (pip install onnxsim)"
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as e:  # onnxsim fails in many ways on graphs it does not handle; the export stands
        return model, f"not simplified: onnxsim failed ({type(e).__name__}: {str(e)[:200]})"
    if not ok:
        return model, "not simplified: onnxsim's check of the simplified graph failed"
    return simplified, "onnxsim"


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant nodes left by the exporter (a Clip bound, a Pad width) become initializers: values, not ops, for
    compilers and op checks alike."""
    keep = []
    for node in model.graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value is not None:
            tensor = onnx.helper.get_attribute_value(value)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def module_of(node_name: str) -> str:
    """`/blocks.0/attn/Softmax_1` -> `blocks.0.attn`: the module a node was exported from ("" at the top)."""
    return ".".join(part for part in node_name.strip("/").split("/")[:-1])


def format_ops(report: GraphReport) -> str:
    """The op table of one graph, before and after simplification, with the sizes."""
    names = list(dict.fromkeys([*report.ops_after, *report.ops_before]))
    width = max([len(n) for n in names] + [8])
    lines = [f"{report.name}: {report.simplified}; {report.bytes_before / 2**20:.2f} MiB -> "
             f"{report.bytes_after / 2**20:.2f} MiB",
             f"  {'op':<{width}}  before  after"]
    lines += [f"  {n:<{width}}  {report.ops_before.get(n, 0):>6}  {report.ops_after.get(n, 0):>5}" for n in names]
    lines.append(f"  {'total':<{width}}  {sum(report.ops_before.values()):>6}  {sum(report.ops_after.values()):>5}")
    return "\n".join(lines)
