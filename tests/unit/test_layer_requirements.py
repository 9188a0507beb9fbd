"""The layer ships exactly pyproject.toml's runtime dependencies.

`sam build` builds the layer in a scratch copy of layers/tollway, out of reach of the root
pyproject.toml, so layers/tollway/requirements.txt is a generated copy of [project].dependencies.
Fix a failure with: python scripts/sync_layer_requirements.py
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def test_layer_requirements_equal_pyproject_dependencies() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        declared = tomllib.load(f)["project"]["dependencies"]
    shipped = _requirements(ROOT / "layers" / "tollway" / "requirements.txt")
    assert shipped == declared, (
        "layers/tollway/requirements.txt differs from pyproject.toml [project].dependencies; "
        "run: python scripts/sync_layer_requirements.py"
    )


def test_layer_does_not_ship_boto3() -> None:
    # The Lambda runtime provides boto3; shipping it would bloat the layer and pin an old copy.
    shipped = {
        re.match(r"[A-Za-z0-9._-]+", req).group(0).lower()  # type: ignore[union-attr]
        for req in _requirements(ROOT / "layers" / "tollway" / "requirements.txt")
    }
    assert not shipped & {"boto3", "botocore"}
