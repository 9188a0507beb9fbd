"""Check the output of `sam build` before anyone deploys it.

    python scripts/check_sam_build.py [--expect-bytecode] [.aws-sam/build]

Asserts that the TollwayLayer holds the tollway package and pydantic-core compiled for the Lambda
runtime (CPython 3.13 on aarch64) and uvicorn (the streaming deployment's server), that any
bytecode in it is CPython 3.13's and never checks its source (--expect-bytecode: every module has
it), that it fits Lambda's size limit, and that each gateway function holds its entry point (the
streaming one's run.sh executable: the Lambda Web Adapter runs it) and its config files as the
JSON functions/gateway/Makefile writes (the same document as the source, read without PyYAML).
Exits 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

LAYER = "TollwayLayer"
FUNCTIONS = {"GatewayFunction": ("app.py",), "StreamingGatewayFunction": ("streaming.py", "run.sh")}
EXECUTABLE = "run.sh"
FUNCTION_SOURCE = Path(__file__).resolve().parent.parent / "functions" / "gateway"
# Lambda: function + layers, unzipped, at most 250 MB. Leave most of it to the functions.
LAYER_LIMIT_BYTES = 200 * 1024 * 1024
# CPython 3.13's bytecode magic number (importlib.util.MAGIC_NUMBER) and the .pyc flags word of
# an unchecked-hash file (PEP 552): Lambda's /opt is read-only, the sources never change.
PY313_MAGIC = (3571).to_bytes(2, "little") + b"\r\n"
PY313_TAG = "cpython-313"
UNCHECKED_HASH = 1


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _is_aarch64_elf(path: Path) -> bool:
    with path.open("rb") as f:
        header = f.read(20)
    # ELF magic, 64-bit, little-endian, e_machine (offset 18) == EM_AARCH64 (183).
    return header[:6] == b"\x7fELF\x02\x01" and int.from_bytes(header[18:20], "little") == 183


def _check_bytecode(site: Path, expect_bytecode: bool) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    compiled = list(site.rglob("*.pyc"))
    foreign = [p for p in compiled if not p.name.endswith(f".{PY313_TAG}.pyc")]
    if foreign:
        problems.append(
            f"{LAYER}: {len(foreign)} .pyc not for CPython 3.13, e.g. {foreign[0].relative_to(site)} "
            "(bytecode of the build host's Python)"
        )
    for pyc in sorted(set(compiled) - set(foreign)):
        with pyc.open("rb") as f:
            header = f.read(8)
        if header[:4] != PY313_MAGIC or int.from_bytes(header[4:8], "little") != UNCHECKED_HASH:
            problems.append(f"{LAYER}: {pyc.relative_to(site)} is not unchecked-hash CPython 3.13 bytecode")
            break
    if not compiled:
        notes = [
            f"{LAYER}: ships no bytecode: Lambda compiles every module at each cold start (see layers/tollway/Makefile)"
        ]
        if expect_bytecode:
            problems.append(
                f"{LAYER}: no .pyc files although a CPython 3.13 was found to compile them "
                "(a cached build? `make clean build`)"
            )
        return problems, notes
    missing = [
        py for py in site.rglob("*.py") if not (py.parent / "__pycache__" / f"{py.stem}.{PY313_TAG}.pyc").is_file()
    ]
    if missing:  # a partial compile: some modules would be compiled at each cold start
        problems.append(f"{LAYER}: {len(missing)} modules without bytecode, e.g. {missing[0].relative_to(site)}")
    return problems, [f"{LAYER}: {len(compiled)} modules compiled for CPython 3.13"]


def check(build_dir: Path, expect_bytecode: bool = False) -> tuple[list[str], list[str]]:
    """Return (problems, notes) for the build directory."""
    problems: list[str] = []
    notes: list[str] = []
    if not build_dir.is_dir():
        return [f"{build_dir} does not exist: run `sam build` first"], notes

    site = build_dir / LAYER / "python"
    if not (site / "tollway" / "__init__.py").is_file():
        problems.append(f"{LAYER}: python/tollway/__init__.py is missing (layers/tollway/Makefile did not copy it)")
    if site.is_dir():
        bytecode_problems, bytecode_notes = _check_bytecode(site, expect_bytecode)
        problems += bytecode_problems
        notes += bytecode_notes

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

    if site.is_dir() and not (site / "uvicorn" / "__init__.py").is_file():
        problems.append(f"{LAYER}: python/uvicorn is missing (the streaming deployment's run.sh needs it)")

    for function, files in FUNCTIONS.items():
        for name in files:
            path = build_dir / function / name
            if not path.is_file():
                problems.append(f"{function}: {name} is missing")
            elif name == EXECUTABLE and not os.access(path, os.X_OK):
                problems.append(f"{function}: {name} is not executable (git: chmod +x, then commit)")
        problems += _check_configs(build_dir / function)
    return problems, notes


def _check_configs(function_dir: Path) -> list[str]:
    """Each config file of functions/gateway is bundled as its JSON form, unless it holds values
    JSON cannot carry (then as it is)."""
    from tollway.config import json_config

    problems = []
    for source in sorted([*FUNCTION_SOURCE.glob("*.yaml"), *FUNCTION_SOURCE.glob("*.yml")]):
        bundled = function_dir / source.name
        expected = json_config(source.read_text(encoding="utf-8"), source.name)
        if not bundled.is_file():
            problems.append(f"{function_dir.name}: {source.name} is missing")
        elif expected is not None and bundled.read_text(encoding="utf-8") != expected:
            problems.append(
                f"{function_dir.name}: {source.name} is not bundled as the JSON of functions/gateway/{source.name} "
                "(the function would import PyYAML at each cold start: build with PYTHON set to a Python that "
                "imports tollway, as `make build` does)"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the output of `sam build` before deploying it.")
    parser.add_argument("build_dir", nargs="?", default=".aws-sam/build", type=Path)
    parser.add_argument(
        "--expect-bytecode", action="store_true", help="every module of the layer must have CPython 3.13 bytecode"
    )
    args = parser.parse_args(argv)
    build_dir = args.build_dir
    problems, notes = check(build_dir, args.expect_bytecode)
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
