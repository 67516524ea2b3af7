"""Training items: each picks one of its image's captions by its seed, and the store row matches the text."""
import numpy as np

from person.store import FIELDS, open_store
from person.train_data import DistillCollate, DistillDataset
from tests.distill_fixtures import make_setup


def test_caption_rows_match_their_text_for_every_field_choice(tmp_path):
    json_path, store_path, _ = make_setup(tmp_path, ids=6)
    with open_store(store_path) as store:
        from person.records import load_records
        records = load_records(json_path)
        for fields, allowed in (("all", set(range(len(FIELDS)))), ("captions", {FIELDS.index("captions")})):
            data = DistillDataset(records, store.caption_offsets, None, fields)
            seen = set()
            for row in range(len(records)):
                for seed in range(12):
                    item = data[(row, seed)]
                    assert item == data[(row, seed)]  # the seed decides
                    assert store.caption_image[item["caption"]] == row
                    assert store.caption_texts([item["caption"]]) == [item["text"]]
                    assert store.caption_field[item["caption"]] in allowed
                    seen.add(int(store.caption_field[item["caption"]]))
            assert seen == allowed  # over many seeds every allowed field is picked


def test_collate_encodes_the_captions_and_drops_unreadable_items():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    batch = DistillCollate(5)([{"row": 3, "image": image, "caption": 7, "text": "行人 in red"},
                               {"row": 4, "caption": 9, "text": "x", "error": "4.jpg: corrupt"}])
    assert batch["rows"].tolist() == [3] and batch["captions"].tolist() == [7]
    assert batch["images"].shape == (1, 2, 3, 3) and np.array_equal(batch["images"][0].numpy(), image)
    assert batch["chars"].shape == (1, 5, 4) and batch["mask"].tolist() == [[True] * 5]
    assert bytes(batch["chars"][0, 0].numpy().astype(np.uint8)[:3]).decode() == "行"
    assert batch["skipped"] == [(4, "4.jpg: corrupt")]


def test_collate_without_images_keeps_every_caption():
    batch = DistillCollate(8)([{"row": 1, "caption": 2, "text": "a man"}, {"row": 5, "caption": 11, "text": "🙂"}])
    assert batch["images"] is None and batch["skipped"] == []
    assert batch["rows"].tolist() == [1, 5] and batch["captions"].tolist() == [2, 11]
    assert batch["mask"].sum(1).tolist() == [5, 1]
