"""An export directory's own report: the exported models (through person.runtime, as a device would run them)
scored on the checkpoint's held-out split with the same code and cases as the checkpoint itself. The image
embeddings are held in float16 as a gallery holds them, so this report and search over an enrolled gallery
(person.gallery) rank the same numbers: their Rank-1 agree (tested).

The same embeddings give the operating points (person.eval.operating_points): the card's, measured at export on the
held-out split, and a calibration file's, measured on a user's own labelled store (`calibrate`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from person import files
from person.data.datasets import SkipReport
from person.data.images import ImageReadError
from person.data.records import DatasetOptions, RecordSet
from person.eval import operating_points
from person.eval.evaluate import SOURCES, EvalResult, EvalSplit, cases_for, evaluate_embedders, main_case, split_embeddings
from person.runtime import CARD_FILE, VARIANTS, ExportDirError, ExportedModels
from person.teacher.space import check_same_space, space_of
from person.teacher.store import open_with_records


def _trained(card: dict) -> str:
    """"both", "image" or "text": the students an export holds (StudentSpec.trained of its checkpoint)."""
    return "both" if "image" in card and "text" in card else "image" if "image" in card else "text"


def _image_embedder(models: ExportedModels, records: RecordSet, limits):
    def embed(rows: np.ndarray) -> tuple[np.ndarray, SkipReport]:
        out = np.full((len(rows), models.feature_dim), np.nan, np.float32)
        skips, good, pixels = SkipReport(), [], []
        for i, row in enumerate(rows):
            try:
                pixels.append(models.preprocess(records.image_path(int(row)), limits))
                good.append(i)
            except ImageReadError as e:
                skips.add([(int(row), str(e))])
        for a in range(0, len(good), 64):
            # Rounded to float16, as a gallery stores them (and the teacher's store holds its embeddings): the
            # export's report and a search over the enrolled split then rank the same numbers.
            out[good[a:a + 64]] = models.embed_pixels(np.stack(pixels[a:a + 64])).astype(np.float16)
        if not good:
            raise ValueError(f"none of the {len(rows)} images could be read: {skips.summary(3)}")
        return out, skips
    return embed


def evaluate_export(export_dir: str | Path, variant: str = "fp32", dataset: DatasetOptions | None = None,
                    embedding_path: str | None = None, split: str = "eval", cases: Sequence[str] | None = None,
                    top_k: int = 15) -> tuple[dict, EvalResult]:
    """(card, scores) of an export directory's `variant` on `split` of the store its checkpoint trained on."""
    models = ExportedModels(export_dir, variant)
    card = models.card
    path = embedding_path or card.get("checkpoint", {}).get("embedding_path")
    if not path:
        raise ExportDirError(f"{export_dir}: its card names no feature store; pass --embedding_path")
    store, records = open_with_records(path, dataset, in_memory=False)
    with store:
        check_same_space(space_of(store.teacher_identity), card["space"], f"the store {store.path}",
                         f"the export {export_dir}")
        trained = _trained(card)
        limits = (dataset or DatasetOptions()).image_limits()
        result = evaluate_embedders(_image_embedder(models, records, limits) if models.has_image else None,
                                    models.embed_texts if models.has_text else None, store,
                                    cases or cases_for(trained, models.feature_dim == store.dim), split, top_k)
    return card, result


def export_summary(export_dir: str | Path, variant: str, card: dict, result: EvalResult) -> dict:
    """An export's report as JSON, shaped as checkpoint_summary's: the main case's metrics at the top level."""
    main = main_case(result, _trained(card))
    summaries = result.summaries()
    return {**summaries[main], "case": main, "export": str(export_dir), "variant": variant,
            "checkpoint": card.get("checkpoint", {}).get("path"),
            "iteration": card.get("checkpoint", {}).get("iteration"),
            "cases": {c: s for c, s in summaries.items() if c != main}}


def variants_of(card: dict) -> list[str]:
    """The variants an export holds for every model it has (fp32 always)."""
    return [v for v in VARIANTS if v == "fp32" or all(v in card[part].get("variants", {})
                                                       for part in ("image", "text") if part in card)]


def export_embeddings(export_dir: str | Path, variant: str, store, records: RecordSet, limits, split: str = "eval"
                      ) -> tuple[list[str], EvalSplit, dict[tuple[str, str], np.ndarray]]:
    """(the cases other than the teacher's that the export's students take part in, the split, its embeddings as
    person.eval.evaluate.split_embeddings gives them) with `variant`'s graphs."""
    models = ExportedModels(export_dir, variant)
    cases = [c for c in cases_for(_trained(models.card), models.feature_dim == store.dim) if c != "teacher"]
    data, emb, _ = split_embeddings(_image_embedder(models, records, limits) if models.has_image else None,
                                    models.embed_texts if models.has_text else None, store, cases, split)
    return cases, data, emb


def measure_operating_points(export_dir: str | Path, store, records: RecordSet, limits, split: str = "eval",
                             fars: Sequence[str] = operating_points.FARS) -> dict:
    """The operating points (person.eval.operating_points) of every variant of an export, each measured with that
    variant's graphs through person.runtime on `split` of the store (image embeddings in float16, as a gallery
    holds them): text-to-image for each case its students take part in, image-to-image for its image student."""
    document = operating_points.new_document(store, split, fars)
    for variant in variants_of(ExportedModels(export_dir).card):
        cases, data, emb = export_embeddings(export_dir, variant, store, records, limits, split)
        for case in cases:
            images, texts = SOURCES[case]
            operating_points.add(document, "text_to_image", case, variant, operating_points.text_to_image(
                emb[images, "image"], data.pids, emb[texts, "text"], data.caption_pids, fars))
        if ("student", "image") in emb:
            operating_points.add(document, "image_to_image", "student", variant,
                                 operating_points.image_to_image(emb["student", "image"], data.pids, fars))
    return document


def calibrate(embedding_path: str | Path, dataset: DatasetOptions | None = None, export_dir: str | Path | None = None,
              split: str = "eval") -> tuple[dict, dict | None]:
    """(document, export) of a user's labelled store (their own site): the teacher's operating points and, with an
    export, its students' for every variant it holds; `export` names it by card sha256 (a calibration file's)."""
    store, records = open_with_records(embedding_path, dataset, in_memory=False)
    with store:
        if export_dir is None:
            document, export = operating_points.new_document(store, split), None
        else:
            card = ExportedModels(export_dir).card
            check_same_space(space_of(store.teacher_identity), card["space"], f"the store {store.path}",
                             f"the export {export_dir}")
            limits = (dataset or DatasetOptions()).image_limits()
            document = measure_operating_points(export_dir, store, records, limits, split)
            export = {"path": str(Path(export_dir).resolve()),
                      "card_sha256": files.sha256_file(Path(export_dir) / CARD_FILE)}
        operating_points.add_teacher(document, store, split)
    return document, export
