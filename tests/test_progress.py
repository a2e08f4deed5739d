"""The run-wide progress view (kdclaims/progress.py): the model folded from workers' records, and the
per-population lines a non-terminal run (CI) prints, with and without -n."""

from __future__ import annotations

import io
import re

from helpers import retained_ad_claims, tiny_profile_conftest

from kdclaims.progress import ProgressChannel, ProgressWatcher, RunProgress


def test_the_model_counts_members_populations_in_flight_and_eta():
    model = RunProgress(started_at=100.0)
    model.apply({"event": "plan", "populations": ["vit/independent", "vit/kd-a0.5"], "teachers": ["vit"], "seeds": 3})
    model.apply({"event": "plan", "populations": ["vit/kd-a0.5"], "teachers": ["vit"], "seeds": 3})  # a second worker
    assert model.members_total == 2 * 3 + 1 and len(model.populations) == 2
    assert model.eta_seconds(110.0) is None  # nothing trained yet: no rate to extrapolate
    model.apply({"event": "started", "worker": "gw0", "member": "teacher of vit"})
    model.apply({"event": "epoch", "worker": "gw0", "member": "teacher of vit", "epoch": 2, "epochs": 15})
    model.apply({"event": "population", "worker": "gw1", "name": "vit/independent", "to_train": 2, "cached": 1})
    model.apply({"event": "started", "worker": "gw1", "member": "vit/independent seed 2"})
    line = model.line(110.0)
    assert "members 1/7 (1 cached)" in line and "populations 0/2" in line
    assert "gw0: teacher of vit epoch 2/15" in line and "gw1: vit/independent seed 2" in line
    model.apply({"event": "done", "worker": "gw0", "member": "teacher of vit"})
    model.apply({"event": "done", "worker": "gw1", "member": "vit/independent seed 2"})
    # 2 trained in 20 s of wall time; 7 - 1 cached - 2 trained = 4 left: 40 s
    assert model.eta_seconds(120.0) == 40.0
    assert "ETA 0:40" in model.line(120.0) and "elapsed 0:20" in model.line(120.0)
    assert model.in_flight == {}
    model.apply({"event": "done", "worker": "gw1", "member": "teacher of vit"})  # found cached after gw0's lock
    assert model.trained == 2
    model.apply({"event": "population_done", "name": "vit/independent", "trained": 1})
    model.apply({"event": "population_done", "name": "vit/independent", "trained": 1})  # reported twice: once
    assert model.populations_done == {"vit/independent"} and len(model.finished_lines) == 1
    assert model.finished_lines[0].startswith("kdclaims: population vit/independent ready (1 trained now); "
                                              "members 3/7")


def test_the_watcher_reads_whole_lines_from_every_workers_file(tmp_path):
    stream = io.StringIO()
    watcher = ProgressWatcher(tmp_path / "run", stream=stream, live=False)
    for worker in ("gw0", "gw1"):
        ProgressChannel(tmp_path / "run", worker)({"event": "plan", "populations": [f"p{worker}"], "teachers": [],
                                                   "seeds": 2})
    with (tmp_path / "run" / "gw1.jsonl").open("a") as half:
        half.write('{"event": "population_done", "name": "pgw1"')  # still being written: not read yet
    watcher.poll()
    assert watcher.model.populations == {"pgw0", "pgw1"} and not watcher.model.populations_done
    with (tmp_path / "run" / "gw1.jsonl").open("a") as rest:
        rest.write(', "trained": 2}\n')
    watcher.stop()
    assert watcher.model.populations_done == {"pgw1"}
    assert stream.getvalue().startswith("kdclaims: population pgw1 ready (2 trained now)")
    assert not (tmp_path / "run").exists()  # the run's records are removed at the end


CONFTEST = tiny_profile_conftest("tiny-progress", seeds=(1, 2), epochs=1)

CLAIMS = retained_ad_claims(
    '{id: r1, arch: resnet18, sentence: "a", treatment: {setup: kd, alpha: 0.1}}',
    '{id: r2, arch: resnet18, sentence: "b", treatment: {setup: kd, alpha: 0.5}}',
)


def test_a_run_off_a_terminal_prints_one_line_per_finished_population(pytester, tmp_path):
    pytester.makeconftest(CONFTEST)
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "r.yaml").write_text(CLAIMS)
    results = tmp_path / "results"
    result = pytester.runpytest_subprocess("claims", "-n", "2", "--profile", "tiny-progress", "--cache-dir",
                                           str(tmp_path / "cache"), "--results-dir", str(results),
                                           "-p", "no:cacheprovider", timeout=600)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    lines = [line for line in result.stderr.str().splitlines() if line.startswith("kdclaims: population ")]
    names = [re.match(r"kdclaims: population (\S+) ready", line).group(1) for line in lines]
    assert sorted(names) == ["resnet18/independent", "resnet18/kd-a0.1", "resnet18/kd-a0.5"], lines
    # teacher + 3 populations x 2 seeds, all trained now; the last line has every population done
    assert "members 7/7 (0 cached) · populations 3/3" in lines[-1], lines
    assert not (results / "progress").exists() or not any((results / "progress").iterdir())
