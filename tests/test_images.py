"""Image pipeline: decode, resize modes, colour-true augmentation, normalisation, skips and strict mode."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from person.data import ImageDataset, SkipReport, collate_images
from person.images import ImageReadError, ImageTransform, load_image, normalize_batch, parse_image_size
from person.records import load_records


def solid(path, size=(50, 100), colour=(200, 30, 40), fmt="JPEG"):
    Image.new("RGB", size, colour).save(path, fmt)
    return path


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


def test_jpeg_draft_decodes_large_images_reduced(tmp_path):
    path = solid(tmp_path / "big.jpg", size=(1000, 2000))
    assert load_image(path, size_hint=(224, 112)).size[0] < 1000
    assert load_image(path).size == (1000, 2000)


def test_png_and_grey_become_rgb(tmp_path):
    Image.new("L", (20, 40), 77).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (77, 77, 77)


@pytest.mark.parametrize("content, reason", [(None, "file not found"), (b"not an image", "not an image Pillow"),
                                             ("truncated", "corrupt image")])
def test_unreadable_images_name_path_and_reason(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    if content == "truncated":
        solid(path, size=(200, 400))
        path.write_bytes(path.read_bytes()[:300])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as e:
        load_image(path)
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


def test_dataset_with_sampler_items_is_reproducible(tmp_path):
    rs = dataset_with_a_bad_image(tmp_path)
    ds = ImageDataset(rs, ImageTransform(size=(32, 16), train=True))
    assert np.array_equal(ds[(1, 99)]["image"], ds[(1, 99)]["image"])
