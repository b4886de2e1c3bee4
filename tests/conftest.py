"""Shared pytest options."""


def pytest_addoption(parser):
    # Regenerate golden files (tests/golden/*.json) instead of comparing; same as UPDATE_GOLDEN=1.
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files in tests/golden from the current outputs")
