"""An export directory's own report: the exported models (through person.runtime, as a device would run them)
scored on the checkpoint's held-out split with the same code and cases as the checkpoint itself. The image
embeddings are held in float16 as a gallery holds them, so this report and search over an enrolled gallery
(person.gallery) rank the same numbers: their Rank-1 agree (tested)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from person.data.datasets import SkipReport
from person.data.images import ImageReadError
from person.data.records import DatasetOptions, RecordSet
from person.eval.evaluate import EvalResult, cases_for, evaluate_embedders, main_case
from person.runtime import ExportDirError, ExportedModels
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
