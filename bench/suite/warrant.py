"""Warrants: mint, attenuate, verify, beside a plain JWT delegation chain (PyJWT, EdDSA).

proctor's warrant is a Biscuit token (Ed25519): the governor mints it, its holder narrows
it offline by appending a block of checks (no key needed), and the enforcer verifies the
whole chain against the governor's public key and the request about to run.

The JWT chain does the same job the plain way, with the same claims and Ed25519 keys:
the governor's JWT carries the holder's public key (``cnf``); to narrow it, the holder
verifies it and signs a child JWT naming it as ``parent`` with an earlier expiry; the
verifier checks the parent with the governor's key, the child with the key the parent
names, that the child only narrows, and the request against the claims.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.lib import Context, Member, Record, time_calls, version_of
from proctor.authorization.warrants import (
    WarrantClaims,
    WarrantRequest,
    args_digest,
    attenuate_warrant,
    mint_warrant,
    new_warrant_id,
    verify_warrant,
)

ARGV = ("pg_dump", "db1")


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def claims(now: int) -> WarrantClaims:
    return WarrantClaims(
        warrant_id=new_warrant_id(), principal="alice", action="exec", resource="/usr/bin/pg_dump",
        args_digest=args_digest(ARGV), zone="prod", executable_digest="sha256:" + "e" * 64,
        obligations={"max_duration_s": "60", "no_network": "true"}, not_before=now, expires=now + 300,
        lease_ttl_ms=3000, decision_index=42, parent="",
    )  # fmt: skip


class JwtChain:
    """The JWT side: the same claims, Ed25519 (EdDSA) signatures, delegation by a child
    JWT that the holder signs with the key its parent names."""

    def __init__(self, jwt: Any) -> None:
        self.jwt = jwt
        self.root = Ed25519PrivateKey.generate()
        self.root_public = self.root.public_key()
        self.holder = Ed25519PrivateKey.generate()
        self.holder_jwk = base64.urlsafe_b64encode(_raw(self.holder.public_key())).decode()

    def mint(self, c: WarrantClaims) -> str:
        doc = {
            "jti": c.warrant_id, "sub": c.principal, "act": c.action, "res": c.resource,
            "args": c.args_digest, "zone": c.zone, "exe": c.executable_digest, "obl": dict(c.obligations),
            "nbf": c.not_before, "exp": c.expires, "lease_ms": c.lease_ttl_ms, "idx": c.decision_index,
            "cnf": {"kty": "OKP", "crv": "Ed25519", "x": self.holder_jwk},
        }  # fmt: skip
        return str(self.jwt.encode(doc, self.root, algorithm="EdDSA"))

    def _root_claims(self, token: str, now: int) -> dict[str, Any]:
        return dict(self.jwt.decode(token, self.root_public, algorithms=["EdDSA"], leeway=0,
                                    options={"require": ["exp", "nbf"]}))  # fmt: skip

    def attenuate(self, token: str, expires: int, now: int) -> str:
        self._root_claims(token, now)  # as proctor's: nothing is appended to a forgery
        return str(self.jwt.encode({"parent": token, "exp": expires}, self.holder, algorithm="EdDSA"))

    def verify(self, token: str, request: WarrantRequest, now: int) -> dict[str, Any]:
        parent_token = self.jwt.decode(token, options={"verify_signature": False}).get("parent")
        if parent_token is None:
            found = self._root_claims(token, now)
        else:
            found = self._root_claims(parent_token, now)
            holder = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(found["cnf"]["x"]))
            child = self.jwt.decode(token, holder, algorithms=["EdDSA"], options={"require": ["exp"]})
            if child["exp"] > found["exp"]:
                raise ValueError("the child widens the expiry")
        wanted = (found["act"], found["res"], found["args"], found["zone"], found["exe"])
        if wanted != (request.action, request.resource, request.args_digest, request.zone,
                      request.executable_digest):  # fmt: skip
            raise ValueError("the request is not the one the token authorizes")
        return found


def measure(ctx: Context) -> list[Record]:
    samples, seconds = ctx.config["samples"], ctx.config["seconds"]
    now = int(time.time())
    seed = Ed25519PrivateKey.generate()
    root_private = seed.private_bytes_raw()
    root_public = _raw(seed.public_key())
    request = WarrantRequest("exec", "/usr/bin/pg_dump", args_digest(ARGV), "prod", "sha256:" + "e" * 64)
    out: list[Record] = []
    chain: JwtChain | None = None
    why = ""
    try:
        import jwt  # noqa: PLC0415 - the bench extra (pip install -e '.[bench]')

        chain = JwtChain(jwt)
    except ImportError as e:
        why = f"PyJWT not installed ({e}); pip install -e '.[bench]'"
    peer = f"PyJWT {version_of('PyJWT')}"

    ctx.status("mint")
    ours = time_calls(lambda i: mint_warrant(claims(now), root_private_key=root_private),
                      samples=samples, seconds=seconds, warmup=20)  # fmt: skip
    token = mint_warrant(claims(now), root_private_key=root_private)
    narrowed = attenuate_warrant(token, root_public_key=root_public, expires=now + 60)
    verify_warrant(narrowed, root_public_key=root_public, now=now, request=request)
    figures: list[tuple[str, str, list[float], Any]] = [("mint", "mint", ours, None)]
    ctx.status("attenuate")
    figures.append(("attenuate (one narrowing, offline)", "attenuate", time_calls(
        lambda i: attenuate_warrant(token, root_public_key=root_public, expires=now + 60),
        samples=samples, seconds=seconds, warmup=20), None))  # fmt: skip
    ctx.status("verify")
    figures.append(("verify for a request", "verify", time_calls(
        lambda i: verify_warrant(token, root_public_key=root_public, now=now, request=request),
        samples=samples, seconds=seconds, warmup=20), None))  # fmt: skip
    figures.append(("verify an attenuated chain of 2", "verify chain", time_calls(
        lambda i: verify_warrant(narrowed, root_public_key=root_public, now=now, request=request),
        samples=samples, seconds=seconds, warmup=20), None))  # fmt: skip
    if chain is not None:
        jtoken = chain.mint(claims(now))
        jnarrowed = chain.attenuate(jtoken, now + 60, now)
        chain.verify(jnarrowed, request, now)
        jwt_calls = {
            "mint": lambda i: chain.mint(claims(now)),
            "attenuate": lambda i: chain.attenuate(jtoken, now + 60, now),
            "verify": lambda i: chain.verify(jtoken, request, now),
            "verify chain": lambda i: chain.verify(jnarrowed, request, now),
        }
    for label, group, values, _ in figures:
        out.append(ctx.record(f"proctor warrant (Biscuit): {label}", values, "µs", group=group,
                              series="proctor warrant"))  # fmt: skip
        if chain is None:
            out.append(
                ctx.unavailable(f"JWT chain: {label}", "µs", why, group=group, baseline=True, peer=peer)
            )
            continue
        ctx.status(f"JWT {group}")
        theirs = time_calls(jwt_calls[group], samples=samples, seconds=seconds, warmup=20)
        out.append(ctx.record(f"JWT chain (PyJWT EdDSA): {label}", theirs, "µs", group=group,
                              series="JWT chain", baseline=True, peer=peer))  # fmt: skip
    for label, ours_token, their_token in (("token size", token, chain and jtoken),
                                      ("token size, attenuated once", narrowed, chain and jnarrowed)):  # fmt: skip
        out.append(ctx.record(f"proctor warrant: {label}", None, "bytes", group=label, median=float(len(ours_token)),
                              p99=float(len(ours_token))))  # fmt: skip
        if their_token:
            out.append(ctx.record(f"JWT chain: {label}", None, "bytes", group=label, median=float(len(their_token)),
                                  p99=float(len(their_token)), baseline=True, peer=peer))  # fmt: skip
        else:
            out.append(ctx.unavailable(f"JWT chain: {label}", "bytes", "PyJWT not installed", group=label,
                                       baseline=True, peer=peer))  # fmt: skip
    return out


MEMBER = Member(
    name="warrant",
    title="Warrants: mint, attenuate, verify vs a JWT chain",
    quick={"samples": 2000, "seconds": 0.5},
    full={"samples": 20000, "seconds": 5.0},
    run=measure,
    meaning=(
        "What the capability an execution carries costs. A warrant is minted once per "
        "authorization and verified by the enforcer before the process starts and at each lease "
        "renewal. Biscuit's attenuation needs no key (the holder narrows what it holds), which a "
        "JWT chain can only do by giving every holder a signing key of its own."
    ),
)
