"""Image pipeline: decode, resize modes, colour-true augmentation, normalisation, skips and strict mode."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from person.data.datasets import ImageDataset, SkipReport, collate_images
from person.data.images import (ImageReadError, ImageTransform, load_image, load_pixels, normalize_batch,
                                parse_image_size, plain_jpeg_size)
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
    for images in (x, x.transpose(2, 3).contiguous().transpose(2, 3)):  # contiguous and strided
        got = normalize_batch(images, mean, std)
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
