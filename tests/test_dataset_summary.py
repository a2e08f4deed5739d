"""The dataset summary and its cache sidecar (issue #15): a full, verified load records what a run that trains
nothing needs of the dataset, keyed by the SHA-256 of the dataset file's bytes; a later run with the same bytes
reads that instead of unpickling the dataset, and anything that does not check out is ignored and rewritten."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
from helpers import retained_ad_claims, tiny_profile

from kdclaims import data
from kdclaims.claims import load_claim_file
from kdclaims.data import (ARCHIVE_NAME, DatasetSummary, load_cifar100, load_dataset, read_dataset_summary,
                           summary_sidecar_path, write_digits_npz, write_synthetic_cifar100)
from kdclaims.errors import DataError
from kdclaims.population import Workbench
from kdclaims.spec import PopulationSpec

SMALL = dict(num_classes=5, train_per_class=8, test_per_class=4, seed=3)


@pytest.fixture
def archive(tmp_path):
    return write_synthetic_cifar100(tmp_path / "data", **SMALL)


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refuse_to_unpickle(*args, **kwargs):
    """Stands in for the pickle scan where a full CIFAR load must not happen."""
    pytest.fail("the dataset was unpickled")


# ---------------------------------------------------------------------------------------------
# the summary itself
# ---------------------------------------------------------------------------------------------


def test_summary_holds_what_a_warm_run_reads_and_describes_the_dataset_as_before(archive):
    dataset = load_cifar100(archive)
    summary = dataset.to_summary()
    assert summary.fingerprint == dataset.fingerprint and summary.archive_md5 == dataset.archive_md5
    assert summary.num_classes == 100 and summary.num_train == 40 and summary.image_shape == (3, 32, 32)
    assert summary.test_labels_array.dtype == np.int64
    assert np.array_equal(summary.test_labels_array, dataset.test_labels_array)
    with pytest.raises(ValueError):  # immutable: the test labels of every metric
        summary.test_labels_array[0] = 1
    assert summary.as_dict() == dataset.summary()
    assert summary.as_dict()["train"] == {"count": 40, "images_shape": [40, 3, 32, 32], "images_dtype": "uint8",
                                          "labels_dtype": "int64", "label_range": [0, 4], "classes_present": 5}


# ---------------------------------------------------------------------------------------------
# the sidecar: written by a full load, read instead of one
# ---------------------------------------------------------------------------------------------


def test_sidecar_is_written_on_a_full_load_and_read_without_unpickling(tmp_path, archive, monkeypatch):
    summaries = tmp_path / "summaries"
    assert read_dataset_summary(archive, summaries) is None  # nothing recorded yet
    full = load_dataset(archive, summaries)
    sidecar = summary_sidecar_path(summaries, sha256_of(archive))
    assert sidecar.is_file() and [p.name for p in summaries.iterdir()] == [sidecar.name]  # atomic: no leftovers
    record = json.loads(sidecar.read_text())
    assert record["sha256"] == sha256_of(archive) and "source" not in record

    monkeypatch.setattr(data, "_scan_pickle", refuse_to_unpickle)
    summary = read_dataset_summary(archive, summaries)
    assert isinstance(summary, DatasetSummary)
    assert summary == full.to_summary()  # every field, and the test labels to the bit
    assert not summary.test_labels_array.flags.writeable


def test_the_summary_names_where_the_file_is_now(tmp_path, archive, monkeypatch):
    summaries = tmp_path / "summaries"
    recorded = load_dataset(archive, summaries).to_summary()
    copy = tmp_path / "copy" / ARCHIVE_NAME
    copy.parent.mkdir()
    shutil.copy(archive, copy)
    shutil.copy(archive.with_name(ARCHIVE_NAME + ".md5"), copy.with_name(ARCHIVE_NAME + ".md5"))
    monkeypatch.setattr(data, "_scan_pickle", refuse_to_unpickle)
    # the sidecar recorded for the original's bytes serves the copy, under the copy's own path
    assert read_dataset_summary(copy, summaries) == dataclasses.replace(recorded, source=str(copy))


def test_a_changed_archive_is_not_matched_and_is_loaded_in_full(tmp_path, archive):
    summaries = tmp_path / "summaries"
    load_dataset(archive, summaries)
    old_sha = sha256_of(archive)
    raw = bytearray(archive.read_bytes())
    raw[9] ^= 0xFF  # the gzip header's OS byte: the archive still loads, its bytes (and MD5) differ by one
    archive.write_bytes(bytes(raw))
    archive.with_name(ARCHIVE_NAME + ".md5").write_text(hashlib.md5(raw).hexdigest() + "\n")
    assert read_dataset_summary(archive, summaries) is None

    calls = []
    real = data._scan_pickle
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "_scan_pickle", lambda *a, **k: calls.append(a[-1]) or real(*a, **k))
        full = load_dataset(archive, summaries)
    assert sorted(calls) == ["meta", "split", "split"]  # unpickled in full
    assert full.archive_md5 == hashlib.md5(raw).hexdigest()
    assert {p.stem for p in summaries.iterdir()} == {old_sha, sha256_of(archive)}
    assert read_dataset_summary(archive, summaries) == full.to_summary()


def test_the_archive_md5_is_still_checked_on_every_read(tmp_path, archive):
    """load_cifar100 checks the MD5 on every load; with the sidecar it still is, and a mismatch is the full
    load's error."""
    summaries = tmp_path / "summaries"
    load_dataset(archive, summaries)
    archive.with_name(ARCHIVE_NAME + ".md5").write_text("0" * 32 + "\n")
    assert read_dataset_summary(archive, summaries) is None
    with pytest.raises(DataError, match="MD5 mismatch"):
        load_dataset(archive, summaries)


def _tamper_fingerprint_type(r):
    r["fingerprint"] = 12345


def _tamper_label_out_of_range(r):
    r["test_labels"][0] = r["num_classes"]


def _tamper_negative_label(r):
    r["test_labels"][0] = -1


def _tamper_bool_label(r):
    r["test_labels"][0] = True


def _tamper_float_label(r):
    r["test_labels"][0] = 1.0


def _tamper_sha(r):
    r["sha256"] = "0" * 64


def _tamper_schema(r):
    r["schema"] = 99


def _tamper_md5(r):
    r["archive_md5"] = "0" * 32


def _tamper_count(r):
    r["test"]["count"] += 1


def _tamper_test_description(r):
    r["test"]["classes_present"] = 1  # not what the labels say


def _tamper_train_range(r):
    r["train"]["label_range"] = [0, r["num_classes"]]


def _tamper_shape(r):
    r["train"]["images_shape"] = [40, 3, 32]


def _tamper_dtype(r):
    r["train"]["images_dtype"] = "object"


def _tamper_extra_key(r):
    r["code"] = "__import__('os')"


def _tamper_missing_key(r):
    del r["num_classes"]


TAMPERINGS = [_tamper_fingerprint_type, _tamper_label_out_of_range, _tamper_negative_label, _tamper_bool_label,
              _tamper_float_label, _tamper_sha, _tamper_schema, _tamper_md5, _tamper_count, _tamper_test_description,
              _tamper_train_range, _tamper_shape, _tamper_dtype, _tamper_extra_key, _tamper_missing_key]


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=lambda f: f.__name__.removeprefix("_tamper_"))
def test_a_tampered_sidecar_is_ignored_and_rewritten(tmp_path, archive, tamper):
    summaries = tmp_path / "summaries"
    truth = load_dataset(archive, summaries).to_summary()
    sidecar = summary_sidecar_path(summaries, sha256_of(archive))
    good = sidecar.read_bytes()
    record = json.loads(good)
    tamper(record)
    sidecar.write_text(json.dumps(record))
    assert read_dataset_summary(archive, summaries) is None
    load_dataset(archive, summaries)  # what the workbench does then: load in full, which rewrites it
    assert sidecar.read_bytes() == good and read_dataset_summary(archive, summaries) == truth


@pytest.mark.parametrize("content", [b"", b"not json", b"\xff\xfe", b"[" * 100_000, b"[1, 2]", b'"text"'])
def test_a_sidecar_that_is_not_a_summary_is_ignored(tmp_path, archive, content):
    summaries = tmp_path / "summaries"
    load_dataset(archive, summaries)
    summary_sidecar_path(summaries, sha256_of(archive)).write_bytes(content)
    assert read_dataset_summary(archive, summaries) is None


def test_an_oversized_sidecar_is_not_read(tmp_path, archive, monkeypatch):
    summaries = tmp_path / "summaries"
    load_dataset(archive, summaries)
    sidecar = summary_sidecar_path(summaries, sha256_of(archive))
    monkeypatch.setattr(data, "_MAX_SUMMARY_BYTES", sidecar.stat().st_size - 1)
    assert read_dataset_summary(archive, summaries) is None


def test_a_file_replaced_during_the_load_records_nothing(tmp_path, archive, monkeypatch):
    summaries = tmp_path / "summaries"
    other = write_synthetic_cifar100(tmp_path / "other", **{**SMALL, "seed": 4})
    real = data._load_dataset

    def load_then_replace(path):
        dataset = real(path)
        shutil.copy(other, archive)  # the bytes now differ from the ones hashed before the load
        return dataset

    monkeypatch.setattr(data, "_load_dataset", load_then_replace)
    load_dataset(archive, summaries)
    assert not summaries.exists() or not list(summaries.iterdir())


def test_an_npz_dataset_gets_a_sidecar_and_a_folder_does_not(tmp_path, archive):
    summaries = tmp_path / "summaries"
    npz = write_digits_npz(tmp_path / "digits.npz")
    full = load_dataset(npz, summaries)
    summary = read_dataset_summary(npz, summaries)
    assert summary == full.to_summary() and summary.archive_md5 is None and summary.image_shape == (1, 8, 8)

    folder = tmp_path / "extracted"
    shutil.unpack_archive(archive, folder)
    before = set(summaries.iterdir())
    load_dataset(folder / "cifar-100-python", summaries)
    assert set(summaries.iterdir()) == before  # several files, no single bytes to key a sidecar by
    assert read_dataset_summary(folder / "cifar-100-python", summaries) is None


# ---------------------------------------------------------------------------------------------
# the workbench
# ---------------------------------------------------------------------------------------------

KD = PopulationSpec("resnet18", "kd", 0.5)


def test_member_keys_and_model_configs_from_the_sidecar_are_those_of_a_full_load(tmp_path, monkeypatch):
    profile = tiny_profile()
    cold = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    keys = {(arch, seed): cold.member_key(PopulationSpec(arch, "kd", 0.5), seed)
            for arch in ("resnet18", "vgg16_bn", "vit") for seed in (0, 1, 2)}
    configs = {arch: cold.model_config(arch) for arch in ("resnet18", "vgg16_bn", "vit")}
    assert "dataset" in cold.__dict__  # no sidecar yet: loaded in full, which recorded it
    assert list(cold.cache.datasets_dir.iterdir())

    monkeypatch.setattr(data, "_scan_pickle", refuse_to_unpickle)
    warm = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    assert {(arch, seed): warm.member_key(PopulationSpec(arch, "kd", 0.5), seed) for arch, seed in keys} == keys
    assert {arch: warm.model_config(arch) for arch in configs} == configs
    assert warm.dataset_summary == cold.dataset.to_summary()
    assert "dataset" not in warm.__dict__


def test_a_warm_workbench_evaluates_cached_claims_without_loading_the_dataset(tmp_path, monkeypatch):
    from kdclaims.evaluate import TrainedEvidence, evaluate_claim

    claims_file = tmp_path / "claims.yaml"
    claims_file.write_text(retained_ad_claims('{id: c1, sentence: "a", treatment: {setup: kd, alpha: 0.5}}',
                                              arch="resnet18"))
    (claim,) = load_claim_file(claims_file)
    profile = tiny_profile(epochs=1)
    cold = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    trained = evaluate_claim(claim, TrainedEvidence(cold)).to_dict()

    monkeypatch.setattr(data, "_scan_pickle", refuse_to_unpickle)
    warm = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    cached = evaluate_claim(claim, TrainedEvidence(warm)).to_dict()
    assert "dataset" not in warm.__dict__ and "data" not in warm.__dict__
    assert cached == trained  # the same verdict and numbers, to the bit
    assert warm.dataset_summary.as_dict() == cold.dataset.summary()  # what the evaluation records of the dataset


def test_a_forged_but_consistent_sidecar_stops_the_run_once_the_dataset_is_loaded(tmp_path):
    profile = tiny_profile()
    cold = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    cold.dataset_summary
    (sidecar,) = cold.cache.datasets_dir.iterdir()
    good = sidecar.read_bytes()
    record = json.loads(good)
    record["fingerprint"] = "f" * 64  # well-formed, and wrong: the keys computed from it would be another data's
    sidecar.write_text(json.dumps(record))
    forged = Workbench(profile, tmp_path / "cache", device="cpu", progress=False)
    assert forged.dataset_summary.fingerprint == "f" * 64
    with pytest.raises(DataError, match="does not match"):
        forged.dataset  # what training reads first
    assert sidecar.read_bytes() == good  # rewritten from the dataset itself
