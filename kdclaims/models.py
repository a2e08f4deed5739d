"""The three architectures of the paper behind one registry.

"Knowledge Distillation: The Functional Perspective" trains on CIFAR-100 (32x32 RGB, 100 classes)
with three students/teachers:

* ``resnet18`` -- ResNet-18 in its CIFAR form (the kuangliu/pytorch-cifar ``ResNet18``): 3x3 stem
  conv (stride 1, no bias) + BN + ReLU, *no* max-pool, BasicBlocks ``(2, 2, 2, 2)`` at widths
  64/128/256/512 with strides 1/2/2/2, 1x1 conv + BN projection shortcuts where the shape changes,
  global average pool, ``Linear(512, num_classes)``. 11,220,132 parameters with 100 classes.
* ``vgg16_bn`` -- VGG-16 with batch norm for 32x32 inputs (kuangliu style): 3x3 conv (pad 1, with
  bias, as in kuangliu) + BN + ReLU stages ``[64]*2, [128]*2, [256]*3, [512]*3, [512]*3`` each
  followed by a 2x2 max-pool, then flatten and a *single* ``Linear(512, num_classes)``. The paper
  does not specify VGG's classifier head; we follow kuangliu/pytorch-cifar, the common CIFAR
  reference.
* ``vit`` -- the paper's small pre-norm Vision Transformer: image 32, patch 4, dim 128, 4 heads,
  MLP hidden 256 (ratio 2), dropout 0.1, depth 6, classification from the cls token.

Every architecture is scalable for smoke profiles through keyword arguments (see each builder), and
every architecture is built through :func:`build_model`, which starts from the architecture's
``paper_config`` (the full-size paper model) and overrides it with the caller's keywords.

The registry (names, labels, paper sizes, recipes, smoke sizes; :func:`register_architecture`) is
:mod:`kdclaims.architectures`, which needs no torch so that collecting claims does not load it; the
paper's three are registered there with builders named ``"kdclaims.models:build_..."``. Its names
are re-exported here.

Initialisation is PyTorch's default module initialisation (plus a truncated normal with std 0.02 for
the ViT's cls token and position embedding, which have no default), so a model is a deterministic
function of the global torch seed at construction time. No module keeps global state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdclaims.architectures import (  # the registry, torch-free; re-exported here
    ARCHITECTURES,
    RECIPES,
    Architecture,
    SmokeConfig,
    arch_label,
    get_architecture,
    get_recipe,
    register_architecture,
)
from kdclaims.errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "RECIPES",
    "ResNet",
    "SmokeConfig",
    "VGG",
    "VisionTransformer",
    "build_model",
    "build_resnet18",
    "build_vgg16_bn",
    "build_vit",
    "count_parameters",
    "get_architecture",
    "get_recipe",
    "model_flops_per_image",
    "register_architecture",
]


# --------------------------------------------------------------------------------------------------
# Validation helpers (every user-caused problem is a one-line ConfigError)
# --------------------------------------------------------------------------------------------------


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"model option {name}={value!r} is invalid; it must be a positive integer"
        )
    return int(value)


def _positive_int_tuple(name: str, value: Any, length: int) -> tuple[int, ...]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != length
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ConfigError(
            f"model option {name}={value!r} is invalid; it must be a sequence of {length} "
            "positive integers"
        )
    return tuple(int(v) for v in value)


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(
            f"model option {name}={value!r} is invalid; it must be a number in [0, 1)"
        )
    return float(value)


def _positive_number(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"model option {name}={value!r} is invalid; it must be a positive number")
    return float(value)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


# --------------------------------------------------------------------------------------------------
# ResNet-18 (CIFAR form, kuangliu/pytorch-cifar)
# --------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet with BasicBlocks; stage widths ``width * (1, 2, 4, 8)``, strides 1/2/2/2."""

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        layers = []
        for n_blocks, mult, stride in zip(blocks, (1, 2, 4, 8), (1, 2, 2, 2)):
            planes = width * mult
            stage_blocks = []
            for i in range(n_blocks):
                stage_blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        # Global average pool: kuangliu uses avg_pool2d(4) on the 4x4 map of a 32x32 input; an
        # adaptive pool is identical there and also works for other input sizes (e.g. 16x16).
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


def build_resnet18(
    *,
    num_classes: int = 100,
    image_size: int = 32,
    width: int = 64,
    blocks: Sequence[int] = (2, 2, 2, 2),
    in_channels: int = 3,
) -> ResNet:
    """CIFAR ResNet-18; ``width`` is the stem/first-stage channel count (paper 64), ``blocks`` the
    BasicBlocks per stage (paper ``(2, 2, 2, 2)``). Works for any ``image_size`` >= 1 (three
    stride-2 stages then a global average pool); ``image_size`` is only validated, the network is
    size-agnostic.
    """
    _positive_int("num_classes", num_classes)
    _positive_int("image_size", image_size)
    _positive_int("width", width)
    _positive_int("in_channels", in_channels)
    blocks = _positive_int_tuple("blocks", blocks, 4)
    return ResNet(blocks=blocks, width=width, num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------------------------------
# VGG-16-BN (32x32 form, kuangliu/pytorch-cifar)
# --------------------------------------------------------------------------------------------------

_VGG_STAGE_CHANNELS = (64, 128, 256, 512, 512)


class VGG(nn.Module):
    """VGG with BN for small images.

    Stage ``s`` has ``depth_per_stage[s]`` 3x3 conv (pad 1, bias) + BN + ReLU layers with
    ``channels[s]`` channels (the builder passes the paper cfg scaled by ``width / 64``),
    followed by a 2x2 max-pool *while the feature map is at least 2x2*. At 32x32 all five pools run
    and the map is 1x1, exactly kuangliu's VGG16; at 16x16 the fifth pool is skipped (the map is
    already 1x1) instead of failing. A parameter-free global average pool before the classifier
    makes the head ``Linear(last_channels, num_classes)`` for any image size (a no-op at 1x1).
    """

    def __init__(
        self,
        channels: Sequence[int],
        depth_per_stage: Sequence[int],
        num_classes: int,
        image_size: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for c_out, depth in zip(channels, depth_per_stage):
            for _ in range(depth):
                layers += [
                    nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(),
                ]
                c_in = c_out
            if size >= 2:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # Single linear classifier (kuangliu/pytorch-cifar VGG); the paper does not give the head.
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(out)


def build_vgg16_bn(
    *,
    num_classes: int = 100,
    image_size: int = 32,
    width: int = 64,
    depth_per_stage: Sequence[int] = (2, 2, 3, 3, 3),
    in_channels: int = 3,
) -> VGG:
    """VGG-16-BN; ``width`` scales the cfg channels by ``width / 64`` (paper 64, so stages
    64/128/256/512/512; width 8 gives 8/16/32/64/64), ``depth_per_stage`` is the number of conv
    layers in each of the five stages (paper ``(2, 2, 3, 3, 3)``)."""
    _positive_int("num_classes", num_classes)
    _positive_int("image_size", image_size)
    _positive_int("width", width)
    _positive_int("in_channels", in_channels)
    depth_per_stage = _positive_int_tuple("depth_per_stage", depth_per_stage, 5)
    channels = tuple(max(1, c * width // 64) for c in _VGG_STAGE_CHANNELS)
    return VGG(channels, depth_per_stage, num_classes, image_size, in_channels)


# --------------------------------------------------------------------------------------------------
# Vision Transformer (pre-norm)
# --------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention: qkv ``Linear(dim, 3*dim)`` with bias, head dim ``dim / heads``,
    scaled dot-product attention (no attention dropout), output projection + dropout."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, head_dim)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(out))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Pre-norm ViT: Conv2d patch embedding (kernel = stride = patch), learnable cls token and
    position embedding, embedding dropout, ``depth`` blocks, final LayerNorm, linear head on cls."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_hidden: int,
        dropout: float,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, heads, mlp_hidden, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (b, patches, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.blocks(self.embed_drop(x))
        return self.head(self.norm(x)[:, 0])


def build_vit(
    *,
    num_classes: int = 100,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 128,
    depth: int = 6,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.1,
    in_channels: int = 3,
) -> VisionTransformer:
    """The paper's ViT (32/4, dim 128, depth 6, 4 heads, MLP 256, dropout 0.1); every
    hyper-parameter is a keyword. ``image_size`` must be a multiple of ``patch_size`` and ``dim``
    of ``heads``."""
    _positive_int("num_classes", num_classes)
    _positive_int("image_size", image_size)
    _positive_int("patch_size", patch_size)
    _positive_int("dim", dim)
    _positive_int("depth", depth)
    _positive_int("heads", heads)
    _positive_int("in_channels", in_channels)
    mlp_ratio = _positive_number("mlp_ratio", mlp_ratio)
    dropout = _probability("dropout", dropout)
    if image_size % patch_size:
        raise ConfigError(
            f"model option image_size={image_size} is not a multiple of patch_size={patch_size}; "
            "choose a patch_size that divides image_size"
        )
    if dim % heads:
        raise ConfigError(
            f"model option dim={dim} is not a multiple of heads={heads}; "
            "choose heads that divide dim"
        )
    hidden = max(1, int(round(dim * mlp_ratio)))
    return VisionTransformer(
        image_size, patch_size, num_classes, dim, depth, heads, hidden, dropout, in_channels
    )


def build_model(arch: str, **config: Any) -> nn.Module:
    """Build ``arch`` from its ``paper_config`` overridden by ``config``.

    Unknown keywords raise a ConfigError naming the keyword and the accepted ones. Weights come from
    the global torch RNG, so the same seed gives the same initial model.
    """
    architecture = get_architecture(arch)
    architecture.check_options(config)
    kwargs = {**architecture.paper_config, **config}
    model = architecture.build_function()(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"builder for architecture {architecture.name!r} returned "
            f"{type(model).__name__}, not a torch.nn.Module"
        )
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_flops_per_image(arch: str, **config: Any) -> int:
    """Forward FLOPs for one image, counted as 2 x multiply-accumulates.

    Counted analytically layer by layer, with forward hooks on one image pushed through a copy of
    the model built on the ``meta`` device (no memory, no compute, the global RNG untouched):
    ``Conv2d`` = 2 * out_elements * (in_channels / groups) * k_h * k_w, ``Linear`` = 2 * rows *
    in_features * out_features, and attention = 2 * 2 * heads * N^2 * head_dim (``QK^T`` and
    ``AV``). Biases, normalisation, activations, pooling, softmax and residual additions are not
    counted -- the same convention as ``torch.utils.flop_counter.FlopCounterMode``.
    """
    architecture = get_architecture(arch)
    architecture.check_options(config)
    kwargs = {**architecture.paper_config, **config}
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = architecture.build_function()(**kwargs)
    model.eval()
    image_size = kwargs.get("image_size", 32)
    in_channels = kwargs.get("in_channels", 3)
    total = 0

    def conv_hook(mod: nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += 2 * out.numel() * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: nn.Linear, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        rows = out.numel() // mod.out_features
        total += 2 * rows * mod.in_features * mod.out_features

    def attn_hook(mod: Attention, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        b, n, d = inputs[0].shape
        total += 2 * 2 * b * n * n * d  # heads * head_dim == d

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, Attention):
            handles.append(module.register_forward_hook(attn_hook))
    try:
        with torch.no_grad():
            model(torch.empty(1, in_channels, image_size, image_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return int(total)
