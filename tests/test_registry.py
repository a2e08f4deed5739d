"""The registries: an architecture (with its recipe and smoke size), a setup, a dataset kind: one call each.

The pinned values below were computed from the code *before* recipes, smoke sizes, setups and dataset
kinds moved into registries. Cache keys are hashes of ``Workbench.member_config``, so as long as these
match, every member already in a cache is still found (and no stale one is reused).
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from kdclaims.datasets import DATASETS, DatasetSpec, get_dataset, register_dataset
from kdclaims.models import RECIPES, get_recipe
from kdclaims.profiles import Profile, get_profile
from kdclaims.recipe import Recipe
from kdclaims.setups import NOISE_SEED, SETUPS, get_setup, register_setup
from kdclaims.spec import PopulationSpec, canonical_json
from kdclaims.errors import ConfigError, DataError
from kdclaims.models import ARCHITECTURES, SmokeConfig, get_architecture, register_architecture
from kdclaims.population import Workbench
from kdclaims.training import noise_teacher_logits

PAPER_ARCHS = ("resnet18", "vgg16_bn", "vit")
SMOKE_FINGERPRINT = "f7784ff6f34c4bfa8d27ac761bda0d1b6a7de6f70c9943fce44cc36fe15ce96b"  # the smoke synthetic data

# The smoke member config of one student per architecture (KD at α = 0.9, seed 1), as it was.
PINNED_SMOKE_CONFIGS = {
    "resnet18": {
        "alpha": 0.9, "arch": "resnet18", "data": {"fingerprint": SMOKE_FINGERPRINT, "image_size": 16}, "init_seed": 0,
        "model": {"blocks": [2, 2, 2, 2], "image_size": 16, "num_classes": 100, "width": 8},
        "precision": "fp32",
        "recipe": {"batch_size": 128, "epochs": 4, "final_lr": 0.0, "gamma": 0.2, "lr": 0.1, "milestones": [2],
                   "momentum": 0.9, "optimizer": "sgd", "schedule": "multistep", "warmup_epochs": 0,
                   "weight_decay": 0.0005},
        "schema": "kdclaims-member-v1", "seed": 1, "setup": "kd",
        "soft_targets": {"kind": "teacher",
                         "teacher_key": "c8c84cca5ade48341a739902ccedb029459be10ca7b0ebf1fa7750460e3ce549"},
        "temperature": 1.0,
    },
    "vgg16_bn": {
        "alpha": 0.9, "arch": "vgg16_bn", "data": {"fingerprint": SMOKE_FINGERPRINT, "image_size": 16}, "init_seed": 0,
        "model": {"depth_per_stage": [2, 2, 3, 3, 3], "image_size": 16, "num_classes": 100, "width": 8},
        "precision": "fp32",
        "recipe": {"batch_size": 128, "epochs": 4, "final_lr": 0.0, "gamma": 0.2, "lr": 0.1, "milestones": [2],
                   "momentum": 0.9, "optimizer": "sgd", "schedule": "multistep", "warmup_epochs": 0,
                   "weight_decay": 0.0005},
        "schema": "kdclaims-member-v1", "seed": 1, "setup": "kd",
        "soft_targets": {"kind": "teacher",
                         "teacher_key": "70806e340876e8550d6fa39eaa9b15c0ec2ca48c7228089526844b47eff9be15"},
        "temperature": 1.0,
    },
    "vit": {
        "alpha": 0.9, "arch": "vit", "data": {"fingerprint": SMOKE_FINGERPRINT, "image_size": 16}, "init_seed": 0,
        "model": {"depth": 2, "dim": 32, "dropout": 0.1, "heads": 2, "image_size": 16, "mlp_ratio": 2.0,
                  "num_classes": 100, "patch_size": 4},
        "precision": "fp32",
        "recipe": {"batch_size": 128, "epochs": 15, "final_lr": 1e-05, "gamma": 1.0, "lr": 0.0005, "milestones": [],
                   "momentum": 0.0, "optimizer": "adamw", "schedule": "warmup_cosine", "warmup_epochs": 2,
                   "weight_decay": 0.001},
        "schema": "kdclaims-member-v1", "seed": 1, "setup": "kd",
        "soft_targets": {"kind": "teacher",
                         "teacher_key": "8ae040b8b03df1fca038816651decb01016789d6fcc0c71e6048cb8194a97079"},
        "temperature": 1.0,
    },
}

# Smoke member keys of every built-in setup (the teacher is the independent seed-0 member), as they were.
PINNED_SMOKE_KEYS = {
    ("resnet18", "independent", None, 1.0, 0): "c8c84cca5ade48341a739902ccedb029459be10ca7b0ebf1fa7750460e3ce549",
    ("resnet18", "kd", 0.9, 1.0, 1): "c2d42799b21dc35793f81cf7a79e7c155fc65befe7b8ce8a931ce70cd4a5c418",
    ("resnet18", "uniform_kd", 0.5, 1.0, 2): "ffa0ec68f088f799f61f4034eb3821f7e262a33cb588cc79af65270ee6ac0449",
    ("resnet18", "gaussian_kd", 0.1, 2.0, 3): "4312555fa744605ee6da6f5928cb5c06be134f3a7f9b33d78aea71d5a3b3c787",
    ("vgg16_bn", "independent", None, 1.0, 0): "70806e340876e8550d6fa39eaa9b15c0ec2ca48c7228089526844b47eff9be15",
    ("vgg16_bn", "kd", 0.9, 1.0, 1): "9589f33c51f87aa935a72dd3b778b68a19e4217b299a55fb7d7a4c1645b7bd49",
    ("vgg16_bn", "uniform_kd", 0.5, 1.0, 2): "bc93b2f49cd06a1912a5a963c54d100b1085494712e6d3c58b0327480dbaac22",
    ("vgg16_bn", "gaussian_kd", 0.1, 2.0, 3): "e48ea64a9ad5246b5d3565231722aa031393bc4515b872b20313bed6838552cb",
    ("vit", "independent", None, 1.0, 0): "8ae040b8b03df1fca038816651decb01016789d6fcc0c71e6048cb8194a97079",
    ("vit", "kd", 0.9, 1.0, 1): "a90dd297477f4c13c8f53b8b1c363f171a21267254bb1ce04e36fc758db9f7e6",
    ("vit", "uniform_kd", 0.5, 1.0, 2): "15cb3b5846f9aaf054bd7b525a55c8d6dfe08c0abede03210aa399cff4ec7438",
    ("vit", "gaussian_kd", 0.1, 2.0, 3): "7a6ce38bd00c90f4f2abe88eee92cdddc60227f7f69d860b5ef5af9ddc4e15c7",
}

# SHA-256 of the (1600, 10) float32 noise teachers of the smoke data, as they were.
PINNED_NOISE = {
    "uniform": "868b2cd1c01a3bb62757fe8ebd3065fb5c021e38ab83d857eab976ad125b8825",
    "gaussian": "b756f1bb0d244b82f00eb2c3cb58818338b122aa0de234358ff07e91f13a583a",
}


@pytest.fixture(scope="module")
def smoke_bench(tmp_path_factory):
    """A smoke workbench over its synthetic data (generated once for the module; nothing is trained)."""
    return Workbench(get_profile("smoke"), cache_dir=tmp_path_factory.mktemp("registry-cache"), device="cpu",
                     progress=False)


# ---------------------------------------------------------------------------------------------
# Pinned: the registries changed where things are declared, not what members compute
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", PAPER_ARCHS)
def test_smoke_member_config_is_pinned(smoke_bench, arch):
    config = smoke_bench.member_config(PopulationSpec(arch, "kd", 0.9), 1)
    assert json.loads(canonical_json(config)) == PINNED_SMOKE_CONFIGS[arch]


def test_smoke_member_keys_of_every_builtin_setup_are_pinned(smoke_bench):
    for (arch, setup, alpha, temperature, seed), key in PINNED_SMOKE_KEYS.items():
        assert smoke_bench.member_key(PopulationSpec(arch, setup, alpha, temperature), seed) == key, (arch, setup)


@pytest.mark.parametrize("kind, draw", [("uniform", torch.rand), ("gaussian", torch.randn)])
def test_noise_teachers_are_unchanged(kind, draw):
    logits = noise_teacher_logits(kind, 1600, 10)
    assert torch.equal(logits, draw(1600, 10, generator=torch.Generator().manual_seed(NOISE_SEED)))
    assert logits.dtype == torch.float32
    assert hashlib.sha256(logits.numpy().tobytes()).hexdigest() == PINNED_NOISE[kind]


def test_smoke_profile_sizes_come_from_the_architecture_registrations():
    smoke, paper = get_profile("smoke"), get_profile("paper")
    expected = {"resnet18": ({"width": 8}, 4), "vgg16_bn": ({"width": 8}, 4),
                "vit": ({"dim": 32, "depth": 2, "heads": 2}, 15)}
    for arch, (model, epochs) in expected.items():
        registered = get_architecture(arch)
        assert registered.smoke_config == SmokeConfig(model, epochs)
        assert smoke.model_config(arch, 100) == {**registered.paper_config, **model, "image_size": 16}
        assert smoke.recipe(arch) == registered.recipe.scaled_to(epochs)
        assert paper.model_config(arch, 100) == dict(registered.paper_config)
        assert paper.recipe(arch) is registered.recipe
    as_dict = smoke.as_dict()
    assert as_dict["model_overrides"] == {a: m for a, (m, _) in expected.items()}
    assert as_dict["epochs"] == {a: e for a, (_, e) in expected.items()}
    assert paper.as_dict()["model_overrides"] == {} and paper.as_dict()["epochs"] == {}


# ---------------------------------------------------------------------------------------------
# Architectures: model, recipe and smoke size in one registration
# ---------------------------------------------------------------------------------------------


def _build_tiny(*, num_classes=100, image_size=32, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def test_recipes_are_views_onto_the_architecture_registry():
    for arch in PAPER_ARCHS:
        assert RECIPES[arch] is get_recipe(arch) is get_architecture(arch).recipe
    assert set(RECIPES) >= set(PAPER_ARCHS)
    with pytest.raises(TypeError):
        RECIPES["vit"] = RECIPES["resnet18"]  # read-only: recipes are registered with their architecture
    with pytest.raises(ConfigError, match="unknown architecture"):
        get_recipe("alexnet")


def test_an_architecture_is_one_registration_with_its_recipe_and_smoke_size():
    name = "tiny_mlp_registry_test"
    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=10, milestones=(6,), gamma=0.1)
    try:
        register_architecture(name, _build_tiny, {"num_classes": 100, "image_size": 32, "hidden": 64},
                              "a test MLP", recipe, smoke_config={"model": {"hidden": 8}, "epochs": 5})
        assert RECIPES[name] is recipe and get_recipe(name) is recipe
        smoke, paper = get_profile("smoke"), get_profile("paper")
        assert smoke.model_config(name, 10) == {"num_classes": 10, "image_size": 16, "hidden": 8}
        assert smoke.recipe(name).epochs == 5 and smoke.recipe(name).milestones == (3,)
        assert paper.model_config(name, 100)["hidden"] == 64 and paper.recipe(name) is recipe
        assert smoke.as_dict()["model_overrides"][name] == {"hidden": 8}
        assert PopulationSpec(name, "kd", 0.5).name == f"{name}/kd-a0.5"
    finally:
        ARCHITECTURES.pop(name, None)
    assert name not in RECIPES
    with pytest.raises(ConfigError):
        PopulationSpec(name, "independent")


def test_architecture_without_smoke_config_runs_at_paper_size_in_smoke():
    name = "tiny_mlp_no_smoke_test"
    recipe = Recipe(optimizer="adamw", lr=1e-3, weight_decay=0.0, epochs=3)
    try:
        register_architecture(name, _build_tiny, {"num_classes": 100, "image_size": 32, "hidden": 4}, "t", recipe)
        assert get_profile("smoke").model_config(name, 10) == {"num_classes": 10, "image_size": 16, "hidden": 4}
        assert get_profile("smoke").recipe(name) is recipe
        assert name not in get_profile("smoke").as_dict()["epochs"]
    finally:
        ARCHITECTURES.pop(name, None)


def test_architecture_without_recipe_builds_but_cannot_train():
    name = "tiny_mlp_no_recipe_test"
    try:
        register_architecture(name, _build_tiny, {"num_classes": 100, "image_size": 32}, "t")
        assert name not in RECIPES
        with pytest.raises(ConfigError, match="no training recipe"):
            get_recipe(name)
        with pytest.raises(ConfigError, match="no training recipe"):
            PopulationSpec(name, "independent")
    finally:
        ARCHITECTURES.pop(name, None)


def test_a_builder_given_as_a_path_is_imported_when_a_model_is_built():
    """The paper's three name their builders "kdclaims.models:build_..." so that the registry needs no
    torch; a user's architecture can do the same, and its keywords are checked once it is imported."""
    from kdclaims.models import build_model, build_resnet18

    assert get_architecture("resnet18").builder == "kdclaims.models:build_resnet18"
    assert get_architecture("resnet18").build_function() is build_resnet18
    name, bad = "lazy_resnet_registry_test", "lazy_bad_registry_test"
    try:
        register_architecture(name, "kdclaims.models:build_resnet18",
                              {"num_classes": 10, "image_size": 16, "width": 4, "blocks": (1, 1, 1, 1)}, "t")
        assert build_model(name).linear.out_features == 10
        assert "width" in get_architecture(name).accepted_options
        with pytest.raises(ConfigError, match="unknown model option 'depth'"):
            build_model(name, depth=3)
        register_architecture(bad, "kdclaims.models:no_such_builder", {"num_classes": 10}, "t")
        with pytest.raises(ConfigError, match="cannot be imported"):
            build_model(bad)
    finally:
        ARCHITECTURES.pop(name, None)
        ARCHITECTURES.pop(bad, None)
    with pytest.raises(ConfigError, match="module:function"):
        register_architecture(bad, "build_resnet18", {"num_classes": 10}, "t")


@pytest.mark.parametrize("kwargs, message", [
    ({"recipe": {"lr": 0.1}}, "must be a kdclaims.recipe.Recipe"),
    ({"recipe": Recipe(optimizer="lamb", lr=0.1, weight_decay=0.0, epochs=1)}, "unknown optimizer"),
    ({"recipe": Recipe(optimizer="sgd", lr=0.1, weight_decay=0.0, epochs=1, schedule="step")}, "unknown schedule"),
    ({"smoke_config": {"model": {"width": 8}}}, "unknown model option 'width'"),
    ({"smoke_config": {"model": {}, "epochs": 0}}, "epochs=0"),
    ({"smoke_config": {"size": 3}}, "unknown field 'size'"),
])
def test_bad_recipe_or_smoke_config_is_refused_at_registration(kwargs, message):
    name = "tiny_mlp_bad_test"
    with pytest.raises(ConfigError, match=message):
        register_architecture(name, _build_tiny, {"num_classes": 100}, "bad", **kwargs)
    assert name not in ARCHITECTURES


def test_profile_scale_is_checked():
    with pytest.raises(ConfigError, match="unknown scale"):
        Profile("tiny", "t", DatasetSpec("synthetic"), (1, 2), scale="tiny")


# ---------------------------------------------------------------------------------------------
# Setups: None, the teacher, or a noise generator
# ---------------------------------------------------------------------------------------------


def test_builtin_setups_declare_their_soft_targets():
    assert get_setup("independent").soft_targets is None and not get_setup("independent").uses_alpha
    assert get_setup("kd").soft_targets == "teacher" and get_setup("kd").uses_teacher
    assert get_setup("uniform_kd").noise_name == "uniform" and get_setup("gaussian_kd").noise_name == "gaussian"
    assert callable(get_setup("uniform_kd").soft_targets) and not get_setup("uniform_kd").uses_teacher


def test_setup_registration_is_checked():
    def zeros(n, c, generator):
        return torch.zeros(n, c)

    with pytest.raises(ConfigError, match="already registered"):
        register_setup("kd", "KD", "again", "teacher")
    with pytest.raises(ConfigError, match="soft_targets"):
        register_setup("bad_setup_test", "Bad", "bad", "trained")  # the pre-registry spelling
    with pytest.raises(ConfigError, match="already used"):
        register_setup("bad_setup_test", "Bad", "bad", zeros, noise_name="uniform")
    with pytest.raises(ConfigError, match="no noise generator"):
        register_setup("bad_setup_test", "Bad", "bad", "teacher", noise_name="x")
    assert "bad_setup_test" not in SETUPS
    with pytest.raises(ConfigError, match="'uniform', 'gaussian'"):
        noise_teacher_logits("laplace", 5, 2)


def test_a_noise_generator_must_return_one_float_row_per_example():
    name = "wrong_shape_kd_test"
    register_setup(name, "Wrong", "returns one row", lambda n, c, g: torch.zeros(1, c))
    try:
        with pytest.raises(ConfigError, match=r"shape \(5, 3\)"):
            noise_teacher_logits(name, 5, 3)
    finally:
        del SETUPS[name]


def test_a_new_setup_trains_end_to_end_through_the_workbench(tmp_path):
    """A KD setup whose soft targets are all zeros (the uniform distribution over classes): registered,
    trained as a 2-member smoke population of the cheapest architecture, cached, then removed."""

    def constant(num_examples, num_classes, generator):
        return torch.zeros(num_examples, num_classes)

    setup = register_setup("constant_kd", "Constant KD", "loss (1) towards the uniform distribution", constant)
    try:
        assert setup.noise_name == "constant_kd" and setup.uses_alpha
        spec = PopulationSpec("vit", "constant_kd", 0.5, 2.0)
        bench = Workbench(get_profile("smoke").with_seeds((1, 2)), cache_dir=tmp_path / "cache", device="cpu",
                          progress=False)
        assert bench.soft_target_config(spec) == {"kind": "constant_kd", "seed": NOISE_SEED}
        soft = bench.soft_logits(spec)
        assert soft.shape == (bench.dataset.train_labels.shape[0], bench.dataset.num_classes) and not soft.any()

        population = bench.population(spec)
        assert population.n == 2 and population.trained_now == 2 and len(set(population.keys)) == 2
        assert population.test_logits.shape == (2, bench.dataset.test_labels.shape[0], bench.dataset.num_classes)
        assert torch.isfinite(population.test_logits).all()
        assert all(m["config"]["setup"] == "constant_kd" and m["config"]["temperature"] == 2.0
                   for m in population.members_meta)
        # The noise needs no teacher: only the two students were trained.
        assert len(list((tmp_path / "cache" / "members").rglob("*.safetensors"))) == 2

        again = Workbench(get_profile("smoke").with_seeds((1, 2)), cache_dir=tmp_path / "cache", device="cpu",
                          progress=False).population(spec)
        assert again.trained_now == 0 and torch.equal(again.test_logits, population.test_logits)
    finally:
        del SETUPS["constant_kd"]
    with pytest.raises(ConfigError, match="unknown setup"):
        PopulationSpec("vit", "constant_kd", 0.5)


# ---------------------------------------------------------------------------------------------
# Dataset kinds: where the CIFAR-100-format data is, or how it is made
# ---------------------------------------------------------------------------------------------


def _profile_with(dataset: DatasetSpec) -> Profile:
    return Profile("custom", "a test profile", dataset, (1, 2), scale="smoke", is_reproduction=False)


def test_unknown_dataset_kind_lists_the_known_ones(tmp_path):
    bench = Workbench(_profile_with(DatasetSpec("imagenet")), cache_dir=tmp_path, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="unknown dataset kind 'imagenet'") as exc:
        bench.dataset_path()
    assert "cifar100" in str(exc.value) and "synthetic" in str(exc.value)


def test_missing_cifar100_says_how_to_get_it(tmp_path):
    bench = Workbench(get_profile("paper"), cache_dir=tmp_path, data_dir=tmp_path / "nodata", device="cpu",
                      progress=False)
    with pytest.raises(DataError) as exc:
        bench.check_data()
    message = str(exc.value)
    assert "CIFAR-100 not found" in message and "kdclaims data fetch" in message and "--profile smoke" in message


def test_synthetic_kind_generates_under_the_cache(tmp_path):
    spec = DatasetSpec("synthetic", 16, {"num_classes": 3, "train_per_class": 4, "test_per_class": 2, "seed": 5})
    bench = Workbench(_profile_with(spec), cache_dir=tmp_path, device="cpu", progress=False)
    path = bench.dataset_path()
    assert path.parent.parent == tmp_path / "data" and path.parent.name.startswith("synthetic-")
    assert bench.dataset_path() == path and bench.dataset.train_labels.shape == (12,)


def test_a_new_dataset_kind_is_one_registration(tmp_path):
    from kdclaims.data import write_synthetic_cifar100

    calls = []

    def locate_shared(spec, data_dir, cache_root):
        """A dataset kept in a shared folder beside the data dir, written there once."""
        calls.append((spec.kind, Path(data_dir), Path(cache_root)))
        folder = Path(data_dir) / "shared"
        if not folder.exists():
            write_synthetic_cifar100(folder, num_classes=4, train_per_class=3, test_per_class=2, seed=1)
        return folder / "cifar-100-python.tar.gz"

    register_dataset("shared_test", locate_shared)
    try:
        assert get_dataset("shared_test").locate is locate_shared  # registered as a DatasetKind (#13)
        with pytest.raises(ConfigError, match="already registered"):
            register_dataset("shared_test", locate_shared)
        bench = Workbench(_profile_with(DatasetSpec("shared_test", 16)), cache_dir=tmp_path / "cache",
                          data_dir=tmp_path / "data", device="cpu", progress=False)
        assert bench.dataset.train_labels.shape == (12,) and bench.dataset.test_labels.shape == (8,)
        assert calls == [("shared_test", tmp_path / "data", tmp_path / "cache")]
    finally:
        del DATASETS["shared_test"]
    with pytest.raises(ConfigError, match="unknown dataset kind"):
        get_dataset("shared_test")
