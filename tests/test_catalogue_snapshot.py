"""The shipped catalogue expands to the same 96 claims, with the same results on the paper's numbers,
as recorded in tests/data/catalogue_snapshot.json (see tests/catalogue_snapshot.py to regenerate)."""

import json
import math

from catalogue_snapshot import SNAPSHOT, catalogue_snapshot


def _differences(expected, actual, where="") -> list[str]:
    """Paths at which two JSON values differ; floats agree to 1e-12 relative."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}.{k}: only in one" for k in set(expected) ^ set(actual)]
        for k in expected.keys() & actual.keys():
            out += _differences(expected[k], actual[k], f"{where}.{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} items, now {len(actual)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in _differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return [] if math.isclose(expected, actual, rel_tol=1e-12, abs_tol=1e-15) else [f"{where}: {expected} -> {actual}"]
    return [] if expected == actual and type(expected) is type(actual) else [f"{where}: {expected!r} -> {actual!r}"]


def test_catalogue_matches_snapshot():
    expected = json.loads(SNAPSHOT.read_text())
    actual = catalogue_snapshot()
    assert len(actual) == 96
    assert list(actual) == list(expected)  # the same ids, in the same order
    assert {k: v["verdict"] for k, v in actual.items()} == {k: v["verdict"] for k, v in expected.items()}
    differences = _differences(expected, actual)
    assert not differences, "\n".join(sorted(differences)[:20])
