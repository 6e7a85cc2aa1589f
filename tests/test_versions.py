"""Installed versions against pyproject.toml's ranges and the committed lock, so the three cannot drift apart."""

from __future__ import annotations

import os

import pytest
from packaging.requirements import Requirement

from hfkit.versions import LOCK_FILE, canonical, installed_version, read_lock, unbounded_requirements

from conftest import REPO

tomllib = pytest.importorskip("tomllib")


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["test"] + extras["plots"]]


def test_fast_moving_libraries_have_tested_upper_bounds():
    bounded = {canonical(r.name) for r in declared() if any(s.operator in ("<", "<=", "==") for s in r.specifier)}
    assert {"torch", "transformers", "tokenizers", "datasets", "accelerate", "evaluate", "peft"} <= bounded


def test_lock_pins_lie_inside_the_declared_ranges():
    lock = read_lock(REPO / "requirements" / "lock.txt")
    assert len(lock) > 40  # every dependency of a dependency, not just ours
    for req in declared():
        name = canonical(req.name)
        if name == "torch":
            assert name not in lock  # installed per platform, before the lock
            continue
        assert name in lock, f"{name} is declared but missing from the lock: run `make lock`"
        assert req.specifier.contains(lock[name]), f"lock has {name}=={lock[name]}, outside {req.specifier}"


def test_installed_versions_lie_inside_the_declared_ranges():
    for req in declared():
        version = installed_version(req.name)
        assert version is not None, f"{req.name} is not installed"
        assert req.specifier.contains(version.split("+")[0]), f"{req.name} {version} is outside {req.specifier}"


@pytest.mark.skipif(os.environ.get("HFKIT_UNLOCKED") == "1", reason="make test-latest installs the newest releases")
def test_installed_versions_are_the_locked_ones():
    lock = read_lock(LOCK_FILE)
    installed = {name: installed_version(name) for name in lock}
    differ = {name: (installed[name], pinned) for name, pinned in lock.items() if installed[name] != pinned}
    assert not differ, f"installed (found, locked): {differ}; run `make setup` to reinstall from the lock"


def test_unbounded_requirements_drop_only_the_upper_bounds():
    text = {canonical(Requirement(r).name): str(Requirement(r).specifier) for r in unbounded_requirements()}
    assert text["transformers"] == ">=5.23" and text["peft"] == ">=0.21" and text["torch"] == ">=2.13"


def test_env_command_reports_versions_and_the_lock():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hfkit", "env"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name in ("transformers", "datasets", "accelerate", "peft", "tokenizers", "evaluate", "torch"):
        assert any(line.split()[:2] == [name, installed_version(name)] for line in out.splitlines()), (name, out)
    assert out.startswith("hfkit: ") and "python: " in out and "torch device: " in out
    if os.environ.get("HFKIT_UNLOCKED") != "1":
        assert "all locked versions" in out
