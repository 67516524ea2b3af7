"""Exporting a checkpoint: an export directory, built in a temp folder beside OUTDIR and renamed into place.

Each student present becomes its graph (person.export.graphs), exported, simplified, checked against the
target's op list, run through onnxruntime against PyTorch on real inputs (the parity gate), and, on request,
converted to its fp16 / int8 variants. The card (person.export.card) describes every file. Nothing is left
half-written (person.files.atomic_dir): on any error the temp folder is removed and OUTDIR is as it was; an export
killed between its renames gets the previous OUTDIR back at the next export.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from person import files, stopping
from person.data.records import DatasetOptions
from person.data.text import encode_batch, lookup_chars
from person.errors import PersonError
from person.eval.evaluate import open_training_data
from person.export import card as export_card
from person.export.card import IMAGE_FILE, TABLE_FILE, TEXT_FILE
from person.export.evaluation import measure_operating_points
from person.export.graphs import IMAGE_INPUT, OUTPUT, TEXT_INPUTS, ImageGraph, TextGraph
from person.export.inputs import ExportInputs, gather_inputs
from person.export.onnx_files import GraphReport, constants_to_initializers, export_onnx, op_counts, simplify
from person.export.options import ExportOptions
from person.export.parity import PARITY_COSINE, Parity, compare
from person.export.targets import Target, check_ops, check_opset, get_target
from person.export.variants import to_fp16, to_int8
from person.models.checkpoint import load_checkpoint, students_from_checkpoint
from person.models.students import Students, StudentSpec
from person.runtime import CARD_FILE, run_session, static_batches

PARITY_BATCH = 7  # an odd batch beside batch 1: a graph that only works at the example's batch size fails


class ExportError(PersonError, ValueError):
    """The export could not be made as asked; OUTDIR was left as it was."""


@dataclass
class ExportResult:
    out_dir: Path
    card: dict
    graphs: list[GraphReport] = field(default_factory=list)
    parity: list[Parity] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_destination(out_dir: Path, overwrite: bool) -> None:
    """OUTDIR may be new, empty, or replaced with --overwrite; a file, or a folder with files, is refused."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file: give a folder for the export")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} already holds files ({', '.join(sorted(p.name for p in out_dir.iterdir())[:5])}"
                          f"): pass --overwrite to replace them, or give another OUTDIR")


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _batches(n: int, target: Target, static_batch: int) -> list[tuple[int, int]]:
    """Row ranges run through a graph: batch 1 and odd batches (generic), the static batch (npu)."""
    size = static_batch if target.static else PARITY_BATCH
    first = [] if target.static else [(0, min(1, n))]
    start = 0 if target.static else min(1, n)
    return first + [(s, min(s + size, n)) for s in range(start, n, size)]


class _GraphExport:
    """One graph through export, simplification, op check, parity and variants, into the temp folder."""

    def __init__(self, tmp: Path, opts: ExportOptions, target: Target, result: ExportResult) -> None:
        self.tmp, self.opts, self.target, self.result = tmp, opts, target, result

    def run(self, name: str, file: str, graph: torch.nn.Module, example: tuple[torch.Tensor, ...],
            input_names: tuple[str, ...], dynamic: dict | None, feeds: list[dict[str, np.ndarray]],
            want: np.ndarray, calibration: list[dict[str, np.ndarray]] | None) -> None:
        path = self.tmp / file
        raw = export_onnx(graph, example, path, input_names, OUTPUT, self.opts.opset, dynamic)
        model, how = simplify(raw) if self.opts.simplify else (raw, "not simplified (--no-simplify)")
        model = constants_to_initializers(onnx.ModelProto.FromString(model.SerializeToString()))
        if how != "onnxsim" and self.opts.simplify:
            self.result.notes.append(f"{file}: {how}; exported unsimplified")
        onnx.save(model, str(path))
        self.result.graphs.append(GraphReport(file, op_counts(raw), op_counts(model), raw.ByteSize(),
                                              path.stat().st_size, how))
        check_ops(model, self.target, file)
        parity = self._parity(name, "fp32", path, feeds, want)
        if not parity.passes:
            raise ExportError(f"parity gate: {parity.line()}; below the cosine {PARITY_COSINE} the export is refused. "
                              f"Try --no-simplify, another --opset, or report the model")
        if self.opts.fp16:
            self._variant(name, path, "fp16", lambda out: onnx.save(to_fp16(model), str(out)), feeds, want)
        if self.opts.int8 and calibration is not None:
            if self.target.static:  # the graph takes only full batches: the last calibration batch is padded
                calibration = [part for f in calibration for part, _ in static_batches(f, self.opts.batch)]
            self._variant(name, path, "int8", lambda out: to_int8(path, out, calibration), feeds, want)

    def _variant(self, name: str, path: Path, variant: str, write: Callable[[Path], None],
                 feeds: list[dict[str, np.ndarray]], want: np.ndarray) -> None:
        """The graph at `path` in another precision, beside it as <file>.<variant>.onnx: written by `write`,
        checked against the target's ops and measured against PyTorch (reported, not gated)."""
        out = path.with_name(path.name.replace(".onnx", f".{variant}.onnx"))
        write(out)
        check_ops(onnx.load(str(out)), self.target, out.name)
        self._parity(name, variant, out, feeds, want)

    def _parity(self, name: str, variant: str, path: Path, feeds: list[dict[str, np.ndarray]],
                want: np.ndarray) -> Parity:
        session = _session(path)
        got = np.concatenate([run_session(session, f, self.opts.batch if self.target.static else None)
                              for f in feeds])
        parity = compare(name, variant, got, want)
        self.result.parity.append(parity)
        return parity


def _image_feeds(images: torch.Tensor, target: Target, batch: int) -> list[dict[str, np.ndarray]]:
    x = images.numpy()
    return [{IMAGE_INPUT: x[a:b]} for a, b in _batches(len(x), target, batch)]


def _text_feeds(table: np.ndarray, texts: list[str], spec: StudentSpec, target: Target, batch: int,
                seq_len: int) -> tuple[list[dict[str, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """(graph feeds, the same texts as (char bytes, mask) for PyTorch), batched as the graph runs them."""
    feeds, encoded = [], []
    for a, b in _batches(len(texts), target, batch):
        # A static graph reads seq_len characters: longer texts are truncated there, shorter ones padded to it.
        chars, mask = (encode_batch(texts[a:b], seq_len, pad_to=seq_len) if target.static
                       else encode_batch(texts[a:b], spec.max_seq_length))
        feeds.append({TEXT_INPUTS[0]: lookup_chars(table, chars), TEXT_INPUTS[1]: mask.astype(np.float32)})
        encoded.append((chars, mask))
    return feeds, encoded


@torch.no_grad()
def _torch_text(students: Students, encoded: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    out = [students(chars=torch.from_numpy(c), mask=torch.from_numpy(m))["text"] for c, m in encoded]
    return torch.cat(out).numpy()


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, opts: ExportOptions,
                      dataset: DatasetOptions | None = None, embedding_path: str | None = None,
                      trusted: Collection[str] = (), *, on_built: Callable[[Path], None] | None = None
                      ) -> ExportResult:
    """Export a training checkpoint to `out_dir` (see the module docstring); returns what was made and measured.
    `on_built(tmp)` is called once the graphs and the table are in the temp folder (tests kill an export there)."""
    out_dir = Path(out_dir)
    target = get_target(opts.target)
    opts = replace(opts, opset=opts.opset or target.default_opset)
    check_opset(target, opts.opset)
    # First: a previous export that a killed one had moved aside is put back, and then subject to --overwrite.
    files.clean_stale_temps(out_dir.parent, out_dir.name)
    check_destination(out_dir, opts.overwrite)
    state = load_checkpoint(checkpoint)
    spec, students = students_from_checkpoint(state, "cpu", trusted)
    seq_len = opts.seq_len or spec.max_seq_length
    if seq_len > spec.max_seq_length:
        raise ExportError(f"--seq-len {seq_len} exceeds the text student's max_seq_length {spec.max_seq_length}")
    result = ExportResult(out_dir, {})
    if spec.backbone is None or spec.tbackbone is None:
        result.notes.append(f"the checkpoint has only the {spec.trained} student: exported that one")
    # A stop (person.stopping) comes at once: there is nothing to keep, and the temp folder goes with it.
    with stopping.noting(f"before the export was done ({out_dir} is as it was)"), files.atomic_dir(out_dir) as tmp:
        store, records, moved = open_training_data(state, dataset, embedding_path)
        with store:
            inputs = gather_inputs(store, records, spec, calibration=opts.calibration if opts.int8 else 0,
                                   limits=moved.image_limits())
            _export_graphs(tmp, students, spec, opts, target, seq_len, inputs, result)
            if on_built is not None:
                on_built(tmp)
            result.card = export_card.build(state, spec, opts, target, seq_len, store, tmp, result.parity)
            files.write_json(tmp / CARD_FILE, result.card)
            # Measured with the graphs as written, through person.runtime (which reads the card), then added last.
            result.card["operating_points"] = measure_operating_points(tmp, store, records, moved.image_limits())
            files.write_json(tmp / CARD_FILE, result.card)
    return result


def _export_graphs(tmp: Path, students: Students, spec: StudentSpec, opts: ExportOptions, target: Target,
                   seq_len: int, inputs: ExportInputs, result: ExportResult) -> None:
    step = _GraphExport(tmp, opts, target, result)
    b = opts.batch if target.static else 1
    if students.image is not None:
        with torch.no_grad():
            want = students(images=inputs.images)["image"].numpy()
        calibration = (_image_feeds(inputs.calibration_images, target, opts.batch)
                       if opts.int8 and inputs.calibration_images is not None else None)
        dynamic = None if target.static else {IMAGE_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
        step.run("image", IMAGE_FILE, ImageGraph(students.image, opts.normalize),
                 (torch.zeros(b, 3, *spec.image_size),), (IMAGE_INPUT,), dynamic,
                 _image_feeds(inputs.images, target, opts.batch), want, calibration)
    if students.text is not None:
        graph = TextGraph(students.text, opts.normalize, conv2d_stem=target.static)
        table = graph.byte_table().numpy().astype(np.float32)
        np.save(tmp / TABLE_FILE, table, allow_pickle=False)
        feeds, encoded = _text_feeds(table, inputs.texts, spec, target, opts.batch, seq_len)
        calibration = (_text_feeds(table, inputs.calibration_texts, spec, target, opts.batch, seq_len)[0]
                       if opts.int8 and inputs.calibration_texts else None)
        length = seq_len if target.static else min(16, spec.max_seq_length)
        dynamic = None if target.static else {TEXT_INPUTS[0]: {0: "batch", 1: "length"},
                                              TEXT_INPUTS[1]: {0: "batch", 1: "length"}, OUTPUT: {0: "batch"}}
        example = (torch.zeros(b, length, table.shape[1]), torch.ones(b, length))
        step.run("text", TEXT_FILE, graph, example, TEXT_INPUTS, dynamic, feeds, _torch_text(students, encoded),
                 calibration)
