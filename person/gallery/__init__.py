"""Galleries, the top of the pipeline: enrolled images (or person boxes) searched by text or by image.

A gallery is one directory: `gallery.json` (the manifest, replaced atomically, so a reader sees one whole
generation) naming immutable segments (float16 L2-normalised features, memory-mapped, and their rows'
metadata), a tombstone list of deleted rows, a lease file per generation (its readers hold it), and approximate
indexes saved with the generation they were built for. `manifest` and `segments` hold the format (each segment's
files' sha256 in the manifest, each row's image file's sha256 in its segment), `store` opens, appends, deletes,
compacts, rewrites without erased rows and purges what no reader holds, `sources` lists what to enrol (a folder,
a dataset, detections), `encoders` wraps an exported student or a teacher, `enroll` is the resumable enrolment,
`images` reads a row's enrolled image back (only when its content hash still matches), `filters` the metadata
conditions, `index` exact and FAISS search, `milvus` the vector-database backend, `search` the `Searcher` the
commands and the web app call, `thresholds` the operating points a search applies (a calibration file, the
gallery's calibration.json, the card), `forget` erasure and retention, and `audit` (and `audit_chain`) the
HMAC-chained audit log of who searched for whom.
"""
