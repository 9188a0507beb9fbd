"""The rule engine of the definition scan and the result guard: what text aimed at a model looks like.

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

`scan_string` finds these in one string; `clean_text` removes them from one description.
`masking.poisoning` applies them to definitions, `masking.guard` to tool results.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Severity = Literal["high", "medium", "low"]

INSTRUCTION_TAGS = "instruction_tags"
HIDDEN_INSTRUCTIONS = "hidden_instructions"
HIDDEN_TEXT = "hidden_text"
INVISIBLE_UNICODE = "invisible_unicode"
SECRET_ACCESS = "secret_access"
TOOL_REDIRECTION = "tool_redirection"
EXFILTRATION_URL = "exfiltration_url"
OVERSIZED_DESCRIPTION = "oversized_description"

LINK_REMOVED = "[link removed]"
TRUNCATED_MARKER = " … [truncated]"
REMOVED_MARKER = "[removed by Tollway]"

RANK: dict[str, int] = {"low": 1, "medium": 2, "high": 3}
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


def strip_invisible(text: str) -> str:
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
        for group in self.needles:  # loops, not all(any(...)): it runs for every rule on every string
            for needle in group:
                if needle in lowered:
                    break
            else:
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
    piece = strip_invisible(text[lo:hi])
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


def scan_string(
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
            if rule is not None and RANK[severity] >= RANK["medium"] and rule.search(raw, raw.lower()) is None:
                yield HIDDEN_TEXT, "high", "split by invisible characters: " + excerpt
                break
    for category, severity, excerpt, _ in hits:
        yield category, severity, excerpt
    if max_chars is not None and len(text) > max_chars:
        yield OVERSIZED_DESCRIPTION, "medium", f"{len(text)} characters (limit {max_chars})"


_SENTENCE_SPLIT_RE = re.compile(r"((?<=[.!?])\s+|\n+)")


def _instructs(sentence: str) -> bool:
    """Whether a sentence carries a medium or high instruction (or sends data to a URL)."""
    if any(RANK[severity] >= RANK["medium"] for _, severity, _, _ in _text_hits(sentence, urls=False)):
        return True
    folded = _normalize(sentence)
    return _URL_RULES[1].search(folded, folded.lower()) is not None


def clean_text(text: str, max_chars: int | None = None) -> str:
    """One description made safe to show a model (see `sanitize_definition`)."""
    original = text
    text = strip_invisible(text)
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
