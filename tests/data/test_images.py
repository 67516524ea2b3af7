"""Image pipeline: decode, resize modes, colour-true augmentation, normalisation, skips and strict mode;
16-bit images scaled, only regular files read, and the byte and pixel caps."""
import json
import os
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from person.data import images
from person.data.datasets import ImageDataset, SkipReport, collate_images
from person.data.datasets import normalize_batch
from person.data.images import DEFAULT_LIMITS, ImageLimits, ImageReadError, ImageTransform, load_image, load_pixels, parse_image_size, plain_jpeg_size, read_image_bytes
from person.data.records import load_records


def solid(path, size=(50, 100), colour=(200, 30, 40), fmt="JPEG"):
    Image.new("RGB", size, colour).save(path, fmt)
    return path


def textured(size=(120, 250), seed=0):
    """A photo-like RGB image: smooth shading plus detail at a few scales."""
    rng = np.random.default_rng(seed)
    layers = [np.asarray(Image.fromarray(rng.integers(0, 256, (h, h // 2, 3), dtype=np.uint8)).resize(
        size, Image.Resampling.BICUBIC), dtype=np.float32) for h in (4, 16, 64)]
    return Image.fromarray(np.clip(sum(layers) / 3, 0, 255).astype(np.uint8))


def test_parse_image_size():
    assert parse_image_size("224x112") == (224, 112)
    with pytest.raises(ValueError, match="expected HxW"):
        parse_image_size("224")


def test_stretch_gives_h_by_w_uint8_chw(tmp_path):
    img = load_image(solid(tmp_path / "a.jpg"))
    out = ImageTransform(size=(64, 32))(img)
    assert out.dtype == np.uint8 and out.shape == (3, 64, 32)


def test_pad_keeps_aspect_with_mean_colour(tmp_path):
    img = Image.new("RGB", (60, 60), (255, 0, 0))  # square into a 2:1 tall target: pads top and bottom
    out = ImageTransform(size=(64, 32), resize="pad")(img)
    assert out[:, 0, 16].tolist() == [128, 128, 128]    # padding in the mean colour (0.5 -> 128)
    assert out[:, 32, 16].tolist() == [255, 0, 0]       # the image itself, centred
    stretched = ImageTransform(size=(64, 32))(img)
    assert stretched[:, 0, 16].tolist() == [255, 0, 0]


def test_pil_images_and_pixel_arrays_transform_alike():
    img = textured()
    for t in (ImageTransform(size=(64, 32)), ImageTransform(size=(64, 32), resize="pad")):
        assert np.array_equal(t(np.asarray(img)), t(img))
    t = ImageTransform(size=(64, 32), train=True)
    assert np.array_equal(t(np.asarray(img), np.random.default_rng(3)), t(img, np.random.default_rng(3)))
    with pytest.raises(ValueError, match="uint8 RGB"):
        ImageTransform()(np.zeros((10, 10), dtype=np.uint8))


@pytest.mark.parametrize("size, mean_tolerance, max_tolerance", [
    ((50, 100), 0.5, 1),     # upscaling: the same bilinear, up to rounding
    ((150, 300), 1.0, 8),    # shrinking < 2x: Pillow widens its filter a little, we do not
    ((480, 960), 1.0, 8),    # shrinking > 2x: area averaging, then bilinear
])
def test_resize_is_bilinear_like_pillows(size, mean_tolerance, max_tolerance):
    img = textured(size)
    ours = ImageTransform(size=(224, 112))(img).transpose(1, 2, 0).astype(np.float32)
    pillow = np.asarray(img.resize((112, 224), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(ours - pillow).mean() < mean_tolerance and np.abs(ours - pillow).max() <= max_tolerance


def test_flip_mirrors_the_image():
    img = textured()
    kept = ImageTransform(size=(64, 32), train=True, flip=0.0)(img, np.random.default_rng(0))
    flipped = ImageTransform(size=(64, 32), train=True, flip=1.0)(img, np.random.default_rng(0))
    assert np.array_equal(flipped, kept[:, :, ::-1])


def test_training_augmentation_is_reproducible_and_colour_true(tmp_path):
    arr = np.zeros((100, 50, 3), dtype=np.uint8)
    arr[:50] = (10, 200, 30)
    arr[50:] = (220, 220, 0)
    img = Image.fromarray(arr)
    t = ImageTransform(size=(64, 32), train=True)
    a = t(img, np.random.default_rng(1))
    assert np.array_equal(a, t(img, np.random.default_rng(1)))
    outs = [t(img, np.random.default_rng(s)) for s in range(20)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])
    # every output pixel is one of the two colours (or a blend at the seam): no colour jitter
    for o in outs:
        top, bottom = o[:, 2, 16].tolist(), o[:, -3, 16].tolist()
        assert top == [10, 200, 30] and bottom == [220, 220, 0]
    with pytest.raises(ValueError, match="needs an rng"):
        t(img)


def test_normalize_batch_exact():
    x = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1)
    y = normalize_batch(x)
    assert torch.allclose(y.flatten(), torch.tensor([-1.0, 1.0, 128 / 255 * 2 - 1]), atol=1e-6)
    y = normalize_batch(x, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    assert torch.allclose(y.flatten()[0], torch.tensor(-0.48145466 / 0.26862954))
    with pytest.raises(ValueError, match="expected uint8"):
        normalize_batch(torch.zeros(1, 3, 2, 2))


def test_normalize_batch_matches_the_formula_for_any_layout_and_dtype():
    x = torch.randint(0, 256, (4, 3, 6, 5), dtype=torch.uint8)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    m, sd = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (mean, std))
    want = (x.double() / 255 - m) / sd
    for batch in (x, x.transpose(2, 3).contiguous().transpose(2, 3)):  # contiguous and strided
        got = normalize_batch(batch, mean, std)
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.allclose(got.double(), want, atol=1e-6)
    assert torch.allclose(normalize_batch(x, mean, std, dtype=torch.float64), want, atol=1e-12)
    assert normalize_batch(x[:0]).shape == (0, 3, 6, 5)


def test_jpeg_draft_decodes_large_images_reduced(tmp_path):
    path = solid(tmp_path / "big.jpg", size=(1000, 2000))
    assert load_image(path, size_hint=(224, 112)).size == (125, 250)  # 1/8: still >= 112 x 224
    assert load_image(path).size == (1000, 2000)
    assert load_pixels(path, size_hint=(224, 112)).shape == (250, 125, 3)
    assert load_pixels(path).shape == (2000, 1000, 3)


@pytest.mark.parametrize("name, size, mode, options", [
    ("crop.jpg", (128, 264), "RGB", {"quality": 90}),
    ("big.jpg", (512, 1024), "RGB", {"quality": 85}),
    ("odd.jpg", (301, 617), "RGB", {"quality": 95, "subsampling": 0}),
    ("progressive.jpg", (400, 900), "RGB", {"progressive": True}),
    ("grey.jpg", (300, 700), "L", {}),
    ("cmyk.jpg", (130, 260), "CMYK", {}),  # left to Pillow
    ("crop.png", (128, 264), "RGB", {}),   # left to Pillow
])
def test_load_pixels_gives_the_pixels_load_image_gives(tmp_path, name, size, mode, options):
    path = tmp_path / name
    textured(size).convert(mode).save(path, **options)
    for hint in (None, (224, 112), (64, 32)):
        pixels = load_pixels(path, hint)
        assert pixels.dtype == np.uint8 and np.array_equal(pixels, np.asarray(load_image(path, hint)))


def test_plain_jpeg_size_reads_the_frame_and_leaves_the_rest_to_pillow(tmp_path):
    textured((130, 270)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    assert plain_jpeg_size(data) == (130, 270)
    assert plain_jpeg_size(data[:-50]) is None  # truncated: Pillow reports it
    textured((130, 270)).convert("CMYK").save(tmp_path / "c.jpg")
    assert plain_jpeg_size((tmp_path / "c.jpg").read_bytes()) is None
    assert plain_jpeg_size(b"\x89PNG\r\n") is None


def test_png_and_grey_become_rgb(tmp_path):
    Image.new("L", (20, 40), 77).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (77, 77, 77)


@pytest.mark.parametrize("load", [load_image, load_pixels])
@pytest.mark.parametrize("content, reason", [(None, "file not found"), (b"not an image", "not an image Pillow"),
                                             ("truncated", "corrupt image"), ("scrambled", "corrupt image")])
def test_unreadable_images_name_path_and_reason(tmp_path, load, content, reason):
    path = tmp_path / "x.jpg"
    if content == "truncated":
        solid(path, size=(200, 400))
        path.write_bytes(path.read_bytes()[:300])
    elif content == "scrambled":  # a whole JPEG with a valid frame header but a bogus Huffman table
        solid(path, size=(200, 400))
        data = bytearray(path.read_bytes())
        table = data.index(b"\xff\xc4") + 5
        data[table:table + 16] = b"\xff" * 16
        path.write_bytes(bytes(data))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as e:
        load(path)
    assert str(path) in str(e.value)


def dataset_with_a_bad_image(tmp_path):
    recs = [{"id": i, "file_path": f"{i}.jpg", "captions": ["c"]} for i in range(4)]
    (tmp_path / "synthpedes-dataset.json").write_text(json.dumps(recs))
    for i in (0, 1, 3):
        solid(tmp_path / f"{i}.jpg", colour=(i * 60, 0, 0))
    (tmp_path / "2.jpg").write_bytes(b"garbage")
    return load_records(tmp_path / "synthpedes-dataset.json", eval_ids=1)


def test_dataset_skips_bad_images_counted_with_path(tmp_path):
    rs = dataset_with_a_bad_image(tmp_path)
    ds = ImageDataset(rs, ImageTransform(size=(32, 16)))
    batch = collate_images([ds[i] for i in range(4)])
    assert batch["rows"].tolist() == [0, 1, 3] and batch["images"].shape == (3, 3, 32, 16)
    report = SkipReport()
    report.add(batch["skipped"])
    assert len(report) == 1 and "2.jpg" in report.summary() and "row 2" in report.summary()


def test_dataset_strict_mode_raises(tmp_path):
    rs = dataset_with_a_bad_image(tmp_path)
    ds = ImageDataset(rs, ImageTransform(size=(32, 16)), strict=True)
    with pytest.raises(ImageReadError, match="2.jpg"):
        ds[2]


def test_dataset_gives_image_transforms_pixels_and_other_transforms_pil_images(tmp_path):
    rs = dataset_with_a_bad_image(tmp_path)
    assert isinstance(ImageDataset(rs, lambda img: img)[0]["image"], Image.Image)
    pixels = ImageDataset(rs, ImageTransform(size=(32, 16)))[0]["image"]
    assert np.array_equal(pixels, ImageTransform(size=(32, 16))(load_image(rs.image_path(0))))


def _collate_in_worker(batch):
    out = collate_images(batch)
    return out, out["images"].is_shared()


def test_collate_in_a_loader_worker_stacks_straight_into_shared_memory(tmp_path):
    rs = dataset_with_a_bad_image(tmp_path)
    ds = ImageDataset(rs, ImageTransform(size=(32, 16)))
    assert not collate_images([ds[0], ds[1]])["images"].is_shared()
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=_collate_in_worker)
    (batch, shared_in_worker), = list(loader)
    assert shared_in_worker and batch["rows"].tolist() == [0, 1, 3]
    assert torch.equal(batch["images"], collate_images([ds[i] for i in range(4)])["images"])


def test_dataset_with_sampler_items_is_reproducible(tmp_path):
    rs = dataset_with_a_bad_image(tmp_path)
    ds = ImageDataset(rs, ImageTransform(size=(32, 16), train=True))
    assert np.array_equal(ds[(1, 99)]["image"], ds[(1, 99)]["image"])


def test_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch):
    from PIL import Image as PILImage
    path = tmp_path / "big.png"
    PILImage.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)  # 64x64 is over 2x the limit: Pillow refuses it
    with pytest.raises(ImageReadError, match=r"big\.png: refused"):
        load_image(path)


# --- 16-bit images: scaled to 8 bits by their top byte (v >> 8), never clipped ---------------------------------

SAMPLES16 = [0, 1, 255, 256, 257, 32767, 32768, 65280, 65534, 65535]
TOP_BYTES = [0, 0, 0, 1, 1, 127, 128, 255, 255, 255]  # v >> 8


def png_bytes(width, height, bit_depth, colour_type, raw_rows):
    """A PNG written by hand (filter 0 on every row), so the test does not lean on Pillow's writer."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows, 9))
            + chunk(b"IEND", b""))


def png16(values):
    """uint16 [H, W] (grey) or [H, W, 3] (48-bit RGB) -> PNG bytes, samples big-endian as PNG stores them."""
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    return png_bytes(values.shape[1], values.shape[0], 16, 0 if values.ndim == 2 else 2, rows)


@pytest.mark.parametrize("load", [load_image, load_pixels])
def test_16_bit_grey_png_keeps_its_top_byte(tmp_path, load):
    path = tmp_path / "grey16.png"
    path.write_bytes(png16(np.array([SAMPLES16, SAMPLES16[::-1]], dtype=np.uint16)))
    pixels = np.asarray(load(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (2, len(SAMPLES16), 3)
    assert pixels[0, :, 0].tolist() == TOP_BYTES and pixels[1, :, 0].tolist() == TOP_BYTES[::-1]
    assert (pixels == pixels[:, :, :1]).all()  # grey: R = G = B
    assert np.array_equal(np.asarray(load_pixels(path)), np.asarray(load_image(path)))


def test_48_bit_rgb_png_keeps_its_top_byte_like_grey(tmp_path):
    values = np.stack([np.array([SAMPLES16], np.uint16), np.array([SAMPLES16[::-1]], np.uint16),
                       np.full((1, len(SAMPLES16)), 1000, np.uint16)], axis=2)
    path = tmp_path / "rgb48.png"
    path.write_bytes(png16(values))
    pixels = np.asarray(load_image(path))
    assert pixels[0].tolist() == [[r, g, 3] for r, g in zip(TOP_BYTES, TOP_BYTES[::-1])]  # 1000 >> 8 = 3
    assert np.array_equal(load_pixels(path), pixels)


@pytest.mark.parametrize("mode, dtype", [("I;16B", ">u2"), ("I", "<i4")])
def test_16_bit_tiff_modes_scale_alike(tmp_path, mode, dtype):
    img = Image.frombytes(mode, (len(SAMPLES16), 1), np.array(SAMPLES16, dtype=dtype).tobytes())
    img.save(tmp_path / "x.tif")
    assert Image.open(tmp_path / "x.tif").mode == mode  # the mode under test is the one read back
    assert np.asarray(load_image(tmp_path / "x.tif"))[0, :, 1].tolist() == TOP_BYTES


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_transform_scales_16_bit_pil_images_as_load_image_does(mode, dtype):
    img = Image.frombytes(mode, (len(SAMPLES16), 1), np.array(SAMPLES16, dtype=dtype).tobytes())
    out = ImageTransform(size=(8, len(SAMPLES16)))(img)
    assert out[:, 0, :].tolist() == [TOP_BYTES] * 3


@pytest.mark.parametrize("values, mode, reason", [
    ([0, 70000], "I", r"integer pixels outside 0\.\.65535 \(mode I\)"),
    ([-1, 5], "I", r"integer pixels outside 0\.\.65535"),
    ([0.0, 0.5], "F", r"floating-point pixels \(mode F\)"),
])
def test_pixels_with_no_8_bit_scale_are_unreadable(tmp_path, values, mode, reason):
    dtype = "<i4" if mode == "I" else "<f4"
    Image.frombytes(mode, (2, 1), np.array(values, dtype=dtype).tobytes()).save(tmp_path / "x.tif")
    with pytest.raises(ImageReadError, match=reason):
        load_image(tmp_path / "x.tif")


# --- only regular files are opened ---------------------------------------------------------------------------

def read_in_thread(load, path, limits=DEFAULT_LIMITS):
    """Run load(path) in a thread; give it 30 s (a hang guard, not a timing check)."""
    box = {}

    def run():
        try:
            box["result"] = load(path, None, limits)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    return thread, box


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("load", [load_image, load_pixels])
def test_a_fifo_is_refused_not_waited_on(tmp_path, load):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    thread, box = read_in_thread(load, fifo)
    if thread.is_alive():  # blocked in open() until a writer comes: be that writer, so the suite goes on
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail("reading a FIFO blocked")
    assert isinstance(box.get("error"), ImageReadError), box
    assert str(box["error"]).startswith(f"{fifo}: not a regular file (a FIFO)")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
@pytest.mark.parametrize("load", [load_image, load_pixels])
@pytest.mark.parametrize("link", [False, True])
def test_a_device_is_refused_even_through_a_symlink(tmp_path, load, link):
    path = tmp_path / "zero.jpg" if link else "/dev/zero"
    if link:
        os.symlink("/dev/zero", path)
    # A small byte cap, so that a regression reads 1 MiB of zeros and fails on the message, not on memory.
    thread, box = read_in_thread(load, path, ImageLimits(max_bytes=1 << 20))
    assert not thread.is_alive()
    assert isinstance(box.get("error"), ImageReadError), box
    assert str(box["error"]).startswith(f"{path}: not a regular file (a character device)")


@pytest.mark.parametrize("load", [load_image, load_pixels])
def test_a_directory_is_refused(tmp_path, load):
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(ImageReadError, match=r"d\.jpg: not a regular file \(a directory\)"):
        load(tmp_path / "d.jpg")


def test_a_nul_in_the_path_is_an_unreadable_image(tmp_path):
    with pytest.raises(ImageReadError, match="not a usable file name"):
        load_image(f"{tmp_path}/a\x00.jpg")


# --- the byte cap ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("load", [load_image, load_pixels])
def test_byte_cap_refuses_a_bigger_file_without_reading_it(tmp_path, load, monkeypatch):
    path = solid(tmp_path / "a.jpg")
    size = path.stat().st_size
    assert np.asarray(load(path, None, ImageLimits(max_bytes=size))).shape == (100, 50, 3)  # exactly the cap: read
    monkeypatch.setattr(images, "_read_capped", lambda *a: pytest.fail("read a file over the byte cap"))
    with pytest.raises(ImageReadError, match=rf"a\.jpg: {size} bytes, over the {size - 1}-byte limit; raise it "
                                             r"with --max_image_bytes"):
        load(path, None, ImageLimits(max_bytes=size - 1))


def test_a_file_that_grows_past_the_cap_is_read_no_further():
    r, w = os.pipe()  # a pipe stands in for a file that grew after its size was taken
    try:
        os.write(w, bytes(range(256)) * 4)  # 1024 bytes
        os.close(w)
        with pytest.raises(ImageReadError, match="p: over the 100-byte limit"):
            images._read_capped(r, "p", 10, 100)
        assert len(os.read(r, 4096)) == 1024 - 101  # at most cap + 1 bytes were taken
    finally:
        os.close(r)


def test_read_image_bytes_gives_the_whole_file(tmp_path):
    for name, data in (("empty", b""), ("small", b"\xff\xd8abc"), ("large", os.urandom(300_000))):
        (tmp_path / name).write_bytes(data)
        assert read_image_bytes(tmp_path / name) == data
        assert read_image_bytes(tmp_path / name, ImageLimits(max_bytes=max(len(data), 1))) == data


def test_limits_are_whole_positive_numbers():
    assert (DEFAULT_LIMITS.max_bytes, DEFAULT_LIMITS.max_pixels) == (64 * 1024 * 1024, 50_000_000)
    with pytest.raises(ValueError, match="--max_image_bytes 0: must be a whole number >= 1"):
        ImageLimits(max_bytes=0)
    with pytest.raises(ValueError, match="--max_image_pixels 1.5: must be a whole number >= 1"):
        ImageLimits(max_pixels=1.5)


# --- the pixel cap: checked from the header, after the JPEG draft, before any decode -------------------------

@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """12000 x 12000 8-bit grey (144M pixels) in ~140 KB: zeros compress well."""
    deflate = zlib.compressobj(9)
    row = bytes(12001)  # filter byte + 12000 samples
    idat = b"".join(deflate.compress(row) for _ in range(12000)) + deflate.flush()
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0)
    path.write_bytes(head + struct.pack(">I", zlib.crc32(head[12:])) + struct.pack(">I", len(idat)) + b"IDAT" + idat
                     + struct.pack(">I", zlib.crc32(b"IDAT" + idat)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own warning, at 89M pixels
@pytest.mark.parametrize("load", [load_image, load_pixels])
def test_a_small_file_of_too_many_pixels_is_refused_before_decoding(huge_png, load, monkeypatch):
    assert huge_png.stat().st_size < 200_000 and Image.open(huge_png).size == (12000, 12000)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a refused image"))
    with pytest.raises(ImageReadError, match=r"huge\.png: decodes to 12000x12000 = 144000000 pixels, over the "
                                             r"50000000-pixel limit; raise it with --max_image_pixels"):
        load(huge_png)


@pytest.mark.parametrize("load", [load_image, load_pixels])
def test_pixel_cap_counts_the_draft_reduced_decode(tmp_path, load, monkeypatch):
    path = solid(tmp_path / "big.jpg", size=(400, 800))  # with a (32, 16) hint: decoded at 1/8, 50 x 100
    with pytest.raises(ImageReadError, match=r"decodes to 400x800 = 320000 pixels, over the 5000-pixel limit"):
        load(path, None, ImageLimits(max_pixels=5000))
    assert np.asarray(load(path, (32, 16), ImageLimits(max_pixels=5000))).shape == (100, 50, 3)
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: pytest.fail("decoded a refused image"))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a refused image"))
    with pytest.raises(ImageReadError, match=r"decodes to 50x100 = 5000 pixels, over the 4999-pixel limit"):
        load(path, (32, 16), ImageLimits(max_pixels=4999))


def test_a_jpeg_header_claiming_a_huge_frame_is_refused_from_the_header(tmp_path, monkeypatch):
    # SOI, a baseline frame of 30000 x 30000 x 3 components, EOI: a plain JPEG to plain_jpeg_size, 900M pixels.
    frame = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 30000, 30000, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    path = tmp_path / "claims.jpg"
    path.write_bytes(b"\xff\xd8" + frame + b"\xff\xd9")
    assert plain_jpeg_size(path.read_bytes()) == (30000, 30000)
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: pytest.fail("decoded a refused image"))
    for load in (load_pixels, load_image):  # a plain JPEG takes one decode path either way
        with pytest.raises(ImageReadError, match=r"decodes to 30000x30000 = 900000000 pixels.*--max_image_pixels"):
            load(path)


def test_dataset_counts_images_over_the_caps_as_skips(tmp_path):
    rs = dataset_with_a_bad_image(tmp_path)  # 50 x 100 images: 5000 pixels
    ds = ImageDataset(rs, ImageTransform(size=(32, 16)), False, None, ImageLimits(max_pixels=4999))
    batch = collate_images([ds[i] for i in range(4)])
    assert batch["rows"].tolist() == [] and [row for row, _ in batch["skipped"]] == [0, 1, 2, 3]
    assert all("--max_image_pixels" in reason for row, reason in batch["skipped"] if row != 2)
    assert "not an image Pillow can read" in dict(batch["skipped"])[2]
    pil = ImageDataset(rs, lambda img: img, limits=ImageLimits(max_pixels=4999))  # the Pillow path too
    assert "--max_image_pixels" in pil[0]["error"]
    with pytest.raises(ImageReadError, match=r"0\.jpg: decodes to 50x100"):
        ImageDataset(rs, ImageTransform(size=(32, 16)), strict=True, limits=ImageLimits(max_pixels=4999))[0]


def test_eps_is_not_handed_to_ghostscript(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("ran Ghostscript"))
    path = tmp_path / "x.eps"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 20\n%%EndComments\nshowpage\n")
    assert Image.open(path).format == "EPS"  # Pillow itself would take it
    for load in (load_image, load_pixels):
        with pytest.raises(ImageReadError, match=r"x\.eps: not an image Pillow can read"):
            load(path)
