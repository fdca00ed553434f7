"""Parse what an app answers to a voice webhook, the way the switch does (SAUTIKIT.md §2, §4).

XML `<Response>` documents are forwarded to the switch unvalidated: it runs what it understands and
skips the rest, so parsing is lenient and every oddity becomes a recorded problem. JSON documents
(`{"actions": [...]}`) are validated by the API first: one bad action rejects the whole document.
Attribute names are normalised (`outputSamplingRate`, `output_sampling_rate` → `outputsamplingrate`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

MAX_JSON_ACTIONS = 50

KNOWN = {
    "say": "say",
    "play": "play",
    "stream": "stream",
    "dial": "dial",
    "hangup": "hangup",
    "reject": "reject",
    "redirect": "redirect",
    "getdigits": "getdigits",
    "record": "record",
    "conference": "conference",
}


def norm_key(name: str) -> str:
    return re.sub(r"[_\-\s]", "", name).lower()


@dataclass
class Verb:
    name: str  # one of KNOWN's values
    attrs: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    numbers: list[str] = field(default_factory=list)  # Dial targets
    children: list[Verb] = field(default_factory=list)  # GetDigits prompts

    def get(self, *names: str, default: Any = None) -> Any:
        for n in names:
            key = norm_key(n)
            if key in self.attrs and self.attrs[key] not in (None, ""):
                return self.attrs[key]
        return default

    def flag(self, name: str) -> bool:
        value = self.get(name)
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in {"true", "1", "yes"} if value is not None else False

    def number(self, name: str, default: float | None = None) -> float | None:
        value = self.get(name)
        if value is None:
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            return default

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verb": self.name}
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        if self.text:
            out["text"] = self.text
        if self.numbers:
            out["numbers"] = list(self.numbers)
        if self.children:
            out["children"] = [c.summary() for c in self.children]
        return out


@dataclass
class Document:
    verbs: list[Verb] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (violation reason, detail)
    fatal: bool = False  # nothing in it can run; the switch hangs up
    format: str = "empty"  # xml | json | empty | unknown


def parse_document(body: bytes, content_type: str = "") -> Document:
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return Document()
    ct = content_type.lower()
    if "json" in ct or text.startswith(("{", "[")):
        return _parse_json(text)
    if "xml" in ct or text.startswith("<"):
        return _parse_xml(text)
    return Document(
        problems=[("unparseable_document", f"neither XML nor JSON ({content_type or 'no content type'})")],
        fatal=True,
        format="unknown",
    )


# -- XML ------------------------------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(text: str) -> Document:
    doc = Document(format="xml")
    # No DTDs: entity expansion is the classic way to stall an XML parser, and TwiML-like
    # documents never need one.
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        doc.problems.append(("unparseable_document", "XML with a DTD or entities"))
        doc.fatal = True
        return doc
    try:
        root = ET.fromstring(text)  # noqa: S314 - DTDs refused above; loopback apps only
    except ET.ParseError as exc:
        doc.problems.append(("unparseable_document", f"XML does not parse: {exc}"))
        doc.fatal = True
        return doc
    if _local(root.tag).lower() != "response":
        doc.problems.append(("unparseable_document", f"root element is <{_local(root.tag)}>, not <Response>"))
        doc.fatal = True
        return doc
    for el in root:
        verb = _xml_verb(el, doc)
        if verb is not None:
            doc.verbs.append(verb)
    return doc


def _xml_verb(el: ET.Element, doc: Document) -> Verb | None:
    tag = _local(el.tag)
    key = norm_key(tag)
    if key == "connect":
        if any(norm_key(_local(c.tag)) == "stream" for c in el):
            doc.problems.append(
                ("stream_inside_connect", "<Stream> must sit at the top level of <Response>; skipped")
            )
        else:
            doc.problems.append(("unknown_verb", "<Connect> is not a Sautikit verb; skipped"))
        return None
    if key not in KNOWN:
        doc.problems.append(("unknown_verb", f"<{tag}> skipped"))
        return None
    verb = Verb(
        name=KNOWN[key],
        attrs={norm_key(k): v for k, v in el.attrib.items()},
        text=(el.text or "").strip(),
    )
    if verb.name == "dial":
        for child in el:
            ckey = norm_key(_local(child.tag))
            if ckey in {"number", "sip", "client"} and (child.text or "").strip():
                verb.numbers.append((child.text or "").strip())
        for attr in ("phonenumbers", "number", "numbers"):
            if attr in verb.attrs:
                verb.numbers += [n.strip() for n in str(verb.attrs[attr]).split(",") if n.strip()]
        if not verb.numbers and verb.text:
            verb.numbers = [n.strip() for n in verb.text.split(",") if n.strip()]
    elif verb.name == "getdigits":
        for child in el:
            sub = _xml_verb(child, doc)
            if sub is not None and sub.name in {"say", "play"}:
                verb.children.append(sub)
    elif verb.name in {"play", "redirect"} and not verb.get("url") and verb.text:
        verb.attrs["url"] = verb.text
    return verb


# -- JSON -----------------------------------------------------------------------------------------------
def _parse_json(text: str) -> Document:
    doc = Document(format="json")

    def reject(detail: str) -> Document:
        doc.problems.append(("invalid_json_actions", detail))
        doc.fatal = True
        doc.verbs = []
        return doc

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        doc.problems.append(("unparseable_document", f"JSON does not parse: {exc.msg}"))
        doc.fatal = True
        return doc
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
        return reject('expected {"actions": [...]}')
    actions = data["actions"]
    if len(actions) > MAX_JSON_ACTIONS:
        return reject(f"{len(actions)} actions; at most {MAX_JSON_ACTIONS}")
    for i, action in enumerate(actions):
        if not isinstance(action, dict) or len(action) != 1:
            return reject(f"action {i} must be an object with exactly one verb key")
        ((name, params),) = action.items()
        key = norm_key(name)
        if key not in KNOWN:
            return reject(f"action {i}: unknown verb {name!r}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return reject(f"action {i}: {name} parameters must be an object")
        verb = Verb(name=KNOWN[key], attrs={norm_key(k): v for k, v in params.items()})
        error = _validate_json_verb(verb, params)
        if error:
            return reject(f"action {i} ({name}): {error}")
        doc.verbs.append(verb)
    return doc


def _validate_json_verb(verb: Verb, params: dict[str, Any]) -> str | None:
    if verb.name == "say":
        value = verb.get("text")
        if not isinstance(value, str) or not value.strip():
            return "`text` is required"
        verb.text = value.strip()
    elif verb.name in {"play", "redirect", "stream"}:
        if not isinstance(verb.get("url"), str):
            return "`url` is required"
    elif verb.name == "dial":
        present = [k for k in ("number", "numbers", "sip") if params.get(k) not in (None, "", [])]
        if len(present) != 1:
            return "exactly one of `number`, `numbers`, `sip` is required"
        value = params[present[0]]
        targets = value if isinstance(value, list) else [value]
        if not all(isinstance(t, str) and t.strip() for t in targets):
            return f"`{present[0]}` must hold strings"
        verb.numbers = [t.strip() for t in targets]
    elif verb.name == "getdigits":
        prompt = verb.get("say", "prompt")
        if isinstance(prompt, str) and prompt.strip():
            verb.children.append(Verb(name="say", text=prompt.strip()))
        play = verb.get("play")
        if isinstance(play, str):
            verb.children.append(Verb(name="play", attrs={"url": play}))
    return None
