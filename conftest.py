"""Root conftest: makes the population fixtures of ``fixtures/`` available to every test and claim file.

The claim items themselves come from the kdclaims pytest plugin (registered by the package's
``pytest11`` entry point); options such as ``--profile smoke`` are documented in ``pytest --help``.
"""

pytest_plugins = ["fixtures.populations"]
