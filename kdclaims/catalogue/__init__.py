"""The shipped claim catalogue: one YAML file per table or section of the paper (package data).

A package so that an installed kdclaims runs it by name, from any directory::

    pytest --pyargs kdclaims.catalogue --evidence paper

In a checkout, ``claims/`` is a link to this directory (``pytest claims/``).
"""
