"""CI's guarantees: Dassl comes from the verified vendored wheel, and a run that did not exercise
the real Dassl fails (DEPT_REQUIRE_DASSL=1, as .ci/run sets it)."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

VENDOR = os.path.join(REPO, "..", "shared", "vendor")

TESTS = {
    "all_run": """
        import pytest
        pytestmark = pytest.mark.dassl
        def test_one(): pass
    """,
    "one_skips": """
        import pytest
        pytestmark = pytest.mark.dassl
        def test_one(): pass
        def test_two(): pytest.skip("some optional file is not there")
    """,
    "no_dassl_test": """
        def test_plain(): pass
    """,
}


RUNS = {  # name: (test module, DEPT_REQUIRE_DASSL set, dassl blocked)
    "required_ok": ("all_run", True, False),
    "required_skipped": ("one_skips", True, False),
    "required_none": ("no_dassl_test", True, False),
    "required_missing": ("all_run", True, True),
    "optional_skipped": ("one_skips", False, False),
    "optional_missing": ("all_run", False, True),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each of RUNS: pytest in a subprocess on one test module beside a copy of our conftest.py
    (all at once: each pays for importing torch)."""
    procs = {}
    for run, (module, require, block_dassl) in RUNS.items():
        folder = tmp_path_factory.mktemp(run)
        shutil.copy(os.path.join(REPO, "tests", "conftest.py"), folder)
        (folder / f"test_{module}.py").write_text(textwrap.dedent(TESTS[module]))
        env = {k: v for k, v in os.environ.items() if k != "DEPT_REQUIRE_DASSL"}
        if require:
            env["DEPT_REQUIRE_DASSL"] = "1"
        block = "sys.modules['dassl'] = None; " if block_dassl else ""  # as if it were not installed
        args = ["-q", "-p", "no:cacheprovider", str(folder)]
        code = f"import sys; {block}import pytest; sys.exit(pytest.main({args!r}))"
        procs[run] = subprocess.Popen([sys.executable, "-c", code], cwd=str(folder), env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return {run: (proc.wait(timeout=180), proc.stdout.read()) for run, proc in procs.items()}


def test_required_dassl_run_passes_only_when_every_dassl_test_ran(runs):
    rc, out = runs["required_ok"]
    assert rc == 0, out
    assert "Dassl integration tests: 1 ran (1 passed, 0 failed), 0 skipped" in out

    rc, out = runs["required_skipped"]
    assert rc == 1, out
    assert "Dassl integration tests: 1 ran (1 passed, 0 failed), 1 skipped" in out
    assert "test_one_skips.py::test_two: Skipped: some optional file is not there" in out

    rc, out = runs["required_none"]
    assert rc == 1 and "no Dassl integration test ran" in out, out

    rc, out = runs["required_missing"]
    assert rc == 1 and "dassl cannot be imported" in out, out


def test_without_the_requirement_skips_are_reported_and_pass(runs):
    rc, out = runs["optional_skipped"]
    assert rc == 0 and "1 skipped" in out and "DEPT_REQUIRE_DASSL" not in out, out
    rc, out = runs["optional_missing"]
    assert rc == 0 and "Dassl integration tests: 0 ran (0 passed, 0 failed), 1 skipped" in out, out


@pytest.mark.skipif(not os.path.isdir(VENDOR), reason="../shared/vendor is not next to the repository")
def test_ci_installs_the_vendored_wheel_only_when_its_checksum_matches(tmp_path):
    """.ci/run's Dassl step in a fresh venv (no Dassl): the vendored wheel goes in after its
    SHA256 is checked; a wheel that does not match SHA256SUMS is refused."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    tampered = tmp_path / "vendor"
    tampered.mkdir()
    wheel = next(f for f in sorted(os.listdir(VENDOR)) if f.startswith("dassl-") and f.endswith(".whl"))
    shutil.copy(os.path.join(VENDOR, wheel), tampered)
    (tampered / "SHA256SUMS").write_text(f"{'0' * 64}  {wheel}\n")

    def ci_install(vendor):
        env = dict(os.environ, PYTHON=python, DEPT_VENDOR_DIR=str(vendor))
        return subprocess.run(["bash", os.path.join(REPO, ".ci", "run"), "--install-dassl"], env=env,
                              capture_output=True, text=True, timeout=300)

    refused = ci_install(tampered)
    assert refused.returncode == 1 and "does not match its SHA256" in refused.stderr, refused.stdout + refused.stderr
    assert subprocess.run([python, "-c", "import dassl"], capture_output=True).returncode != 0

    installed = ci_install(os.path.abspath(VENDOR))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"installing the vendored wheel {os.path.abspath(VENDOR)}/{wheel}" in installed.stdout
    check = subprocess.run([python, "-c", "import dassl; print(dassl.__version__)"], capture_output=True, text=True)
    assert check.stdout.strip() == wheel.split("-")[1]
    again = ci_install(os.path.abspath(VENDOR))  # installed: nothing to do
    assert again.returncode == 0 and again.stdout == ""
