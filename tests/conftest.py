"""Shared pytest options, and the hypothesis profile every property test runs under."""
import os

from hypothesis import settings

# Property tests draw the same examples on every run (derandomized, seeded from the test itself):
# a failure found once is found again, and a mutant is killed or not, never by luck.
# HYPOTHESIS_PROFILE=explore draws fresh examples, for looking for new failures by hand.
settings.register_profile("derandomized", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))


def pytest_addoption(parser):
    # Regenerate golden files (tests/golden/*.json) instead of comparing; the only way to write them.
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files in tests/golden from the current outputs")


# --- the micro model, exported once per session, and compile_model reports on it ----------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def micro_naive(tmp_path_factory):
    """Path of a naive export of the embedded digits model (``naive.ref.npz`` beside it), made once.

    Always these weights: trained and random weights fold into different graphs.
    """
    from vmamba_ref.export import main as export_main  # late: importing torch costs seconds

    path = tmp_path_factory.mktemp("micro") / "naive.onnx"
    assert export_main(["--model", "micro-digits", "--no-check", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def micro_dynamic_naive(tmp_path_factory):
    """The same model exported with a symbolic batch axis (``--dynamic-batch``), as users export for throughput."""
    from vmamba_ref.export import main as export_main

    path = tmp_path_factory.mktemp("micro-dynamic") / "naive.onnx"
    assert export_main(["--model", "micro-digits", "--dynamic-batch", "--no-check", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def micro_report(micro_naive, tmp_path_factory):
    """``micro_report("seed")`` -> the --report directory of that pipeline on the micro model (cached)."""
    return _cached_reports(micro_naive, tmp_path_factory, "report")


@pytest.fixture(scope="session")
def vmamba_t_report(tmp_path_factory):
    """``vmamba_t_report("tpu")`` -> the --report directory of that pipeline on VMamba-T (cached).

    Needs VMAMBA_T_NAIVE=/path/to/naive.onnx (a naive VMamba-T export, its .ref.npz beside
    it); skips otherwise. A minute or more per pipeline: use from @pytest.mark.slow tests.
    """
    import os
    from pathlib import Path

    naive = os.environ.get("VMAMBA_T_NAIVE")
    if not naive or not Path(naive).is_file():
        pytest.skip("set VMAMBA_T_NAIVE to a naive VMamba-T export (with its .ref.npz beside it)")
    return _cached_reports(naive, tmp_path_factory, "vmamba-t")


def _cached_reports(naive, tmp_path_factory, prefix: str):
    """pipeline -> the --report directory of compiling `naive` with it, each compiled once (in "<prefix>-<pipeline>")."""
    from pipelines import compile_model

    reports = {}

    def report_dir(pipeline: str):
        if pipeline not in reports:
            directory = tmp_path_factory.mktemp(f"{prefix}-{pipeline}")
            compile_model(naive, pipeline, output=directory / f"{pipeline}.onnx", report=directory / "report")
            reports[pipeline] = directory / "report"
        return reports[pipeline]

    return report_dir
