"""Models: the seed's counts and shapes, architecture x pool x backend, Triton vs PyTorch, bad input."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import kernels
from models import (
    MODELS,
    PoolConfig,
    SamePool2d,
    build_model,
    count_parameters,
    make_pool,
    model_summary,
    pool_backend,
    resolve_backend,
)
from models.pooling import BACKENDS, POOL_TYPES

def pool_id(cfg: PoolConfig) -> str:
    return f"{cfg.type}-k{cfg.size}-s{cfg.stride}-p{cfg.padding}-d{cfg.dilation}{'-ceil' if cfg.ceil_mode else ''}"


# Small, odd, non-square inputs: CPU Triton runs through the interpreter, and H != W catches swaps.
SMALL = (23, 27)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SEED_POOLED = {"conv1": 222, "pool1": 111, "conv2": 109, "pool2": 54, "conv3": 52, "pool3": 26}
SEED_UNPOOLED = {"conv1": 222, "conv2": 220, "conv3": 218}


# --------------------------------------------------------------------------------------------
# The seed's two models at 224x224
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool_type, params", [("none", 477_341), ("max", 8_861), ("avg", 8_861)])
def test_seed_parameter_counts(pool_type, params):
    model = build_model("tinyvgg", pool=PoolConfig(type=pool_type), image_size=224)
    assert count_parameters(model) == params


@pytest.mark.parametrize(
    "pool, sizes",
    [
        (PoolConfig(type="none"), SEED_UNPOOLED),
        (PoolConfig(type="max", backend="torch"), SEED_POOLED),
        (PoolConfig(type="max", backend="triton"), SEED_POOLED),
    ],
)
def test_seed_layer_shapes(pool, sizes):
    model = build_model("tinyvgg", pool=pool, image_size=224)
    x, seen = torch.randn(1, 3, 224, 224), {}
    with torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            if name in sizes:
                seen[name] = tuple(x.shape)
    assert seen == {name: (1, 10, n, n) for name, n in sizes.items()}
    assert x.shape == (1, 1)


def test_seed_no_pool_model_has_relu_after_first_conv_only():
    names = [name for name, _ in build_model("tinyvgg", pool=PoolConfig(type="none")).named_children()]
    assert names == ["conv1", "relu1", "conv2", "conv3", "flatten", "fc"]


@pytest.mark.parametrize(
    "pool_type, total, last_feature_map",
    [("none", "477,341", "[1, 10, 218, 218]"), ("max", "8,861", "[1, 10, 26, 26]")],
)
def test_model_summary_is_keras_like(pool_type, total, last_feature_map):
    model = build_model("tinyvgg", pool=PoolConfig(type=pool_type, backend="torch"), image_size=224)
    text = model_summary(model, (3, 224, 224))
    assert f"Total params: {total}" in text
    assert last_feature_map in text and "Output Shape" in text and "Param #" in text


# --------------------------------------------------------------------------------------------
# Every architecture x pool type x backend
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool_type", POOL_TYPES)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward(name, pool_type, backend):
    model = build_model(name, pool=PoolConfig(type=pool_type, backend=backend), image_size=SMALL)
    x = torch.randn(2, 3, *SMALL, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 1)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    if pool_type == "none":
        expected = "none"
    else:
        expected = "triton" if pool_type == "max" and backend == "triton" else "torch"
    assert pool_backend(model) == expected


@pytest.mark.parametrize("num_classes, logits", [(2, 1), (3, 3), (10, 10)])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_channels_and_classes(name, in_channels, num_classes, logits):
    model = build_model(
        name, pool=PoolConfig(backend="torch"), in_channels=in_channels, num_classes=num_classes, image_size=SMALL
    )
    assert model(torch.randn(2, in_channels, *SMALL)).shape == (2, logits)


@pytest.mark.parametrize(
    "name, options",
    [
        ("tinyvgg", dict(width=4, depth=2, kernel_size=5)),
        ("strided", dict(width=6, depth=2)),
        ("resnet", dict(widths=[8, 12], blocks_per_stage=2, stem_stride=2)),
    ],
)
def test_architecture_options(name, options):
    model = build_model(name, pool=PoolConfig(backend="torch"), image_size=SMALL, **options)
    assert model(torch.randn(2, 3, *SMALL)).shape == (2, 1)
    default = build_model(name, pool=PoolConfig(backend="torch"), image_size=SMALL)
    assert count_parameters(model) != count_parameters(default)


# --------------------------------------------------------------------------------------------
# backend="triton" and backend="torch": same outputs and gradients for the same weights
# --------------------------------------------------------------------------------------------


AB_POOLS = [
    PoolConfig(),
    PoolConfig(size=3, stride=2, padding=1),
    PoolConfig(size=3, stride=2, padding="same"),
    PoolConfig(size=2, padding="same"),
    PoolConfig(size=2, ceil_mode=True),
    PoolConfig(size=3, stride=1, dilation=2, padding="valid"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pool", AB_POOLS, ids=pool_id)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_triton_and_torch_backends_agree(name, pool, device, monkeypatch):
    if device == "cuda":  # cuDNN may pick a different (or atomics-based) algorithm per call
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    torch.manual_seed(0)
    models = [
        build_model(name, pool=replace(pool, backend=b), image_size=SMALL).to(device) for b in ("triton", "torch")
    ]
    models[1].load_state_dict(models[0].state_dict())
    assert [pool_backend(m) for m in models] == ["triton", "torch"]
    x = torch.randn(3, 3, *SMALL).to(device)
    inputs = [x.clone().requires_grad_() for _ in models]
    outputs = [model(input) for model, input in zip(models, inputs)]
    assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    upstream = torch.randn_like(outputs[0])
    for output in outputs:
        output.backward(upstream)
    assert_close(inputs[0].grad, inputs[1].grad, rtol=0, atol=0)
    for (param_name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert_close(a.grad, b.grad, rtol=0, atol=0, msg=param_name)


# --------------------------------------------------------------------------------------------
# The pooling factory
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, backend, module_type",
    [
        (PoolConfig(), "triton", kernels.MaxPool2d),
        (PoolConfig(padding="same"), "triton", kernels.MaxPool2d),
        (PoolConfig(), "torch", nn.MaxPool2d),
        (PoolConfig(padding="same"), "torch", SamePool2d),
        (PoolConfig(type="avg"), "triton", nn.AvgPool2d),  # average pooling is always PyTorch's
        (PoolConfig(type="avg", padding="same"), "torch", SamePool2d),
    ],
)
def test_make_pool_module_types(cfg, backend, module_type):
    pool = make_pool(replace(cfg, backend=backend), "cpu")
    assert type(pool) is module_type


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_make_pool_none(backend):
    assert make_pool(PoolConfig(type="none", backend=backend), "cpu") is None


@pytest.mark.parametrize(
    "cfg",
    [
        PoolConfig(size=3, stride=2, padding="same"),
        PoolConfig(size=(2, 3), stride=(1, 2), padding="same"),
        PoolConfig(size=3, stride=2, ceil_mode=True),
        PoolConfig(size=3, stride=1, dilation=2),
        PoolConfig(size=(3, 1), padding=(1, 0)),
        PoolConfig(type="avg", size=3, stride=2, padding="same"),
        PoolConfig(type="avg", size=3, stride=2, padding=1, ceil_mode=True),
    ],
    ids=pool_id,
)
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_output_size_matches_the_modules(cfg, backend):
    # Construction-time shape checks rely on PoolConfig.output_size being what the layer produces.
    x = torch.randn(1, 2, 9, 14)
    assert make_pool(replace(cfg, backend=backend), "cpu")(x).shape[-2:] == cfg.output_size((9, 14))


@pytest.mark.parametrize("size, stride, dilation", [(2, 2, 1), (3, 2, 1), (2, 1, 1), (3, 1, 2), ((3, 2), (2, 1), 1)])
@pytest.mark.parametrize("shape", [(2, 3, 7, 10), (3, 5, 5)])
def test_same_max_pool_matches_kernel(size, stride, dilation, shape):
    x = torch.randn(shape)
    inputs = [x.clone().requires_grad_() for _ in range(2)]
    ours = SamePool2d("max", size, stride, dilation)(inputs[0])
    kernel = kernels.max_pool2d(inputs[1], size, stride, "same", dilation)
    assert_close(ours, kernel, rtol=0, atol=0)
    upstream = torch.randn_like(ours)
    ours.backward(upstream)
    kernel.backward(upstream)
    assert_close(inputs[0].grad, inputs[1].grad, rtol=0, atol=0)


def _keras_same_average(x: torch.Tensor, size: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Reference: the mean of each 'same'-padded window's real pixels, one window at a time."""
    rows, cols = (kernels.pool_output_size(n, k, s, "same") for n, k, s in zip(x.shape[-2:], size, stride))
    out = x.new_empty(*x.shape[:-2], rows[0], cols[0])
    for i in range(rows[0]):
        for j in range(cols[0]):
            top, left = i * stride[0] - rows[1], j * stride[1] - cols[1]
            window = x[..., max(top, 0) : top + size[0], max(left, 0) : left + size[1]]
            out[..., i, j] = window.mean((-2, -1))
    return out


@pytest.mark.parametrize("size, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 1)), ((4, 3), (3, 2))])
def test_same_average_pool_excludes_padding(size, stride):
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64)
    assert_close(SamePool2d("avg", size, stride)(x), _keras_same_average(x, size, stride))


def test_same_average_pool_matches_torch_where_padding_is_symmetric():
    x = torch.randn(2, 3, 7, 10)
    expected = F.avg_pool2d(x, 3, 1, padding=1, count_include_pad=False)
    assert_close(make_pool(PoolConfig(type="avg", size=3, stride=1, padding="same"), "cpu")(x), expected)


@pytest.mark.parametrize(
    "backend, device, expected",
    [("auto", "cpu", "torch"), ("auto", "cuda", "triton"), ("auto", torch.device("cuda:1"), "triton"),
     ("triton", "cpu", "triton"), ("torch", "cuda", "torch"), ("torch", "cpu", "torch")],
)  # fmt: skip
def test_resolve_backend(backend, device, expected):
    assert resolve_backend(backend, device) == expected


# --------------------------------------------------------------------------------------------
# Invalid configurations fail at construction, naming the argument
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(type="min"), r"PoolConfig.type must be one of \('max', 'avg', 'none'\), got 'min'"),
        (dict(backend="cuda"), r"PoolConfig.backend must be one of \('auto', 'triton', 'torch'\)"),
        (dict(size=0), r"PoolConfig.size must be an int >= 1 or a pair"),
        (dict(size=(2, 2, 2)), r"PoolConfig.size must be an int >= 1 or a pair"),
        (dict(size=True), r"PoolConfig.size must be an int >= 1"),
        (dict(stride=0), r"PoolConfig.stride must be an int >= 1"),
        (dict(dilation=(1, 0)), r"PoolConfig.dilation must be an int >= 1"),
        (dict(padding=-1), r"PoolConfig.padding must be an int >= 0"),
        (dict(padding=2), r"PoolConfig.padding must be between 0 and size // 2 = \(1, 1\)"),
        (dict(padding="full"), r"PoolConfig.padding must be an int, a pair of ints, or one of \('valid', 'same'\)"),
        (dict(type="avg", dilation=2), r"PoolConfig.dilation must be 1 for type='avg'"),
        (dict(padding="same", ceil_mode=True), r"PoolConfig.ceil_mode must be False with padding='same'"),
        (dict(ceil_mode="yes"), r"PoolConfig.ceil_mode must be True or False"),
    ],
)
def test_invalid_pool_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PoolConfig(**kwargs)


@pytest.mark.parametrize(
    "backend, device, message",
    [
        ("gpu", "cpu", r"backend must be one of"),
        ("triton", "meta", r"backend='triton' runs on CUDA .* not on 'meta'"),
    ],
)
def test_invalid_backend_for_device(backend, device, message):
    with pytest.raises(ValueError, match=message):
        resolve_backend(backend, device)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("vgg16", {}, r"model name must be one of \['resnet', 'strided', 'tinyvgg'\], got 'vgg16'"),
        ("tinyvgg", dict(widht=8), r"tinyvgg: unknown option\(s\) \['widht'\]; valid options .*'width': 10"),
        ("resnet", dict(width=8), r"resnet: unknown option\(s\) \['width'\]; valid options .*'widths'"),
        ("tinyvgg", dict(num_classes=1), r"TinyVGG: num_classes must be an int >= 2, got 1"),
        ("strided", dict(in_channels=0), r"StridedCNN: in_channels must be an int >= 1, got 0"),
        ("resnet", dict(image_size=(0, 32)), r"ResNet: image_size must be an int >= 1 or a pair"),
        ("tinyvgg", dict(image_size=(32,)), r"TinyVGG: image_size must be an int >= 1 or a pair"),
        ("tinyvgg", dict(width=0), r"TinyVGG: width must be an int >= 1, got 0"),
        ("tinyvgg", dict(depth=2.0), r"TinyVGG: depth must be an int >= 1, got 2.0"),
        ("resnet", dict(widths=()), r"ResNet: widths must be a non-empty sequence of ints >= 1"),
        ("resnet", dict(blocks_per_stage=0), r"ResNet: blocks_per_stage must be an int >= 1"),
        # Feature maps that would shrink below one pixel: the layer and the sizes are named.
        ("tinyvgg", dict(image_size=16), r"TinyVGG: layer conv3 would turn its 2x2 input into 0x0 \(image_size 16x16\)"),
        ("tinyvgg", dict(image_size=64, depth=5), r"TinyVGG: layer conv5 would turn its 2x2 input into 0x0"),
        ("tinyvgg", dict(image_size=(4, 9), depth=1, pool=PoolConfig(size=3)), r"layer pool1 would turn its 2x7 input into 0x2"),
        ("strided", dict(image_size=12, depth=4), r"StridedCNN: layer conv3 would turn its 2x2 input into 0x0"),
        ("resnet", dict(image_size=1), r"ResNet: layer stem.pool would turn its 1x1 input into 0x0"),
    ],
)  # fmt: skip
def test_invalid_model_arguments(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, **kwargs)


def test_pool_must_be_a_pool_config():
    with pytest.raises(TypeError, match=r"build_model: pool must be a PoolConfig, got dict"):
        build_model("tinyvgg", pool={"type": "max"})
