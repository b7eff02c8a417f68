"""A test-side runner of a 3CX server-side CRM template's REST scenarios (no tests here).

It does what 3CX's CRM engine does with config/3cx/pbxcrm.xml, as far as the template uses it:
format `[Number]` per `<Number Prefix MaxLength>`, evaluate `SkipIf`, substitute `[Variable]`s
and `[[Var].ToString("fmt")]` into the Url and PostValues, authenticate per `<Authentication>`,
send the request, then apply `<Rules>`, read `<Variables>` by path and build `<Outputs>`
(following `Next`). Anything the template asks for that this runner cannot execute raises
TemplateError, so the template cannot quietly drift into constructs no test exercises.

Semantics taken from 3CX's "CRM template XML description" and public templates: paths are
dot-separated and walk through JSON arrays (each element one record); a variable 3CX has no
value for renders as ""; `Passes` is how many times an expression is evaluated. What 3CX does
not document (whether Url values are URL-encoded) is done the harsh way: values go into the
URL as they are, so a `+` reaches the server as a space, and pbxcrm must cope.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL


class TemplateError(Exception):
    """The template uses something this runner (and so no test) executes."""


_METHOD = re.compile(r'\[\[(\w+)\]\.ToString\("([^"]*)"\)\]')
_VARIABLE = re.compile(r"\[(\w+)\]")
_UNSUPPORTED = re.compile(r"\[\[|\]\.|IIf\(")
_NET_DATE = re.compile(r"'[^']*'|\"[^\"]*\"|yyyy|MM|dd|HH|mm|ss|fff|.", re.DOTALL)
_NET_TO_PY = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}


@dataclass(frozen=True)
class Culture:
    """The 3CX server's locale as .NET formatting sees it: `:` and `/` in a custom format are
    its time and date separators unless quoted."""

    time_separator: str = ":"
    date_separator: str = "/"


def net_date(moment: datetime, fmt: str, culture: Culture = Culture()) -> str:
    """.NET custom DateTime format (the subset templates use) -> text."""
    out = []
    for token in _NET_DATE.findall(fmt):
        if token[:1] in ("'", '"') and len(token) >= 2:
            out.append(token[1:-1])  # a quoted literal, copied as it is
        elif token == "yyyy":
            out.append(f"{moment.year:04d}")  # strftime's %Y does not pad year 1 on glibc
        elif token == "fff":
            out.append(f"{moment.microsecond // 1000:03d}")
        elif token in _NET_TO_PY:
            out.append(moment.strftime(_NET_TO_PY[token]))
        elif token == ":":
            out.append(culture.time_separator)
        elif token == "/":
            out.append(culture.date_separator)
        else:
            out.append(token)
    return "".join(out)


def values_at(document: Any, path: str) -> list[Any]:
    """Every value at a dot path; a JSON array on the way is walked element by element."""
    current = [document]
    for part in path.split("."):
        step: list[Any] = []
        for node in current:
            items = node if isinstance(node, list) else [node]
            for item in items:
                if isinstance(item, dict) and part in item:
                    step.append(item[part])
        current = step
    flat: list[Any] = []
    for value in current:
        flat.extend(value if isinstance(value, list) else [value])
    return flat


def _present(value: Any) -> bool:
    return value is not None and str(value) != ""


@dataclass
class ScenarioRun:
    scenario_id: str
    skipped: bool = False
    method: str = ""
    url: str = ""
    body: Any = None
    status: int = 0
    response: Any = None
    matched: bool = False
    records: list[dict[str, str]] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)
    next_run: ScenarioRun | None = None

    def kept_contacts(self, searched: str) -> list[dict[str, str]]:
        """The outputs 3CX keeps as the caller's contact: one of its phone outputs must equal
        the number it searched (3CX drops a looked-up contact whose phones all differ)."""
        return [
            output
            for output in self.outputs
            if any(k.startswith("Phone") and v == searched for k, v in output.items())
        ]


class TemplateRunner:
    """`culture`: the 3CX server's locale. `missing`: how a variable 3CX has no value for
    renders, "" (`empty`) or left as its own text (`literal`, as 3CX does for some)."""

    def __init__(
        self,
        template: Path,
        parameters: dict[str, str],
        session: aiohttp.ClientSession,
        *,
        culture: Culture = Culture(),
        missing: str = "empty",
    ) -> None:
        if missing not in ("empty", "literal"):
            raise ValueError(f"missing: {missing!r}")
        self.culture = culture
        self.missing = missing
        self.root = ET.parse(template).getroot()
        if self.root.tag != "Crm":
            raise TemplateError(f"root element is {self.root.tag}, not Crm")
        self.session = session
        self.parameters = dict(parameters)
        for parameter in self.root.iterfind("./Parameters/Parameter"):
            name = parameter.get("Name", "")
            self.parameters.setdefault(name, parameter.get("Default", ""))

    # ---------------------------------------------------------------- expressions

    def evaluate(self, text: str, variables: dict[str, Any], passes: int = 0) -> str:
        kept: list[str] = []  # expressions left as their own text ("literal" missing mode)
        for _ in range(max(1, passes)):
            text = self._one_pass(text, variables, kept)
        for index, original in enumerate(kept):
            text = text.replace(f"\x00{index}\x00", original)
        return text

    def _one_pass(self, text: str, variables: dict[str, Any], kept: list[str]) -> str:
        def keep(original: str) -> str:
            kept.append(original)
            return f"\x00{len(kept) - 1}\x00"

        def method(match: re.Match[str]) -> str:
            if match.group(1) not in variables and self.missing == "literal":
                return keep(match.group(0))
            value = variables.get(match.group(1))
            if not isinstance(value, datetime):
                raise TemplateError(f"{match.group(0)}: {match.group(1)} is not a DateTime")
            return net_date(value, match.group(2), self.culture)

        def variable(match: re.Match[str]) -> str:
            if match.group(1) not in variables:
                return keep(match.group(0)) if self.missing == "literal" else ""
            value = variables[match.group(1)]
            return value.isoformat() if isinstance(value, datetime) else str(value)

        text = _METHOD.sub(method, text)
        if _UNSUPPORTED.search(text):
            raise TemplateError(f"expression not supported by the runner: {text!r}")
        return _VARIABLE.sub(variable, text)

    def condition(self, text: str | None, variables: dict[str, Any]) -> bool:
        if not text:
            return False
        for op in ("!=", "=="):
            if op in text:
                left, right = (self.evaluate(p, variables).strip() for p in text.split(op, 1))
                return (left != right) if op == "!=" else (left == right)
        return self.evaluate(text, variables).strip().lower() == "true"

    def format_number(self, number: str) -> str:
        element = self.root.find("./Number")
        if element is None:
            return number
        digits = re.sub(r"\D", "", number)
        had_plus, had_zeros = number.startswith("+"), number.startswith("00")
        body = digits[2:] if had_zeros else digits
        prefix = element.get("Prefix", "AsIs")
        if prefix == "AsIs":
            result = number
        elif prefix == "Off":
            result = body
        elif prefix == "Plus":
            result = ("+" if had_plus or had_zeros else "") + body
        elif prefix == "Zeros":
            result = ("00" if had_plus or had_zeros else "") + body
        else:
            raise TemplateError(f"Number Prefix {prefix!r}")
        max_length = self.evaluate(element.get("MaxLength", ""), self.parameters).strip()
        if max_length:
            result = result[-int(max_length) :]
        return result

    # ---------------------------------------------------------------- scenarios

    def scenario(self, scenario_id: str) -> ET.Element:
        for element in self.root.iterfind("./Scenarios/Scenario"):
            if element.get("Id", "") == scenario_id:
                if element.get("Type") != "REST":
                    raise TemplateError(f"scenario {scenario_id!r} is not REST")
                return element
        raise TemplateError(f"no scenario {scenario_id!r}")

    async def lookup(self, number: str) -> ScenarioRun:
        """Contact lookup for a caller, as 3CX runs it on an incoming call."""
        return await self.run("", {"Number": self.format_number(number)})

    async def report_call(self, **variables: Any) -> ScenarioRun:
        """Call journaling after a call ended: CallType, Number, Agent, Duration..."""
        if "Number" in variables:
            variables["Number"] = self.format_number(variables["Number"])
        return await self.run("ReportCall", variables)

    async def run(self, scenario_id: str, variables: dict[str, Any]) -> ScenarioRun:
        element = self.scenario(scenario_id)
        context = {**self.parameters, **variables}
        result = ScenarioRun(scenario_id)
        request = element.find("./Request")
        if request is None:
            raise TemplateError(f"scenario {scenario_id!r} has no Request")
        if self.condition(request.get("SkipIf"), context):
            result.skipped = True
            return result
        await self._send(request, context, result)
        self._apply(element, context, result)
        outputs = element.find("./Outputs")
        next_id = outputs.get("Next", "") if outputs is not None else ""
        if next_id and result.matched:
            carried = {**variables, **(result.records[0] if result.records else {})}
            result.next_run = await self.run(next_id, carried)
        return result

    async def _send(
        self, request: ET.Element, context: dict[str, Any], result: ScenarioRun
    ) -> None:
        passes = int(request.get("MessagePasses", "0") or 0)
        url = self.evaluate(request.get("Url", ""), context, passes)
        method = {"get": "GET", "post": "POST"}.get(request.get("RequestType", "").lower())
        if method is None:
            raise TemplateError(f"RequestType {request.get('RequestType')!r}")
        headers = self._auth_headers(context)
        for value in request.iterfind("./Headers/Value"):
            headers[value.get("Key", "")] = self.evaluate(value.text or "", context)
        body: dict[str, Any] = {}
        for value in request.iterfind("./PostValues/Value"):
            if value.get("If") and not self.condition(value.get("If"), context):
                continue
            text = self.evaluate(value.text or "", context, int(value.get("Passes", "0") or 0))
            kind = value.get("Type", "String")
            if kind == "Integer":
                body[value.get("Key", "")] = int(text) if text else None
            elif kind == "Boolean":
                body[value.get("Key", "")] = text.lower() == "true"
            elif kind == "String":
                body[value.get("Key", "")] = text
            else:
                raise TemplateError(f"PostValues Value Type {kind!r}")
        encoding = request.get("RequestEncoding", "UrlEncoded")
        kwargs: dict[str, Any] = {"headers": headers}
        if method == "POST":
            if encoding == "Json":
                kwargs["json"] = body
            elif encoding == "UrlEncoded":
                kwargs["data"] = body
            else:
                raise TemplateError(f"RequestEncoding {encoding!r}")
        result.method, result.url, result.body = method, url, body if method == "POST" else None
        async with self.session.request(method, URL(url, encoded=False), **kwargs) as response:
            result.status = response.status
            if request.get("ResponseType", "Json") != "Json":
                raise TemplateError(f"ResponseType {request.get('ResponseType')!r}")
            result.response = await response.json(content_type=None)

    def _auth_headers(self, context: dict[str, Any]) -> dict[str, str]:
        auth = self.root.find("./Authentication")
        kind = "No" if auth is None else auth.get("Type", "No")
        if kind == "No":
            return {}
        if kind == "Basic":
            value = self.evaluate((auth.findtext("./Value") or ""), context)  # type: ignore[union-attr]
            return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}
        raise TemplateError(f"Authentication Type {kind!r}")

    def _apply(self, element: ET.Element, context: dict[str, Any], result: ScenarioRun) -> None:
        if result.status >= 400:
            return  # 3CX treats an HTTP error as no match
        document = result.response
        matched = True
        count = 1
        for rule in element.iterfind("./Rules/Rule"):
            path = (rule.text or "").strip()
            found = [v for v in values_at(document, path) if _present(v)]
            kind = rule.get("Type", "Any")
            if kind == "Any":
                ok = bool(found)
            elif kind == "Equals":
                ethalon = self.evaluate(rule.get("Ethalon", ""), context)
                ok = any(str(v) == ethalon for v in found)
            elif kind == "Number":
                digits = re.sub(r"\D", "", str(context.get("Number", "")))
                ok = any(re.sub(r"\D", "", str(v)).endswith(digits) for v in found)
            else:
                raise TemplateError(f"Rule Type {kind!r}")
            matched = matched and ok
            count = max(count, len(found))
        result.matched = matched
        if not matched:
            return
        variables = element.findall("./Variables/Variable")
        for index in range(count):
            record: dict[str, str] = {}
            for variable in variables:
                values = values_at(document, variable.get("Path", ""))
                value = values[index] if index < len(values) else ""
                record[variable.get("Name", "")] = "" if value is None else str(value)
            result.records.append(record)
        outputs = element.find("./Outputs")
        if outputs is None:
            return
        for record in result.records:
            scope = {**context, **record}
            output = {
                o.get("Type", ""): self.evaluate(
                    o.get("Value", ""), scope, int(o.get("Passes", "0") or 0)
                )
                for o in outputs.iterfind("./Output")
            }
            if output and (
                outputs.get("AllowEmpty", "false").lower() == "true" or any(output.values())
            ):
                result.outputs.append(output)
