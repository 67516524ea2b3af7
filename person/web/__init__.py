"""The web app over a Searcher: the search page, its JSON API, and the gallery's images and thumbnails by id.

    serve(Path("gallery/"), SearcherOptions(text_model="export/"))   # person.web.server: what person-serve runs
    app = create_app(Searcher("gallery/", ExportEncoder("export/")), static_dir=STATIC)   # the app alone

Safe to expose, as the serving side of the field learned (Immich, Starlette; ARCHITECTURE.md, "Serving"):
- Ids, not paths (Immich): a result carries its row's uid, never a path. `/images/{id}` and `/thumbs/{id}` look the
  row up, resolve its stored path with symlinks followed and open it only when it lies under the gallery's image root
  (`os.path.commonpath` after `os.path.realpath`, Starlette's CVE-2023-29159 lesson), so no request reads another
  file, whatever the stored path (`..`, absolute) or the URL (encoded slashes) holds.
- Only the image enrolled (person.gallery.images): the file's bytes are read once and must hash to the sha256
  recorded at enrolment (a replaced file, a hard link elsewhere: a 409), are decoded within the caps, and what is
  sent is a JPEG re-encoded from those pixels, never the file's own bytes.
- Caps that say their limit: query length and k (person.gallery.search), queries per request, request bodies, upload
  bytes and decoded pixels (read from the header: a decompression bomb is never decoded). Each refusal is a 4xx JSON
  `{"error": ...}` that names the cap or the field.
- No stack trace reaches a client: anything unexpected is a 500 `{"error": "internal error"}`, its traceback logged.
- The page is the app's own files (no CDN), under a Content-Security-Policy that allows nothing else.
- Sign-in (Immich, Frigate): once the gallery has an account (G/users.json, search/users.py), every request signs
  in, from loopback too: the page's form sets a signed session cookie, scripts send `Authorization: Bearer TOKEN`.
  With no account a loopback-only server stays open; beyond loopback it is refused unless --insecure-no-auth.
- Audited: each search, image and thumbnail view, sign-in and erasure is one line in the gallery's HMAC-chained audit
  log (person.gallery.audit: who, from where, the query or the photo's sha256, filters, k, the ids answered, the FAR
  and threshold, the status), fsynced before the answer is sent; one that cannot be written is a 503, not served.
- Erasure by admins: POST /api/admin/forget runs person.gallery.forget (what search/forget.py runs) by uid, track,
  conditions or age; the server then swaps in the new generation and purges the old one's files.
- Calibrated matches: `far` (1e-2, 1e-3, 1e-4) keeps the hits at or above that operating point's threshold; every hit
  lists the FARs it reaches (`passes`), and the page shows it as a badge.
Live gallery: each request first stats gallery.json; when an enrolment committed a new generation the Searcher
swaps it in whole, and a response names the generation (and live count) its hits came from. A gallery on disk that
cannot be opened, or whose segment files no longer hash to what gallery.json records, is a 503 for searches and
/api/health alike. Query strings that are not UTF-8 are refused (400), not searched with U+FFFD in them.
Thumbnails (longest side THUMB_SIDE, JPEG) are cached on disk keyed by the image's content hash: a frame with many
people is one thumbnail, and a file changed in place is refused before the cache is asked. The original image size
travels inside the thumbnail (a JPEG comment) and in its X-Image-Size header, so the page can draw a row's box.

Batched: text searches in flight together are answered as one batch (one text-model call, one scan of the gallery
per set of conditions), each request still with its own k, filters, FAR, notes, error and audit line.

Modules: `images` (files and thumbnails by id, under the root only), `service` (the searches behind the routes, the
caps, the FAR levels), `batching` (concurrent text searches gathered into batches on one worker thread),
`middleware` (security headers, the catch-all, the host check, the body cap), `accounts` (the users file: scrypt
hashes, tokens), `sessions` (signed cookies, the sign-in rate limit), `auth` (the gate, the sign-in routes,
`require_admin`), `audited` (the audit trail of the routes), `admin` (the erase route), `app` (the routes:
create_app), `server` (the app over a gallery under uvicorn, in one process or several: serve); the page's files are
in static/.
"""
