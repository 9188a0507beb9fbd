"""Write layers/tollway/requirements.txt from pyproject.toml's [project].dependencies.

pyproject.toml is the only place runtime dependencies are declared. `sam build` runs the
layer's Makefile in a scratch copy of layers/tollway, where the root pyproject.toml is out of
reach, so the layer reads this generated copy instead. tests/unit/test_layer_requirements.py
fails whenever the two drift apart.

    python scripts/sync_layer_requirements.py          # rewrite the file
    python scripts/sync_layer_requirements.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = ROOT / "layers" / "tollway" / "requirements.txt"
HEADER = (
    "# Generated from pyproject.toml [project].dependencies by scripts/sync_layer_requirements.py.\n"
    "# Do not edit: change pyproject.toml, then run `python scripts/sync_layer_requirements.py`.\n"
    "# The layer Makefile installs these for python3.13 / arm64 (boto3 comes with the Lambda runtime).\n"
)


def dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    with pyproject.open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def render(deps: list[str]) -> str:
    return HEADER + "".join(f"{dep}\n" for dep in deps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    expected = render(dependencies())
    current = REQUIREMENTS.read_text(encoding="utf-8") if REQUIREMENTS.exists() else None
    if current == expected:
        return 0
    if args.check:
        print(
            f"{REQUIREMENTS.relative_to(ROOT)} is out of date with pyproject.toml; "
            "run: python scripts/sync_layer_requirements.py",
            file=sys.stderr,
        )
        return 1
    REQUIREMENTS.write_text(expected, encoding="utf-8")
    print(f"wrote {REQUIREMENTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
