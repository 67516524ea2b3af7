"""Image students: every registered backbone is built, run, trained a step and exported (timm-style loop)."""
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from person.models.backbone.layers import fuse_bn
from person.models.flops import count_macs
from person.models.registry import UnknownModelError
from person.models.students import StudentContractError, create_image_student, image_students

NAMES = image_students()  # discovered: a new model file is tested with no new test code
DIM = 64
FULL, SMALL = (224, 112), (128, 64)
# Ops a camera/NPU runtime takes; BatchNormalization must be folded away before export. (Identity: the
# exporter's alias for initializers with equal values, e.g. untrained PReLU slopes; onnxsim removes it.
# ReduceMean: global average pooling as the dynamo exporter writes it.)
ALLOWED_OPS = {"Conv", "Relu", "PRelu", "Add", "GlobalAveragePool", "AveragePool", "MaxPool", "Gemm", "MatMul",
               "Reshape", "Flatten", "Identity", "ReduceMean"}
# Parameter counts at feature_dim 512 (trunk + GDC/pool + 512-d LinearBN head), documented ranges.
PARAMS_AT_512 = {"backbone.mf3.ANet2": (1.0e6, 1.5e6), "backbone.mf3.ANet2_w050": (0.2e6, 0.6e6),
                 "backbone.resnet.ResNet18": (10.5e6, 12.5e6), "backbone.tiny.TinyNet": (0.2e6, 0.6e6)}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics and affine terms (and PReLU slopes), so folding is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
    return model


def images(batch, size, seed=0):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_the_three_families_are_registered():
    assert {"backbone.mf3.ANet2", "backbone.mf3.ANet2_w050", "backbone.resnet.ResNet18",
            "backbone.tiny.TinyNet"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [FULL, SMALL, (112, 56)])
def test_forward_shape(name, size):
    torch.manual_seed(0)
    model = create_image_student(name, DIM, size).eval()
    with torch.no_grad():
        out = model(images(2, size))
    assert out.shape == (2, DIM) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_image_student(name, DIM, SMALL).train()
    target = torch.randn(2, DIM, generator=torch.Generator().manual_seed(1))
    (model(images(2, SMALL)) * target).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_eval_is_deterministic_and_per_sample(name):
    torch.manual_seed(0)
    model = randomize_bn(create_image_student(name, DIM, SMALL)).eval()
    x = images(3, SMALL)
    with torch.no_grad():
        a, b, single = model(x), model(x), model(x[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(single, a[1:2], atol=1e-5, rtol=1e-4)  # no mixing across the batch in eval


@pytest.mark.parametrize("name", sorted(PARAMS_AT_512))
def test_parameter_count_in_documented_range(name):
    low, high = PARAMS_AT_512[name]
    assert low <= n_params(create_image_student(name, 512, FULL)) <= high


def test_tiny_models_are_smaller_than_anet2():
    anet2 = create_image_student("backbone.mf3.ANet2", 512)
    x = torch.zeros(1, 3, *FULL)
    for name in ("backbone.mf3.ANet2_w050", "backbone.tiny.TinyNet"):
        tiny = create_image_student(name, 512)
        assert n_params(tiny) < n_params(anet2) / 2
        assert count_macs(tiny, x) < count_macs(anet2, x) / 3


@pytest.mark.parametrize("name", NAMES)
def test_fuse_bn_keeps_output_and_leaves_original(name):
    torch.manual_seed(0)
    model = randomize_bn(create_image_student(name, DIM, SMALL)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_bn(model)
    assert model.training and not fused.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    x = images(2, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model.eval()(x), atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_parity_and_ops(name, dynamo, tmp_path):
    torch.manual_seed(0)
    model = fuse_bn(randomize_bn(create_image_student(name, DIM, FULL)))
    path = tmp_path / "model_image.onnx"
    if dynamo:  # the default exporter since torch 2.9; it writes global pooling as ReduceMean
        torch.onnx.export(model, (images(2, FULL),), path, dynamo=True, input_names=["images"],
                          output_names=["embeddings"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    else:
        torch.onnx.export(model, (images(2, FULL),), path, dynamo=False, input_names=["images"],
                          output_names=["embeddings"], opset_version=17,
                          dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}})
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert ops <= ALLOWED_OPS, f"ops outside the device set: {sorted(ops - ALLOWED_OPS)}"
    x = images(3, FULL, seed=1)  # another batch size than the export's: the batch axis is dynamic
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (3, DIM)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_gdc_net_rejects_another_input_size():
    model = create_image_student("backbone.mf3.ANet2", DIM, SMALL).eval()
    with pytest.raises(ValueError, match=r"built for 128x64 .* got 224x112"):
        model(images(1, FULL))


def test_count_macs_exact_on_a_known_net():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 10))
    # conv: 8*4*4 outputs x 3*9 MACs; depthwise: 128 outputs x 9; linear: 10 outputs x 128
    assert count_macs(net, torch.zeros(1, 3, 4, 4)) == 128 * 27 + 128 * 9 + 10 * 128


@pytest.mark.parametrize("bad, reason", [
    ("backbone.mf3.ANet3", "module 'person.models.backbone.mf3' has no 'ANet3'"),
    ("backbone.nope.Net", "no module 'person.models.backbone.nope'"),
    ("ANet2", "expected a dotted path such as backbone.mf3.ANet2"),
    ("tbackbone.char.L3", "not a registered image backbone"),
    ("backbone.layers.ConvBN", "not a registered image backbone"),
    ("person.data.text.encode_chars", "not an nn.Module class"),
])
def test_wrong_name_is_a_clear_error(bad, reason):
    with pytest.raises(UnknownModelError) as e:
        create_image_student(bad, DIM)
    assert reason in str(e.value) and "backbone.mf3.ANet2, backbone.mf3.ANet2_relu, backbone.mf3.ANet2_w050" in str(e.value)
    assert isinstance(e.value, ValueError)


# A user's own image student, as a module file a test writes beside itself.
USER_POOL = ("from torch import nn\n"
             "class Pool(nn.Module):\n"
             "    def __init__(self, feature_dim, image_size):\n"
             "        super().__init__()\n"
             "        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, feature_dim))\n"
             "    def forward(self, x):\n"
             "        return self.net(x)\n")


def test_fully_qualified_and_plugged_in_names(tmp_path, monkeypatch):
    assert type(create_image_student("person.models.backbone.mf3.ANet2", DIM)).__name__ == "ANet2"
    (tmp_path / "my_nets.py").write_text(USER_POOL)
    (tmp_path / "broken_nets.py").write_text("import a_package_that_is_not_installed\nclass Net:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert create_image_student("my_nets.Pool", 5)(images(2, SMALL)).shape == (2, 5)
    with pytest.raises(ModuleNotFoundError, match="a_package_that_is_not_installed"):  # not a "wrong name"
        create_image_student("broken_nets.Net", 5)
    with pytest.raises(UnknownModelError, match="module 'broken_nets' has no 'Other'"):  # read, not imported
        create_image_student("broken_nets.Other", 5)


def test_a_mistyped_name_is_refused_before_its_module_runs(tmp_path, monkeypatch):
    (tmp_path / "noisy.py").write_text("import sys\nsys.modules['noisy_ran'] = True\nclass Net:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, message in (("noisy.Foo", "module 'noisy' has no 'Foo'"), ("this.Foo", "module 'this' has no 'Foo'")):
        with pytest.raises(UnknownModelError, match=message):
            create_image_student(name, DIM)
    assert "noisy_ran" not in sys.modules and "this" not in sys.modules  # neither module's code ran


def test_names_outside_the_project_need_the_caller_s_trust(tmp_path, monkeypatch):
    (tmp_path / "my_pool.py").write_text(USER_POOL)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UnknownModelError, match="outside the project.*--import-module my_pool"):
        create_image_student("my_pool.Pool", 5, SMALL, trusted=())  # what a checkpoint's name gets by default
    assert "my_pool" not in sys.modules
    assert create_image_student("my_pool.Pool", 5, SMALL, trusted={"my_pool"})(images(2, SMALL)).shape == (2, 5)
    assert type(create_image_student("backbone.tiny.TinyNet", 5, SMALL, trusted=())).__name__ == "TinyNet"


@pytest.mark.parametrize("name, message", [
    ("torch.nn.Linear", r"cannot be built .*unexpected keyword argument 'feature_dim'"),
    ("torch.nn.Identity", r"gave \(2, 3, 128, 64\) for a \[2, 3, 128, 64\] input, expected a float \[2, 64\]"),
])
def test_a_class_that_is_not_an_image_student_is_refused_before_training(name, message):
    with pytest.raises(StudentContractError, match=message):
        create_image_student(name, DIM, SMALL)


def test_an_image_size_that_cannot_be_allocated_is_a_clear_error():
    with pytest.raises(StudentContractError, match=r"failed on a \[2, 3, 200000, 200000\] input"):
        create_image_student("backbone.tiny.TinyNet", DIM, (200000, 200000))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="feature_dim must be a positive int"):
        create_image_student("backbone.tiny.TinyNet", 0)
    with pytest.raises(ValueError, match="image_size must be"):
        create_image_student("backbone.tiny.TinyNet", DIM, "224x112")


def test_count_macs_counts_1d_convolutions():
    net = nn.Sequential(nn.Conv1d(4, 6, 5, stride=2, padding=2), nn.Flatten(), nn.Linear(6 * 5, 3))
    # 10 positions at stride 2 -> 5; each of the 6 x 5 outputs takes 4 x 5 MACs; linear: 3 outputs x 30
    assert count_macs(net, torch.zeros(1, 4, 10)) == 30 * 20 + 3 * 30
