"""The public proof viewer (``/proofs``): receipts and checkpoints verified in the browser.

The page only serves code: the verification runs in the visitor's browser
(``static/proofs-*.js``, a port of :mod:`proctor.receipts.check` step by step), with
SHA-256 and Ed25519 from WebCrypto, or from the vendored ``@noble/ed25519`` and
``@noble/hashes`` where the browser lacks them (``static/vendor/noble``). Nothing a
visitor pastes is sent to the server. Anyone may load it, as anyone may read the log.

``GET /proofs/standalone.html`` is the same viewer as one file to save and open from
disk (``file://``): every script and style inlined, and a Content-Security-Policy (in
the header and in a ``<meta>`` element, for a file has no headers) that allows exactly
those inline scripts by their SHA-256 (``'sha256-…'``), never ``'unsafe-inline'``. It
holds nothing of the governor that serves it, so every governor of one version serves
the same bytes (a SHA-256 to publish and compare).

The vendored noble modules are ES modules; :func:`noble_bundle` turns them into the one
classic script ``static/vendor/noble/noble.js`` (each module wrapped in a function, its
relative imports and exports rewritten, nothing else changed) that both pages load. A
unit test keeps the committed bundle equal to what :func:`noble_bundle` makes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from proctor.console.web import page, secure, templates

__all__ = [
    "NOBLE_MODULES",
    "SCRIPTS",
    "STYLES",
    "noble_bundle",
    "proofs",
    "router",
    "standalone",
    "standalone_csp",
]

router = APIRouter(include_in_schema=False)

#: The viewer's scripts, in load order (paths under ``static/``).
SCRIPTS = (
    "vendor/noble/noble.js",
    "proofs-crypto.js",
    "proofs-formats.js",
    "proofs-warrant.js",
    "proofs-witness.js",
    "proofs-check.js",
    "proofs.js",
)
#: Its styles (paths under ``static/``).
STYLES = ("app.css", "proofs.css")

#: The vendored ES modules, in dependency order: (module name, path under
#: ``static/vendor/noble``). @noble/hashes 2.4.0 (sha2 and what it imports) and
#: @noble/ed25519 3.2.0, verbatim from npm.
NOBLE_MODULES = (
    ("utils", "hashes/utils.js"),
    ("_u64", "hashes/_u64.js"),
    ("_md", "hashes/_md.js"),
    ("sha2", "hashes/sha2.js"),
    ("ed25519", "ed25519/index.js"),
)

_IMPORT_NAMES = re.compile(r'^import \{([^}]*)\} from "\./(\w+)\.js";$', re.MULTILINE)
_IMPORT_ALL = re.compile(r'^import \* as (\w+) from "\./(\w+)\.js";$', re.MULTILINE)
_EXPORT_LIST = re.compile(r"^export \{([^}]*)\};?[ \t]*$", re.MULTILINE)
_EXPORT_DECL = re.compile(r"^export (async function|function|const|let|class) (\w+)", re.MULTILINE)
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)

# What the viewer uses of the libraries: SHA-256, RFC 8032 Ed25519 verification
# (zip215: false, the strict rules OpenSSL applies on the Python side) and the public
# key of a seed (a warrant's proof), through one frozen object.
_GLUE = """globalThis.ProctorNoble = (function (ed, h) {
  "use strict";
  ed.hashes.sha512 = h.sha512;
  return Object.freeze({
    sha256: (bytes) => h.sha256(bytes),
    verify: (sig, msg, pub) => ed.verify(sig, msg, pub, { zip215: false }),
    publicOf: (seed) => ed.getPublicKey(seed),
  });
})(__noble.ed25519, __noble.sha2);
"""


def _static(path: str) -> str:
    return resources.files("proctor.console").joinpath("static", path).read_text(encoding="utf-8")


def _module(name: str, source: str) -> str:
    """One ES module as a function returning its exports."""
    exported: list[str] = []

    def names(m: re.Match[str]) -> str:
        pairs = [p.strip() for p in m.group(1).split(",") if p.strip()]
        exported.extend(pairs)
        return ""

    def imports(m: re.Match[str]) -> str:
        bound = ", ".join(p.strip().replace(" as ", ": ") for p in m.group(1).split(",") if p.strip())
        return f'const {{ {bound} }} = __noble["{m.group(2)}"];'

    body = _SOURCE_MAP.sub("", source)
    body = _IMPORT_NAMES.sub(imports, body)
    body = _IMPORT_ALL.sub(lambda m: f'const {m.group(1)} = __noble["{m.group(2)}"];', body)
    body = _EXPORT_LIST.sub(names, body)

    def declaration(m: re.Match[str]) -> str:
        exported.append(m.group(2))
        return f"{m.group(1)} {m.group(2)}"

    body = _EXPORT_DECL.sub(declaration, body)
    if re.search(r"^(export |import .* from \"\.)", body, re.MULTILINE):
        raise ValueError(f"noble module {name}: an import or export this bundler does not rewrite")
    # "a as b" exports the local a under the name b: in an object literal, b: a.
    members = ", ".join(
        (f"{p.split(' as ')[1]}: {p.split(' as ')[0]}" if " as " in p else p) for p in exported
    )
    return f'__noble["{name}"] = (function () {{\n"use strict";\n{body}\nreturn {{ {members} }};\n}})();\n'


def noble_bundle() -> str:
    """The vendored noble modules as one classic script defining ``ProctorNoble``.

    Returns:
        The text of ``static/vendor/noble/noble.js``.
    """
    parts = [
        "/* @noble/hashes 2.4.0 and @noble/ed25519 3.2.0 (MIT, (c) Paul Miller), from npm;\n"
        " * generated by proctor.console.proofs_pages.noble_bundle from the verbatim files\n"
        " * beside this one (see VERSION). Do not edit. */\n",
        "(function () {\n",
        "const __noble = {};\n",
    ]
    for name, path in NOBLE_MODULES:
        parts.append(_module(name, _static(f"vendor/noble/{path}")))
    parts += [_GLUE, "})();\n"]
    return "".join(parts)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def standalone_csp(scripts: list[str], styles: list[str]) -> str:
    """The saved viewer's policy: its inline scripts and styles by hash, nothing else.

    Args:
        scripts: the text of each inline ``<script>``.
        styles: the text of each inline ``<style>``.

    Returns:
        The Content-Security-Policy.
    """
    return (
        f"default-src 'none'; script-src {' '.join(_hash(s) for s in scripts)}; "
        f"style-src {' '.join(_hash(s) for s in styles)}; img-src data:; "
        "form-action 'none'; base-uri 'none'; object-src 'none'"
    )


def _log_key(request: Request) -> str:
    # A convenience for the visitor (a button fills it in); the page says that trusting
    # it is trusting this server, and that the key should come from elsewhere.
    governor = getattr(request.app.state, "governor", None)
    try:
        return str(governor.log.verifier_key()) if governor is not None else ""
    except Exception:  # noqa: BLE001 -- the hint is optional; the page works without it
        return ""


@router.get("/proofs", response_class=HTMLResponse)
def proofs(request: Request) -> HTMLResponse:
    """The proof viewer, its scripts loaded from ``/static``."""
    return page(request, "proofs.html", {"scripts": SCRIPTS, "log_key": _log_key(request)})


@router.get("/proofs/standalone.html")
def standalone(request: Request) -> Response:
    """The proof viewer as one HTML file to save (a download): scripts and styles inline."""
    scripts = [_static(s) for s in SCRIPTS]
    styles = [_static(s) for s in STYLES]
    for text in scripts + styles:
        if "</script" in text.lower() or "</style" in text.lower():
            raise ValueError("an inlined asset would close its element early")
    csp = standalone_csp(scripts, styles)
    # No governor-specific content (not even this log's key): the file is the same bytes
    # from every governor of one proctor version, so its SHA-256 can be published and
    # compared out of band.
    html = templates.get_template("proofs_standalone.html").render(
        request=request, nav="/proofs", scripts=scripts, styles=styles, csp=csp, log_key=""
    )
    response = HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": csp,
            "Content-Disposition": 'attachment; filename="proctor-proofs.html"',
        },
    )
    return secure(response)
