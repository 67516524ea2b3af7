"""The feature store: a teacher's embeddings of every image and caption of a dataset, in one HDF5 or zarr store.

Layout (the same names in both formats; `.h5` is one HDF5 file, `.zarr` a zarr v3 directory; Ni images,
Nc captions, D the teacher's dim, C = chunk_rows, the unit of writing and resuming):

    image_emb       float16 [Ni, D]   L2-normalised in float32, then cast; zeros for unreadable images
    caption_emb     float16 [Nc, D]
    image_status    uint8   [Ni]      0 pending, 1 ok, 2 unreadable
    image_error     uint8   [Ni, 128] why an image was unreadable: UTF-8, zero-padded (path left out)
    image_pid       int64   [Ni]      contiguous identities 0..K-1 (RecordSet.pids)
    image_split     int8    [Ni]      index into person.data.records.SPLITS
    image_path      str     [Ni]      relative to the dataset's image root
    caption_image   int64   [Nc]      the caption's image row
    caption_field   uint8   [Nc]      0 = `captions`, 1 = `prompt_caption` (FIELDS)
    caption_text    str     [Nc]
    caption_offsets int64   [Ni+1]    captions of image i are rows offsets[i]:offsets[i+1]
    image_done      uint8   [ceil(Ni/C)]  chunk k (rows kC:(k+1)C) written
    caption_done    uint8   [ceil(Nc/C)]
    attributes: format_version, teacher (Teacher.identity()), dataset (source, image_root, format,
                split_rule, fingerprint), counts (images, captions, ids, captions_by_field),
                extraction (chunk_rows, batch_size)

Caption rows follow the records: for record i in order, its `captions`, then its `prompt_caption`s.

Surviving a kill at any moment. A store is built under a temp name beside it (person.files.atomic_dir)
with everything but the embeddings, status and error text, read back, fsynced, then renamed into place.
After that, extraction only ever writes raw bytes of fixed-size arrays whose space exists from the start;
a chunk's done flag is written after its rows are on disk (fsynced: `durable`).
- HDF5 is not crash-safe when its metadata (B-trees, heaps, attributes) changes. So the writable
  arrays are contiguous, allocated at creation and uncompressed: writing them never touches
  metadata, and a killed writer leaves a valid file (tests/teacher/test_store.py pins that the bytes outside
  the data regions never change). Unwritten space stays a sparse hole on disk. The rows are written
  with os.pwrite at the datasets' offsets, not through h5py, which reports a failed write late or never.
- zarr's LocalStore writes each chunk file atomically (temp file + rename, since zarr 3.1.2), and the
  embedding, status and error chunks are exactly the writing unit, so a chunk is old or new, never torn.

Surviving a full or failing disk. Any write error stops the run with StoreWriteError (what failed, the
OS reason, the space the unfinished chunks need vs what is free); the unit it hit is not marked done, so
the same command continues once there is room. Damage after the fact (a deleted zarr chunk file, zeroed
bytes) is found when a store is opened (`checks`: shapes against the counts, caption offsets, a few
rows of every done chunk) and refused with StoreFormatError / StoreDamagedError; reopening it for
writing checks every done row and marks damaged chunks pending, so rerunning the extraction repairs it.

Naming. `--embedding_path` is the store (a path ending in .h5 or .zarr) or a folder (default
`embeddings/`) holding `<dataset>__<teacher>[-pad].<h5|zarr>`: see `resolve_store_path` (the writer's
name) and `locate_store` (a reader's lookup, which needs the records but not the teacher).

Reading. The whole embedding arrays in RAM when they fit (`in_memory="auto"`: at most `max_ram_bytes`,
default half the machine's memory), otherwise random rows straight from the file through np.memmap:
the HDF5 datasets are contiguous (one map at the dataset's offset), the zarr embedding chunks are
stored raw (no compression: fp16 embeddings hardly compress), one map per chunk file. Through
h5py/zarr indexing a random row costs a whole chunk or a slow selection; the maps cost what a plain
memmap costs (bench/store.py). A store keeps no HDF5/zarr handle open between calls (text and path
reads open it briefly), so it is safe to use after fork and never blocks a writer.

Unlabeled stores (format_version 2): the same arrays and guarantees for a user's own images or descriptions,
with NONE (-1) identities, splits and caption images; `open_store` refuses them, training reads them with
`open_unlabeled` (`unlabeled` says what they hold; `growth` how a grown source is appended).

Modules: `schema` (constants, errors, caption layout, the dataset/teacher checks), `naming`, `backends` (HDF5
and zarr), `checks` (shapes, offsets, damage), `durable` (fsynced unit writes, write errors), `writer`
(resumable), `reader` (`open_store`, `FeatureStore`), `unlabeled` (`open_unlabeled`, `UnlabeledStore`),
`growth`, `erase` (rows removed from an unlabeled store, written again without them).
"""
from person.teacher.store.naming import locate_store, resolve_store_path
from person.teacher.store.reader import FeatureStore, default_ram_bytes, open_store, open_with_records
from person.teacher.store.schema import (DATASET_KEYS, DEFAULT_CHUNK_ROWS, FIELDS, FORMAT_VERSION, FORMATS, NONE,
                                         NORM_TOLERANCE, OK, PENDING, READABLE_VERSIONS, REASON_BYTES, SUFFIXES,
                                         TEACHER_KEYS, UNLABELED_VERSION, UNREADABLE, CaptionLayout, StoreDamagedError,
                                         StoreFormatError, StoreIncompleteError, StoreKindError, StoreMismatchError,
                                         StoreWriteError, caption_layout, check_dataset, check_teacher, dataset_info,
                                         num_chunks, store_format)
from person.teacher.store.unlabeled import UnlabeledStore, open_unlabeled
from person.teacher.store.writer import StoreWriter, Unit, plan_units

__all__ = ["DATASET_KEYS", "DEFAULT_CHUNK_ROWS", "FIELDS", "FORMATS", "FORMAT_VERSION", "NONE", "NORM_TOLERANCE",
           "OK", "PENDING", "READABLE_VERSIONS", "REASON_BYTES", "SUFFIXES", "TEACHER_KEYS", "UNLABELED_VERSION",
           "UNREADABLE", "CaptionLayout", "FeatureStore", "StoreDamagedError", "StoreFormatError",
           "StoreIncompleteError", "StoreKindError", "StoreMismatchError", "StoreWriteError", "StoreWriter", "Unit",
           "UnlabeledStore", "caption_layout", "check_dataset", "check_teacher", "dataset_info", "default_ram_bytes",
           "locate_store", "num_chunks", "open_store", "open_unlabeled", "open_with_records", "plan_units",
           "resolve_store_path", "store_format"]
