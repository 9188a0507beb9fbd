"""Poisoning checks for upstream definitions, and prompt-injection checks for tool results.

An upstream's tools, resources and prompts reach the model as text it will read and trust.
`scan_definition` looks through every string the model sees (names, titles, descriptions,
schema descriptions/titles/defaults/enums, prompt arguments) for:

| category               | what                                                         | severity        |
| ---------------------- | ------------------------------------------------------------ | --------------- |
| `instruction_tags`     | `<IMPORTANT>`, `<SYSTEM>`, `<instructions>` blocks, chat-    | high            |
|                        | template tokens (`<|im_start|>`, `[INST]`, `<<SYS>>`)        |                 |
| `hidden_instructions`  | "ignore previous instructions", "do not tell the user",      | high            |
|                        | "reveal the system prompt", "you are now…"                   |                 |
|                        | text aimed at the model ("the assistant must", "note to the  | medium          |
|                        | AI"), mentions of the system prompt                          |                 |
|                        | "you must …", "do not show X to the user"                    | low             |
| `hidden_text`          | text smuggled in Unicode tag characters, or an instruction   | high            |
|                        | only readable once invisible characters are removed          |                 |
| `invisible_unicode`    | zero-width, bidi and tag characters                          | medium          |
| `secret_access`        | reading/sending `~/.ssh`, `id_rsa`, `.env`, `/etc/passwd`…   | high            |
|                        | reading/sending credentials, API/private keys, passwords     | medium          |
|                        | such a path mentioned without an imperative verb             | low             |
| `tool_redirection`     | "also send/forward …", bcc to an address                     | high            |
|                        | "before using this tool, call …", "instead of X use Y",      | medium          |
|                        | rules for other tools                                        |                 |
|                        | "call the `x` tool" (a plain cross-reference)                | low             |
| `exfiltration_url`     | a URL after "send/post/upload … to", a URL ending in an      | high            |
|                        | empty parameter (`?d=`), a markdown image                    |                 |
|                        | a URL with a query string or placeholder                     | medium          |
|                        | any other http(s) URL                                        | low             |
| `oversized_description`| a description longer than `max_description_chars`            | medium          |

URLs are only looked for in descriptions and titles (a documentation link is low: logged,
not rewritten, under the default policy); schema `default`/`enum` values may be URLs.
A finding in a value the gateway cannot rewrite without changing the tool's contract (a name,
a property name, an `enum`/`const` value) is always high.

Verbs count when imperative ("read ~/.ssh/id_rsa"), not when they describe the tool ("Reads
credentials from ~/.aws/credentials" is low: a mention, not an instruction).

`scan_result_text` applies the instruction, tag, hidden-text, secret and redirection checks
(no URL or size rules, nothing below medium) to tool results; `guard_result` acts on them.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tollway.errors import GatewayError
from tollway.protocol import constants as c

Severity = Literal["high", "medium", "low"]
Action = Literal["allow", "warn", "sanitize", "block"]
Kind = Literal["tool", "resource", "resource_template", "prompt"]

INSTRUCTION_TAGS = "instruction_tags"
HIDDEN_INSTRUCTIONS = "hidden_instructions"
HIDDEN_TEXT = "hidden_text"
INVISIBLE_UNICODE = "invisible_unicode"
SECRET_ACCESS = "secret_access"
TOOL_REDIRECTION = "tool_redirection"
EXFILTRATION_URL = "exfiltration_url"
OVERSIZED_DESCRIPTION = "oversized_description"

KIND_BY_LIST_KEY: dict[str, Kind] = {
    "tools": "tool",
    "resources": "resource",
    "resourceTemplates": "resource_template",
    "prompts": "prompt",
}
"""Result key of a list method (`tools/list` -> `tools`) -> the kind these functions take."""

INJECTION_META_KEY = "io.tollway/injection"
LINK_REMOVED = "[link removed]"
TRUNCATED_MARKER = " … [truncated]"
REMOVED_MARKER = "[removed by Tollway]"
UNTRUSTED_OPEN = "<untrusted-data>"
UNTRUSTED_CLOSE = "</untrusted-data>"

_RANK: dict[str, int] = {"low": 1, "medium": 2, "high": 3}
_ACTION_RANK: dict[str, int] = {"allow": 0, "warn": 1, "sanitize": 2, "block": 3}
_EXCERPT_CHARS = 80


@dataclass(frozen=True)
class Finding:
    kind: str
    """`tool`, `resource`, `resource_template`, `prompt`, or `result`."""
    item_name: str
    field_path: str
    """Where in the item: `description`, `inputSchema.properties.path.description`, `content[0].text`."""
    category: str
    severity: Severity
    excerpt: str
    """Short (at most 120 characters) and printable: invisible characters are named, never included."""

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "item_name": self.item_name,
            "field_path": self.field_path,
            "category": self.category,
            "severity": self.severity,
            "excerpt": self.excerpt,
        }


class ResultWithheld(GatewayError):
    """`result_injection: block`: a tool result carried instructions aimed at the model."""

    code, message = c.INTERNAL_ERROR, "Tool result withheld: it contains instructions aimed at the model"


class _Policy(Protocol):
    """What `decide`/`screen_definition` read: `tollway.config.DefinitionPolicy` fits."""

    @property
    def high(self) -> str: ...
    @property
    def medium(self) -> str: ...
    @property
    def low(self) -> str: ...
    @property
    def max_description_chars(self) -> int: ...


# --- invisible characters -------------------------------------------------------------------
_ZERO_WIDTH = "\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff"
_BIDI = "\u202a-\u202e\u2066-\u2069"
_INVISIBLE_RE = re.compile(f"[{_ZERO_WIDTH}{_BIDI}\U000e0000-\U000e007f]")
_TAG_BASE = 0xE0000
_TAG_CANCEL = 0xE007F
_BLACK_FLAG = 0x1F3F4  # subdivision flags (🏴 + tag letters + cancel tag) are legitimate emoji
_ZWJ = 0x200D


def _invisible_spans(text: str) -> list[int]:
    """Indexes of characters that render as nothing, except those emoji legitimately use."""
    spans: list[int] = []
    skip_until = -1
    for match in _INVISIBLE_RE.finditer(text):
        start = match.start()
        if start < skip_until:
            continue
        cp = ord(text[start])
        if cp == _ZWJ and _emoji_joiner(text, start):
            continue
        if _TAG_BASE <= cp < _TAG_CANCEL and start > 0 and ord(text[start - 1]) == _BLACK_FLAG:
            end = start
            while end < len(text) and end - start <= 7 and 0xE0030 <= ord(text[end]) <= 0xE007A:
                end += 1
            if end < len(text) and ord(text[end]) == _TAG_CANCEL and end > start:
                skip_until = end + 1
                continue
        spans.append(start)
    return spans


def _emoji_joiner(text: str, index: int) -> bool:
    if index == 0 or index + 1 >= len(text):
        return False
    before, after = text[index - 1], text[index + 1]
    before_ok = unicodedata.category(before) in ("So", "Sk") or before == "\ufe0f"
    return before_ok and unicodedata.category(after) == "So"


def _reveal(text: str, spans: list[int]) -> tuple[str, str]:
    """(text with tag characters decoded to ASCII and other invisibles removed, the decoded tag text)."""
    if not spans:
        return text, ""
    out: list[str] = []
    hidden: list[str] = []
    last = 0
    for index in spans:
        out.append(text[last:index])
        cp = ord(text[index])
        if 0xE0020 <= cp <= 0xE007E:
            out.append(chr(cp - _TAG_BASE))
            hidden.append(chr(cp - _TAG_BASE))
        last = index + 1
    out.append(text[last:])
    return "".join(out), "".join(hidden)


def _strip_invisible(text: str) -> str:
    spans = _invisible_spans(text)
    if not spans:
        return text
    return "".join(text[start + 1 : end] for start, end in zip([-1, *spans], [*spans, len(text)], strict=True))


def _describe_invisible(text: str, spans: list[int]) -> str:
    counts: dict[str, int] = {}
    for start in spans:
        cp = ord(text[start])
        label = "U+E0000-E007F (tags)" if cp >= _TAG_BASE else f"U+{cp:04X}"
        counts[label] = counts.get(label, 0) + 1
    parts = [f"{label} x{count}" if count > 1 else label for label, count in counts.items()]
    return f"{len(spans)} invisible character{'s' if len(spans) > 1 else ''}: " + ", ".join(parts)


# --- text patterns ----------------------------------------------------------------------------
# Every rule names literal needles (lowercase) one of which any match contains: the regex only
# runs when one is present, so ordinary data costs a few substring searches. "Verb near target"
# rules search the rare target first and look for the verb in the same sentence just before it,
# which keeps adversarial input (a megabyte of "read read read") linear and fast.
_I = re.IGNORECASE


@dataclass(frozen=True)
class _Rule:
    category: str
    severity: Severity
    pattern: re.Pattern[str]
    needles: tuple[tuple[str, ...], ...]
    """Groups of lowercase literals: the regex runs only if every group has one in the text."""
    before: re.Pattern[str] | None = None
    """If set: must match in the same sentence, within `window` characters before `pattern`."""
    window: int = 70

    def search(self, text: str, lowered: str) -> tuple[int, int] | None:
        if not all(any(needle in lowered for needle in group) for group in self.needles):
            return None
        if self.before is None:
            match = self.pattern.search(text)
            return None if match is None else match.span()
        for match in self.pattern.finditer(text):
            lo = max(0, match.start() - self.window)
            head = text[lo : match.start()]
            offset = max(head.rfind(". "), head.rfind("! "), head.rfind("? "), head.rfind("\n")) + 1
            verb = self.before.search(head, offset)
            if verb is not None:
                return lo + verb.start(), match.end()
        return None


def _any(*needles: str) -> tuple[str, ...]:
    return needles


_TAG_NAMES = (
    r"important|system|instructions?|secret|hidden|admin|prompt|assistant|critical|override|"
    r"user[_-]?instructions|ai[_-]?instructions|system[_-]?(?:prompt|message)|sys|context|tool[_-]?instructions"
)
_TAG_RE = re.compile(rf"<\s*/?\s*(?:{_TAG_NAMES})\b[^<>]{{0,60}}>", _I)
_TAG_BLOCK_RE = re.compile(rf"<\s*({_TAG_NAMES})\b[^<>]{{0,60}}>.*?(?:<\s*/\s*\1\s*>|\Z)", _I | re.DOTALL)
_CHAT_TOKEN_RE = re.compile(
    r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>|\[/?INST\]|<</?SYS>>"
    r"|^#{2,}\s*(?:system|instructions?)\s*:",
    _I | re.MULTILINE,
)
_BRACKET_TAG_RE = re.compile(r"\[\s*(?:important|system|instructions?|admin)\s*\]", _I)

_QUALIFIER = (
    r"all|any|every|everything|your|previous|prior|above|earlier|preceding|former|original|system|safety|other|"
    r"existing|initial"
)
_INSTRUCTION_NOUN = (
    r"instructions?|prompts?|rules|guidelines|directions|directives|context|messages?|constraints|guardrails|"
    r"polic(?:y|ies)|you(?:'ve| have)? (?:been|were) told"
)
_OVERRIDE_RE = re.compile(
    rf"\b(?:ignore|disregard|forget|override|bypass)\s+(?:(?:the|of|these|those|my)\s+)?"
    rf"(?:{_QUALIFIER})\s+(?:\w+\s+){{0,2}}?(?:{_INSTRUCTION_NOUN})\b",
    _I,
)
_WHO = re.compile(r"\b(?:user|human|person|operator|anyone)\b", _I)
_HUSH_VERB = r"tell|inform|mention|reveal|disclose|notify|alert|show|say"
_NEGATION = r"do\s+not|don'?t|never|must\s+not|should\s+not|shouldn'?t"
_HUSH_THIS_RE = re.compile(
    rf"\b(?:{_NEGATION})\s+(?:{_HUSH_VERB})\s+(?:this|that|it|these|them|anything|any\s+of\s+this)\b", _I
)
_HUSH_USER_RE = re.compile(
    r"\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|notify|alert)\s+the\s+(?:user|human)\b"
    r"|\bwithout\s+(?:telling|informing|notifying|asking|alerting|showing)\s+(?:the\s+)?(?:user|human)\b"
    r"|\buser\s+(?:must|should|need|needs|does)\s*(?:not|n't|never)\s+(?:to\s+)?(?:know|see|notice|be\s+told|"
    r"find\s+out|be\s+informed)\b"
    r"|\bkeep\s+(?:this|it|these)\s+(?:secret|hidden|confidential)\b",
    _I,
)
_HIDE_FROM_USER_RE = re.compile(r"\bto\s+the\s+user\b", _I)
_HIDE_VERB_RE = re.compile(r"\b(?:do\s+not|don'?t|never)\s+(?:show|reveal|mention|display|disclose)\b", _I)
_PROMPT_LEAK_RE = re.compile(r"system\s+prompt|system\s+message|hidden\s+instructions|initial\s+instructions", _I)
_LEAK_VERB_RE = re.compile(
    r"\b(?:reveal|print|output|repeat|show|leak|return|include|dump|send|disclose)\s+(?:\w+\s+){0,3}?$", _I
)
_NEW_RULES_RE = re.compile(r"\bnew\s+(?:system\s+)?(?:instructions?|prompt|rules)\s*:", _I)
_ROLE_RE = re.compile(
    r"\byou\s+are\s+now\b|\bfrom\s+now\s+on,?\s+you\b"
    r"|\b(?:act|behave|respond)\s+as\s+(?:if\s+you\s+(?:are|were)\s+)?(?:an?\s+)?(?:unrestricted|jailbroken|dan\b)",
    _I,
)
_SYSTEM_PROMPT_RE = re.compile(r"\bsystem\s+prompt\b", _I)
_MODEL = r"ai|ai\s+assistant|assistant|llm|language\s+model|chatbot|claude|chatgpt|gpt(?:-\d\w*)?|copilot|gemini"
_AIMED_RE = re.compile(
    rf"\b(?:the\s+)?(?:{_MODEL})\s+(?:must|should|shall|needs?\s+to|is\s+required\s+to|has\s+to|will\s+need\s+to)\b"
    rf"|\b(?:note|message|instructions?|attention|reminder)\s+(?:to|for)\s+(?:the\s+)?(?:{_MODEL}|agent|model)\b"
    rf"|\bas\s+an\s+(?:ai|assistant|llm|language\s+model)\b",
    _I,
)
_YOU_MUST_RE = re.compile(r"(?<!if )(?<!when )\byou\s+(?:must|have\s+to|are\s+required\s+to|shall)\b", _I)

_SENSITIVE_PATH_RE = re.compile(
    r"(?:~|\$home|%userprofile%)?/?\.ssh\b(?:/[\w.-]+)?|\bid_(?:rsa|dsa|ecdsa|ed25519)\b(?:\.pub)?"
    r"|(?<![\w.])\.env\b(?![\w-])|/etc/(?:passwd|shadow|sudoers)\b|\.aws/(?:credentials|config)\b"
    r"|(?<![\w])\.(?:netrc|npmrc|pypirc|pgpass|git-credentials)\b|\.kube/config\b|\.docker/config\.json\b"
    r"|\bwallet\.dat\b|\.gnupg\b|\bauthorized_keys\b|\bknown_hosts\b",
    _I,
)
_PATH_NEEDLES: tuple[str, ...] = (
    ".ssh",
    "id_",
    ".env",
    "/etc/",
    ".aws",
    "netrc",
    "npmrc",
    "pypirc",
    "pgpass",
    "git-cred",
    ".kube",
)
_PATH_NEEDLES += (".docker", "wallet.dat", ".gnupg", "authorized_keys", "known_hosts")
_SECRET_TERM_RE = re.compile(
    r"\b(?:credentials?|api[\s_-]?keys?|private[\s_-]?keys?|secret[\s_-]?keys?|access[\s_-]?tokens?|"
    r"auth(?:entication)?[\s_-]?tokens?|bearer\s+tokens?|session\s+(?:cookies?|tokens?)|passwords?|passphrases?|"
    r"seed\s+phrases?|mnemonic|ssh\s+keys?|environment\s+variables|env\s+vars)\b",
    _I,
)
_SECRET_NEEDLES: tuple[str, ...] = (
    "credential",
    "key",
    "token",
    "cookie",
    "password",
    "passphrase",
    "seed",
    "mnemonic",
    "env",
)
_ACCESS_VERB_RE = re.compile(
    r"\b(?:read|cat|open|load|include|send|attach|append|upload|copy|paste|forward|extract|collect|dump|"
    r"exfiltrate|leak|transmit|embed|pass\s+(?:its|their|the)\s+contents?|contents?\s+of)\b",
    _I,
)

_REDIRECT_HIGH_RE = re.compile(
    r"\b(?:also|additionally|secretly|silently|quietly|always)\s+(?:send|forward|copy|cc|bcc|e-?mail|post|upload|"
    r"transmit|share|leak)\b",
    _I,
)
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_BCC_RE = re.compile(r"\bbcc\b", _I)
_TOOL_WORD_RE = re.compile(r"\btool\b[^.!?\n]{0,30}?\b(?:call|use|invoke|run|read|execute|fetch|send|pass)\b", _I)
_BEFORE_USING_RE = re.compile(r"\bbefore\s+(?:using|calling|invoking|running)\s+(?:this|the|any)\s+(?:\w+\s+)?$", _I)
_REDIRECT_MEDIUM_RE = re.compile(
    r"\binstead\s+of\s+(?:using|calling)\s+[`'\"]?[\w.-]+[`'\"]?\s*,?\s+(?:use|call|invoke)\b"
    r"|\bwhen(?:ever)?\s+(?:the\s+)?[`'\"]?[\w.-]+[`'\"]?\s+tool\s+is\s+(?:called|used|invoked)\b"
    r"|\b(?:all|every|any)\s+other\s+tools?\s+(?:must|should|shall)\b",
    _I,
)
_REDIRECT_LOW_RE = re.compile(
    r"\b(?:call|invoke|run|execute|trigger|use)\s+(?:the\s+)?(?!(?:this|that|a|an|any|each|every)\s)"
    r"[`'\"]?[\w.-]+[`'\"]?\s+tool\b|\b(?:call|invoke)\s+`[\w.-]+`",
    _I,
)

_URL_RE = re.compile(r"\bhttps?://[^\s<>\"'`)\]]+", _I)
_MD_IMAGE_RE = re.compile(r"!\[[^\]]{0,100}\]\(\s*https?://[^)\s]*\)?", _I)
_URL_START_RE = re.compile(r"https?://", _I)
_SEND_TO_RE = re.compile(
    r"\b(?:send|post|upload|forward|transmit|exfiltrate|leak|beacon)\b[^.!?\n]*\bto\s+(?:the\s+url\s+)?<?$", _I
)

_NOT = _any("not", "n't", "never")
# Rules in the order their findings are listed.
_TEXT_RULES: tuple[_Rule, ...] = (
    _Rule(INSTRUCTION_TAGS, "high", _TAG_RE, (_any("<"),)),
    _Rule(INSTRUCTION_TAGS, "high", _CHAT_TOKEN_RE, (_any("<|", "inst]", "<<sys>>", "<</sys>>", "##"),)),
    _Rule(INSTRUCTION_TAGS, "medium", _BRACKET_TAG_RE, (_any("["),)),
    _Rule(HIDDEN_INSTRUCTIONS, "high", _OVERRIDE_RE, (_any("ignore", "disregard", "forget", "override", "bypass"),)),
    _Rule(HIDDEN_INSTRUCTIONS, "high", _WHO, (_NOT, _any(*_HUSH_VERB.split("|"))), before=_HUSH_THIS_RE),
    _Rule(
        HIDDEN_INSTRUCTIONS,
        "high",
        _HUSH_USER_RE,
        (_any("user", "human", "keep"), _any("not", "n't", "never", "without", "keep")),
    ),
    _Rule(
        HIDDEN_INSTRUCTIONS,
        "high",
        _PROMPT_LEAK_RE,
        (_any("system", "hidden", "initial"),),
        before=_LEAK_VERB_RE,
        window=40,
    ),
    _Rule(HIDDEN_INSTRUCTIONS, "high", _NEW_RULES_RE, (_any("new"), _any(":"))),
    _Rule(HIDDEN_INSTRUCTIONS, "high", _ROLE_RE, (_any("you are now", "now on", "unrestricted", "jailbroken", "dan"),)),
    _Rule(
        HIDDEN_INSTRUCTIONS,
        "medium",
        _AIMED_RE,
        (_any("ai", "assistant", "llm", "model", "chatbot", "claude", "gpt", "copilot", "gemini"),),
    ),
    _Rule(HIDDEN_INSTRUCTIONS, "medium", _SYSTEM_PROMPT_RE, (_any("system"),)),
    _Rule(HIDDEN_INSTRUCTIONS, "low", _HIDE_FROM_USER_RE, (_any("to the user"), _NOT), before=_HIDE_VERB_RE),
    _Rule(HIDDEN_INSTRUCTIONS, "low", _YOU_MUST_RE, (_any("you"),)),
    _Rule(SECRET_ACCESS, "high", _SENSITIVE_PATH_RE, (_PATH_NEEDLES,), before=_ACCESS_VERB_RE),
    _Rule(SECRET_ACCESS, "low", _SENSITIVE_PATH_RE, (_PATH_NEEDLES,)),
    _Rule(SECRET_ACCESS, "medium", _SECRET_TERM_RE, (_SECRET_NEEDLES,), before=_ACCESS_VERB_RE),
    _Rule(
        TOOL_REDIRECTION,
        "high",
        _REDIRECT_HIGH_RE,
        (_any("also", "additionally", "secretly", "silently", "quietly", "always"),),
    ),
    _Rule(TOOL_REDIRECTION, "high", _EMAIL_RE, (_any("bcc"), _any("@")), before=_BCC_RE, window=40),
    _Rule(
        TOOL_REDIRECTION, "medium", _TOOL_WORD_RE, (_any("before"), _any("tool")), before=_BEFORE_USING_RE, window=40
    ),
    _Rule(
        TOOL_REDIRECTION,
        "medium",
        _REDIRECT_MEDIUM_RE,
        (_any("instead", "when", "other tool"), _any("tool", "use", "call", "invok")),
    ),
    _Rule(TOOL_REDIRECTION, "low", _REDIRECT_LOW_RE, (_any("tool", "`"),)),
)
_URL_RULES: tuple[_Rule, ...] = (
    _Rule(EXFILTRATION_URL, "high", _MD_IMAGE_RE, (_any("!["),)),
    _Rule(EXFILTRATION_URL, "high", _URL_START_RE, (_any("http"),), before=_SEND_TO_RE),
)


def _url_severity(url: str) -> Severity:
    url = url.rstrip(".,;:")
    if "?" in url:
        query = url.split("?", 1)[1]
        if not query or re.search(r"=(?:&|$)", query):
            return "high"
        return "medium"
    if re.search(r"[{}$]|%7b|<", url, _I):
        return "medium"
    return "low"


def _normalize(text: str) -> str:
    # NFKC folds full-width and other compatibility look-alikes (full-width "ignore") onto ASCII.
    if unicodedata.is_normalized("NFKC", text):
        return text
    return unicodedata.normalize("NFKC", text)


def _excerpt(text: str, start: int = 0, end: int | None = None) -> str:
    end = len(text) if end is None else end
    pad = max(0, (_EXCERPT_CHARS - (end - start)) // 2)
    lo, hi = max(0, start - pad), min(len(text), end + pad)
    piece = _strip_invisible(text[lo:hi])
    piece = "".join(ch if ch.isprintable() else " " for ch in piece)
    piece = re.sub(r"\s+", " ", piece).strip()
    if len(piece) > _EXCERPT_CHARS:
        piece = piece[: _EXCERPT_CHARS - 1] + "…"
    return ("…" if lo > 0 else "") + piece + ("…" if hi < len(text) and not piece.endswith("…") else "")


def _text_hits(text: str, *, urls: bool) -> Iterator[tuple[str, Severity, str, _Rule | None]]:
    """(category, severity, excerpt, rule) for every rule that matches `text` (already revealed)."""
    folded = _normalize(text)
    lowered = folded.lower()
    for rule in _TEXT_RULES + (_URL_RULES if urls else ()):
        span = rule.search(folded, lowered)
        if span is not None:
            yield rule.category, rule.severity, _excerpt(folded, *span), rule
    if urls and "http" in lowered:
        for match in _URL_RE.finditer(folded):
            yield EXFILTRATION_URL, _url_severity(match.group()), _excerpt(folded, match.start(), match.end()), None


def _scan_string(
    text: str, *, field: Literal["text", "value", "name"], max_chars: int | None
) -> Iterator[tuple[str, Severity, str]]:
    """Findings for one string. `text`: descriptions/titles (every rule); `value`: schema
    defaults/enums (no URL or size rule); `name`: identifiers (invisible characters only)."""
    spans = _invisible_spans(text)
    if spans:
        yield INVISIBLE_UNICODE, "high" if field == "name" else "medium", _describe_invisible(text, spans)
    if field == "name":
        return
    revealed, smuggled = _reveal(text, spans)
    if smuggled.strip():
        yield HIDDEN_TEXT, "high", "tag characters spell: " + _excerpt(smuggled)
    hits = list(_text_hits(revealed, urls=field == "text"))
    if spans and not smuggled.strip():
        # An instruction that only reads once invisible characters are gone was split on purpose.
        raw = _normalize(text)
        for _, severity, excerpt, rule in hits:
            if rule is not None and _RANK[severity] >= _RANK["medium"] and rule.search(raw, raw.lower()) is None:
                yield HIDDEN_TEXT, "high", "split by invisible characters: " + excerpt
                break
    for category, severity, excerpt, _ in hits:
        yield category, severity, excerpt
    if max_chars is not None and len(text) > max_chars:
        yield OVERSIZED_DESCRIPTION, "medium", f"{len(text)} characters (limit {max_chars})"


# --- definitions ------------------------------------------------------------------------------
def definition_name(kind: str, definition: dict[str, Any]) -> str:
    """The identifier an item is known by: a resource's `uri`, a template's `uriTemplate`, else `name`."""
    if kind == "resource":
        return str(definition.get("uri") or definition.get("name") or "")
    if kind == "resource_template":
        return str(definition.get("uriTemplate") or definition.get("name") or "")
    return str(definition.get("name") or "")


FieldType = Literal["text", "value", "contract", "name"]
"""`text`: titles and descriptions (every rule); `value`: schema defaults and examples (no URL or
size rule); `contract`: `enum`/`const` values (as `value`, always high: they cannot be rewritten);
`name`: identifiers (invisible characters only, high)."""

Location = tuple[str | int, ...]
_Field = tuple[str, Location, str, FieldType, Location]
"""(field path, where the string is, the string, field type, the key a sanitizer acts on)."""


def _definition_strings(kind: str, definition: dict[str, Any]) -> Iterator[_Field]:
    for key in ("name", "uri", "uriTemplate"):
        if isinstance(definition.get(key), str):
            yield key, (key,), definition[key], "name", (key,)
    for key in ("title", "description"):
        if isinstance(definition.get(key), str):
            yield key, (key,), definition[key], "text", (key,)
    annotations = definition.get("annotations")
    if isinstance(annotations, dict) and isinstance(annotations.get("title"), str):
        loc: Location = ("annotations", "title")
        yield "annotations.title", loc, annotations["title"], "text", loc
    if kind == "tool":
        for key in ("inputSchema", "outputSchema"):
            if isinstance(definition.get(key), dict):
                yield from _schema_strings(definition[key], key, (key,))
    if kind == "prompt" and isinstance(definition.get("arguments"), list):
        for i, argument in enumerate(definition["arguments"]):
            if not isinstance(argument, dict):
                continue
            for key in ("name", "title", "description"):
                if isinstance(argument.get(key), str):
                    loc = ("arguments", i, key)
                    yield f"arguments[{i}].{key}", loc, argument[key], "name" if key == "name" else "text", loc


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _schema_strings(root: Any, root_path: str, root_loc: Location) -> Iterator[_Field]:
    # Iterative: an upstream's schema may be nested deeper than Python's recursion limit.
    stack: list[tuple[Any, str, Location]] = [(root, root_path, root_loc)]
    while stack:
        node, path, loc = stack.pop()
        children: list[tuple[Any, str, Location]] = []
        if isinstance(node, list):
            children = [(item, f"{path}[{i}]", (*loc, i)) for i, item in enumerate(node)]
        elif isinstance(node, dict):
            for key, value in node.items():
                here, at = f"{path}.{key}", (*loc, key)
                if key in ("title", "description") and isinstance(value, str):
                    yield here, at, value, "text", at
                elif key in ("default", "examples", "enum", "const"):
                    field: FieldType = "contract" if key in ("enum", "const") else "value"
                    for sub_path, sub_loc, text in _leaf_strings(value, here, at):
                        yield sub_path, sub_loc, text, field, at
                elif key in _SCHEMA_MAPS and isinstance(value, dict):
                    for name, schema in value.items():
                        # A property name is part of the contract and is read by the model.
                        yield f"{here}.{name}", (*at, name), str(name), "name", (*at, name)
                        children.append((schema, f"{here}.{name}", (*at, name)))
                elif isinstance(value, dict | list):
                    children.append((value, here, at))
        stack.extend(reversed(children))


def _leaf_strings(value: Any, root_path: str, root_loc: Location) -> Iterator[tuple[str, Location, str]]:
    stack: list[tuple[Any, str, Location]] = [(value, root_path, root_loc)]
    while stack:
        node, path, loc = stack.pop()
        if isinstance(node, str):
            yield path, loc, node
        elif isinstance(node, list):
            stack.extend(reversed([(item, f"{path}[{i}]", (*loc, i)) for i, item in enumerate(node)]))
        elif isinstance(node, dict):
            stack.extend(reversed([(item, f"{path}.{key}", (*loc, key)) for key, item in node.items()]))


def scan_definition(kind: str, definition: dict[str, Any], max_description_chars: int = 2000) -> list[Finding]:
    """Every poisoning finding in one upstream definition, at most one per (field, category):
    the most severe. `kind`: `tool`, `resource`, `resource_template` or `prompt`."""
    item = definition_name(kind, definition)
    best: dict[tuple[str, str], Finding] = {}
    for path, loc, text, field, _ in _definition_strings(kind, definition):
        hits = _scan_string(
            text,
            field="value" if field == "contract" else field,
            max_chars=max_description_chars if field == "text" and loc[-1] == "description" else None,
        )
        for category, severity, excerpt in hits:
            if field in ("contract", "name"):
                severity = "high"
            key = (path, category)
            current = best.get(key)
            if current is None or _RANK[severity] > _RANK[current.severity]:
                best[key] = Finding(kind, item, path, category, severity, excerpt)
    return list(best.values())


def decide(findings: list[Finding], policy: _Policy) -> Action:
    """The strictest action the policy names for the severities found (`allow` for none).

    With the usual ordering (high strictest) that is the worst severity's action."""
    action: Action = "allow"
    for finding in findings:
        candidate = getattr(policy, finding.severity)
        if _ACTION_RANK[candidate] > _ACTION_RANK[action]:
            action = candidate
    return action


def sanitize_definition(
    definition: dict[str, Any], findings: list[Finding], max_description_chars: int = 2000
) -> dict[str, Any]:
    """A copy with each field that has a finding cleaned: invisible characters removed, tag
    blocks and instruction sentences removed, URLs replaced by `[link removed]`, descriptions
    cut to `max_description_chars` with a marker, poisoned schema `default`/`examples` dropped.

    Names, property names and `enum`/`const` values are left as they are (rewriting them
    would change the tool's contract); their findings are high, so policy normally blocks.
    The result keeps the MCP shape: same name, `inputSchema` still an object schema.
    """
    clean: dict[str, Any] = _json_copy(definition)
    if not findings:
        return clean
    flagged = {f.field_path for f in findings}
    fields = [f for f in _definition_strings(findings[0].kind, clean) if f[0] in flagged]
    drops: dict[Location, None] = {}
    for _, loc, text, field, anchor in fields:
        if field == "text":
            _at(clean, loc[:-1])[loc[-1]] = clean_text(
                text, max_description_chars if loc[-1] == "description" else None
            )
        elif field == "value":
            drops[anchor] = None
    for anchor in drops:
        _at(clean, anchor[:-1]).pop(anchor[-1], None)
    return clean


def _at(root: Any, loc: Location) -> Any:
    node = root
    for part in loc:
        node = node[part]
    return node


def _json_copy(value: Any) -> Any:
    # A deep copy in C, safe for nesting as deep as the JSON parser allowed in the first place.
    return json.loads(json.dumps(value))


_SENTENCE_SPLIT_RE = re.compile(r"((?<=[.!?])\s+|\n+)")


def _instructs(sentence: str) -> bool:
    """Whether a sentence carries a medium or high instruction (or sends data to a URL)."""
    if any(_RANK[severity] >= _RANK["medium"] for _, severity, _, _ in _text_hits(sentence, urls=False)):
        return True
    folded = _normalize(sentence)
    return _URL_RULES[1].search(folded, folded.lower()) is not None


def clean_text(text: str, max_chars: int | None = None) -> str:
    """One description made safe to show a model (see `sanitize_definition`)."""
    original = text
    text = _strip_invisible(text)
    text = _TAG_BLOCK_RE.sub(" ", text)
    text = _TAG_RE.sub(" ", text)
    text = _CHAT_TOKEN_RE.sub(" ", text)
    parts = _SENTENCE_SPLIT_RE.split(text)  # sentence, separator, sentence, ...
    kept: list[str] = []
    for i in range(0, len(parts), 2):
        sentence, separator = parts[i], parts[i + 1] if i + 1 < len(parts) else ""
        if sentence.strip() and _instructs(sentence):
            continue
        kept.append(sentence + separator)
    text = "".join(kept)
    text = _MD_IMAGE_RE.sub(LINK_REMOVED, text)
    text = _URL_RE.sub(LINK_REMOVED, text)
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(0, max_chars - len(TRUNCATED_MARKER))].rstrip() + TRUNCATED_MARKER
    if not text and original.strip():
        text = REMOVED_MARKER
    return text


# --- pinning hash -----------------------------------------------------------------------------
HASHED_FIELDS: dict[str, tuple[str, ...]] = {
    "tool": ("name", "title", "description", "inputSchema", "outputSchema", "annotations"),
    "resource": ("uri", "name", "title", "description", "mimeType"),
    "resource_template": ("uriTemplate", "name", "title", "description", "mimeType"),
    "prompt": ("name", "title", "description", "arguments"),
}
"""What a definition hash covers: everything the model reads or a client trusts. Left out:
`_meta`, `icons`, `execution`, `size` and anything an upstream may add later."""


def definition_hash(kind: str, definition: dict[str, Any]) -> str:
    """SHA-256 (hex) of a canonical JSON of `kind` and the `HASHED_FIELDS` of the definition.

    Canonical: keys sorted at every level, no insignificant whitespace, UTF-8, absent and null
    fields alike, integral floats as integers (`24.0` == `24`), list order kept (it can carry
    meaning), except prompt arguments, which are sorted by name. Invisible characters count.
    """
    if kind not in HASHED_FIELDS:
        raise ValueError(f"unknown definition kind {kind!r}")
    body: dict[str, Any] = {"kind": kind}
    for key in HASHED_FIELDS[kind]:
        value = definition.get(key)
        if value is not None:
            body[key] = value
    if isinstance(body.get("arguments"), list):
        body["arguments"] = sorted(
            body["arguments"], key=lambda a: str(a.get("name", "")) if isinstance(a, dict) else ""
        )
    canonical = json.dumps(
        json.loads(json.dumps(body), parse_float=_integral), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _integral(number: str) -> int | float:
    value = float(number)
    return int(value) if value.is_integer() else value


@dataclass(frozen=True)
class Screened:
    """What the policy made of one definition: the definition to publish (None: withheld)."""

    definition: dict[str, Any] | None
    action: Action
    findings: list[Finding]


def screen_definition(kind: str, definition: dict[str, Any], policy: _Policy) -> Screened:
    """Scan, decide and apply in one step: block -> None, sanitize -> cleaned copy, else as is."""
    findings = scan_definition(kind, definition, policy.max_description_chars)
    action = decide(findings, policy)
    if action == "block":
        return Screened(None, action, findings)
    if action == "sanitize":
        return Screened(sanitize_definition(definition, findings, policy.max_description_chars), action, findings)
    return Screened(definition, action, findings)


# --- tool results -----------------------------------------------------------------------------
def scan_result_text(text: str, *, item_name: str = "", field_path: str = "text") -> list[Finding]:
    """Prompt-injection findings (medium and high only) in one piece of result text."""
    found: dict[str, Finding] = {}
    for category, severity, excerpt in _scan_string(text, field="value", max_chars=None):
        if category == INVISIBLE_UNICODE or _RANK[severity] < _RANK["medium"]:
            continue  # zero-width characters alone are common in real-world data
        if category == SECRET_ACCESS and severity != "high":
            continue  # data mentioning a path or a password is not an instruction
        current = found.get(category)
        if current is None or _RANK[severity] > _RANK[current.severity]:
            found[category] = Finding("result", item_name, field_path, category, severity, excerpt)
    return list(found.values())


def _result_texts(result: dict[str, Any]) -> Iterator[tuple[str, tuple[Any, ...], str]]:
    content = result.get("content")
    if isinstance(content, list):
        for i, item in enumerate(content):
            if not isinstance(item, dict):
                continue
            if item.get("type") == "text" and isinstance(item.get("text"), str):
                yield f"content[{i}].text", ("content", i, "text"), item["text"]
            resource = item.get("resource")
            if item.get("type") == "resource" and isinstance(resource, dict) and isinstance(resource.get("text"), str):
                yield f"content[{i}].resource.text", ("content", i, "resource", "text"), resource["text"]
    structured = result.get("structuredContent")
    if structured is not None:
        for path, _, text in _leaf_strings(structured, "structuredContent", ("structuredContent",)):
            yield path, (), text


def guard_result(result: dict[str, Any], mode: str, *, item_name: str = "") -> dict[str, Any]:
    """Apply `result_injection` to a tools/call (or prompts/get-like) result.

    `off`: unchanged. `flag`: `_meta["io.tollway/injection"] = {"findings": [categories]}`.
    `wrap`: each suspicious text item (text content, embedded resource text) becomes
    `<untrusted-data>\\n…\\n</untrusted-data>`, plus the `_meta` flag; structured content is
    left as is (its schema must hold). `block`: raises `ResultWithheld`.
    Returns the input itself when nothing is found, else a new dict (the input is not modified).
    """
    if mode == "off" or not isinstance(result, dict):
        return result
    findings: list[Finding] = []
    suspicious: list[tuple[Any, ...]] = []
    for path, loc, text in _result_texts(result):
        hits = scan_result_text(text, item_name=item_name, field_path=path)
        if hits:
            findings.extend(hits)
            suspicious.append(loc)
    if not findings:
        return result
    if mode == "block":
        raise ResultWithheld(data={"findings": _categories(findings)})
    guarded = _json_copy(result)
    if mode == "wrap":
        for loc in suspicious:
            if not loc or loc[0] != "content":
                continue
            node = guarded
            for part in loc[:-1]:
                node = node[part]
            node[loc[-1]] = wrap_untrusted(node[loc[-1]])
    meta = dict(guarded.get("_meta") or {})
    meta[INJECTION_META_KEY] = {"findings": _categories(findings)}
    guarded["_meta"] = meta
    return guarded


def wrap_untrusted(text: str) -> str:
    """Quote text as data; a marker inside cannot close the quote early."""
    text = re.sub(r"<\s*(/?)\s*untrusted-data\s*>", r"[\1untrusted-data]", text, flags=_I)
    return f"{UNTRUSTED_OPEN}\n{text}\n{UNTRUSTED_CLOSE}"


def _categories(findings: list[Finding]) -> list[str]:
    return list(dict.fromkeys(f.category for f in findings))
