"""The proof viewer's assets: the vendored noble bundle is what its generator makes from
the verbatim npm files, and the saved viewer's policy allows its inline code by hash only."""

from __future__ import annotations

import hashlib
from importlib import resources

from proctor.console.proofs_pages import NOBLE_MODULES, noble_bundle, standalone_csp

STATIC = resources.files("proctor.console").joinpath("static")

# SHA-256 of each vendored file as it is in the npm tarballs (@noble/hashes 2.4.0,
# @noble/ed25519 3.2.0): a change to a vendored file must be a deliberate one.
VENDORED = {
    "ed25519/index.js": "a4f631d1876b5d9e43a86cd71194ca27b5e1451edf4ba4db9a418f40a475569a",
    "hashes/sha2.js": "471746bba6ec4c6238ca41358d1d3b40b6ff31cf3363f0b4d550c649c1a8e83b",
    "hashes/_md.js": "60cf3010fda89e3e4d3f0e7ff1ce249e9c467f34b4fd41b6fd6101d9f69be763",
    "hashes/_u64.js": "b09da8c07fe8187c07649494cdb7cd0bcf13df90b506a9473d19e4d5f8c2e102",
    "hashes/utils.js": "037ad49adb78168b6b699598fd33f85f7877456b1d28b4d032e2a1a16807947c",
}


def test_the_committed_noble_bundle_is_generated_from_the_vendored_files() -> None:
    committed = STATIC.joinpath("vendor/noble/noble.js").read_text(encoding="utf-8")
    assert committed == noble_bundle(), "regenerate static/vendor/noble/noble.js with noble_bundle()"


def test_the_vendored_files_are_the_npm_releases_unchanged() -> None:
    assert {path for _, path in NOBLE_MODULES} == set(VENDORED)
    for path, digest in VENDORED.items():
        data = STATIC.joinpath("vendor/noble", path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, path


def test_the_saved_viewers_policy_names_each_inline_script_by_hash_and_nothing_else() -> None:
    csp = standalone_csp(["a()"], ["b{}"])
    # base64(SHA-256("a()")), as a browser hashes an inline script's text.
    assert "script-src 'sha256-qVpDBgj7bpq5hMAcGp3AOc79J3Y1Z4HvySTwKrWDoy4=';" in csp
    assert csp.startswith("default-src 'none'; ")
    assert "unsafe" not in csp
    assert "'self'" not in csp
