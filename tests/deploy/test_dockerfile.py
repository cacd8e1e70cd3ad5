"""docker/Dockerfile: pinned, non-root, read-only friendly; its requirements cover egress."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.checks import dockerfile_instructions, dockerfile_problems

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
REQUIREMENTS = ROOT / "docker" / "requirements.txt"


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.]*", version), f"not an exact pin: {line}"
            out[canonicalize_name(name)] = version
    return out


def test_dockerfile_is_pinned_non_root_and_healthchecked() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_every_file_the_image_copies_exists() -> None:
    for word, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_image_runs_the_entrypoint_and_keeps_state_on_the_volume() -> None:
    instructions = dict(dockerfile_instructions(DOCKERFILE.read_text()))
    assert instructions["ENTRYPOINT"] == '["/opt/egress/bin/python", "/usr/local/bin/egress-entrypoint"]'
    assert "EGRESS_DATA_DIR=/var/lib/egress" in instructions["ENV"]
    assert instructions["USER"] == "10001:10001"


def test_requirements_pin_every_dependency_of_egress() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = pins()
    for dep in pyproject["project"]["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is missing from docker/requirements.txt"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} does not satisfy {dep}"


@pytest.mark.parametrize("old, new, problem", [
    pytest.param("ARG PYTHON_IMAGE=python:3.13.5-slim-bookworm", "ARG PYTHON_IMAGE=python:3.13-slim", "base image python:3.13-slim is not a pinned python:3.13.x-slim", id="floating base image"),
    pytest.param("USER 10001:10001", "USER root", "the image runs as root", id="root user"),
    pytest.param("HEALTHCHECK", "# HEALTHCHECK", "no HEALTHCHECK", id="no healthcheck"),
    pytest.param("--no-deps --only-binary=:all: -r", "-r", "unpinned pip install: /opt/egress/bin/pip install -r docker/requirements.txt", id="resolver may pull other versions"),
])
def test_each_check_catches_its_problem(old: str, new: str, problem: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    assert problem in dockerfile_problems(text.replace(old, new))
