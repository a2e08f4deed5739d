"""Bad input gets one clear line and a non-zero exit, never a traceback (``--debug`` shows the cause).

Each case runs the real command line (``python -m kdclaims.cli``) or pytest in a subprocess, as a user
would. The assertion is always the same: a non-zero exit code, stderr is one line starting with
``kdclaims: error:`` that names the bad thing (plus, at most, the hint to rerun with ``--debug``), and
no "Traceback" anywhere.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kdclaims.cli import main
from kdclaims.profiles import get_profile
from kdclaims.spec import PopulationSpec
from kdclaims.data import ARCHIVE_NAME, write_synthetic_cifar100
from kdclaims.errors import ConfigError

from helpers import GOOD_CLAIM

TRAIN = ["train", "--profile", "smoke", "--arch", "vgg16_bn", "--setup", "independent", "--device", "cpu"]


def kdclaims(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdclaims.cli", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(stderr: str, stdout: str, returncode: int, *names: str) -> str:
    assert returncode != 0, stdout
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    lines = stderr.strip().splitlines()
    assert lines and lines[0].startswith("kdclaims: error:"), stderr
    assert len(lines) == 1 or (len(lines) == 2 and "--debug" in lines[1]), stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def check(done: subprocess.CompletedProcess, *names: str) -> str:
    return assert_one_line_error(done.stderr, done.stdout, done.returncode, *names)


# ---------------------------------------------------------------------------------------------
# the command line: names, values, seeds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, names", [
    (["train", "--profile", "smoke", "--arch", "resnet50", "--setup", "independent"],
     ["unknown architecture 'resnet50'", "resnet18"]),
    (["train", "--profile", "smoke", "--arch", "vgg16_bn", "--setup", "distill"], ["unknown setup 'distill'", "kd"]),
    (["train", "--profile", "tiny", "--arch", "vgg16_bn", "--setup", "independent"],
     ["unknown profile 'tiny'", "smoke"]),
    (["train", "--profile", "smoke", "--arch", "vgg16_bn", "--setup", "kd", "--alpha", "1.5"],
     ["alpha 1.5", "outside [0, 1]"]),
    (["train", "--profile", "smoke", "--arch", "vgg16_bn", "--setup", "kd", "--alpha", "-0.1"],
     ["alpha -0.1", "outside [0, 1]"]),
    (["train", "--profile", "smoke", "--arch", "vgg16_bn", "--setup", "kd"], ["needs an alpha"]),
    (TRAIN + ["--seeds", "0-3"], ["invalid --seeds '0-3'", "seed 0 is the teacher"]),
    (TRAIN + ["--seeds", "abc"], ["invalid --seeds 'abc'", "1-385"]),
    (TRAIN + ["--seeds", "5-2"], ["invalid --seeds '5-2'"]),
    (TRAIN + ["--seeds", ","], ["invalid --seeds ','"]),  # an empty population
    (TRAIN + ["--temperature", "0"], ["temperature 0"]),
    (TRAIN + ["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else TRAIN + ["--device", "tpu"],
     ["cuda:7" if not __import__("torch").cuda.is_available() else "tpu"]),
], ids=["arch", "setup", "profile", "alpha-high", "alpha-negative", "alpha-missing", "seeds-0", "seeds-abc",
        "seeds-reversed", "seeds-empty", "temperature", "device"])
def test_bad_command_line_values(args, names):
    check(kdclaims(*args), *names)


def test_debug_shows_the_traceback():
    done = kdclaims("--debug", "train", "--profile", "smoke", "--arch", "resnet50", "--setup", "independent")
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("kdclaims: error: unknown architecture")


def test_an_empty_population_is_refused():
    from kdclaims.population import Workbench

    bench = Workbench(get_profile("smoke").with_seeds(()), device="cpu", progress=False)
    with pytest.raises(ConfigError, match="the population is empty"):
        bench.population(PopulationSpec("vgg16_bn", "independent"))


# ---------------------------------------------------------------------------------------------
# claim files (through `kdclaims claims validate` and through pytest)
# ---------------------------------------------------------------------------------------------


BAD_CLAIMS = {
    "missing-field": (GOOD_CLAIM.replace("    direction: less\n", ""), "missing field 'direction'"),
    "misspelt-field": (GOOD_CLAIM.replace("    metric: activation_distance", "    metrc: activation_distance"),
                       "did you mean 'metric'"),
    "duplicate-id": (GOOD_CLAIM + GOOD_CLAIM.split("claims:\n", 1)[1], "used twice"),
    "unknown-metric": (GOOD_CLAIM.replace("metric: activation_distance", "metric: activation_distanse"),
                       "unknown metric 'activation_distanse'"),
    "unknown-arch": (GOOD_CLAIM.replace("arch: resnet18", "arch: resnet50"), "unknown architecture"),
    "alpha": (GOOD_CLAIM.replace("alpha: 0.1", "alpha: 1.5"), "outside [0, 1]"),
    "not-yaml": ("claims: [unclosed\n", "x.yaml"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLAIMS))
def test_bad_claim_file_via_the_cli(tmp_path, case):
    text, message = BAD_CLAIMS[case]
    path = tmp_path / "claims" / "x.yaml"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(text))
    check(kdclaims("claims", "validate", str(path)), message, "x.yaml")


def test_bad_claim_files_via_pytest(pytester):
    """The same bad files collected by pytest (one run for all of them, to keep the suite quick): each is
    a collection error naming the file and the problem, never a traceback."""
    cases = ["missing-field", "misspelt-field", "duplicate-id", "unknown-metric"]
    pytester.mkdir("claims")
    for case in cases:
        (pytester.path / "claims" / f"{case}.yaml").write_text(textwrap.dedent(BAD_CLAIMS[case][0]))
    result = pytester.runpytest_subprocess("claims", "--profile", "smoke", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0 and "Traceback" not in output
    for case in cases:
        assert f"{case}.yaml" in output and BAD_CLAIMS[case][1] in output, case


@pytest.mark.parametrize("args, message", [(["--profile", "tiny"], "unknown profile 'tiny'"),
                                           (["--seeds", "0-3"], "invalid --seeds '0-3'")])
def test_bad_pytest_options(pytester, args, message):
    pytester.mkdir("claims")
    (pytester.path / "claims" / "x.yaml").write_text(textwrap.dedent(GOOD_CLAIM))
    result = pytester.runpytest_subprocess("claims", *args, "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0 and "Traceback" not in output and message in output


# ---------------------------------------------------------------------------------------------
# datasets: `kdclaims data verify PATH`
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory) -> Path:
    return write_synthetic_cifar100(tmp_path_factory.mktemp("data"), num_classes=3, train_per_class=4,
                                    test_per_class=2, seed=1)


def repack(archive: Path, dest: Path, **splits) -> Path:
    """A copy of ``archive`` with some splits replaced (pickled dicts), and a matching MD5 sidecar."""
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    for name, obj in splits.items():
        members[f"cifar-100-python/{name}"] = pickle.dumps(obj, protocol=2)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / ARCHIVE_NAME
    with tarfile.open(target, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    (dest / (ARCHIVE_NAME + ".md5")).write_text(hashlib.md5(target.read_bytes()).hexdigest() + "\n")
    return target


def split(n=4, data=None, labels=None) -> dict:
    return {b"filenames": [b"x.png"] * n, b"batch_label": b"training batch 1 of 1",
            b"fine_labels": labels if labels is not None else [i % 3 for i in range(n)],
            b"coarse_labels": [0] * n,
            b"data": data if data is not None else np.zeros((n, 3072), dtype=np.uint8)}


def test_dataset_with_the_wrong_shapes(small_archive, tmp_path):
    bad = repack(small_archive, tmp_path / "shape", train=split(data=np.zeros((4, 1024), dtype=np.uint8)))
    check(kdclaims("data", "verify", str(bad)), "field 'data' has shape (4, 1024)", "expected (N>0, 3072)")


def test_dataset_with_labels_out_of_range(small_archive, tmp_path):
    bad = repack(small_archive, tmp_path / "labels", train=split(labels=[0, 1, 150, 2]))
    check(kdclaims("data", "verify", str(bad)), "field 'fine_labels' has labels in [0, 150] outside [0, 100)")


def test_dataset_with_the_wrong_md5(small_archive, tmp_path):
    check(kdclaims("data", "verify", str(small_archive), "--md5", "0" * 32), "MD5 mismatch", "0" * 32)
    tampered = tmp_path / "t" / ARCHIVE_NAME
    tampered.parent.mkdir()
    data = bytearray(small_archive.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    (tampered.parent / (ARCHIVE_NAME + ".md5")).write_text(hashlib.md5(small_archive.read_bytes()).hexdigest())
    check(kdclaims("data", "verify", str(tampered)), "MD5 mismatch", str(tampered))


def test_dataset_that_is_missing(tmp_path):
    check(kdclaims("data", "verify", str(tmp_path / "nowhere")), "not found", "kdclaims data fetch")


# ---------------------------------------------------------------------------------------------
# caches that cannot be written
# ---------------------------------------------------------------------------------------------


def test_cache_dir_below_a_regular_file(tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a directory")
    check(kdclaims(*TRAIN, "--seeds", "2", "--cache-dir", str(blocker / "sub")), str(blocker),
          "is a file, not a directory", "--cache-dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 directory regardless")
def test_read_only_cache_dir_by_permissions(tmp_path):
    cache = tmp_path / "ro"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        check(kdclaims(*TRAIN, "--seeds", "2", "--cache-dir", str(cache)), "not writable")
    finally:
        cache.chmod(0o755)


def _prepare_data(cache_dir: Path) -> None:
    from kdclaims.population import Workbench

    Workbench(get_profile("smoke").with_seeds((1,)), cache_dir, device="cpu", progress=False).check_data()


def test_read_only_cache_dir_stops_before_training(tmp_path, monkeypatch):
    """As root, chmod does not stop a write; the probe write is what detects it (EACCES simulated here)."""
    import kdclaims.cache as cachemod

    cache_dir = tmp_path / "cache"
    _prepare_data(cache_dir)
    trained = []
    # the workbench imports train_members from kdclaims.training when it trains (a warm run loads no torch)
    monkeypatch.setattr("kdclaims.training.train_members", lambda *a, **k: trained.append(1))

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cachemod.tempfile, "mkstemp", refuse)
    done = CliRunner().invoke(main, [*TRAIN, "--seeds", "1", "--cache-dir", str(cache_dir)])
    assert_one_line_error(done.stderr, done.stdout, done.exit_code, f"cache directory {cache_dir} is not writable")
    assert trained == []  # refused before any training


def test_full_disk(tmp_path, monkeypatch):
    import kdclaims.atomic as atomic

    cache_dir = tmp_path / "cache"
    _prepare_data(cache_dir)

    def no_space(path, write, *args, **kwargs):  # the disk fills up in the middle of writing an entry
        def partial(tmp):
            Path(tmp).write_bytes(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", tmp)
        return write_atomically(path, partial, *args, **kwargs)

    write_atomically = atomic.write_atomically
    monkeypatch.setattr(atomic, "write_atomically", no_space)
    done = CliRunner().invoke(main, [*TRAIN, "--seeds", "1", "--cache-dir", str(cache_dir)])
    line = assert_one_line_error(done.stderr, done.stdout, done.exit_code, "no space left writing")
    assert str(cache_dir) in line
    assert not list(cache_dir.rglob("*.tmp")) and not list(cache_dir.rglob("*.safetensors"))


def test_corrupt_cache_archive_import(tmp_path):
    junk = tmp_path / "pop.tar.gz"
    junk.write_bytes(b"definitely not a tar.gz")
    check(kdclaims("cache", "import", str(junk), "--cache-dir", str(tmp_path / "c")),
          str(junk), "not a readable gzip tar archive")
