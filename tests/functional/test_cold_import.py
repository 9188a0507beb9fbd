"""What a cold start builds, and what it leaves to first use: the masking detectors' patterns
(compiled when their module is imported) are not compiled while a config that names no detector
list is loaded and the app built; the warm-up imports them, and a typo in a list a config does
name still fails the load. What a deployed entry module leaves behind for the garbage
collector: on, with the start-up objects frozen until a config change replaces the app. And that
the config as `sam build` bundles it (JSON) is read without importing PyYAML. And that the import
makes none of Tollway's classes a dataclass (tollway.record says why).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tollway.config import json_config, parse_config
from tollway.errors import ConfigError
from tollway.http import create_app
from tollway.store import Stores

DETECTORS_MODULE = "tollway.masking.detectors"
ENTRY_MODULES = Path(__file__).resolve().parents[2] / "functions" / "gateway"

# A fresh interpreter (this one has imported everything already): the deployed gateway built
# with its warm-up held back, then the warm-up's module step on its own.
COLD_START = f"""
import json, sys
import tollway.live

tollway.live.warm_up = lambda *args: None
gateway = tollway.live.deployed()
at_build = {DETECTORS_MODULE!r} in sys.modules
tollway.live._import_first_use_modules()
print(json.dumps({{"at_build": at_build, "after_warm_up": {DETECTORS_MODULE!r} in sys.modules,
                   "masking": gateway.config.masking.enabled}}))
"""


# The entry module (app.py or streaming.py) imported as Lambda imports it, then a config change
# applied; the collector's state after each.
ENTRY_IMPORT = """
import asyncio, gc, importlib.util, json, sys
from pathlib import Path
import tollway.live

tollway.live.warm_up = lambda *args: None
spec = importlib.util.spec_from_file_location("entry", sys.argv[1])
entry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entry)
gateway = getattr(entry, "gateway", None) or entry.app  # streaming.py wraps its gateway
started = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
config = Path(sys.argv[2])
config.write_text(config.read_text() + "masking: {enabled: false}\\n")
applied = asyncio.run(gateway.refresh())
print(json.dumps({"started": started, "applied": applied, "frozen_after_change": gc.get_freeze_count(),
                  "enabled_after_change": gc.isenabled()}))
"""


# The entry module imported as Lambda imports it: is PyYAML loaded, and which config is served?
ENTRY_LOADS = """
import importlib.util, json, sys
import tollway.live

tollway.live.warm_up = lambda *args: None
spec = importlib.util.spec_from_file_location("entry", sys.argv[1])
entry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entry)
gateway = getattr(entry, "gateway", None) or entry.app
print(json.dumps({"yaml": "yaml" in sys.modules, "upstreams": [u.name for u in gateway.config.upstreams]}))
"""


# The entry module imported as Lambda imports it: the classes the import made into dataclasses
# (each compiles its generated methods as its class is made), by module.
ENTRY_DATACLASSES = """
import collections, dataclasses, importlib.util, json, sys

made = collections.Counter()
process = dataclasses._process_class


def counted(cls, *args, **kwargs):
    made[cls.__module__.split(".")[0]] += 1
    return process(cls, *args, **kwargs)


dataclasses._process_class = counted
import tollway.live

tollway.live.warm_up = lambda *args: None
spec = importlib.util.spec_from_file_location("entry", sys.argv[1])
entry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entry)
print(json.dumps(made))
"""


# The entry module's first line, then a start that fails (the config cannot be built).
FAILED_START = """
import gc, json
gc.disable()
import tollway.live
from tollway.errors import ConfigError

tollway.live.warm_up = lambda *args: None
try:
    tollway.live.deployed()
except ConfigError:
    print(json.dumps({"refused": True, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}))
"""


def _run_fresh(tmp_path: Path, masking: str, *args: str) -> dict[str, Any]:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "resource: https://gateway.example.com/mcp\n"
        "auth: {allow_anonymous: true}\n"
        "upstreams: [{name: finance, url: 'http://127.0.0.1:9/mcp'}]\n" + masking
    )
    return _run_fresh_with(config, *args)


def _run_fresh_with(config: Path, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "TOLLWAY_CONFIG": str(config),
        "TOLLWAY_TABLE": "TollwayTable",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }
    done = subprocess.run(
        [sys.executable, "-c", *args, str(config)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cold_start(tmp_path: Path, masking: str) -> dict[str, Any]:
    return _run_fresh(tmp_path, masking, COLD_START)


@pytest.mark.parametrize("entry", ["app.py", "streaming.py"])
def test_an_entry_module_leaves_collection_on_and_its_start_up_frozen_until_a_config_change(
    tmp_path: Path, entry: str
) -> None:
    found = _run_fresh(tmp_path, "", ENTRY_IMPORT, str(ENTRY_MODULES / entry))

    # Off while the instance was built (no collection among objects it keeps), on once built.
    assert found["started"]["enabled"] is True
    # The import's objects (modules, classes, config, app): tens of thousands, never walked again.
    assert found["started"]["frozen"] > 20_000
    # A config change replaces the app: what the old one held can be collected again.
    assert found["applied"] is True
    assert found["frozen_after_change"] == 0
    assert found["enabled_after_change"] is True


@pytest.mark.parametrize("entry", ["app.py", "streaming.py"])
def test_the_config_as_sam_build_bundles_it_is_read_without_pyyaml(tmp_path: Path, entry: str) -> None:
    as_written = _run_fresh(tmp_path, "", ENTRY_LOADS, str(ENTRY_MODULES / entry))
    config = tmp_path / "gateway.yaml"
    compiled = json_config(config.read_text(), config.name)
    assert compiled is not None
    config.write_text(compiled)  # what functions/gateway/Makefile writes

    as_bundled = _run_fresh_with(config, ENTRY_LOADS, str(ENTRY_MODULES / entry))

    assert as_written == {"yaml": True, "upstreams": ["finance"]}
    assert as_bundled == {"yaml": False, "upstreams": ["finance"]}


@pytest.mark.parametrize("entry", ["app.py", "streaming.py"])
def test_a_cold_start_makes_no_dataclass_of_tollways_own(tmp_path: Path, entry: str) -> None:
    made = _run_fresh(tmp_path, "", ENTRY_DATACLASSES, str(ENTRY_MODULES / entry))

    assert made.get("pydantic", 0) > 0  # the count sees the libraries' own
    assert "tollway" not in made


def test_a_config_naming_no_detector_list_leaves_the_patterns_to_the_warm_up(tmp_path: Path) -> None:
    found = _cold_start(tmp_path, "")  # masking on, the default detectors

    assert found == {"at_build": False, "after_warm_up": True, "masking": True}


def test_a_config_naming_a_detector_list_has_it_checked_at_load(tmp_path: Path) -> None:
    found = _cold_start(tmp_path, "masking: {detectors: [email, card]}\n")

    assert found == {"at_build": True, "after_warm_up": True, "masking": True}


@pytest.mark.parametrize(
    ("masking", "problem"),
    [
        ({"detectors": ["email", "pasport"]}, "masking.detectors: unknown detector(s) 'pasport'"),
        (
            {"tools": {"finance__*": {"allow_detectors": ["emial"]}}},
            "masking.tools.finance__*.allow_detectors: unknown detector(s) 'emial'",
        ),
    ],
)
def test_a_typo_in_a_named_detector_list_fails_the_load(masking: dict[str, Any], problem: str) -> None:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "finance", "url": "http://127.0.0.1:9/mcp"}],
            "masking": masking,
        }
    )

    with pytest.raises(ConfigError) as refused:
        create_app(config, stores=Stores.memory())

    assert str(refused.value).startswith(problem + "; known: jwt, aws_access_key")


def test_a_start_that_fails_leaves_collection_on_and_nothing_frozen(tmp_path: Path) -> None:
    found = _run_fresh(tmp_path, "masking: {detectors: [pasport]}\n", FAILED_START)

    assert found == {"refused": True, "enabled": True, "frozen": 0}
