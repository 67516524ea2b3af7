"""Every option of an export, typed, in one place (export_model.py's flags are built from it)."""
from __future__ import annotations

from dataclasses import dataclass

from person.data.text import MAX_SEQ_LENGTH
from person.options import check_values, option

# NPU toolchains compile batches of 1 to a few dozen; a static batch of millions is a typo whose example input
# alone would be hundreds of GB.
MAX_STATIC_BATCH = 1024


@dataclass(frozen=True)
class ExportOptions:
    target: str = option("generic", "generic: dynamic shapes for onnxruntime; npu: static shapes and the op set NPU "
                                    "toolchains take", choices=("generic", "npu"))
    opset: int | None = option(None, "ONNX opset (default: the target's, 17 for generic, 13 for npu)", at_least=7)
    batch: int = option(1, "the static batch size of --target npu graphs", at_least=1, at_most=MAX_STATIC_BATCH)
    seq_len: int | None = option(None, "the static text length of --target npu graphs (default: max_seq_length)",
                                 at_least=1, at_most=MAX_SEQ_LENGTH)
    fp16: bool = option(False, "also write *.fp16.onnx (float16 inside, float32 inputs and outputs)")
    int8: bool = option(False, "also write *.int8.onnx (static QDQ int8, per-channel, calibrated on training data)")
    calibration: int = option(512, "training images and captions that calibrate --int8", at_least=1)
    simplify: bool = option(True, "simplify the graphs with onnxsim (--no-simplify: as torch.onnx.export wrote them)")
    normalize: bool = option(True, "L2-normalise the outputs inside the graphs (--no-normalize: the caller does, for "
                                   "runtimes without a reduction)")
    overwrite: bool = option(False, "replace an OUTDIR that already holds files")

    def __post_init__(self) -> None:
        check_values(self)  # a library caller gets the command's range checks too
