"""The smaller variants of an exported graph: float16 weights, and int8 by static QDQ quantisation.

fp16: every weight and activation in float16, inputs and outputs kept float32 (the card's contract does not
change). int8: onnxruntime's static quantisation in QDQ form (QuantizeLinear / DequantizeLinear pairs that
NPU compilers and onnxruntime both read), per-channel int8 weights and uint8 activations calibrated with
MinMax on real training inputs. Conv, MatMul, Gemm and Relu are quantised: LayerNormalization, Softmax and the
final normalisation stay in float, which is what holds the text student's accuracy.

Relu is on the list because a Relu left in float costs a ReLU student a Dequantize/Quantize pair after every
convolution: the convolution's output is quantised over its whole range, and onnxruntime can drop the Relu but
not the requantisation to the Relu's range (40% of the int8 run time of ANet2_relu at 224x112). Quantised, the
convolution's output takes the Relu's range (zero point 0), so the Relu is exact in int8 and onnxruntime fuses it
away; with `QDQKeepRemovableActivations` it stays in the file as a node, so a compiler that drops Q/DQ pairs still
sees it. The settings were chosen by `bench/export.py --int8-study` (BENCHMARKS.md, "Export and inference").
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Relu")


@dataclass(frozen=True)
class Int8Settings:
    """How `to_int8` quantises. The defaults are the export's; `bench/export.py --int8-study` varies them."""

    qdq: bool = True                         # QDQ pairs, else onnxruntime's QLinear* ops (QOperator)
    per_channel: bool = True                 # a weight scale per output channel, else one per tensor
    ops: tuple[str, ...] = QUANTIZED_OPS     # () = every op type the quantiser has a rule for


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph in float16 with float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    return convert_float_to_float16(model, keep_io_types=True)


class _Feeds:
    """onnxruntime's CalibrationDataReader over an iterable of input dicts (its interface: get_next())."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def to_int8(model_path: Path, out_path: Path, calibration: Iterable[dict[str, np.ndarray]],
            settings: Int8Settings = Int8Settings()) -> None:
    """Static int8 of the float32 graph at `model_path`, calibrated on `calibration` batches."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph optimisation first, as onnxruntime's quantisation guide asks.
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_path), _Feeds(calibration),
                        quant_format=QuantFormat.QDQ if settings.qdq else QuantFormat.QOperator,
                        per_channel=settings.per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=list(settings.ops),
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                       "QDQKeepRemovableActivations": True})
    onnx.checker.check_model(onnx.load(str(out_path)))
