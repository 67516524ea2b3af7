"""The long memory: FIFO order and capacity, warm-up, and a state that resumes exactly."""
import pytest
import torch

from person.train.memory import CrossModalMemory, XBMemory, gather_with_offset


def rows(start, n, dim=2):
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, dim), torch.arange(start, start + n)


def oldest_first(mem: XBMemory) -> list[int]:
    emb, labels = mem.get()
    order = [(mem.ptr + i) % mem.size for i in range(mem.size)] if mem.filled == mem.size else range(mem.filled)
    return [int(labels[i]) for i in order]


def test_fifo_order_and_capacity():
    mem = XBMemory(size=5, dim=2)
    mem.enqueue(*rows(0, 3))
    assert mem.filled == 3 and oldest_first(mem) == [0, 1, 2]
    mem.enqueue(*rows(3, 4))  # 2 slots left: the two oldest (0, 1) are overwritten
    assert mem.filled == 5 and oldest_first(mem) == [2, 3, 4, 5, 6]
    mem.enqueue(*rows(7, 12))  # more than the capacity at once: only the last 5 survive
    assert oldest_first(mem) == [14, 15, 16, 17, 18]
    emb, labels = mem.get()
    assert torch.equal(emb[:, 0], labels.float())  # embeddings stay with their labels


def test_state_round_trip_continues_exactly():
    a = XBMemory(size=4, dim=2)
    a.enqueue(*rows(0, 3))
    b = XBMemory(size=4, dim=2)
    b.load_state_dict(a.state_dict())
    for mem in (a, b):
        mem.enqueue(*rows(3, 2))
    assert a.ptr == b.ptr == 1 and torch.equal(a.get()[0], b.get()[0]) and torch.equal(a.get()[1], b.get()[1])
    with pytest.raises(ValueError, match="use the same --memory_size"):
        XBMemory(size=8, dim=2).load_state_dict(a.state_dict())


def test_bad_inputs():
    mem = XBMemory(size=4, dim=2)
    with pytest.raises(ValueError, match=r"embeddings \[N, 2\]"):
        mem.enqueue(torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="one label per embedding"):
        mem.enqueue(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_cross_modal_warmup_and_state():
    mem = CrossModalMemory(size=6, dim=2, warmup_iters=2)
    for step in range(3):
        assert mem.active == (step >= 2)
        mem.update(rows(10 * step, 2), rows(10 * step + 5, 2))
    assert mem.image.filled == 2 and mem.text.filled == 2
    assert mem.image.get()[1].tolist() == [20, 21] and mem.text.get()[1].tolist() == [25, 26]
    copy = CrossModalMemory(size=6, dim=2, warmup_iters=2)
    copy.load_state_dict(mem.state_dict())
    assert copy.steps == 3 and copy.active and copy.text.get()[1].tolist() == [25, 26]


def test_gather_without_a_process_group_is_the_identity():
    t = torch.arange(6).reshape(3, 2)
    out, offset = gather_with_offset(t)
    assert torch.equal(out, t) and offset == 0
