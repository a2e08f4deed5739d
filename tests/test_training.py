"""Training: loss (1) against an independent formula, noise teachers, schedules, determinism."""

import copy
import math

import pytest
import torch

from kdclaims.profiles import get_profile, parse_seeds, seeds_to_text
from kdclaims.recipe import Recipe
from kdclaims.spec import PopulationSpec
from kdclaims.errors import ConfigError
from kdclaims.models import RECIPES, build_model
from kdclaims.training import PreparedData, kd_loss, noise_teacher_logits, train_member


def test_kd_loss_matches_the_papers_equation_written_out_by_hand():
    student = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]
    teacher = [[1.0, 3.0, 0.0], [-2.0, 0.0, 2.0]]
    labels = [0, 2]
    alpha, temperature = 0.3, 2.0

    def softmax(row, t):
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    expected = 0.0
    for s, t, y in zip(student, teacher, labels):
        hard = -math.log(softmax(s, 1.0)[y])  # H(y, σ(z_s; T=1))
        soft = -sum(p * math.log(q) for p, q in zip(softmax(t, temperature), softmax(s, temperature)))
        expected += (1 - alpha) * hard + alpha * soft  # α weights the teacher term
    expected /= len(labels)

    got = kd_loss(torch.tensor(student, dtype=torch.float64), torch.tensor(labels),
                  torch.tensor(teacher, dtype=torch.float64), alpha, temperature)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_kd_loss_without_teacher_or_alpha_zero_is_cross_entropy():
    s, y, t = torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), torch.randn(4, 5)
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.equal(kd_loss(s, y, None, 0.9), ce)
    assert torch.equal(kd_loss(s, y, t, 0.0), ce)
    # α = 1: only the teacher term remains
    soft = -(torch.softmax(t, -1) * torch.log_softmax(s, -1)).sum(-1).mean()
    assert torch.allclose(kd_loss(s, y, t, 1.0), soft)


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_noise_teachers_are_fixed_per_example(kind):
    a = noise_teacher_logits(kind, 50, 10)
    b = noise_teacher_logits(kind, 50, 10)
    assert a.shape == (50, 10) and torch.equal(a, b)  # generated once: the same tensor every time
    assert not torch.equal(a[0], a[1])  # one row per training example, not one shared row
    if kind == "uniform":
        assert a.min() >= 0 and a.max() < 1
    else:
        big = noise_teacher_logits(kind, 2000, 10)
        assert abs(big.mean().item()) < 0.05 and abs(big.std().item() - 1) < 0.05
    with pytest.raises(ConfigError):
        noise_teacher_logits("laplace", 5, 2)


def test_recipes_follow_the_appendices():
    r, v, t = RECIPES["resnet18"], RECIPES["vgg16_bn"], RECIPES["vit"]
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.epochs, r.batch_size) == ("sgd", 0.1, 0.9, 5e-4, 100, 128)
    assert r.lr_at_epoch(59) == 0.1 and r.lr_at_epoch(60) == pytest.approx(0.02)
    assert (v.epochs, v.milestones) == (50, (30,)) and v.lr_at_epoch(30) == pytest.approx(0.02)
    assert (t.optimizer, t.lr, t.weight_decay, t.epochs) == ("adamw", 5e-4, 1e-3, 70)
    assert t.lr_at_epoch(0) == pytest.approx(5e-5) and t.lr_at_epoch(9) == pytest.approx(5e-4)
    assert t.lr_at_epoch(10) == pytest.approx(5e-4) and t.lr_at_epoch(69) == pytest.approx(1e-5)
    lrs = [t.lr_at_epoch(e) for e in range(10, 70)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # cosine decay is monotone


def test_scaled_recipe_keeps_milestones_in_place():
    short = RECIPES["resnet18"].scaled_to(10)
    assert short.epochs == 10 and short.milestones == (6,)
    vit = RECIPES["vit"].scaled_to(7)
    assert vit.warmup_epochs == 1 and vit.lr_at_epoch(6) == pytest.approx(1e-5)


def test_seed_parsing():
    assert parse_seeds("3") == (1, 2, 3)
    assert parse_seeds("1-4,9") == (1, 2, 3, 4, 9)
    assert seeds_to_text(parse_seeds("1-4,9")) == "1-4,9"
    for bad in ("0", "-3", "4-2", "a", "1,1", "0-3", ""):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_population_spec_validates_alpha_and_setup():
    assert PopulationSpec("vit", "kd", 0.5).name == "vit/kd-a0.5"
    assert PopulationSpec("vit", "independent").name == "vit/independent"
    for bad in [("vit", "kd", 1.5), ("vit", "kd", None), ("vit", "independent", 0.5), ("vit", "distill", 0.5),
                ("alexnet", "kd", 0.5)]:
        with pytest.raises(ConfigError):
            PopulationSpec(*bad)


def _tiny_dataset(n_train=96, n_test=32, classes=4):
    from kdclaims.data import Dataset

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, classes, (n_train + n_test,), generator=g)
    images = (torch.rand(n_train + n_test, 3, 32, 32, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 40).to(torch.uint8)
    return Dataset(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                   tuple(f"c{i}" for i in range(classes)), "memory", None, "test-fingerprint")


def _tiny_data(n_train=96, n_test=32, classes=4):
    return PreparedData.from_dataset(_tiny_dataset(n_train, n_test, classes), image_size=16, device="cpu")


def _train(seed, alpha=0.0, soft=None, arch="resnet18", **overrides):
    data = _tiny_data()
    torch.manual_seed(0)
    config = {"resnet18": {"width": 4, "blocks": (1, 1, 1, 1)}, "vit": {"dim": 16, "depth": 1, "heads": 2}}[arch]
    model = build_model(arch, num_classes=4, image_size=16, **config)
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=2, batch_size=32)
    return train_member(model, data, recipe, seed, soft, alpha, 1.0, **overrides)


@pytest.mark.parametrize("arch", ["resnet18", "vit"])
def test_same_seed_gives_identical_logits_and_another_seed_does_not(arch):
    a, b, c = _train(1, arch=arch), _train(1, arch=arch), _train(2, arch=arch)
    assert torch.equal(a.test_logits, b.test_logits)
    assert not torch.equal(a.test_logits, c.test_logits)


def test_kd_member_uses_its_soft_targets():
    soft = noise_teacher_logits("gaussian", 96, 4) * 5
    plain, distilled = _train(1), _train(1, alpha=0.9, soft=soft)
    assert not torch.equal(plain.test_logits, distilled.test_logits)
    assert distilled.train_logits is None and _train(1, keep_train_logits=True).train_logits.shape == (96, 4)


def test_profiles_are_known_and_smoke_is_not_a_reproduction():
    assert get_profile("paper").seeds == tuple(range(1, 386)) and get_profile("paper").is_reproduction
    assert not get_profile("smoke").is_reproduction
    with pytest.raises(ConfigError, match="unknown profile"):
        get_profile("tiny")


def test_training_batches_from_the_normalised_copy_equal_per_batch_normalisation(monkeypatch):
    data = _tiny_data()
    index = torch.tensor([5, 0, 77, 3])
    copied = data.train_inputs()
    assert copied.normalised is not None
    assert torch.equal(copied[index], data.batch(data.train_images[index]))
    monkeypatch.setenv("KDCLAIMS_NORMALISED_MB", "0")  # too big for the budget: normalise per batch
    fresh = _tiny_data()
    per_batch = fresh.train_inputs()
    assert per_batch.normalised is None and torch.equal(per_batch[index], copied[index])


def _tiny_models(arch, count):
    torch.manual_seed(0)
    config = {"resnet18": {"width": 4, "blocks": (1, 1, 1, 1)}, "vit": {"dim": 16, "depth": 1, "heads": 2}}[arch]
    initial = build_model(arch, num_classes=4, image_size=16, **config)
    return [copy.deepcopy(initial) for _ in range(count)]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["resnet18", "vit"])  # the ViT has dropout: each member keeps its own stream
def test_a_member_trained_concurrently_equals_the_member_trained_alone(arch, device):
    """Same seed, same device, fp32: trained alone, or taking turns with two other members (on CUDA each on
    its own stream), a member ends with the same logits. On the CPU they are bit-identical."""
    from kdclaims.training import MemberJob, train_members

    data = PreparedData.from_dataset(_tiny_dataset(), 16, device)
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=2, batch_size=40)  # 96 % 40 != 0
    soft = noise_teacher_logits("gaussian", 96, 4)
    seeds = (3, 1, 2)
    alone = [train_member(model.to(device), data, recipe, seed, soft, 0.5, 1.0)
             for model, seed in zip(_tiny_models(arch, 3), seeds)]
    epochs_seen = {seed: [] for seed in seeds}
    jobs = [MemberJob(model.to(device), seed, on_epoch=lambda e, n, s=seed: epochs_seen[s].append(e))
            for model, seed in zip(_tiny_models(arch, 3), seeds)]
    together = train_members(jobs, data, recipe, soft, 0.5, 1.0)
    assert all(m.concurrent == 3 for m in together) and all(m.concurrent == 1 for m in alone)
    assert epochs_seen == {seed: [1, 2] for seed in seeds}
    for a, t in zip(alone, together):
        if device == "cpu":
            assert torch.equal(a.test_logits, t.test_logits)
        else:  # GPU kernels may pick other algorithms under concurrency: equal to float tolerance
            torch.testing.assert_close(t.test_logits, a.test_logits, rtol=1e-4, atol=1e-4)
        assert a.test_accuracy == pytest.approx(t.test_accuracy, abs=1 / 32 if device != "cpu" else 0)
    assert not torch.equal(together[0].test_logits, together[1].test_logits)  # the seeds differ


def test_members_trained_concurrently_resume_each_from_its_own_checkpoint(tmp_path):
    """A group interrupted after epoch 1 resumes every member from its own checkpoint and ends where an
    uninterrupted group (and each member alone) ends."""
    from kdclaims.checkpoint import Checkpointer
    from kdclaims.training import MemberJob, train_members

    data = _tiny_data()
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=3, batch_size=32)
    seeds = (1, 2)
    reference = train_members([MemberJob(m, s) for m, s in zip(_tiny_models("vit", 2), seeds)], data, recipe,
                              None, 0.0, 1.0)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(epoch, epochs):
        if epoch == 1:
            raise Stop

    checkpoints = [Checkpointer(tmp_path / f"m{s}.pt", f"m{s}", every_epochs=1) for s in seeds]
    jobs = [MemberJob(m, s, checkpoint=c) for m, s, c in zip(_tiny_models("vit", 2), seeds, checkpoints)]
    jobs[1].on_epoch = stop_after_first_epoch  # the second member's first epoch end: the first has saved its own
    with pytest.raises(Stop):
        train_members(jobs, data, recipe, None, 0.0, 1.0)
    assert all(c.path.is_file() for c in checkpoints)
    checkpoints = [Checkpointer(tmp_path / f"m{s}.pt", f"m{s}", every_epochs=1) for s in seeds]
    resumed = train_members([MemberJob(m, s, checkpoint=c) for m, s, c in zip(_tiny_models("vit", 2), seeds, checkpoints)],
                            data, recipe, None, 0.0, 1.0)
    assert [m.resumed_from_epoch for m in resumed] == [1, 1]
    for r, m in zip(reference, resumed):
        assert torch.equal(r.test_logits, m.test_logits)
