"""Profiles as data (issue #13): the shipped profile files, your own profile file, and --data-dir refusal."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from kdclaims.errors import ConfigError
from kdclaims.options import chosen_profile
from kdclaims.profiles import PROFILE_DIR, PROFILES, Profile, get_profile, load_profile_file
from kdclaims.spec import PopulationSpec, hash_config

ARCHS = ("resnet18", "vgg16_bn", "vit")

# Computed with the code before profiles became files (commit 3626b20): what each member's model and recipe
# hash to, per profile and architecture, and the full keys of a few smoke members (synthetic data included).
PINNED_CONFIGS = {
    ("paper", "resnet18"): "f8cff2a53fd0b5f071bddbfcce1c7ba5a5f7acf058700869ad4853f11be8fd69",
    ("paper", "vgg16_bn"): "4402c4a681bf73d4e468696dee2b8664a558e031a53c0407621ee8be5c1eeb78",
    ("paper", "vit"): "c37ee631c52dba159d05c0ff079485b85765ede94296d3d47fabbc261b8f06ca",
    ("smoke", "resnet18"): "5c5a516606b457cf032ea4905469c11f22cb6da1ca34fae766e70e87e7168d24",
    ("smoke", "vgg16_bn"): "5f26df25b5657fc927f41b6bbc744d67c358137f25b327a4bc784a7837046bdd",
    ("smoke", "vit"): "a6d41443110c9ba9d691cd6f9c0d603673e77ecb6c6081f1a1d0c3c69613f589",
}
PINNED_SMOKE_KEYS = {  # arch: (teacher key, key of kd alpha 0.5 seed 3)
    "resnet18": ("c8c84cca5ade48341a739902ccedb029459be10ca7b0ebf1fa7750460e3ce549",
                 "21982fe62eafbb7e39a28f368634f95f2493399f6296f1af1bca40794a37748e"),
    "vgg16_bn": ("70806e340876e8550d6fa39eaa9b15c0ec2ca48c7228089526844b47eff9be15",
                 "e7c19839883d1f903f79d9e6091765af148bf304e1bd7d5376794f3107bf5e8c"),
    "vit": ("8ae040b8b03df1fca038816651decb01016789d6fcc0c71e6048cb8194a97079",
            "dd47dfa6bc5ed903b13de58a7d29d40ddb76fb539ca646c999fd21e0e10a0d9c"),
}


@pytest.mark.parametrize("name,arch", sorted(PINNED_CONFIGS))
def test_shipped_profile_files_give_the_same_member_configs_as_before(name, arch):
    profile = get_profile(name)
    config = {"model": profile.model_config(arch, 100), "recipe": dataclasses.asdict(profile.recipe(arch)),
              "image_size": profile.dataset.image_size, "precision": profile.precision}
    assert hash_config(config) == PINNED_CONFIGS[name, arch]


def test_smoke_member_keys_are_unchanged(tmp_path):
    from kdclaims.population import Workbench

    bench = Workbench(get_profile("smoke"), cache_dir=tmp_path, device="cpu", progress=False)
    for arch, (teacher, student) in PINNED_SMOKE_KEYS.items():
        assert bench.member_key(PopulationSpec(arch, "independent"), 0) == teacher
        assert bench.member_key(PopulationSpec(arch, "kd", 0.5), 3) == student


def test_shipped_profiles_are_files_with_their_kind():
    assert {p.stem for p in PROFILE_DIR.glob("*.yaml")} == set(PROFILES)
    assert get_profile("paper").seeds == tuple(range(1, 386)) and get_profile("paper").kind == "reproduction"
    assert get_profile("smoke").kind == "machinery-check" and not get_profile("smoke").is_reproduction


def test_a_profile_file_round_trips(tmp_path):
    (tmp_path / "data.npz").write_bytes(b"")
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\ndescription: my data\nkind: reproduction\n"
        "dataset: {kind: npz, path: data.npz}\nseeds: 1-12\nprecision: bf16\n"
        "architectures:\n  resnet18: {model: {width: 8}, epochs: 30, batch_size: 64, lr: 0.05}\n")
    profile = chosen_profile(str(path))
    assert profile.name == "mine" and profile.seeds == tuple(range(1, 13)) and profile.precision == "bf16"
    assert profile.dataset.kind == "npz" and profile.dataset.path == str(tmp_path / "data.npz")
    assert profile.model_config("resnet18", 10, 28, 1) == {
        "num_classes": 10, "image_size": 28, "width": 8, "blocks": (2, 2, 2, 2), "in_channels": 1}
    recipe = profile.recipe("resnet18")
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.milestones) == (30, 64, 0.05, (18,))
    rows = {d["setting"]: (d["value"], d["paper"]) for d in profile.differences_from_paper()}
    assert rows["ResNet-18 epochs"] == (30, 100) and rows["ResNet-18 batch_size"] == (64, 128)
    assert rows["ResNet-18 lr"] == (0.05, 0.1) and rows["seeds per population"] == (12, 385)
    assert "VGG-16-BN epochs" not in rows  # unchanged settings are not listed
    assert profile.as_dict()["kind"] == "reproduction"
    # the same file read twice is the same profile
    assert load_profile_file(path) == profile


@pytest.mark.parametrize("text,field", [
    ("name: x\nkind: reproduction\ndataset: {kind: cifar100}\nseeds: 3\ncolour: red\n", "colour"),
    ("name: x\nkind: reproduction\ndataset: {kind: cifar100, size: 3}\nseeds: 3\n", "dataset.size"),
    ("name: x\nkind: reproduction\ndataset: {kind: imagenet}\nseeds: 3\n", "dataset.kind"),
    ("name: x\nkind: science\ndataset: {kind: cifar100}\nseeds: 3\n", "kind"),
    ("name: x\nkind: reproduction\ndataset: {kind: cifar100}\nseeds: 0-3\n", "seeds"),
    ("name: x\nkind: reproduction\ndataset: {kind: cifar100}\nseeds: 3\nprecision: fp8\n", "precision"),
    ("name: x\nkind: reproduction\ndataset: {kind: cifar100}\nseeds: 3\n"
     "architectures: {vit: {epochs: -1}}\n", "architectures.vit.epochs"),
    ("name: x\nkind: reproduction\ndataset: {kind: cifar100}\nseeds: 3\n"
     "architectures: {vit: {momentum: 0.9}}\n", "architectures.vit.momentum"),
    ("name: x\nkind: reproduction\ndataset: {kind: cifar100}\nseeds: 3\n"
     "architectures: {vit: {lr: fast}}\n", "architectures.vit.lr"),
    ("name: x\nkind: reproduction\ndataset: {kind: cifar100}\n", "seeds"),
])
def test_a_bad_field_is_one_line_naming_the_file_and_field(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        get_profile(str(path))
    message = str(exc.value)
    assert "\n" not in message and str(path) in message and f"field '{field}'" in message


def test_bad_yaml_and_unknown_names_are_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as exc:
        get_profile(str(path))
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="unknown profile 'nonesuch'"):
        get_profile("nonesuch")
    with pytest.raises(ConfigError, match="cannot read profile file"):
        get_profile(str(tmp_path / "absent.yaml"))


def test_data_dir_is_refused_where_the_profile_makes_its_data(tmp_path):
    from kdclaims.population import Workbench

    with pytest.raises(ConfigError, match="--data-dir .* would be ignored") as exc:
        Workbench(get_profile("smoke"), cache_dir=tmp_path, data_dir=tmp_path / "mydata", device="cpu",
                  progress=False)
    assert "\n" not in str(exc.value)
    # a profile that reads a dataset takes one
    Workbench(get_profile("paper"), cache_dir=tmp_path, data_dir=tmp_path / "mydata", device="cpu", progress=False)


def test_data_dir_with_smoke_is_refused_by_pytest_at_start(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--profile", "smoke", "--data-dir",
                                           str(pytester.path / "d"))
    assert result.ret != 0
    assert "would be ignored" in (result.stdout.str() + result.stderr.str())


def test_profiles_cli_lists_and_shows(tmp_path):
    from click.testing import CliRunner

    from kdclaims.cli import main

    listed = CliRunner().invoke(main, ["profiles", "list"])
    assert listed.exit_code == 0
    assert "paper" in listed.output and "smoke" in listed.output and "machinery-check" in listed.output
    shown = CliRunner().invoke(main, ["profiles", "show", "smoke"])
    assert shown.exit_code == 0 and "ResNet-18 epochs: 4 (paper: 100)" in shown.output
    bad = CliRunner().invoke(main, ["profiles", "show", "nonesuch"])
    assert bad.exit_code == 2 and "unknown profile" in bad.output


def test_the_report_lists_what_the_profile_changes_beside_the_paper():
    import jsonschema
    import json

    from kdclaims.render.document import SCHEMA_PATH, build_document
    from kdclaims.render.html import render_html
    from kdclaims.render.markdown import markdown_report
    from test_report import fake_evaluation  # tests/ is on sys.path, as for helpers

    evaluation = fake_evaluation()
    evaluation["profile"] = get_profile("digits").as_dict()
    document = build_document(evaluation, audit=False)
    jsonschema.validate(json.loads(json.dumps(document)), json.loads(SCHEMA_PATH.read_text()))
    assert "replication on digits data" in document["notice"] and "profile digits" in document["notice"]
    text = markdown_report(document)
    assert "| seeds per population | 10 | 385 |" in text and "| ResNet-18 epochs | 20 | 100 |" in text
    assert "| ViT lr | 0.002 | 0.0005 |" in text
    assert "<td>ResNet-18 width</td><td>8</td><td>64</td>" in render_html(document, figures={})


def test_sequential_looks_are_read_checked_and_follow_the_seeds(tmp_path):
    from kdclaims.options import chosen_profile

    paper = chosen_profile("paper")
    assert paper.sequential_looks == (25, 50, 100, 200, 385) and paper.spending == "obf"
    assert paper.as_dict()["sequential"] == {"looks": [25, 50, 100, 200, 385], "spending": "obf"}
    assert chosen_profile("paper", "60").sequential_looks == (25, 50, 60)  # looks beyond --seeds dropped
    chosen = chosen_profile("smoke", None, None, "2,5", "pocock")
    assert chosen.sequential_looks == (2, 5) and chosen.spending == "pocock"
    for bad, says in [("2,4", "end at the seeds per population (5)"), ("3,3,5", "increase strictly"),
                      ("1,5", "at least 2"), ("x", "member counts")]:
        with pytest.raises(ConfigError, match=re.escape(says)):
            chosen_profile("smoke", None, None, bad)
    with pytest.raises(ConfigError, match="--spending"):
        chosen_profile("smoke", None, None, None, "linear")
    path = tmp_path / "p.yaml"
    path.write_text("name: mine\nkind: reproduction\ndataset: {kind: synthetic}\nseeds: 1-8\n"
                    "sequential: {looks: [4, 7]}\n")
    with pytest.raises(ConfigError, match=r"field 'sequential.looks' .*end at the seeds per population \(8\)"):
        chosen_profile(str(path))
    path.write_text("name: mine\nkind: reproduction\ndataset: {kind: synthetic}\nseeds: 1-8\n")
    assert chosen_profile(str(path)).sequential_looks == (2, 4, 8)  # the paper's look fractions of 8 seeds
