"""The options that say how to search a gallery (which encoders, which scan), shared by the CLI and the web app,
and the Searcher they open."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from person.gallery import milvus
from person.gallery.encoders import ExportEncoder, TeacherEncoder
from person.gallery.index import KINDS
from person.gallery.manifest import GalleryError
from person.gallery.search import Searcher
from person.options import option


@dataclass
class SearcherOptions:
    text_model: str | None = option(None, "an export directory whose text model embeds the queries")
    image_model: str | None = option(None, "an export directory whose image model embeds query photos (search by "
                                           "image)")
    teacher: str | None = option(None, "the teacher embeds the queries and photos instead (a directory or a Hugging "
                                       "Face id in the local cache)")
    index: str = option("auto", "the scan: exact, or an approximate FAISS index (auto: exact below 200k rows)",
                        choices=KINDS)
    milvus: str | None = option(None, "search in Milvus instead: a server or cluster URI, or a local .db file for "
                                      "Milvus Lite (the collection is synced with the gallery first)")
    milvus_collection: str | None = option(None, "the Milvus collection (default: one named after the gallery)")
    # One by default: the exact scan runs beside the text model, and a second onnxruntime thread spins on the core
    # the scan needs (bench/search.py, 100k x 512: 10.3 ms encode + scan on 2 threads, the encode alone 1.35 ms);
    # a server's concurrent requests are its parallelism anyway.
    threads: int = option(1, "onnxruntime threads per query embedding", at_least=1)
    calibration: str | None = option(None, "thresholds measured on your own labelled data (person-calibrate's "
                                           "file), preferred to the gallery's calibration.json and the card's")

    def check(self, needs_text: bool = True) -> None:
        if self.teacher and (self.text_model or self.image_model):
            raise GalleryError("give --teacher or --text-model / --image-model, not both")
        if needs_text and not (self.text_model or self.teacher):
            raise GalleryError("give a text model: --text-model EXPORT_DIR or --teacher ID_OR_DIR")

    def open(self, gallery: str | Path) -> Searcher:
        """The Searcher these options describe over `gallery` (one encoder object when text and image share it)."""
        if self.teacher:
            text = image = TeacherEncoder(self.teacher)
        else:
            text = ExportEncoder(self.text_model, threads=self.threads) if self.text_model else None
            same = self.image_model and text is not None and \
                Path(self.image_model).resolve() == Path(self.text_model).resolve()
            image = text if same else ExportEncoder(self.image_model, threads=self.threads) if self.image_model \
                else None
        if text is not None and not text.has_text:
            raise GalleryError(f"--text-model {self.text_model}: this export has no text model; give one that has")
        factory = milvus.backend_factory(self.milvus, self.milvus_collection) if self.milvus else None
        return Searcher(gallery, text, image, self.index, backend_factory=factory, calibration=self.calibration)
