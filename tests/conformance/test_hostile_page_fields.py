"""HTML and script planted in every field the pages render, through real requests (the
signed API and the console's own form), then every page read as a signed-in admin and
as anyone: the payloads appear only as text. No page has an element with an event
handler, a ``javascript:`` link or an inline script (the proof viewer's saved file
aside, whose scripts are the package's own), no bidirectional control is left to act,
and every page is sent with a Content-Security-Policy that allows no inline script.

The pages are the routes the console package mounts (read from the application, so a
page added later is read too); their query parameters are the names their own forms and
links use, each sent the payload too, as is a path parameter and the ``Host`` header.
Server-side checks: the HTML is parsed as a browser would tokenize it (``html.parser``),
no browser is needed.
"""

from __future__ import annotations

import collections
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import orjson
import pytest
from fastapi.routing import APIRoute

from asgi_support import Answer, call, signed
from figures import record
from gov_exec import measured
from gov_support import EXE, signed_bundle
from hostile_support import ORIGIN, World, build_world, console_cookie
from proctor.authorization.keys import PrincipalKey
from proctor.console.web import BIDI_CONTROLS

NODE = "<script>alert('N01')</script>\u202eN01"
"""The governor's node name (``proctor serve --node``): shown on /health."""


REFUSED = {"principal name", "principal zone", "principal attribute (bidi)"}
"""Fields whose grammar refuses the payloads at registration (names and zones are
identifiers; an attribute value is printable text, which a bidirectional control is not)."""


def payloads(marker: str) -> dict[str, str]:
    """The hostile forms of a field's value, each carrying ``marker``."""
    return {
        "script": f"<script>alert('{marker}')</script>",
        "attribute": f'"><img src=x onerror=alert("{marker}")>',
        "javascript-url": f"javascript:alert('{marker}')",
        "script-end": f'</script><script>alert("{marker}")</script>',
        "bidi": f"{marker}\u202e\u2066txt.exe\u2069",
    }


@dataclass
class Planted:
    """A field that was given hostile values, and whether the governor kept them."""

    name: str
    marker: str
    status: int
    values: list[str]
    shown: bool = True
    """Whether a page is expected to show it (argument values are committed, never shown)."""


@dataclass
class Planting:
    fields: list[Planted] = field(default_factory=list)
    execution: str = ""

    def add(self, name: str, marker: str, answer: Answer, values: list[str], *, shown: bool = True) -> None:
        self.fields.append(Planted(name, marker, answer.status, values, shown))


def api(world: World, who: str, method: str, target: str, body: Any = None) -> Answer:
    raw = b"" if body is None else orjson.dumps(body)
    return call(world.app, method, target, headers=signed(world.keys[who], method, target, raw), body=raw)


def plant(world: World, tmp: Path) -> Planting:
    """Every free-text field a request can set, given each hostile value."""
    out = Planting()
    # Principals: the name and zone are grammars (refused); attribute values are text
    # (printable, no quotes: the attribute and javascript-url forms without theirs).
    for i, kind in enumerate(payloads("")):
        value = payloads(f"A1{i}")[kind]
        key = PrincipalKey.generate(f"carol{i}")
        body: dict[str, Any] = {
            "name": f"carol{i}",
            "public_key": key.public_key_b64,
            "attrs": {"team": value.replace('"', "").replace("'", "")},
        }
        out.add(
            f"principal attribute ({kind})",
            f"A1{i}",
            api(world, "admin", "POST", "/v1/principals", body),
            [value],
        )
    key = PrincipalKey.generate("x")
    for name, marker, body in (
        ("principal name", "A02", {"name": payloads("A02")["script"], "public_key": key.public_key_b64}),
        (
            "principal zone",
            "A03",
            {"name": "dave", "public_key": key.public_key_b64, "zone": payloads("A03")["script"]},
        ),
    ):
        out.add(name, marker, api(world, "admin", "POST", "/v1/principals", body), [], shown=False)
    # Policy: a file's text, a policy's @id (shown with every decision it makes).
    source = tmp / "hostile-policy"
    shutil.copytree(tmp / "policy", source)
    text = "\n".join(f"// {v}" for v in payloads("P01").values())
    policy_id = payloads("P02")["attribute"].replace('"', "'")
    (source / "hostile.cedar").write_text(
        f'{text}\n@id("{policy_id}")\n'
        'permit (principal, action == Proctor::Action::"exec", resource) when { principal.role == "dev" };\n'
    )
    pushed = api(world, "admin", "PUT", "/v1/policy", signed_bundle(world.data, source, version=2))
    out.add("policy text", "P01", pushed, list(payloads("P01").values()))
    out.add("policy id", "P02", pushed, [policy_id])
    # An execution: its resource (the measured path), enforcer and containment, its end.
    resource = "/opt/" + payloads("R01")["script"] + "/run"
    asked = {"action": "exec", "resource": resource, "argv": ["run"], "executable_digest": EXE}
    allowed = api(world, "alice", "POST", "/v1/authorize", asked)
    out.add("resource", "R01", allowed, [resource])
    bidi = "/opt/" + payloads("R02")["bidi"] + "/run"
    out.add(
        "resource (bidi)",
        "R02",
        api(world, "alice", "POST", "/v1/authorize", {**asked, "resource": bidi}),
        [bidi],
    )
    start: dict[str, Any] = {
        "warrant": allowed.json()["warrant"]["token"],
        "action": "exec",
        "resource": resource,
        "argv": ["run"],
        "measurement": measured(resource),
        "enforcer": payloads("E01")["script"],
        "containment": [payloads("E02")["attribute"]],
    }
    started = api(world, "alice", "POST", "/v1/executions", start)
    out.add("enforcer", "E01", started, [start["enforcer"]])
    out.add("containment", "E02", started, start["containment"])
    out.execution = started.json()["execution"]
    end: dict[str, Any] = {
        "outcome": "failed",
        "reason": payloads("X01")["attribute"],
        "detail": " ".join(payloads("X02").values()),
        "signal": "<b>X03</b>",
        "resource_usage": {"<i>X04": 1},
    }
    ended = api(world, "alice", "POST", f"/v1/executions/{out.execution}/finish", end)
    for name, marker, value in (
        ("end reason", "X01", end["reason"]),
        ("end detail", "X02", end["detail"]),
        ("end signal", "X03", end["signal"]),
        ("resource usage name", "X04", "<i>X04"),
    ):
        out.add(name, marker, ended, [str(value)])
    # A tool call: its resource is shown; its arguments are committed, never shown. (No
    # marker starts with T and two digits: every ISO time on a page has one, "…T02:14…".)
    tool: dict[str, Any] = {
        "action": "mcp.call",
        "resource": "srv/" + payloads("M01")["script"].replace("/", "|"),
        "arguments": {"q": " ".join(payloads("M02").values())},
        "executable_digest": EXE,
    }
    called = api(world, "alice", "POST", "/v1/authorize", tool)
    out.add("tool resource", "M01", called, [tool["resource"]])
    out.add("tool arguments", "M02", called, list(payloads("M02").values()), shown=False)
    # Reasons an admin gives: an approval's, a revocation's (the API and the console's form).
    why = " ".join(payloads("W01").values())
    out.add(
        "approval reason", "W01", api(world, "admin", "POST", f"/v1/approvals/{world.approval}/approve", {"reason": why}), [why]
    )  # fmt: skip
    why = " ".join(payloads("W02").values())
    revoked = api(
        world,
        "admin",
        "POST",
        "/v1/revocations",
        {"kind": "execution", "target": world.running, "reason": why},
    )
    out.add("revocation reason", "W02", revoked, [why])
    out.add("console action reason", "W03", console_revoke(world, " ".join(payloads("W03").values())), [])
    return out


def console_revoke(world: World, reason: str) -> Answer:
    """Revoke bob through the console's confirmation form, giving ``reason``."""
    cookie = console_cookie(world)
    base = [("host", "testserver"), ("cookie", cookie)]
    confirm = call(world.app, "GET", "/console/confirm?action=revoke-principal&target=bob", headers=base)
    csrf = re.search(rb'name="csrf" value="([^"]+)"', confirm.body)
    assert csrf is not None, confirm.body[:300]
    form = urlencode(
        {"csrf": csrf.group(1).decode(), "action": "revoke-principal", "target": "bob", "reason": reason}
    )
    headers = [*base, ("origin", ORIGIN), ("content-type", "application/x-www-form-urlencoded")]
    return call(world.app, "POST", "/console/act", headers=headers, body=form.encode())


# -- reading the pages --------------------------------------------------------------------


class Scan(HTMLParser):
    """What a browser's tokenizer makes of a page: elements, attributes, script bodies, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "xlink:href", "poster", "data"})
NAVIGATING = frozenset({"a", "area", "form", "button", "iframe", "object", "embed"})
"""Elements whose URL a click (or the page) opens as a document: no data: URL there (an
icon's ``data:,`` is an empty image)."""
INLINE_SCRIPTS_ALLOWED = frozenset({"/proofs/standalone.html"})
"""The proof viewer's saved file: its scripts are inline by design, the package's own
files, each named by its hash in the file's own CSP (test_proofs_pages)."""


def page_problems(path: str, answer: Answer, markers: list[str]) -> list[str]:
    """What is wrong with one HTML page."""
    problems = []
    html = answer.body.decode("utf-8", "replace")
    csp = answer.headers.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    scripts = directives.get("script-src", directives.get("default-src", ["*"]))
    if not csp or {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"} & set(scripts):
        problems.append(f"CSP without a strict script-src: {csp!r}")
    if "unsafe-inline" in csp or "unsafe-eval" in csp:
        problems.append(f"CSP allows unsafe-inline or unsafe-eval: {csp!r}")
    if answer.headers.get("x-content-type-options") != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    scan = Scan()
    scan.feed(html)
    for tag, attrs in scan.elements:
        for name, value in attrs:
            if name.startswith("on"):
                problems.append(f"<{tag} {name}=...> (an event handler)")
            if name in URL_ATTRIBUTES and value is not None:
                scheme = re.sub(r"[\x00-\x20]", "", value).lower().partition(":")[0]
                if scheme in ("javascript", "vbscript") or (scheme == "data" and tag in NAVIGATING):
                    problems.append(f"<{tag} {name}={value[:60]!r}>")
        if tag == "script" and path not in INLINE_SCRIPTS_ALLOWED:
            src = dict(attrs).get("src") or ""
            if not src.startswith("/static/"):
                problems.append(f"<script src={src!r}> (not the package's /static)")
    if path not in INLINE_SCRIPTS_ALLOWED and any(s.strip() for s in scan.scripts):
        problems.append("an inline script")
    for script in scan.scripts:
        problems += [f"marker {m} inside a script" for m in markers if m in script]
    if BIDI_CONTROLS.search(html):
        problems.append(f"a bidirectional control left to act: {BIDI_CONTROLS.search(html)!r}")
    return problems


def pages(app: Any) -> list[APIRoute]:
    """The GET routes the console package mounts (its included routers)."""
    found = []
    for route in app.routes:
        inner = getattr(route, "original_router", None)  # an included router (FastAPI >= 0.165)
        if inner is not None:
            found += [r for r in inner.routes if isinstance(r, APIRoute) and "GET" in (r.methods or set())]
    return found


def query_names(answer: Answer) -> set[str]:
    """The query parameter names a page's own forms and links use."""
    names = set()
    for tag, values in _elements(answer):
        if tag in ("input", "select", "textarea") and values.get("name"):
            names.add(str(values["name"]))
    names |= {k for _, query in links(answer) for k, _ in query}
    return names - {"csrf", "token"}


def links(answer: Answer) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """A page's links to this site with a query: (path, its parameters), one per shape."""
    found: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[tuple[str, str], ...]]] = {}
    for tag, values in _elements(answer):
        href = str(values.get("href") or "")
        if tag == "a" and href.startswith("/") and "?" in href:
            parts = urlsplit(href)
            query = tuple(parse_qsl(parts.query, keep_blank_values=True))
            found.setdefault((parts.path, tuple(k for k, _ in query)), (parts.path, query))
    return set(found.values())


def _elements(answer: Answer) -> list[tuple[str, dict[str, str | None]]]:
    scan = Scan()
    scan.feed(answer.body.decode("utf-8", "replace"))
    return [(tag, dict(attrs)) for tag, attrs in scan.elements]


@dataclass
class Reading:
    """Every page read, what it showed, what was wrong."""

    shown: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    problems: list[str] = field(default_factory=list)
    reads: int = 0
    html: set[str] = field(default_factory=set)


def read(
    world: World, label: str, path: str, headers: list[tuple[str, str]], markers: list[str], reading: Reading
) -> Answer:
    """GET ``path`` (a page of the route ``label``) and check it."""
    answer = call(world.app, "GET", path, headers=headers)
    reading.reads += 1
    where = label
    kind = answer.headers.get("content-type", "")
    if answer.status >= 500:
        reading.problems.append(f"GET {path[:100]}: {answer.status}")
    if kind.startswith("text/html"):
        reading.html.add(where)
        reading.problems += [f"GET {path[:100]}: {p}" for p in page_problems(where, answer, markers)]
        scan = Scan()
        scan.feed(answer.body.decode("utf-8", "replace"))
        text = "".join(scan.text)
        for marker in markers:
            if marker in text:
                reading.shown[marker].add(where)
    elif kind.startswith(("application/json", "text/event-stream")):
        if answer.headers.get("x-content-type-options") != "nosniff":
            reading.problems.append(f"GET {path[:100]}: {kind} without nosniff")
    elif answer.status < 300:
        reading.problems.append(f"GET {path[:100]}: an answer of another type, {kind!r}")
    return answer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    made = build_world(tmp_path_factory.mktemp("pages"), node=NODE)
    yield made
    made.close()


def test_planted_html_and_script_appear_only_as_text_on_every_page(world: World) -> None:
    """HTML, script, javascript URLs, a closing </script> and bidirectional controls,
    planted through real requests in every field the pages render, appear only as text on
    every page (signed in or not), and every page has a CSP without unsafe-inline."""
    planting = plant(world, world.data.parent)
    markers = [p.marker for p in planting.fields] + ["N01", "Q01", "H01", "U01"]
    signed_in = [("host", "testserver"), ("cookie", console_cookie(world))]
    anyone = [("host", "testserver")]
    reading = Reading()
    routes = pages(world.app)
    assert {"/console", "/lineage", "/health", "/proofs"} <= {r.path for r in routes}
    hostile = payloads("Q01")

    def label(target: str) -> str:  # the page's route, for the figures
        return urlsplit(target).path.replace(planting.execution, "{execution_id}")

    for route in routes:
        concrete = route.path.replace("{execution_id}", planting.execution)
        for headers in (signed_in, anyone):
            first = read(world, route.path, concrete, headers, markers, reading)
            # Its own query parameters, each given every payload; a hostile path parameter.
            names = sorted(query_names(first) | {p.name for p in route.dependant.query_params})
            for value in hostile.values():
                targets = [f"{concrete}?{urlencode(dict.fromkeys(names, value))}"] if names else []
                if "{execution_id}" in route.path:
                    targets.append(
                        route.path.replace("{execution_id}", quote(value.replace("Q01", "U01"), safe=""))
                    )
                # Each link of the page with one of its parameters hostile, the others as
                # the page gave them (a confirmation's target, with a real action).
                for path, query in sorted(links(first)):
                    for i in range(len(query)):
                        mutated = [(k, value if j == i else v) for j, (k, v) in enumerate(query)]
                        targets.append(f"{path}?{urlencode(mutated)}")
                for target in targets:
                    read(world, label(target), target, headers, markers, reading)
        # The Host header (the origin a page may name).
        host = [("host", "x" + payloads("H01")["attribute"].replace(" ", "")), signed_in[1]]
        read(world, route.path, concrete, host, markers, reading)
    assert not reading.problems, "\n".join(reading.problems[:12])
    # Each field the pages render is shown, as text, on some page; arguments on none.
    accepted = [p for p in planting.fields if p.status < 300]
    refused = [p for p in planting.fields if p.status >= 400]
    assert {p.name for p in refused} == REFUSED, [(p.name, p.status) for p in refused]
    missing = [p.name for p in accepted if p.shown and not reading.shown[p.marker]]
    assert not missing, missing
    leaked = [p.name for p in accepted if not p.shown and reading.shown[p.marker]]
    assert not leaked, leaked
    assert reading.shown["N01"], "the node name is on no page"
    record(
        "inputs-page-fields",
        section="Inputs tried",
        summary=[
            f"{len(planting.fields)} fields planted through real requests with HTML, script, javascript: URLs, "
            f"</script> and bidirectional controls; the {len(routes)} page routes "
            f"read {reading.reads} times, signed in and not, with hostile query parameters, path parameters and "
            "Host: every payload only as text, no event handler, javascript: link, inline script or acting "
            "bidirectional control, a CSP without unsafe-inline on every page",
        ],
        columns=["field", "planted", "shown as text on"],
        rows=[
            [
                p.name,
                f"refused ({p.status})" if p.status >= 400 else "kept",
                ", ".join(sorted(reading.shown[p.marker]))
                or ("never (committed, not shown)" if p.status < 400 else "-"),
            ]
            for p in planting.fields
        ]
        + [
            [name, how, ", ".join(sorted(reading.shown[marker])) or "-"]
            for name, how, marker in (
                ("node name", "the governor's --node", "N01"),
                ("query parameters of each page's forms and links", "sent with each page", "Q01"),
                ("path parameter", "sent with each page", "U01"),
                ("Host header", "sent with each page", "H01"),
            )
        ],
    )
