"""Packaging: pyproject.toml declares compatible ranges, requirements-lock.txt the exact pins, environment.yml the same
pins for conda; the three must agree."""
from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines) -> dict[str, Version]:
    """{canonical name: version} of `name==version` lines; options (-e, --index-url) and comments are skipped."""
    pins = {}
    for line in lines:
        line = line.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one specifier, and it is an exact pin
        assert spec.operator == "==", f"{line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{req.name} is listed twice"
        pins[name] = Version(spec.version)
    return pins


def lock_pins() -> dict[str, Version]:
    return _pins((ROOT / "requirements-lock.txt").read_text().splitlines())


def conda_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_lock_file():
    env = conda_env()
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert _pins(pip) == lock_pins()
    assert any(line.split(" #")[0].strip() == "-e ." for line in pip), "environment.yml should install the library"


def test_pyproject_ranges_admit_the_locked_versions():
    project = pyproject()["project"]
    locked = lock_pins()
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    for line in requirements:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is a dependency but not in requirements-lock.txt"
        assert req.specifier.contains(locked[name], prereleases=True), \
            f"{line!r} does not admit the locked {req.name}=={locked[name]}"


def test_pyproject_declares_ranges_not_pins():
    """A library must install beside a user's own torch (or transformers...): no exact pins, and a major-version cap."""
    project = pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    for line in requirements:
        specs = Requirement(line).specifier
        assert not any(s.operator in ("==", "===") for s in specs), f"{line!r} pins an exact version"
        assert any(s.operator in (">=", ">", "~=") for s in specs), f"{line!r} has no lower bound"
    core = [Requirement(line) for line in project["dependencies"]]
    for req in core:
        assert any(s.operator == "<" for s in req.specifier), f"{req} has no upper (major-version) cap"


def test_setup_installs_torch_pinned_first():
    """scripts/setup.sh installs the lock file, torch first and pinned to the locked version (the CPU wheel)."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    torch = lock_pins()["torch"]
    first_torch = setup.index(f'"torch=={torch}"')
    assert first_torch < setup.index("-r requirements-lock.txt")
    assert "--no-deps -e ." in setup
