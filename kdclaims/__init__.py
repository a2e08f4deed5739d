"""kdclaims: the claims of "Knowledge Distillation: The Functional Perspective" as hypothesis tests."""

__version__ = "0.1.0"
