"""template.yaml as CloudFormation would see it for given parameter values: conditions, rules and
the intrinsic functions the template uses on parameters (Ref, If, Sub, Equals, Not, And, Or).

Only what a deploy decides before any resource exists is evaluated; a reference to a resource
attribute stays as it is. Shared by the template tests (test_deploy_template, test_monitoring)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tollway.store.tables import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
README_PATH = ROOT / "README.md"

PSEUDO = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::StackName": "tollway"}
_SUB_VAR = re.compile(r"\$\{([^}!]+)\}")


def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


class Deploy:
    """One deployment: the template and the parameter values given (defaults for the rest)."""

    def __init__(self, tpl: dict[str, Any], **values: str) -> None:
        self.tpl = tpl
        self.params = {name: str(spec["Default"]) for name, spec in tpl["Parameters"].items() if "Default" in spec}
        self.params.update(values)

    def missing(self) -> list[str]:
        """Parameters without a value: CloudFormation refuses the deploy ("must have values")."""
        return [name for name in self.tpl["Parameters"] if name not in self.params]

    def pattern_violations(self) -> list[str]:
        """Parameters whose value breaks their AllowedPattern (CloudFormation matches the whole value)."""
        return [
            name
            for name, spec in self.tpl["Parameters"].items()
            if "AllowedPattern" in spec
            and name in self.params
            and not re.fullmatch(spec["AllowedPattern"], self.params[name])
        ]

    def failed_rules(self) -> list[str]:
        """AssertDescription of every rule assertion that fails."""
        failed = []
        for rule in (self.tpl.get("Rules") or {}).values():
            if "RuleCondition" in rule and not self.resolve(rule["RuleCondition"]):
                continue
            failed += [a["AssertDescription"] for a in rule["Assertions"] if not self.resolve(a["Assert"])]
        return failed

    def refusals(self) -> list[str]:
        """Everything CloudFormation would refuse before creating a resource."""
        return self.missing() + self.pattern_violations() + self.failed_rules()

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.tpl["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict) or len(value) != 1:
            return value
        ((key, arg),) = value.items()
        if key == "Ref":
            return self.params.get(arg, PSEUDO.get(arg, value))
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::If":
            name, when_true, when_false = arg
            return self.resolve(when_true if self.condition(name) else when_false)
        if key == "Fn::Equals":
            left, right = self.resolve(arg)
            return left == right
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(item) for item in arg)
        if key == "Fn::Or":
            return any(self.resolve(item) for item in arg)
        if key == "Fn::Sub" and isinstance(arg, str):
            return _SUB_VAR.sub(lambda m: str(self.resolve({"Ref": m.group(1)})), arg)
        return value

    def environment(self, function: str | None = None) -> dict[str, str]:
        """A function's environment variables as deployed: Globals, and `function`'s own over them."""
        variables = dict(self.tpl["Globals"]["Function"]["Environment"]["Variables"])
        if function is not None:
            own = self.tpl["Resources"][function]["Properties"].get("Environment", {})
            variables.update(own.get("Variables", {}))
        resolved = {name: self.resolve(value) for name, value in variables.items()}
        return {name: value for name, value in resolved.items() if isinstance(value, str)}

    def created(self, resource: str) -> bool:
        """Whether the deploy creates `resource` (its Condition, if any, holds)."""
        condition = self.tpl["Resources"][resource].get("Condition")
        return condition is None or self.condition(condition)


def readme_table(heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after `heading` in README.md, cells stripped of
    backticks; the header and separator rows left out."""
    text = README_PATH.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip().strip("`") for cell in line.strip().strip("|").split("|")])
    return rows[2:]
