"""Precision is a recorded setting: bf16 populations agree with fp32 ones within seed-to-seed noise."""

import math

import pytest
import torch

from kdclaims.config import get_profile
from kdclaims.data import load_cifar100, write_synthetic_cifar100
from kdclaims.errors import ConfigError
from kdclaims.metrics import METRICS, evaluate_metric
from kdclaims.models import build_model
from kdclaims.training import PRECISIONS, PreparedData, precision_context, train_member

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    archive = write_synthetic_cifar100(folder, num_classes=10, train_per_class=40, test_per_class=20, seed=0)
    return PreparedData.from_dataset(load_cifar100(archive), image_size=16, device="cpu")


def _population(data, precision, seeds):
    profile = get_profile("smoke")
    recipe = profile.recipe("vgg16_bn")  # VGG has BatchNorm: the layer bf16 must keep in fp32
    logits = []
    for seed in seeds:
        torch.manual_seed(0)  # M_0, the shared initialisation
        model = build_model("vgg16_bn", **profile.model_config("vgg16_bn", data.num_classes))
        logits.append(train_member(model, data, recipe, seed, None, 0.0, 1.0, precision=precision).test_logits)
    return torch.stack(logits)


def test_bf16_population_agrees_with_fp32_within_seed_noise(data):
    teacher = _population(data, "fp32", (0,))[0]
    fp32, bf16 = _population(data, "fp32", SEEDS), _population(data, "bf16", SEEDS)
    assert not torch.equal(fp32, bf16)  # the arithmetic really changed ...
    labels = data.test_labels
    for metric in METRICS:
        a = evaluate_metric(metric, fp32, teacher, labels)
        b = evaluate_metric(metric, bf16, teacher, labels)
        se = math.sqrt(a.var().item() / len(SEEDS) + b.var().item() / len(SEEDS))
        # ... but each metric's mean moves by no more than three standard errors of the seed-to-seed noise
        assert abs(a.mean().item() - b.mean().item()) <= 3 * se + 1e-3, metric


def test_precision_is_validated_and_fp32_leaves_tf32_off():
    with pytest.raises(ConfigError, match="unknown precision"):
        with precision_context("fp16", torch.device("cpu")):
            pass
    assert set(PRECISIONS) == {"fp32", "tf32", "bf16"}
    with precision_context("bf16", torch.device("cpu")):
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
