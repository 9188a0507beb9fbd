"""Check the output of `sam build` before anyone deploys it.

    python scripts/check_sam_build.py [.aws-sam/build]

Asserts that the TollwayLayer holds the tollway package and pydantic-core compiled for the Lambda
runtime (CPython 3.13 on aarch64), that it fits Lambda's size limit, and that the GatewayFunction
holds its handler module. Exits 1 with one line per problem otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

LAYER = "TollwayLayer"
FUNCTIONS = {"GatewayFunction": "app.py"}
# Lambda: function + layers, unzipped, at most 250 MB. Leave most of it to the functions.
LAYER_LIMIT_BYTES = 200 * 1024 * 1024


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _is_aarch64_elf(path: Path) -> bool:
    with path.open("rb") as f:
        header = f.read(20)
    # ELF magic, 64-bit, little-endian, e_machine (offset 18) == EM_AARCH64 (183).
    return header[:6] == b"\x7fELF\x02\x01" and int.from_bytes(header[18:20], "little") == 183


def check(build_dir: Path) -> tuple[list[str], list[str]]:
    """Return (problems, notes) for the build directory."""
    problems: list[str] = []
    notes: list[str] = []
    if not build_dir.is_dir():
        return [f"{build_dir} does not exist: run `sam build` first"], notes

    site = build_dir / LAYER / "python"
    if not (site / "tollway" / "__init__.py").is_file():
        problems.append(f"{LAYER}: python/tollway/__init__.py is missing (layers/tollway/Makefile did not copy it)")
    if site.is_dir() and any(site.rglob("__pycache__")):
        problems.append(f"{LAYER}: contains __pycache__ (bytecode of the build host's Python)")

    cores = sorted((site / "pydantic_core").glob("_pydantic_core.*.so")) if site.is_dir() else []
    if not cores:
        problems.append(f"{LAYER}: no pydantic_core extension module (python/pydantic_core/_pydantic_core.*.so)")
    for core in cores:
        if core.name != "_pydantic_core.cpython-313-aarch64-linux-gnu.so":
            problems.append(
                f"{LAYER}: {core.relative_to(build_dir)} is not built for CPython 3.13 on aarch64 Linux "
                "(was the layer installed for the build host instead of with pip --platform?)"
            )
        elif not _is_aarch64_elf(core):
            problems.append(f"{LAYER}: {core.relative_to(build_dir)} is not an aarch64 ELF shared object")

    if site.is_dir():
        size = _size(site)
        notes.append(f"{LAYER}: {size / 1024 / 1024:.1f} MB unzipped")
        if size > LAYER_LIMIT_BYTES:
            problems.append(f"{LAYER}: {size / 1024 / 1024:.0f} MB unzipped, over {LAYER_LIMIT_BYTES >> 20} MB")
        if (site / "botocore").exists():
            notes.append(f"{LAYER}: ships botocore although the Lambda runtime provides boto3 (a dependency pulls it)")

    for function, handler in FUNCTIONS.items():
        if not (build_dir / function / handler).is_file():
            problems.append(f"{function}: {handler} is missing")
    return problems, notes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    build_dir = Path(args[0] if args else ".aws-sam/build")
    problems, notes = check(build_dir)
    for note in notes:
        print(note)
    if problems:
        print(f"sam build output in {build_dir} is not deployable:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"sam build output in {build_dir}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
