"""Training items: each picks N of its image's captions by its seed, and the store rows match the texts."""
import numpy as np
import pytest

from person.data.records import load_records
from person.teacher.store import FIELDS, open_store
from person.train.batches import DistillCollate, DistillDataset
from tests.train.distill_fixtures import make_setup


def test_caption_rows_match_their_text_for_every_field_choice(tmp_path):
    json_path, store_path, _ = make_setup(tmp_path, ids=6)
    with open_store(store_path) as store:
        records = load_records(json_path)
        for fields, allowed in (("all", set(range(len(FIELDS)))), ("captions", {FIELDS.index("captions")})):
            data = DistillDataset(records, store.caption_offsets, None, fields)
            seen = set()
            for row in range(len(records)):
                for seed in range(12):
                    item = data[(row, seed)]
                    assert item == data[(row, seed)]  # the seed decides
                    assert len(item["captions"]) == 1
                    assert store.caption_image[item["captions"][0]] == row
                    assert store.caption_texts(item["captions"]) == item["texts"]
                    assert store.caption_field[item["captions"][0]] in allowed
                    seen.add(int(store.caption_field[item["captions"][0]]))
            assert seen == allowed  # over many seeds every allowed field is picked


def test_several_captions_per_image_are_distinct_and_capped_by_what_the_record_has(tmp_path):
    json_path, store_path, _ = make_setup(tmp_path, ids=6)
    with open_store(store_path) as store:
        records = load_records(json_path)
        one, three = (DistillDataset(records, store.caption_offsets, None, "all", per_image=n) for n in (1, 3))
        many = DistillDataset(records, store.caption_offsets, None, "all", per_image=50)
        for row in range(len(records)):
            rows = range(store.caption_offsets[row], store.caption_offsets[row + 1])
            for seed in range(5):
                item = three[(row, seed)]
                assert len(item["captions"]) == min(3, len(rows)) == len(set(item["captions"]))
                assert set(item["captions"]) <= set(rows)
                assert store.caption_texts(item["captions"]) == item["texts"]
                assert sorted(many[(row, seed)]["captions"]) == list(rows)  # all of them, once each
                assert len(one[(row, seed)]["captions"]) == 1
        with pytest.raises(ValueError, match="captions per image must be >= 1, got 0"):
            DistillDataset(records, store.caption_offsets, None, "all", per_image=0)


def test_collate_encodes_the_captions_and_drops_unreadable_items():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    batch = DistillCollate(5)([{"row": 3, "image": image, "captions": [7], "texts": ["行人 in red"]},
                               {"row": 4, "captions": [9], "texts": ["x"], "error": "4.jpg: corrupt"}])
    assert batch["rows"].tolist() == [3] and batch["captions"].tolist() == [7]
    assert batch["caption_owner"].tolist() == [0]
    assert batch["images"].shape == (1, 2, 3, 3) and np.array_equal(batch["images"][0].numpy(), image)
    assert batch["chars"].shape == (1, 5, 4) and batch["mask"].tolist() == [[True] * 5]
    assert bytes(batch["chars"][0, 0].numpy().astype(np.uint8)[:3]).decode() == "行"
    assert batch["skipped"] == [(4, "4.jpg: corrupt")]


def test_collate_without_images_keeps_every_caption():
    batch = DistillCollate(8)([{"row": 1, "captions": [2], "texts": ["a man"]},
                               {"row": 5, "captions": [11], "texts": ["🙂"]}])
    assert batch["images"] is None and batch["skipped"] == []
    assert batch["rows"].tolist() == [1, 5] and batch["captions"].tolist() == [2, 11]
    assert batch["mask"].sum(1).tolist() == [5, 1]


def test_collate_flattens_several_captions_and_records_their_image():
    image = np.zeros((1, 2, 2), dtype=np.uint8)
    batch = DistillCollate(8)([
        {"row": 1, "image": image, "captions": [4, 5, 6], "texts": ["a", "bb", "ccc"]},
        {"row": 2, "captions": [8, 9], "texts": ["x", "y"], "error": "2.jpg: corrupt"},  # dropped with its captions
        {"row": 3, "image": image, "captions": [10, 11], "texts": ["dddd", "e"]}])
    assert batch["rows"].tolist() == [1, 3] and batch["captions"].tolist() == [4, 5, 6, 10, 11]
    assert batch["caption_owner"].tolist() == [0, 0, 0, 1, 1]
    assert batch["mask"].sum(1).tolist() == [1, 2, 3, 4, 1]
