"""The set-up script: idempotent and fast when nothing changed; the lock file pins everything."""

import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[\[=<>~!]", line, maxsplit=1)[0].strip().lower().replace("_", "-"))
    return names


def test_second_setup_run_is_a_quick_no_op():
    t0 = time.perf_counter()
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr
    assert "environment up to date" in result.stderr
    assert elapsed < 10, f"an up-to-date set-up took {elapsed:.1f} s"


def test_lock_pins_every_requirement_and_the_cpu_torch():
    lock = (ROOT / "requirements/lock.txt").read_text()
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in lock.splitlines() if "==" in line}
    for stage in sorted((ROOT / "requirements").glob("[0-9]-*.txt")):
        missing = _names(stage) - pinned
        assert not missing, f"{stage.name}: not pinned in lock.txt: {sorted(missing)}"
    assert re.search(r"^torch==2\.13\.0\+cpu$", lock, re.M)


def test_pyproject_dependencies_are_installed_by_setup():
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    declared = {d.strip().strip('",').lower().replace("_", "-") for d in block.splitlines() if d.strip().strip('",')}
    staged = set().union(*(_names(p) for p in (ROOT / "requirements").glob("[0-9]-*.txt")))
    assert declared <= staged, f"declared in pyproject but not installed by setup: {declared - staged}"
