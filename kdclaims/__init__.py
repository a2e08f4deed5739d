"""kdclaims: the claims of "Knowledge Distillation: The Functional Perspective" as hypothesis tests."""

__version__ = "0.1.0"


def load(path=None):
    """Load an evaluation as pandas DataFrames: ``claims, members = kdclaims.load()`` (default: the latest)."""
    from kdclaims.render.document import load as _load

    return _load(path)
