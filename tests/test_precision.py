"""Precision is a recorded setting: bf16 populations agree with fp32 ones within seed-to-seed noise."""

import json
import math

import pytest
import torch

from kdclaims.profiles import get_profile
from kdclaims.data import load_cifar100, write_synthetic_cifar100
from kdclaims.errors import ConfigError
from kdclaims.metrics import METRICS, evaluate_metric
from kdclaims.models import build_model
from kdclaims.precision import PRECISIONS
from kdclaims.training import PreparedData, precision_context, train_member

SEEDS = (1, 2, 3)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # benchmarks/gpu.sh runs these on a GPU


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    return load_cifar100(write_synthetic_cifar100(folder, num_classes=10, train_per_class=40, test_per_class=20, seed=0))


@pytest.fixture(params=DEVICES)
def data(request, dataset):
    return PreparedData.from_dataset(dataset, image_size=16, device=request.param)


def _population(data, precision, seeds):
    profile = get_profile("smoke")
    recipe = profile.recipe("vgg16_bn")  # VGG has BatchNorm: the layer bf16 must keep in fp32
    logits = []
    for seed in seeds:
        torch.manual_seed(0)  # M_0, the shared initialisation
        model = build_model("vgg16_bn", **profile.model_config("vgg16_bn", data.num_classes)).to(data.device)
        logits.append(train_member(model, data, recipe, seed, None, 0.0, 1.0, precision=precision).test_logits)
    return torch.stack(logits)


def test_bf16_population_agrees_with_fp32_within_seed_noise(data):
    teacher = _population(data, "fp32", (0,))[0]
    fp32, bf16 = _population(data, "fp32", SEEDS), _population(data, "bf16", SEEDS)
    assert not torch.equal(fp32, bf16)  # the arithmetic really changed ...
    labels = data.test_labels.cpu()
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 exists on CUDA only (benchmarks/gpu.sh runs this)")
@pytest.mark.parametrize("precision,tf32", [("fp32", False), ("tf32", True), ("bf16", False)])
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_the_tf32_switches_cover_the_backward_pass_on_cuda(precision, tf32):
    """PyTorch leaves cuDNN's TF32 on by default: an fp32 member must have it off in its backward pass too."""
    from kdclaims.recipe import Recipe
    from kdclaims.training import train_model

    seen = []
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(4)).cuda()
    model.register_full_backward_hook(lambda *_: seen.append(
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)))
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    data = PreparedData(images.cuda(), torch.arange(8).remainder(4).cuda(), images.cuda(), torch.zeros(8).long().cuda(),
                        torch.full((1, 3, 1, 1), 0.5).cuda(), torch.full((1, 3, 1, 1), 0.3).cuda(), 8, 4, "tf32-test")
    model(data.batch(images[:1].cuda()))  # materialise the lazy layer
    train_model(model, data, Recipe(optimizer="sgd", lr=0.1, weight_decay=0.0, epochs=1, batch_size=4), 1,
                precision=precision)
    assert seen and all(flags == (tf32, tf32) for flags in seen)


# ---------------------------------------------------------------------------------------------
# --precision: Profile.with_precision, the pytest option and the command line
# ---------------------------------------------------------------------------------------------


def test_with_precision_changes_every_member_key_and_refuses_unknown_names(tmp_path):
    import dataclasses

    from kdclaims.spec import PopulationSpec, teacher_spec
    from kdclaims.population import Workbench

    smoke = get_profile("smoke").with_seeds((1, 2))
    bf16 = smoke.with_precision("bf16")
    assert (smoke.precision, bf16.precision, bf16.seeds) == ("fp32", "bf16", (1, 2))
    assert bf16.as_dict()["precision"] == "bf16"
    cache = tmp_path / "cache"
    benches = {p.precision: Workbench(p, cache, device="cpu", progress=False) for p in (smoke, bf16)}
    for spec, seed in ((PopulationSpec("vgg16_bn", "kd", 0.5), 1), (teacher_spec("vgg16_bn"), 0)):
        keys = {name: bench.member_key(spec, seed) for name, bench in benches.items()}
        assert keys["fp32"] != keys["bf16"], spec.name  # bf16 members never mix with fp32 ones in the cache
        assert benches["bf16"].member_config(spec, seed)["precision"] == "bf16"
    back = Workbench(bf16.with_precision("fp32"), cache, device="cpu", progress=False)
    assert back.member_key(teacher_spec("vgg16_bn"), 0) == benches["fp32"].member_key(teacher_spec("vgg16_bn"), 0)

    for bad in ("fp16", "BF16", ""):
        with pytest.raises(ConfigError) as info:
            smoke.with_precision(bad)
        message = str(info.value)
        assert "\n" not in message and f"unknown precision {bad!r}" in message
        assert all(name in message for name in PRECISIONS), message
    with pytest.raises(ConfigError, match="unknown precision 'fp16'.*fp32, tf32, bf16"):
        dataclasses.replace(smoke, precision="fp16")  # refused at construction too


def _one_claim_project(pytester):
    from helpers import GOOD_CLAIM

    claims_dir = pytester.mkdir("claims")
    (claims_dir / "r18.yaml").write_text(GOOD_CLAIM)  # one ResNet-18 claim of Table 4
    return pytester


def test_pytest_precision_option_is_recorded_in_the_evaluation(pytester, tmp_path):
    # --evidence paper: the option goes through the plugin into the profile and the saved evaluation
    # without training anything (the member keys it changes are tested above).
    cache = tmp_path / "cache"
    result = _one_claim_project(pytester).runpytest_subprocess(
        "claims", "--profile", "smoke", "--seeds", "2", "--precision", "bf16", "--evidence", "paper",
        "--cache-dir", str(cache), "-p", "no:cacheprovider")
    assert result.ret in (0, 1), result.stdout.str() + result.stderr.str()  # 1: the paper's own verdict
    evaluation = json.loads((cache / "evaluations" / "latest.json").read_text())
    assert evaluation["profile"]["precision"] == "bf16"
    assert evaluation["profile"]["name"] == "smoke" and evaluation["profile"]["n_seeds"] == 2


def test_pytest_refuses_an_unknown_precision_in_one_line(pytester):
    result = _one_claim_project(pytester).runpytest_subprocess(
        "claims", "--profile", "smoke", "--precision", "nope", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0 and "Traceback" not in output
    assert "unknown precision 'nope'" in output and "fp32, tf32, bf16" in output


@pytest.mark.parametrize("command", [["train", "--arch", "vgg16_bn", "--setup", "independent"], ["plan"]])
def test_cli_refuses_an_unknown_precision_in_one_line(command, tmp_path):
    from click.testing import CliRunner

    from kdclaims.cli import main

    done = CliRunner().invoke(main, [*command, "--profile", "smoke", "--seeds", "1", "--device", "cpu",
                                     "--cache-dir", str(tmp_path / "cache"), "--precision", "nope"])
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdclaims: error: unknown precision 'nope'"), done.stderr
    assert all(name in lines[0] for name in PRECISIONS)
    assert not (tmp_path / "cache" / "members").exists()  # refused before any training


def test_precision_options_are_documented():
    from click.testing import CliRunner

    from kdclaims.cli import main

    for command in ("train", "run", "plan"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert "--precision" in text and all(name in text for name in PRECISIONS), command
        assert "cache key" in text, command
