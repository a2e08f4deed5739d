"""`kdclaims plan`: members to train and cached, device-hours from measured times, cache size on disk."""

import json
import statistics

import pytest
from click.testing import CliRunner

from kdclaims.cli_plan import plan as plan_command
from kdclaims.profiles import get_profile
from kdclaims.spec import PopulationSpec
from kdclaims import plan as plan_module
from kdclaims.models import model_flops_per_image
from kdclaims.plan import DEFAULT_DEVICE_TFLOPS, measure_per_member_seconds, plan
from kdclaims.population import Workbench

SETUPS_PER_ARCH = 10  # independent, then kd / uniform_kd / gaussian_kd at alpha 0.1, 0.5, 0.9


def _plan_json(*args):
    result = CliRunner().invoke(plan_command, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output)


def test_plan_counts_cached_members_and_uses_their_wall_times(tmp_path):
    cache = tmp_path / "cache"
    args = ["--profile", "smoke", "--seeds", "2", "--cache-dir", str(cache), "--device", "cpu", "--arch", "vgg16_bn"]

    before = _plan_json(*args, "--measure")
    (row,) = before["rows"]
    assert row["arch"] == "vgg16_bn" and before["cached_known"] and before["data_note"] is None
    assert row["total"] == SETUPS_PER_ARCH * 2 + 1  # ten populations of 2 seeds, and the teacher
    assert row["cached"] == 0 and row["to_train"] == row["total"]
    assert before["cached"] == 0 and before["to_train"] == before["total"] == row["total"]
    assert row["per_member_source"].startswith("measured: 1 epoch on cpu")  # nothing cached: measured now
    assert row["per_member_s"] > 0 and row["device_hours"] == pytest.approx(row["per_member_s"] * row["total"] / 3600)
    assert before["cache_member_files"] == 0

    bench = Workbench(get_profile("smoke").with_seeds((1, 2)), cache_dir=cache, device="cpu", progress=False)
    population = bench.population(PopulationSpec("vgg16_bn", "independent"))
    assert population.trained_now == 2
    walls = [m["wall_time_s"] for m in population.members_meta]

    after = _plan_json(*args)
    (row,) = after["rows"]
    assert row["cached"] == 2 and row["to_train"] == row["total"] - 2
    independent = next(p for p in row["populations"] if p["name"] == "vgg16_bn/independent")
    assert independent == {"name": "vgg16_bn/independent", "total": 2, "cached": 2}
    assert row["per_member_source"] == "median device time of 2 cached member(s) on cpu"
    assert row["per_member_s"] == pytest.approx(statistics.median(walls))
    assert row["device_hours"] == pytest.approx(statistics.median(walls) * (row["total"] - 2) / 3600)
    # disk: the two member files now, and their mean size for each student still to train (+ the teacher)
    files = sorted((cache / "members").glob("*/*.safetensors"))
    assert len(files) == 2 and after["cache_member_files"] == 2
    assert after["cache_member_bytes"] == sum(f.stat().st_size for f in files)
    assert after["cache_bytes"] >= after["cache_member_bytes"]
    mean_size = statistics.fmean(f.stat().st_size for f in files)
    students_left = row["to_train"] - 1
    assert row["new_bytes_estimate"] > mean_size * students_left  # the teacher also stores its train logits
    assert after["cache_bytes_after_estimate"] == after["cache_bytes"] + after["new_bytes_estimate"]

    given = _plan_json(*args, "--per-member-seconds", "36")
    assert given["rows"][0]["per_member_source"] == "given: --per-member-seconds"
    assert given["device_hours"] == pytest.approx(36 * (row["total"] - 2) / 3600)

    table = CliRunner().invoke(plan_command, args)
    assert table.exit_code == 0, table.output
    assert "vgg16_bn" in table.output and "total" in table.output and "device-hours" in table.output
    assert "19 of 21 members to train (2 cached)" in table.output


def test_plan_for_the_paper_without_cifar100_says_how_to_get_it(tmp_path):
    args = ["--profile", "paper", "--cache-dir", str(tmp_path / "cache"), "--data-dir", str(tmp_path / "nodata"),
            "--device", "cpu", "--per-member-seconds", "600"]
    result = CliRunner().invoke(plan_command, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "CIFAR-100 not found" in result.output and "kdclaims data fetch" in result.output
    assert "unknown (0)" in result.output

    data = plan("paper", cache_dir=tmp_path / "cache", data_dir=tmp_path / "nodata", device="cpu",
                per_member_seconds=600)
    assert not data["data_available"] and not data["cached_known"]
    assert "CIFAR-100 not found" in data["data_note"]
    assert [r["arch"] for r in data["rows"]] == ["resnet18", "vgg16_bn", "vit"]
    for row in data["rows"]:
        assert row["total"] == SETUPS_PER_ARCH * 385 + 1 and row["cached"] == 0 and row["to_train"] == row["total"]
        # 384 students of 10,000 x 100 float32 test logits, and the teacher with its 50,000 train logits too
        assert row["new_bytes_estimate"] > (row["total"] - 1) * 10_000 * 100 * 4 + 60_000 * 100 * 4
    assert data["to_train"] == 3 * 3851
    assert data["device_hours"] == pytest.approx(3 * 3851 * 600 / 3600)


def test_a_long_epoch_is_measured_on_its_first_steps_and_extrapolated():
    profile = get_profile("smoke")
    seconds, how = measure_per_member_seconds(profile, "vgg16_bn", "cpu", measure_seconds=0.0)
    assert seconds > 0
    assert how.startswith("measured: 3 of ") and "extrapolated x 4 epochs" in how


def test_plan_rejects_a_nonsense_time_per_member(tmp_path):
    from kdclaims.errors import ConfigError

    with pytest.raises(ConfigError, match="per-member-seconds"):
        plan("paper", cache_dir=tmp_path, data_dir=tmp_path / "nodata", per_member_seconds=-1)


def test_the_measured_time_per_member_with_concurrent_members_is_the_groups_time_shared(tmp_path):
    profile = get_profile("smoke")
    bench = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    seconds, how = measure_per_member_seconds(profile, "vit", "cpu", bench.data, measure_seconds=1.0,
                                              concurrent_members=2)
    assert seconds > 0 and how.endswith("2 members at a time (their time / 2)")
    made = plan(profile, cache_dir=tmp_path / "cache", archs=["vit"], device="cpu", concurrent_members=2,
                measure=True)
    assert made["concurrent_members"] == 2 and "2 members at a time" in made["rows"][0]["per_member_source"]


def test_plan_trains_nothing_without_measure_and_estimates_gpu_hours_from_flops(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("plan measured a member without --measure")

    monkeypatch.setattr(plan_module, "measure_per_member_seconds", no_training)
    args = ["--profile", "paper", "--cache-dir", str(tmp_path / "cache"), "--data-dir", str(tmp_path / "nodata"),
            "--device", "cpu"]
    made = _plan_json(*args)
    assert made["device_tflops"] == pytest.approx(989.0 * 0.3) == DEFAULT_DEVICE_TFLOPS
    assert "989" in made["device_tflops_assumption"] and "0.3 utilisation" in made["device_tflops_assumption"]
    for row in made["rows"]:
        assert row["per_member_s"] is None and row["device_hours"] is None
        assert row["per_member_source"].startswith("not measured (--measure")
        # 3 x forward FLOPs of one paper-size image x 50,000 CIFAR-100 training images x the recipe's epochs
        forward = model_flops_per_image(row["arch"], num_classes=100, image_size=32)
        assert row["training_flops_per_member"] == 3 * forward * 50_000 * row["epochs"]
        assert row["accelerator_hours"] == pytest.approx(
            row["training_flops_per_member"] / (DEFAULT_DEVICE_TFLOPS * 1e12) * row["to_train"] / 3600)
    resnet = made["rows"][0]
    assert resnet["arch"] == "resnet18" and 1.0e9 < model_flops_per_image("resnet18") < 1.2e9  # 0.56 GMACs
    assert made["accelerator_hours"] == pytest.approx(sum(r["accelerator_hours"] for r in made["rows"]))

    slower = _plan_json(*args, "--device-tflops", str(DEFAULT_DEVICE_TFLOPS / 2))
    assert slower["accelerator_hours"] == pytest.approx(2 * made["accelerator_hours"])
    assert slower["device_tflops_assumption"].endswith("(--device-tflops)")

    table = CliRunner().invoke(plan_command, args)
    assert table.exit_code == 0, table.output
    assert "GPU hours" in table.output and "H100/H200 bf16 dense peak 989 TFLOP/s x 0.3 utilisation" in table.output

    refused = CliRunner().invoke(plan_command, [*args, "--device-tflops", "0"])
    assert refused.exit_code != 0 and "--device-tflops 0.0 must be a positive number" in str(refused.exception)


def test_plan_sequential_prints_the_design_beside_the_fixed_one(tmp_path):
    """plan --sequential: looks, efficacy boundaries, the futility rule, expected/max/fixed members and hours;
    --format json gives the same keys (and --json stays an alias); --looks and --spending override."""
    from kdclaims.plan import shipped_expected_members
    from kdclaims.sequential import spending_boundaries

    args = ["--profile", "paper", "--cache-dir", str(tmp_path / "cache"), "--data-dir", str(tmp_path / "nodata"),
            "--device", "cpu", "--sequential", "--per-member-seconds", "36"]
    result = CliRunner().invoke(plan_command, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    made = json.loads(result.output)
    assert made["looks"] == [25, 50, 100, 200, 385]
    assert made["efficacy_z"] == pytest.approx(spending_boundaries([k / 385 for k in made["looks"]], final=True))
    assert made["efficacy_z"][0] > made["efficacy_z"][-1] > 1.96  # O'Brien-Fleming-type: strict early, ~z at the end
    assert made["fixed_members"] == made["max_members"] == 3 * (10 * 385 + 1)
    shipped = shipped_expected_members(made["looks"], "obf")
    assert shipped is not None
    assert made["expected_members"] == pytest.approx(sum(shipped["expected_members_per_arch"].values()))
    assert made["expected_members"] == pytest.approx(shipped["expected_members"], abs=0.5)  # per-arch rounding
    assert 0 < made["expected_members"] <= made["max_members"]
    assert made["fixed_device_hours"] == pytest.approx(made["fixed_members"] * 36 / 3600)
    assert made["expected_device_hours"] == pytest.approx(made["expected_members"] * 36 / 3600)
    assert "margin" in made["futility_rule"] and "conditional power" in made["futility_rule"]
    assert _plan_json(*args) == made  # --json: the alias

    pocock = json.loads(CliRunner().invoke(plan_command, [*args, "--format", "json", "--spending", "pocock",
                                                          "--looks", "100,200,385"]).output)
    assert pocock["looks"] == [100, 200, 385] and pocock["spending"] == "pocock"
    assert pocock["efficacy_z"] == pytest.approx(spending_boundaries([100 / 385, 200 / 385, 1.0], spending="pocock",
                                                                     final=True))
    assert pocock["expected_members"] is None and "benchmarks/sequential_catalogue_sim.py --looks 100,200,385" in \
        pocock["expected_members_source"]

    text = CliRunner().invoke(plan_command, args)
    assert text.exit_code == 0, text.output
    assert "sequential design" in text.output and "efficacy boundary z" in text.output
    assert f"{made['efficacy_z'][0]:.3f}" in text.output and "futility / equivalence" in text.output
    assert "expected members" in text.output and "fixed members" in text.output
