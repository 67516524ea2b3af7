"""model.json, the card: everything a device integrator needs to reproduce the embeddings with numpy and
onnxruntime alone, and nothing else (ARCHITECTURE.md, "The export directory and its card"). The exporter adds
`operating_points` last (person.export.evaluation.measure_operating_points: thresholds measured with the graphs
written); a card is never rewritten after export, since galleries pin its sha256.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from person import files
from person.export.options import ExportOptions
from person.export.parity import PARITY_COSINE, Parity
from person.export.targets import Target
from person.models.students import StudentSpec
from person.runtime import CARD_FORMAT, CARD_VERSION, VARIANTS
from person.teacher.space import space_of

IMAGE_FILE, TEXT_FILE, TABLE_FILE = "model_image.onnx", "model_text.onnx", "input_embeddings.npy"


def _io(model_path: Path) -> dict[str, Any]:
    """Names, shapes (a name for a dynamic axis) and dtypes of a graph's inputs and outputs, read from the file."""
    graph = onnx.load(str(model_path), load_external_data=False).graph

    def describe(v: onnx.ValueInfoProto) -> dict[str, Any]:
        t = v.type.tensor_type
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}
    return {"inputs": [describe(v) for v in graph.input], "outputs": [describe(v) for v in graph.output]}


def _variants(folder: Path, file: str) -> dict[str, str]:
    return {v: file.replace(".onnx", f".{v}.onnx") for v in VARIANTS[1:]
            if (folder / file.replace(".onnx", f".{v}.onnx")).is_file()}


def build(state: dict, spec: StudentSpec, opts: ExportOptions, target: Target, seq_len: int, store, folder: Path,
          parity: list[Parity]) -> dict[str, Any]:
    """The card of the export being built in `folder` (every file but model.json already there)."""
    mean, std = store.image_normalisation
    card: dict[str, Any] = {
        "format": CARD_FORMAT, "version": CARD_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": target.name, "opset": opts.opset, "static_shapes": target.static,
        "feature_dim": spec.feature_dim, "normalized": opts.normalize,
        "output": ("L2-normalised [B, D] float32: cosine similarity is the dot product" if opts.normalize else
                   "raw [B, D] float32: divide each row by its L2 norm before comparing"),
        "space": space_of(state["teacher"], state.get("dataset", {}).get("fingerprint")),
    }
    if (folder / IMAGE_FILE).is_file():
        card["image"] = {
            "file": IMAGE_FILE, "variants": _variants(folder, IMAGE_FILE), **_io(folder / IMAGE_FILE),
            "size": {"height": spec.image_size[0], "width": spec.image_size[1]},
            "channel_order": "RGB", "layout": "NCHW", "dtype": "float32",
            "decode": "8-bit RGB as stored (EXIF orientation ignored; 16-bit images scaled to 8 bits)",
            "resize": {"mode": spec.resize, "interpolation": "bilinear; area-averaged first when shrinking 2x or more",
                       "pad_value": "the mean colour, round(mean * 255), centred" if spec.resize == "pad" else None},
            "normalize": {"formula": "(pixel / 255 - mean) / std, per channel", "mean": list(mean), "std": list(std)},
            "student": spec.backbone,
        }
    if (folder / TEXT_FILE).is_file():
        table = np.load(folder / TABLE_FILE, allow_pickle=False)
        card["text"] = {
            "file": TEXT_FILE, "variants": _variants(folder, TEXT_FILE), **_io(folder / TEXT_FILE),
            "table": {"file": TABLE_FILE, "shape": list(table.shape), "dtype": table.dtype.name},
            "encoding": "each character (Unicode code point) as its UTF-8 bytes, padded with 0 to 4 bytes",
            "lookup": "vector = table[0 * 256 + b0] + table[1 * 256 + b1] + table[2 * 256 + b2] + table[3 * 256 + b3]"
                      ", summed in float32 (row = byte position * 256 + byte value)",
            "max_seq_length": seq_len if target.static else spec.max_seq_length,
            "truncation": f"characters after the first {seq_len if target.static else spec.max_seq_length} are "
                          f"dropped",
            "padding": "right-pad a batch to one length; padded positions have mask 0 and any vector (the graph "
                       "zeroes them); the n-gram stem needs no extra padding",
            "mask": "float32 [B, L], 1 for a real character, 0 for padding; an empty text is all 0",
            "sequence_length": seq_len if target.static else "any, 1..max_seq_length",
            "stem_stride": spec.text_stride, "student": spec.tbackbone,
        }
    ckpt = Path(state["path"])
    card["checkpoint"] = {"path": str(ckpt.resolve()), "iteration": state["iteration"],
                          "sha256": files.sha256_file(ckpt), "report": state.get("best"), "students": spec.to_dict(),
                          "embedding_path": str(Path(store.path).resolve())}
    card["parity"] = {"gate": f"fp32 cosine >= {PARITY_COSINE} per row against PyTorch, on held-out images and "
                              f"captions", "results": [p.to_dict() for p in parity]}
    card["tools"] = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    card["files"] = {p.name: {"bytes": p.stat().st_size, "sha256": files.sha256_file(p)}
                     for p in sorted(folder.iterdir()) if p.is_file()}
    return card
