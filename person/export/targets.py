"""Export targets: the opset, the shapes and the op list every exported graph is checked against.

`generic`: onnxruntime on a server or a PC; dynamic batch and sequence length; any standard ONNX op.
`npu`: static shapes and an op set that the common NPU toolchains take (RKNN-Toolkit2, Ascend ATC, TensorRT,
QNN/SNPE, TFLite via onnx2tf). After export and simplification every node's op must be in the list; one
outside it is an error naming the op, the node and the module it came from, never a silent file. Where each
restriction comes from is noted beside the list, so the list can be checked against the vendors' documents.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from person.errors import PersonError
from person.export.onnx_files import module_of


class OpCheckError(PersonError, ValueError):
    """A graph holds an op its target does not take."""


@dataclass(frozen=True)
class Target:
    name: str
    static: bool                 # static batch and sequence length
    default_opset: int
    min_opset: int
    max_opset: int
    ops: frozenset[str] | None   # None: any op of the default ONNX domain
    why: str


# The NPU op list, by what needs it. Sources, read 2026-12 (what each toolchain's own document says):
# - RKNN-Toolkit2 (airockchip/rknn-toolkit2 doc/RKNNToolKit2_OP_Support-2.3.2.md, and the V2.3.2 compiler
#   operator list): every op below; no Range, ReduceL2, ReduceSumSquare; Slice and Softmax batch 1; Erf, Sqrt,
#   ReduceMean and ReduceSum run on its CPU, not the NPU.
# - Ascend ATC (hiascend.com "Supported ONNX Operators", CANN 5.x-9.x): opset 9-13 on CANN 5/6; Conv on 4-D /
#   5-D inputs only (hence the text stem as a 1 x k Conv2d); LayerNormalization only at opset 17/18 (hence
#   exported decomposed below 17); ReduceMean opset 8-16.
# - TensorRT (onnx/onnx-tensorrt docs/operators.md, 8.4-10.15): every op below; LayerNormalization only from 8.6.
# - SNPE / QNN ("Supported ONNX Ops" 80-63442-2 Rev BL; onnxruntime QNN EP docs): no dynamic shapes; Erf only
#   where it matches GELU (the exact GELU torch exports is that pattern); the decomposed LayerNorm is fused back.
# - TFLite via onnx2tf (PINTO0309/onnx2tf README): every op below with constant shape/axes arguments.
# Not checked here (the vendor compiler checks them): kernel-size and per-device limits, e.g. RKNN's depthwise
# kernels up to 8 and GlobalAveragePool maps up to 7x7 on RK3588.
_NPU_OPS = {
    # the image students (Conv + folded BatchNorm, ReLU / PReLU, residual Add, pooling, the embedding layer)
    "Conv", "Relu", "PRelu", "Add", "Mul", "GlobalAveragePool", "AveragePool", "MaxPool", "Flatten", "Gemm",
    # the text student: attention as MatMul + Softmax, LayerNorm decomposed, exact GELU (Erf), the stem as Conv
    "MatMul", "Softmax", "ReduceMean", "Sub", "Div", "Pow", "Sqrt", "Erf", "Transpose", "Reshape", "Pad",
    "Unsqueeze", "Squeeze", "Concat", "Slice", "Split", "ReduceSum",
    # the output normalisation written without ReduceL2 (Mul, ReduceSum, Clip, Sqrt, Div)
    "Clip", "Max",
    # the int8 and fp16 variants
    "QuantizeLinear", "DequantizeLinear", "Cast",
}

TARGETS = {
    "generic": Target("generic", static=False, default_opset=17, min_opset=17, max_opset=21, ops=None,
                      why="onnxruntime 1.20+: every standard op; LayerNormalization needs opset 17"),
    "npu": Target("npu", static=True, default_opset=13, min_opset=13, max_opset=16, ops=frozenset(_NPU_OPS),
                  why="the ops RKNN-Toolkit2, Ascend ATC, TensorRT, QNN/SNPE and onnx2tf all list; static shapes, "
                      "so Shape / Gather / Range / Expand fold away; opset 13-16, so LayerNormalization is exported "
                      "decomposed (ReduceMean, Sub, Pow, Sqrt, Div)"),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise OpCheckError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}")
    return TARGETS[name]


def check_opset(target: Target, opset: int) -> None:
    if not target.min_opset <= opset <= target.max_opset:
        raise OpCheckError(f"--opset {opset} is outside what --target {target.name} takes ({target.min_opset}.."
                           f"{target.max_opset}): {target.why}")


def check_ops(model: onnx.ModelProto, target: Target, graph: str) -> None:
    """Every node's op in the target's list (and in the default ONNX domain), else OpCheckError naming each."""
    bad = [n for n in model.graph.node if n.domain not in ("", "ai.onnx")
           or (target.ops is not None and n.op_type not in target.ops)]
    if bad:
        shown = "; ".join(f"{n.op_type} (node {n.name or '?'}, module {module_of(n.name) or 'top level'})"
                          for n in bad[:8])
        more = f"; and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise OpCheckError(f"{graph} has {len(bad)} node(s) --target {target.name} does not take: {shown}{more}. "
                           f"{target.why}. Export with --target generic, or change the module named")
