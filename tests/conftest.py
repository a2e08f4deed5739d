import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test touches the user's cache: every test gets its own cache and results dirs."""
    root = tmp_path_factory.mktemp("kdclaims-home")
    monkeypatch.setenv("KDCLAIMS_CACHE_DIR", str(root / "cache"))
    monkeypatch.delenv("KDCLAIMS_RESULTS_DIR", raising=False)
    monkeypatch.delenv("KDCLAIMS_DATA_DIR", raising=False)
    return root
