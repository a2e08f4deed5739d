"""The benchmark's two sides compute the same thing; the throughput script runs. No timing assertions."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from kdclaims.data import load_cifar100, write_synthetic_cifar100
from kdclaims.models import build_model
from kdclaims.recipe import Recipe
from kdclaims.training import PreparedData, kd_loss, noise_teacher_logits, train_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference_loop import ReferenceData, SeedPermutationSampler, train_reference  # noqa: E402

IMAGE_SIZE = 16
TINY = {
    "vgg16_bn": {"width": 4, "image_size": IMAGE_SIZE},  # SGD with momentum, batch norm
    "vit": {"dim": 16, "depth": 1, "heads": 2, "image_size": IMAGE_SIZE},  # AdamW, warm-up cosine, dropout 0.1
}
RECIPES = {
    "vgg16_bn": Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=3, batch_size=32,
                       schedule="multistep", milestones=(2,), gamma=0.2),
    "vit": Recipe(optimizer="adamw", lr=2e-3, weight_decay=1e-3, epochs=3, batch_size=32,
                  schedule="warmup_cosine", warmup_epochs=1, final_lr=1e-5),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-data")
    # 4 classes x 37 images: 148 = 4 full batches of 32 and a partial one of 20, which both sides keep
    return load_cifar100(write_synthetic_cifar100(folder, num_classes=4, train_per_class=37, test_per_class=5))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _initial(arch, dataset):
    torch.manual_seed(0)
    return build_model(arch, num_classes=dataset.num_classes, **TINY[arch])


def _soft(dataset):
    return noise_teacher_logits("gaussian", dataset.train_labels.shape[0], dataset.num_classes)


def _both(arch, dataset, seed, sampler=None, steps=None):
    """(fast-path model, reference model), both from the same M_0, distilling at alpha 0.5."""
    initial, recipe, soft = _initial(arch, dataset), RECIPES[arch], _soft(dataset)
    counted = []
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: counted.append(opt))
    try:
        fast = train_model(copy.deepcopy(initial), PreparedData.from_dataset(dataset, IMAGE_SIZE, "cpu"), recipe, seed,
                           soft, 0.5)
        fast_steps = len(counted)
        reference = train_reference(copy.deepcopy(initial), dataset, recipe, seed, soft, 0.5, image_size=IMAGE_SIZE,
                                    sampler=sampler)
        reference_steps = len(counted) - fast_steps
    finally:
        hook.remove()
    if steps is not None:
        steps.extend([fast_steps, reference_steps])
    return fast, reference


def test_the_reference_data_is_normalised_and_pooled_exactly_as_the_fast_path_does(dataset):
    prepared = PreparedData.from_dataset(dataset, IMAGE_SIZE, "cpu")
    reference = ReferenceData.from_dataset(dataset, IMAGE_SIZE)
    assert reference.images.dtype == torch.float32 and reference.images.shape[-1] == IMAGE_SIZE
    assert torch.equal(reference.images, prepared.batch(prepared.train_images))
    assert torch.equal(reference.labels, prepared.train_labels)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_with_the_same_data_order_both_loops_end_with_identical_weights(arch, dataset):
    n = dataset.train_labels.shape[0]
    fast, reference = _both(arch, dataset, seed=3, sampler=SeedPermutationSampler(n, 3))
    fast_state, reference_state = fast.state_dict(), reference.state_dict()
    assert fast_state.keys() == reference_state.keys()
    for name in fast_state:
        assert torch.equal(fast_state[name], reference_state[name]), name
    # and the run did train: the weights moved away from M_0
    initial = _initial(arch, dataset).state_dict()
    assert any(not torch.equal(initial[k], fast_state[k]) for k in initial if initial[k].is_floating_point())


def _train_loss(model, dataset):
    data = PreparedData.from_dataset(dataset, IMAGE_SIZE, "cpu")
    model.eval()
    with torch.no_grad():
        logits = model(data.batch(data.train_images))
    return kd_loss(logits, data.train_labels, _soft(dataset), 0.5).item()


@pytest.mark.parametrize("arch", sorted(TINY))
def test_with_the_dataloaders_own_shuffle_both_do_the_same_steps_and_reach_a_similar_loss(arch, dataset):
    steps = []
    fast, reference = _both(arch, dataset, seed=5, steps=steps)
    recipe = RECIPES[arch]
    expected = recipe.epochs * math.ceil(dataset.train_labels.shape[0] / recipe.batch_size)
    assert steps == [expected, expected]
    # another data order (the DataLoader draws its own permutation), so other weights ...
    assert any(not torch.equal(a, b) for a, b in zip(fast.state_dict().values(), reference.state_dict().values())
               if a.is_floating_point())
    # ... but the same training: both leave M_0's loss far behind, to about the same place
    start = _train_loss(_initial(arch, dataset), dataset)
    fast_loss, reference_loss = _train_loss(fast, dataset), _train_loss(reference, dataset)
    assert fast_loss < start and reference_loss < start
    # (seeds 5-8 differ by 0.01-0.06 after drops of 0.3-0.7 from about 4.6: the soft term's floor is high)
    assert abs(fast_loss - reference_loss) < min(0.03 * start, 0.5 * (start - min(fast_loss, reference_loss))), \
        (start, fast_loss, reference_loss)


def _table_rows(out: str, arch: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines()
            if line.startswith(f"| {arch} ")]


def test_the_throughput_script_runs_at_smoke_scale(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--epochs", "1", "--archs", "vit",
         "--repeats", "1", "--train-size", "256", "--concurrent", "1,3", "--processes", "2",
         "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "fast/ref" in out and "member-ep/s" in out and "members at once" in out
    assert "CPU threads: 1" in out
    reference, alone, three, processes = _table_rows(out, "vit")
    assert reference[2] == "256" and reference[3] == "reference" and reference[6] == ""
    assert (alone[3], alone[4], three[3], three[4]) == ("fast", "1", "fast, streams", "3")
    assert (processes[3], processes[4]) == ("fast, processes", "2")
    assert all(row[6].endswith("x") and float(row[6][:-1]) > 0 for row in (alone, three, processes))
    saved = json.loads((tmp_path / "r.json").read_text())
    (row,) = saved["rows"]
    assert saved["concurrent"] == [1, 3] and saved["processes"] == [2]
    assert [(f["concurrent"], f["how"]) for f in row["fast"]] == [(1, "alone"), (3, "streams"), (2, "processes")]
    # K members at once count K member-epochs: the throughput is K / the group's median time
    k3 = row["fast"][1]
    assert k3["fast_member_epochs_per_s"] == pytest.approx(3 / sorted(k3["fast_s"])[0])


def test_the_throughput_script_measures_channels_last_and_torch_compile():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--epochs", "1", "--archs", "resnet18",
         "--repeats", "1", "--train-size", "64", "--channels-last", "--compile"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "channels_last, torch.compile" in result.stdout
    assert len(_table_rows(result.stdout, "resnet18")) == 2


@pytest.mark.parametrize("option,bad", [("--concurrent", "0"), ("--concurrent", "1,x"), ("--concurrent", ""),
                                        ("--processes", "0"), ("--processes", "2,y")])
def test_the_throughput_script_refuses_bad_concurrency(option, bad):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), option, bad],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and option in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_the_throughput_script_refuses_cuda_without_a_gpu():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--device", "cuda"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "CUDA is not available" in result.stderr


def test_the_cuda_table_reports_training_flops_against_the_bf16_peak(capsys):
    import argparse

    import train_throughput

    row = {"arch": "resnet18", "params": 11_000_000, "train_images": 50_000, "reference_member_epochs_per_s": 0.1,
           "reference_train_flops_per_s": 49.45e12,
           "fast": [{"concurrent": 4, "how": "streams", "fast_member_epochs_per_s": 0.2, "ratio_fast_over_reference": 2.0,
                     "paired_ratio_min": 1.9, "paired_ratio_max": 2.1, "fast_train_flops_per_s": 98.9e12}]}
    train_throughput.print_table([row], argparse.Namespace(device=torch.device("cuda"), peak_tflops=989.0))
    out = capsys.readouterr().out
    assert "TFLOP/s" in out and "% of bf16 peak" in out
    reference, fast = _table_rows(out, "resnet18")
    assert reference[3] == "reference" and reference[8] == "49.45" and reference[9] == "5.0%"
    assert fast[3:] == ["fast, streams", "4", "0.2", "2.00x", "1.90-2.10", "98.90", "10.0%"]


def test_the_gpu_script_checks_its_parts_and_needs_cuda():
    script = str(ROOT / "benchmarks" / "gpu.sh")
    bad = subprocess.run(["bash", script, "fp32", "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown part 'nope'" in bad.stderr
    if not torch.cuda.is_available():
        env = {**__import__("os").environ, "PATH": f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"}
        none = subprocess.run(["bash", script, "fp32"], capture_output=True, text=True, timeout=120, env=env)
        assert none.returncode == 1 and "no CUDA device" in none.stderr


def test_a_failing_benchmark_process_stops_the_run_with_its_traceback():
    import train_throughput

    args = train_throughput.parse_args(["--train-size", "64", "--epochs", "1"])
    with pytest.raises(RuntimeError, match="benchmark worker process 0 failed") as failure:
        train_throughput.ProcessPool(1, "no_such_arch", args, rounds=1)
    assert "no_such_arch" in str(failure.value)
