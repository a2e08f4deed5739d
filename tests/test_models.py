"""Tests for kdclaims.models: shapes, exact parameter counts, determinism, errors, registry,
FLOPs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kdclaims.errors import ConfigError
from kdclaims.models import (
    ARCHITECTURES,
    Architecture,
    build_model,
    count_parameters,
    get_architecture,
    model_flops_per_image,
    register_architecture,
)

PAPER_ARCHS = ("resnet18", "vgg16_bn", "vit")

SMOKE = {
    "resnet18": {"width": 8, "image_size": 16},
    "vgg16_bn": {"width": 8, "image_size": 16},
    "vit": {"dim": 32, "depth": 2, "heads": 2, "image_size": 16},
}


# --------------------------------------------------------------------------------------------------
# Independent hand formulas for parameter counts
# --------------------------------------------------------------------------------------------------


def conv_params(k: int, cin: int, cout: int, bias: bool) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def bn_params(c: int) -> int:
    return 2 * c  # weight + bias (running stats are buffers)


def linear_params(fin: int, fout: int) -> int:
    return fin * fout + fout


def ln_params(d: int) -> int:
    return 2 * d


def resnet18_param_formula(width=64, blocks=(2, 2, 2, 2), num_classes=100, in_channels=3) -> int:
    total = conv_params(3, in_channels, width, bias=False) + bn_params(width)
    cin = width
    for n_blocks, mult, stride in zip(blocks, (1, 2, 4, 8), (1, 2, 2, 2)):
        planes = width * mult
        for i in range(n_blocks):
            s = stride if i == 0 else 1
            total += conv_params(3, cin, planes, False) + bn_params(planes)
            total += conv_params(3, planes, planes, False) + bn_params(planes)
            if s != 1 or cin != planes:
                total += conv_params(1, cin, planes, False) + bn_params(planes)
            cin = planes
    return total + linear_params(8 * width, num_classes)


def vgg16_bn_param_formula(width=64, depth=(2, 2, 3, 3, 3), num_classes=100, in_channels=3) -> int:
    cfg = []
    for c, d in zip((64, 128, 256, 512, 512), depth):
        cfg += [max(1, c * width // 64)] * d
    total, cin = 0, in_channels
    for cout in cfg:  # kuangliu VGG convs keep their bias
        total += conv_params(3, cin, cout, bias=True) + bn_params(cout)
        cin = cout
    return total + linear_params(cin, num_classes)


def vit_param_formula(
    image_size=32, patch=4, dim=128, depth=6, mlp=256, num_classes=100, in_channels=3
) -> int:
    n_tokens = (image_size // patch) ** 2 + 1
    total = conv_params(patch, in_channels, dim, bias=True)  # patch embedding
    total += dim  # cls token
    total += n_tokens * dim  # position embedding
    block = (
        ln_params(dim)
        + linear_params(dim, 3 * dim)
        + linear_params(dim, dim)
        + ln_params(dim)
        + linear_params(dim, mlp)
        + linear_params(mlp, dim)
    )
    total += depth * block
    return total + ln_params(dim) + linear_params(dim, num_classes)


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_paper_size_output_shape(arch):
    torch.manual_seed(0)
    model = build_model(arch)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_smoke_scale_output_shape(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, **SMOKE[arch])
    out = model(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, 10)
    # and training mode with backward works
    model.train()
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_channels_last_input_matches_contiguous(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, **SMOKE[arch]).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_vgg_adapts_pools_to_image_size():
    torch.manual_seed(0)
    for size in (8, 16, 32, 64):
        model = build_model("vgg16_bn", width=8, image_size=size, num_classes=5)
        assert model(torch.randn(2, 3, size, size)).shape == (2, 5)


def test_vgg_fewer_layers_per_stage():
    model = build_model("vgg16_bn", width=8, depth_per_stage=(1, 1, 1, 1, 1), image_size=16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    assert count_parameters(model) == vgg16_bn_param_formula(8, (1, 1, 1, 1, 1))


def test_functional_call_works():
    model = build_model("vit", **SMOKE["vit"]).eval()
    params = dict(model.named_parameters())
    x = torch.randn(2, 3, 16, 16)
    out = torch.func.functional_call(model, params, (x,))
    torch.testing.assert_close(out, model(x))


# --------------------------------------------------------------------------------------------------
# Exact parameter counts
# --------------------------------------------------------------------------------------------------


def test_resnet18_full_size_parameter_count():
    expected = resnet18_param_formula()
    assert expected == 11_220_132  # the known kuangliu ResNet18 count with 100 classes
    assert count_parameters(build_model("resnet18")) == expected


def test_vgg16_bn_full_size_parameter_count():
    expected = vgg16_bn_param_formula()
    assert expected == 14_774_436
    assert count_parameters(build_model("vgg16_bn")) == expected


def test_vit_full_size_parameter_count():
    expected = vit_param_formula()
    assert expected == 822_756
    assert count_parameters(build_model("vit")) == expected


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 12),
    blocks=st.tuples(*[st.integers(1, 3)] * 4),
    num_classes=st.integers(1, 20),
)
def test_resnet_scaled_parameter_count(width, blocks, num_classes):
    model = build_model("resnet18", width=width, blocks=blocks, num_classes=num_classes)
    assert count_parameters(model) == resnet18_param_formula(width, blocks, num_classes)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dim_per_head=st.integers(1, 8),
    heads=st.integers(1, 4),
    depth=st.integers(1, 3),
    mlp_ratio=st.sampled_from([1.0, 2.0, 4.0]),
    patch=st.sampled_from([2, 4, 8]),
)
def test_vit_scaled_parameter_count(dim_per_head, heads, depth, mlp_ratio, patch):
    dim = dim_per_head * heads
    model = build_model(
        "vit", dim=dim, heads=heads, depth=depth, mlp_ratio=mlp_ratio, patch_size=patch,
        image_size=16, num_classes=10,
    )
    expected = vit_param_formula(16, patch, dim, depth, int(dim * mlp_ratio), 10)
    assert count_parameters(model) == expected


# --------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_same_seed_same_weights_different_seed_different(arch):
    def build(seed):
        torch.manual_seed(seed)
        return _state(build_model(arch, **SMOKE[arch]))

    a, b, c = build(123), build(123), build(124)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_vit_eval_deterministic_train_dropout_differs():
    torch.manual_seed(0)
    model = build_model("vit", **SMOKE["vit"])  # dropout 0.1 from the paper config
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_vit_without_dropout_is_deterministic_in_train_mode():
    model = build_model("vit", dropout=0.0, **SMOKE["vit"]).train()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_architecture():
    with pytest.raises(ConfigError) as exc:
        build_model("resnet50")
    msg = _one_line(exc)
    assert "resnet50" in msg
    for name in PAPER_ARCHS:
        assert name in msg
    with pytest.raises(ConfigError):
        get_architecture("nope")
    with pytest.raises(ConfigError):
        model_flops_per_image("nope")


def test_unknown_kwarg():
    with pytest.raises(ConfigError) as exc:
        build_model("vit", dimension=64)
    msg = _one_line(exc)
    assert "dimension" in msg and "vit" in msg
    for accepted in ("dim", "depth", "heads", "mlp_ratio", "patch_size", "dropout", "image_size"):
        assert accepted in msg
    with pytest.raises(ConfigError) as exc:
        build_model("resnet18", depth=3)
    msg = _one_line(exc)
    assert "depth" in msg and "width" in msg and "blocks" in msg
    with pytest.raises(ConfigError):
        model_flops_per_image("vgg16_bn", blocks=(1, 1, 1, 1))


@pytest.mark.parametrize(
    "arch, bad",
    [
        ("resnet18", {"width": 0}),
        ("resnet18", {"blocks": (2, 2, 2)}),
        ("resnet18", {"num_classes": True}),
        ("vgg16_bn", {"depth_per_stage": (2, 2, 0, 3, 3)}),
        ("vit", {"heads": 3}),  # 128 not divisible by 3
        ("vit", {"patch_size": 5}),  # 32 not divisible by 5
        ("vit", {"dropout": 1.5}),
        ("vit", {"mlp_ratio": -1}),
    ],
)
def test_invalid_values_are_config_errors(arch, bad):
    with pytest.raises(ConfigError) as exc:
        build_model(arch, **bad)
    msg = _one_line(exc)
    assert next(iter(bad)) in msg


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_registry_contents():
    assert set(PAPER_ARCHS) <= set(ARCHITECTURES)
    for name in PAPER_ARCHS:
        arch = get_architecture(name)
        assert isinstance(arch, Architecture) and arch.name == name and arch.description
        assert arch.paper_config["num_classes"] == 100
        assert arch.paper_config["image_size"] == 32
        with pytest.raises(TypeError):
            arch.paper_config["num_classes"] = 10  # type: ignore[index]


def test_register_architecture_roundtrip():
    def build_tiny(*, num_classes=100, image_size=32, hidden=4):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(3 * image_size * image_size, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    name = "tiny_mlp_for_test"
    try:
        arch = register_architecture(
            name, build_tiny, {"num_classes": 100, "image_size": 32, "hidden": 4}, "a test MLP"
        )
        assert ARCHITECTURES[name] is arch
        model = build_model(name, hidden=6, image_size=8, num_classes=3)
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
        assert count_parameters(model) == linear_params(3 * 64, 6) + linear_params(6, 3)
        assert model_flops_per_image(name, hidden=6, image_size=8, num_classes=3) == 2 * (
            3 * 64 * 6 + 6 * 3
        )
        with pytest.raises(ConfigError) as exc:
            build_model(name, width=3)
        assert "hidden" in _one_line(exc)
        with pytest.raises(ConfigError):
            register_architecture(name, build_tiny, {}, "duplicate")
    finally:
        ARCHITECTURES.pop(name, None)
    with pytest.raises(ConfigError):
        build_model(name)


def test_register_rejects_bad_paper_config():
    def build_tiny(*, num_classes=10):
        return nn.Linear(1, num_classes)

    with pytest.raises(ConfigError):
        register_architecture("tiny_bad_for_test", build_tiny, {"colour": 1}, "bad")
    assert "tiny_bad_for_test" not in ARCHITECTURES


# --------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------


def _flop_counter_total(arch: str, **config) -> int:
    model = build_model(arch, **config).eval()
    size = {**get_architecture(arch).paper_config, **config}["image_size"]
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops()


@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_flops_match_torch_flop_counter(arch):
    assert model_flops_per_image(arch, **SMOKE[arch]) == _flop_counter_total(arch, **SMOKE[arch])


def test_full_size_flops():
    assert model_flops_per_image("resnet18") == _flop_counter_total("resnet18") == 1_110_937_600
    assert model_flops_per_image("vgg16_bn") == 626_495_488
    assert model_flops_per_image("vit") == _flop_counter_total("vit") == 116_027_392


def test_flops_do_not_touch_global_rng():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    model_flops_per_image("vit")
    assert torch.equal(torch.get_rng_state(), before)
