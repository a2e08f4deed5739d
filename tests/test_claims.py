"""Claim files: the shipped catalogue parses; malformed files fail with the file and claim named."""

import textwrap

import pytest

from kdclaims.claims import CLAIMS_DIR, load_claim_file, load_claims
from kdclaims.errors import ClaimError

from helpers import GOOD_CLAIM as GOOD


def write(tmp_path, text, name="x.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_claims_parse_with_unique_ids():
    claims = load_claims()
    ids = [c.id for c in claims]
    assert len(ids) == len(set(ids))
    groups = {c.group for c in claims}
    assert {"resnet18-kd-vs-independent", "vit-kd-vs-independent"} <= groups
    table4 = [c for c in claims if c.source == "Table 4"]
    assert len(table4) == 12 and all(c.paper.outcome == "retain" for c in table4)
    table5 = [c for c in claims if c.source == "Table 5"]
    assert len(table5) == 12 and all(c.paper.outcome == "reject" for c in table5)
    assert all(c.params["direction"] == "greater" for c in claims
               if c.kind == "comparison" and c.metric == "logits_cosine_similarity")


def test_a_good_file_parses(tmp_path):
    (claim,) = load_claim_file(write(tmp_path, GOOD))
    assert claim.id == "c1" and claim.group == "g" and claim.arch == "resnet18"
    treatment, baseline = claim.populations()
    assert treatment.name == "resnet18/kd-a0.1" and baseline.name == "resnet18/independent"


@pytest.mark.parametrize("change, message", [
    (("metric: activation_distance", "metric: activation_distanse"), "unknown metric"),
    (("    direction: less", "    direction: lesser"), "direction must be"),
    (("    metric: activation_distance", "    metrc: activation_distance"), "did you mean 'metric'"),
    (("    direction: less\n", ""), "missing field 'direction'"),
    (("alpha: 0.1", "alpha: 1.1"), "outside [0, 1]"),
    (("setup: kd", "setup: kdd"), "unknown setup"),
    (("arch: resnet18", "arch: resnet19"), "unknown architecture"),
    (("outcome: retain", "outcome: maybe"), "paper must be"),
    (("kind: comparison", "kind: comparisn"), "did you mean 'comparison'"),
])
def test_malformed_claims_name_the_file_and_the_claim(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ClaimError) as info:
        load_claim_file(path)
    text = str(info.value)
    assert str(path) in text and message in text
    if "c1" in GOOD.replace(*change) and "missing field 'id'" not in text:
        assert "'c1'" in text
    assert "\n" not in text  # one line


def test_duplicate_ids_are_refused(tmp_path):
    doubled = GOOD + GOOD.split("claims:\n", 1)[1]
    with pytest.raises(ClaimError, match="used twice"):
        load_claim_file(write(tmp_path, doubled))
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(ClaimError, match="used twice"):
        load_claims([tmp_path / "a.yaml", tmp_path / "b.yaml"])


def test_not_yaml_or_not_a_claim_file(tmp_path):
    with pytest.raises(ClaimError, match="not valid YAML"):
        load_claim_file(write(tmp_path, "claims: [unclosed"))
    with pytest.raises(ClaimError, match="top-level 'claims:' list"):
        load_claim_file(write(tmp_path, "group: x"))


def test_malformed_claim_fails_pytest_collection_with_file_and_claim(pytester):
    claims_dir = pytester.mkdir("claims")
    (claims_dir / "broken.yaml").write_text(GOOD.replace("metric: activation_distance", "metric: accuracy"))
    result = pytester.runpytest("claims", "--profile", "smoke", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*broken.yaml*claim 'c1'*unknown metric 'accuracy'*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_collect_only_markers_and_k_selection(pytester):
    claims_dir = pytester.mkdir("claims")
    for name in ("table4.yaml", "table5.yaml"):
        src = (CLAIMS_DIR / f"{'resnet18' if name == 'table4.yaml' else 'vit'}_{name}").read_text()
        (claims_dir / name).write_text(src)
    result = pytester.runpytest("claims", "--collect-only", "-q", "--profile", "smoke")
    assert "24 tests collected" in result.stdout.str()
    result = pytester.runpytest("claims", "--collect-only", "-q", "-m", "vit", "--profile", "smoke")
    assert "12/24 tests collected" in result.stdout.str()
    result = pytester.runpytest("claims", "--collect-only", "-q", "-k", "js and kd0.9", "--profile", "smoke")
    assert "2/24 tests collected" in result.stdout.str()
    result = pytester.runpytest("claims", "--collect-only", "-q", "-m", "group_vit_kd_vs_independent", "--profile", "smoke")
    assert "12/24 tests collected" in result.stdout.str()


def test_libyaml_and_the_pure_python_loader_read_the_catalogue_alike(monkeypatch):
    """libyaml parses claim files when installed (a warm run reads every file); the pure-Python loader is the
    fallback and gives the error messages. Both must read every shipped claim to the same claims and lines; without
    libyaml the fallback alone must read them all, and the fast path must not be attempted."""
    import yaml

    from kdclaims import claims as claims_module

    files = sorted(claims_module.CLAIMS_DIR.glob("*.yaml"))
    libyaml = claims_module._CSafeLoader

    def read_all():
        claims_module._PARSED_FILES.clear()
        return [repr(c) for path in files for c in claims_module.load_claim_file(path)]

    used = []
    original = claims_module._check_events
    monkeypatch.setattr(claims_module, "_check_events", lambda source: used.append(1) or original(source))
    monkeypatch.setattr(claims_module, "_CSafeLoader", None)
    pure_python = read_all()
    assert len(pure_python) == 96 and used == []  # the fallback alone, every claim
    monkeypatch.setattr(claims_module, "_CSafeLoader", libyaml)
    if libyaml is None:  # PyYAML built without libyaml: the harness must have noticed, and there is nothing to compare
        assert not getattr(yaml, "__with_libyaml__", False)
    else:
        assert read_all() == pure_python
        assert len(used) == len(files)  # the fast path ran for every file
        assert isinstance(yaml.CSafeLoader("a: 1").get_single_node(), yaml.MappingNode)
    monkeypatch.undo()
    claims_module._PARSED_FILES.clear()
