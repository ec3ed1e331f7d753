"""Shared fixtures: a tiny CLIP (the clip package's own classes, fixed seed) and Dassl configs."""
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "tests", "data")


# Set by .ci/run: CI must exercise the real Dassl. Then a Dassl integration test that is skipped
# (for any reason), none running, or Dassl not importable fails the run instead of passing quietly.
REQUIRE_DASSL = os.environ.get("DEPT_REQUIRE_DASSL", "").strip() not in ("", "0")
# The same for the tests of --backend slurm against a real SLURM (.ci/run starts a one-node cluster
# with .ci/slurm/setup.sh): with DEPT_REQUIRE_SLURM=1, a skipped SLURM test, or none running, fails.
# Only for the suite beside its SLURM tests: copies of this file elsewhere (test_compat_ci.py runs
# pytest on such copies, in CI's environment) have none to require.
REQUIRE_SLURM = (os.environ.get("DEPT_REQUIRE_SLURM", "").strip() not in ("", "0")
                 and os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_slurm_backend.py")))
SLURM_TOOLS = ("sinfo", "sbatch", "srun", "squeue", "scancel")
_session = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "dassl: runs the real Dassl.pytorch (skipped when it is not installed)")
    config.addinivalue_line("markers", "slurm: submits jobs to a real SLURM (skipped without sinfo/sbatch or submitit)")


def pytest_sessionstart(session):
    _session["session"] = session


def _dassl_import_error():
    try:
        import dassl  # noqa: F401
    except ImportError as err:
        return err
    return None


def _slurm_missing():
    """Why the SLURM tests cannot run here (SLURM's commands or submitit missing), or None."""
    import shutil

    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"SLURM's {', '.join(missing)} not on PATH (bash .ci/slurm/setup.sh starts a one-node cluster)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install submitit)"
    return None


def _is_dassl_report(report):
    """A test marked ``dassl``, or a module skipped at collection by ``pytest.importorskip("dassl")``."""
    if "dassl" in getattr(report, "keywords", {}):
        return True
    return report.when == "collect" and report.skipped and "'dassl'" in str(report.longrepr)


def pytest_terminal_summary(terminalreporter):
    """Say plainly how many tests ran the real Dassl (CI reads this line); with
    DEPT_REQUIRE_DASSL=1, fail the run when they did not all run. The same for SLURM."""
    _slurm_summary(terminalreporter)
    reports = {outcome: [r for r in terminalreporter.stats.get(outcome, []) if _is_dassl_report(r)]
               for outcome in ("passed", "failed", "error", "skipped")}
    counts = {outcome: len(found) for outcome, found in reports.items()}
    ran = counts["passed"] + counts["failed"] + counts["error"]
    terminalreporter.write_line(
        f"Dassl integration tests: {ran} ran ({counts['passed']} passed, {counts['failed'] + counts['error']} "
        f"failed), {counts['skipped']} skipped"
    )
    if not REQUIRE_DASSL:
        return
    problems = []
    missing = _dassl_import_error()
    if missing is not None:
        problems.append(f"dassl cannot be imported ({missing}); install it (README: Install, or bash .ci/run)")
    for report in reports["skipped"]:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        problems.append(f"skipped: {report.nodeid}: {reason}")
    if ran == 0:
        problems.append("no Dassl integration test ran")
    if problems:
        terminalreporter.write_line(f"DEPT_REQUIRE_DASSL=1: FAILED, {len(problems)} problem(s):", red=True, bold=True)
        for line in problems:
            terminalreporter.write_line(f"  {line}", red=True)
        session = _session.get("session")
        if session is not None:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _slurm_summary(terminalreporter):
    """The SLURM tests' line; with DEPT_REQUIRE_SLURM=1, fail the run when they did not all run."""
    reports = {outcome: [r for r in terminalreporter.stats.get(outcome, []) if "slurm" in getattr(r, "keywords", {})]
               for outcome in ("passed", "failed", "error", "skipped")}
    counts = {outcome: len(found) for outcome, found in reports.items()}
    ran = counts["passed"] + counts["failed"] + counts["error"]
    terminalreporter.write_line(
        f"SLURM tests: {ran} ran ({counts['passed']} passed, {counts['failed'] + counts['error']} failed), "
        f"{counts['skipped']} skipped"
    )
    if not REQUIRE_SLURM:
        return
    problems = [] if _slurm_missing() is None else [_slurm_missing()]
    for report in reports["skipped"]:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        problems.append(f"skipped: {report.nodeid}: {reason}")
    if ran == 0:
        problems.append("no SLURM test ran")
    if problems:
        terminalreporter.write_line(f"DEPT_REQUIRE_SLURM=1: FAILED, {len(problems)} problem(s):", red=True, bold=True)
        for line in problems:
            terminalreporter.write_line(f"  {line}", red=True)
        session = _session.get("session")
        if session is not None:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config, items):
    if _dassl_import_error() is not None:
        skip = pytest.mark.skip(reason="dassl is not installed (see README: Install)")
        for item in items:
            if "dassl" in item.keywords:
                item.add_marker(skip)
    missing = _slurm_missing()
    if missing is not None:
        skip = pytest.mark.skip(reason=missing)
        for item in items:
            if "slurm" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def slurm_jobs():
    """Job ids a module's SLURM tests submitted: whatever is left of them is cancelled at its end."""
    import subprocess

    ids = []
    yield ids
    if ids:
        subprocess.run(["scancel", *sorted(set(ids))], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    return save_tiny_clip(str(tmp_path_factory.mktemp("clip") / "tiny_clip.pt"))


@pytest.fixture
def tiny_clip():
    from dept.core.testing import tiny_clip

    return tiny_clip()


def coop_cfg(**overrides):
    """A Dassl config with our keys, as train.py builds it, for a tiny fp32 CoOp."""
    from dassl.config import get_cfg_default

    from dept.core.config import add_dept_config

    cfg = add_dept_config(get_cfg_default())
    cfg.INPUT.SIZE = (32, 32)
    cfg.TRAINER.COOP.N_CTX = 4
    cfg.TRAINER.COOP.PREC = "fp32"
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


@pytest.fixture
def seeded():
    torch.manual_seed(0)


def make_dtd(root, classes=("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered"),
             per_split=(4, 2, 3), size=32, seed=0):
    """A tiny DTD in CoOp's layout: dtd/images/<class>/*.png and split_zhou_DescribableTextures.json.

    Each class gets its own colour tint, so there is something to learn.
    """
    import json
    import random

    from PIL import Image

    rng = random.Random(seed)
    dtd = os.path.join(root, "dtd")
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(dtd, "images", name), exist_ok=True)
        tint = [rng.randrange(256) for _ in range(3)]
        i = 0
        for key, count in zip(("train", "val", "test"), per_split):
            for _ in range(count):
                rel = f"{name}/{name}_{i:04d}.png"
                pixels = bytes(min(255, max(0, c + rng.randrange(-40, 40))) for _ in range(size * size) for c in tint)
                Image.frombytes("RGB", (size, size), pixels).save(os.path.join(dtd, "images", rel))
                split[key].append([rel, label, name])
                i += 1
    with open(os.path.join(dtd, "split_zhou_DescribableTextures.json"), "w") as f:
        json.dump(split, f)
    return root


@pytest.fixture
def restore_stdout():
    """Dassl's setup_logger replaces sys.stdout for the process; put it back after a run."""
    import sys

    saved = sys.stdout
    yield
    sys.stdout = saved
