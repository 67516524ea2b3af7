"""Text students: every registered text backbone is built, run, trained a step and exported from its vectors."""
import re

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch
from torch import nn

from person.models.registry import UnknownModelError
from person.models.students import create_text_student, text_students

NAMES = text_students()  # discovered: a new model file is tested with no new test code
DIM, MAX_LEN = 48, 32
TEXTS = ["A man in a red coat.", "一位穿红色外套的男子", "emoji 👩‍🦰 ok", ""]


def encode(texts, length):
    """Local reference encoding: each character's UTF-8 bytes padded to 4, and a mask (1 = real)."""
    chars = np.zeros((len(texts), length, 4), dtype=np.uint8)
    mask = np.zeros((len(texts), length), dtype=bool)
    for b, text in enumerate(texts):
        for i, ch in enumerate(text[:length]):
            raw = list(ch.encode("utf-8"))
            chars[b, i] = raw + [0] * (4 - len(raw))
            mask[b, i] = True
    return torch.from_numpy(chars), torch.from_numpy(mask)


def lookup(table, chars):
    """What the device runtime does with input_embeddings.npy: 4 row lookups and a sum per character."""
    return table[np.arange(4) * 256 + chars.astype(np.int64)].sum(axis=-2)


def model(name, **kwargs):
    torch.manual_seed(0)
    return create_text_student(name, DIM, MAX_LEN, **kwargs).eval()


def test_variants_are_registered_with_their_depth():
    assert {f"tbackbone.char.L{n}" for n in (1, 2, 3, 4, 6)} <= set(NAMES)
    for name in NAMES:
        if depth := re.fullmatch(r"tbackbone\.char\.L(\d+)", name):
            assert len(model(name).blocks) == int(depth[1])


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_and_finite(name):
    chars, mask = encode(TEXTS, 20)
    with torch.no_grad():
        out = model(name)(chars, mask)
    assert out.shape == (len(TEXTS), DIM) and torch.isfinite(out).all()  # the empty caption too


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_forward_embedded_on_the_exported_table(name):
    m = model(name)
    chars, mask = encode(TEXTS, 20)
    table = m.byte_table().numpy()
    assert table.shape == (4 * 256, m.width) and table.dtype == np.float32
    vectors = lookup(table, chars.numpy())
    np.testing.assert_allclose(vectors, m.embed_chars(chars).detach().numpy(), atol=1e-6)
    with torch.no_grad():
        direct = m(chars, mask)
        via_table = m.forward_embedded(torch.from_numpy(vectors), mask)
    torch.testing.assert_close(via_table, direct, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_padding_changes_nothing(name):
    m = model(name)
    short_chars, short_mask = encode(TEXTS[:2], 20)
    long_chars, long_mask = encode(TEXTS[:2], MAX_LEN)
    long_chars[~long_mask] = torch.randint(0, 256, (int((~long_mask).sum()), 4), dtype=torch.uint8)  # junk pads
    with torch.no_grad():
        torch.testing.assert_close(m(long_chars, long_mask), m(short_chars, short_mask), atol=1e-5, rtol=1e-5)
        alone = m(*encode(TEXTS[1:2], 10))
    torch.testing.assert_close(alone, m(short_chars, short_mask)[1:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    m = model(name).train()
    chars, mask = encode(TEXTS, 20)
    target = torch.randn(len(TEXTS), DIM, generator=torch.Generator().manual_seed(1))
    (m(chars, mask) * target).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert m.byte_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic(name):
    m = model(name, dropout=0.1)
    chars, mask = encode(TEXTS, 20)
    with torch.no_grad():
        assert torch.equal(m(chars, mask), m(chars, mask))


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_stem_takes_any_length_at_any_stride(stride):
    m = model("tbackbone.char.L1", stem_stride=stride)
    assert m.stem.kernel_size == (2 * stride + 1,) and m.stem.stride == (stride,)
    for text in ["a", "ab", "abc", "abcd", "abcde", "一位穿红色"]:  # lengths around every multiple of the stride
        with torch.no_grad():
            tight, padded = m(*encode([text], len(text))), m(*encode([text], MAX_LEN))
        torch.testing.assert_close(tight, padded, atol=1e-5, rtol=1e-5)


def test_width_option():
    m = model("tbackbone.char.L2", width=128)
    assert m.byte_table().shape == (1024, 128) and m.blocks[0].attn.heads == 2
    assert m(*encode(TEXTS, 8)).shape == (len(TEXTS), DIM)


class Embedded(nn.Module):
    """The exported text graph: from looked-up character vectors and a mask to the embedding."""

    def __init__(self, student):
        super().__init__()
        self.student = student

    def forward(self, char_vectors, mask):
        return self.student.forward_embedded(char_vectors, mask)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore:# The axis name")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_of_forward_embedded(name, dynamo, tmp_path):
    m = model(name)
    table = m.byte_table().numpy()
    chars, mask = encode(TEXTS[:2], 7)
    example = (torch.from_numpy(lookup(table, chars.numpy())), mask.float())
    path = tmp_path / "model_text.onnx"
    names = dict(input_names=["char_vectors", "mask"], output_names=["embeddings"])
    if dynamo:
        axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("length", max=MAX_LEN)}
        torch.onnx.export(Embedded(m).eval(), example, path, dynamo=True, dynamic_shapes=(axes, axes), **names)
    else:
        axes = {0: "batch", 1: "length"}
        torch.onnx.export(Embedded(m).eval(), example, path, dynamo=False, opset_version=17, **names,
                          dynamic_axes={"char_vectors": axes, "mask": axes, "embeddings": {0: "batch"}})
    graph = onnx.load(path).graph
    arrays = [onnx.numpy_helper.to_array(t) for t in graph.initializer]
    assert not any(a.shape == table.shape and np.array_equal(a, table) for a in arrays), "the table stays outside"
    assert "Gelu" in {n.op_type for n in graph.node} or "Erf" in {n.op_type for n in graph.node}
    chars, mask = encode(TEXTS, 13)  # other batch size and length than the export's: both axes are dynamic
    vectors = lookup(table, chars.numpy())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"char_vectors": vectors, "mask": mask.numpy().astype(np.float32)})[0]
    with torch.no_grad():
        want = m(chars, mask).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_clear_errors():
    m = model("tbackbone.char.L1")
    with pytest.raises(ValueError, match="exceed max_seq_length=32"):
        m(*encode(["x" * 40], 40))
    with pytest.raises(ValueError, match=r"char_bytes must be \[B, L, 4\]"):
        m(torch.zeros(2, 5, dtype=torch.uint8), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        m(torch.zeros(2, 5, 4, dtype=torch.uint8), torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="feature_dim must be a positive int"):
        create_text_student("tbackbone.char.L3", 0)
    with pytest.raises(ValueError, match="stem_stride must be a positive int"):
        create_text_student("tbackbone.char.L3", DIM, stem_stride=0)


@pytest.mark.parametrize("bad, reason", [
    ("tbackbone.char.L5", "module 'person.models.tbackbone.char' has no 'L5'"),
    ("backbone.mf3.ANet2", "not a registered text backbone"),
    ("L3", "expected a dotted path such as tbackbone.char.L3"),
])
def test_wrong_name_is_a_clear_error(bad, reason):
    with pytest.raises(UnknownModelError) as e:
        create_text_student(bad, DIM)
    assert reason in str(e.value) and "tbackbone.char.L1, tbackbone.char.L2" in str(e.value)
