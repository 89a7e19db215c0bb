/* proctor proof viewer: warrants, Biscuit tokens signed with Ed25519
 * (authorization/tokens.py, attenuation.py, warrants.py verify_warrant).
 *
 * No Datalog engine runs here. What a warrant can hold is narrow, and this reads
 * exactly that: the authority block's facts (the claims, read from the authority
 * block only, as the Python authorizer's default scope does) and its two validity
 * checks, and appended blocks only in the shapes proctor's attenuation writes
 * (attenuation.py, steps 1-3), which are then evaluated directly. Anything else is
 * refused (fail closed): an authority block with rules or other checks, a sealed token,
 * a third-party block.
 */
(function (P) {
  "use strict";
  const StepError = P.StepError;
  const MAX_TOKEN_CHARS = 16 * 1024;
  const MAX_BLOCKS = 8;

  // Biscuit specification, "Symbols": the default table, indices 0-27; a token's own
  // symbols start at 1024 and run on across its (first-party) blocks.
  const DEFAULT_SYMBOLS = (
    "read write resource operation right time role owner tenant namespace user team service admin " +
    "email group member ip_address client client_ip domain path version cluster node hostname nonce query"
  ).split(" ");

  // --- protobuf (biscuit schema.proto), only what a token uses ---------------------------

  function fields(buf, what) {
    const out = [];
    let i = 0;
    const varint = () => {
      let v = 0n;
      for (let shift = 0n; shift < 70n; shift += 7n) {
        if (i >= buf.length) throw new StepError(`${what}: ends inside a field (truncated)`);
        const b = buf[i++];
        v |= BigInt(b & 0x7f) << shift;
        if (b < 0x80) return v;
      }
      throw new StepError(`${what}: a varint longer than 10 bytes`);
    };
    while (i < buf.length) {
      const tag = varint();
      const n = Number(tag >> 3n);
      const wire = Number(tag & 7n);
      if (wire === 0) out.push([n, varint()]);
      else if (wire === 2) {
        const len = Number(varint());
        if (len > buf.length - i) throw new StepError(`${what}: ends inside field ${n} (truncated)`);
        out.push([n, buf.subarray(i, i + len)]);
        i += len;
      } else throw new StepError(`${what}: unexpected wire type ${wire} in field ${n}`);
    }
    return out;
  }
  const all = (fs, n) => fs.filter((f) => f[0] === n).map((f) => f[1]);
  function one(fs, n, what, optional) {
    const v = all(fs, n);
    if (v.length > 1 || (!optional && v.length === 0)) throw new StepError(`${what}: expected one field ${n}, found ${v.length}`);
    return v[0];
  }
  const u32le = (n) => Uint8Array.of(n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255);
  const tag = (s) => P.utf8(s);

  function publicKey(buf) {
    const fs = fields(buf, "public key");
    const alg = Number(one(fs, 1, "public key algorithm", true) ?? 0n);
    const key = one(fs, 2, "public key");
    if (alg !== 0 || key.length !== 32) throw new StepError(`expected an Ed25519 next key, found algorithm ${alg} with ${key.length} bytes`);
    return { alg, key };
  }

  /** tokens.py open_token: size, base64url, structure, then the signature chain. */
  async function openToken(token, root) {
    // Step 1: the size before anything is parsed.
    if (typeof token !== "string" || token.length > MAX_TOKEN_CHARS) throw new StepError(`expected a token of at most ${MAX_TOKEN_CHARS} characters`);
    // Step 2: base64url, canonical.
    const raw = P.b64urlDecode(token, "token");
    // Step 3: the outer message (Biscuit: rootKeyId 1, authority 2, blocks 3, proof 4).
    const top = fields(raw, "token");
    for (const [n, v] of top) {
      if (!(n === 1 && typeof v === "bigint") && !([2, 3, 4].includes(n) && typeof v !== "bigint")) throw new StepError(`token: unexpected field ${n}`);
    }
    const signed = [one(top, 2, "token authority"), ...all(top, 3)];
    const proof = one(top, 4, "token proof");
    if (signed.length > MAX_BLOCKS) throw new StepError(`expected at most ${MAX_BLOCKS} blocks, found ${signed.length}`);
    // Step 4: every block's signature chains to the root key (Biscuit specification,
    // "Signature"; format v0 for version 0, v1 — which commits to the previous
    // signature — for version 1).
    let key = root;
    let prevSig = null;
    const blocks = [];
    for (let i = 0; i < signed.length; i++) {
      const fs = fields(signed[i], `block ${i}`);
      const payload = one(fs, 1, `block ${i} payload`);
      const next = publicKey(one(fs, 2, `block ${i} next key`));
      const sig = one(fs, 3, `block ${i} signature`);
      if (one(fs, 4, `block ${i}`, true) !== undefined) throw new StepError(`attenuation block ${i}: signed by a third party`);
      const version = Number(one(fs, 5, `block ${i} version`, true) ?? 0n);
      let message;
      if (version === 0) message = P.concat(payload, u32le(next.alg), next.key);
      else if (version === 1) {
        message = P.concat(
          tag("\0BLOCK\0\0VERSION\0"), u32le(1), tag("\0PAYLOAD\0"), payload, tag("\0ALGORITHM\0"), u32le(next.alg),
          tag("\0NEXTKEY\0"), next.key, ...(prevSig ? [tag("\0PREVSIG\0"), prevSig] : [])
        );
      } else throw new StepError(`block ${i}: unknown signature version ${version}`);
      if (sig.length !== 64 || !(await P.ed25519Verify(key, sig, message))) {
        throw new StepError(`the token was not signed by the root key, or was altered (block ${i})`);
      }
      blocks.push(payload);
      key = next.key;
      prevSig = sig;
    }
    // The proof: the secret of the last next key (an unsealed token, as proctor writes).
    const pf = fields(proof, "token proof");
    const secret = one(pf, 1, "token proof next secret", true);
    if (secret === undefined) throw new StepError("a sealed token (proctor's warrants are never sealed)");
    if (secret.length !== 32 || !P.equalBytes(await P.ed25519PublicOf(secret), key)) {
      throw new StepError("the token was not signed by the root key, or was altered (its proof)");
    }
    return blocks;
  }

  // --- Datalog terms of a block -------------------------------------------------------

  function term(buf, sym) {
    const fs = fields(buf, "term");
    if (fs.length !== 1) throw new StepError(`a term with ${fs.length} values`);
    const [n, v] = fs[0];
    switch (n) {
      case 1: return { var: sym(v) };
      case 2: return { int: BigInt.asIntN(64, v) };
      case 3: return { str: sym(v) };
      case 4: return { date: v };
      case 6: return { bool: v !== 0n };
      default: throw new StepError(`a term of kind ${n}, which proctor's warrants do not hold`);
    }
  }
  function predicate(buf, sym) {
    const fs = fields(buf, "predicate");
    return { name: sym(one(fs, 1, "predicate name")), terms: all(fs, 2).map((t) => term(t, sym)) };
  }

  function readBlock(payload, index, table) {
    const fs = fields(payload, `block ${index}`);
    for (const [n] of fs) if (![1, 2, 3, 4, 5, 6].includes(n)) throw new StepError(`block ${index}: field ${n} (a scope or public key), which proctor writes none of`);
    for (const s of all(fs, 1)) table.push(P.fromUtf8(s, "symbol"));
    const sym = (i) => {
      const k = Number(i);
      const s = k < 1024 ? DEFAULT_SYMBOLS[k] : table[k - 1024];
      if (s === undefined) throw new StepError(`block ${index}: unknown symbol ${k}`);
      return s;
    };
    const facts = all(fs, 4).map((f) => predicate(one(fields(f, "fact"), 1, "fact"), sym));
    const rules = all(fs, 5);
    const checks = all(fs, 6).map((c) => {
      const cf = fields(c, "check");
      if (Number(one(cf, 2, "check kind", true) ?? 0n) !== 0) throw new StepError(`block ${index}: a check of another kind than 'check if'`);
      return all(cf, 1).map((q) => {
        const rf = fields(q, "rule");
        if (all(rf, 4).length) throw new StepError(`block ${index}: a rule with a scope`);
        return {
          head: predicate(one(rf, 1, "rule head"), sym),
          body: all(rf, 2).map((p) => predicate(p, sym)),
          exprs: all(rf, 3).map((e) => all(fields(e, "expression"), 1).map((op) => {
            const of = fields(op, "op");
            const [[k, v]] = of;
            if (of.length !== 1) throw new StepError("an expression op");
            if (k === 1) return { value: term(v, sym) };
            if (k === 3) return { binary: Number(one(fields(v, "binary op"), 1, "binary kind")) };
            throw new StepError(`block ${index}: an expression with unary or closure operators`);
          })),
        };
      });
    });
    return { facts, rules, checks };
  }

  // --- the accepted shapes (attenuation.py) -------------------------------------------

  const LESS_THAN = 0;
  const EQUALS = [4, 21]; // Equal, and HeterogeneousEqual (Datalog 3.3's "==")
  const VARIABLE = { resource: "r", args_digest: "d", zone: "z" };
  const simpleQuery = (q, name, v) =>
    q.head.name === "query" && q.head.terms.length === 0 && q.body.length === 1 && q.body[0].name === name &&
    q.body[0].terms.length === 1 && q.body[0].terms[0].var === v;

  /** One check of an appended block read as one of the accepted shapes, or a refusal. */
  function attenuation(check, index) {
    const bad = () => new StepError(`attenuation block ${index}: a statement of another shape; expected only the checks proctor's attenuation writes (time, req_resource, req_args_digest, req_zone)`);
    // check if time($t), $t < DATE;
    if (check.length === 1 && simpleQuery(check[0], "time", "t") && check[0].exprs.length === 1) {
      const e = check[0].exprs[0];
      if (e.length === 3 && e[0].value && e[0].value.var === "t" && e[1].value && e[1].value.date !== undefined && e[2].binary === LESS_THAN) {
        return { kind: "time", before: e[1].value.date };
      }
      throw bad();
    }
    // check if req_X($v), $v == "TEXT" or inspection(true);
    if (check.length === 2) {
      const [q, alt] = check;
      for (const [name, v] of Object.entries(VARIABLE)) {
        if (!simpleQuery(q, "req_" + name, v) || q.exprs.length !== 1) continue;
        const e = q.exprs[0];
        const inspection = alt.head.name === "query" && alt.head.terms.length === 0 && alt.exprs.length === 0 && alt.body.length === 1 &&
          alt.body[0].name === "inspection" && alt.body[0].terms.length === 1 && alt.body[0].terms[0].bool === true;
        if (inspection && e.length === 3 && e[0].value && e[0].value.var === v && e[1].value && typeof e[1].value.str === "string" &&
          !e[1].value.str.includes('"') && EQUALS.includes(e[2].binary)) {
          return { kind: name, value: e[1].value.str };
        }
      }
    }
    throw bad();
  }

  const CLAIMS = {
    warrant_version: "int", warrant: "str", principal: "str", action: "str", resource: "str", args_digest: "str",
    zone: "str", executable_digest: "str", not_before: "date", expires: "date", lease_ttl_ms: "int",
    decision_index: "int", parent: "str",
  };

  /** The authority block's claims: exactly one value of each (warrants.py _claims). */
  function claimsOf(block) {
    if (block.rules.length) throw new StepError("expected no rules in the authority block");
    const claims = {};
    const obligations = {};
    for (const f of block.facts) {
      if (f.name === "obligation") {
        const [n, v] = f.terms;
        if (f.terms.length !== 2 || typeof n.str !== "string") throw new StepError("expected obligation names to be strings");
        if (n.str in obligations) throw new StepError(`obligation ${JSON.stringify(n.str)} appears twice in the authority block`);
        if (v === undefined || (v.str === undefined && v.int === undefined && v.bool === undefined)) throw new StepError("expected obligation values to be int, str or bool");
        obligations[n.str] = v.str ?? (v.int !== undefined ? Number(v.int) : v.bool);
        continue;
      }
      const kind = CLAIMS[f.name];
      if (!kind) continue; // facts no claim reads
      if (f.terms.length !== 1 || f.terms[0][kind] === undefined) throw new StepError(`expected ${f.name} to be a ${kind}`);
      if (f.name in claims) throw new StepError("expected exactly one value of each claim in the authority block, found several");
      const v = f.terms[0][kind];
      claims[f.name] = kind === "str" ? v : Number(v);
    }
    for (const name of Object.keys(CLAIMS)) {
      if (!(name in claims)) throw new StepError(`expected exactly one value of each claim in the authority block, found no ${name}`);
    }
    if (claims.warrant_version !== 1) throw new StepError(`expected warrant_version 1, found ${claims.warrant_version}`);
    // Its checks: the two of the validity window (warrants.py _AUTHORITY), enforced below
    // as not_before <= now < expires (step 7), which is what they state.
    if (block.checks.length !== 2) throw new StepError(`expected the authority block's two validity checks, found ${block.checks.length}`);
    validClaims(claims, obligations);
    return {
      warrantId: claims.warrant, principal: claims.principal, action: claims.action, resource: claims.resource,
      argsDigest: claims.args_digest, zone: claims.zone, executableDigest: claims.executable_digest,
      notBefore: claims.not_before, expires: claims.expires, leaseTtlMs: claims.lease_ttl_ms,
      decisionIndex: claims.decision_index, parent: claims.parent, obligations,
    };
  }

  // claims.py WarrantClaims.__post_init__ (reason "malformed").
  const WARRANT_ID = /^wr_[A-Za-z0-9_-]{1,64}$/;
  const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  const MAX_TIME = 253402300799;
  function validClaims(c, obligations) {
    const bad = (m) => new StepError(`the warrant's claims are malformed: ${m}`);
    const int = (name, v, low, high) => {
      if (!Number.isSafeInteger(v) || v < low || v > high) throw bad(`${name}: expected an integer in [${low}, ${high}], found ${v}`);
    };
    if (!WARRANT_ID.test(c.warrant)) throw bad(`warrant_id: expected wr_ and 1-64 of [A-Za-z0-9_-], found ${P.short(c.warrant, 80)}`);
    if (!NAME.test(c.principal)) throw bad(`principal: expected a principal name, found ${P.short(c.principal, 80)}`);
    if (!["exec", "mcp.call", "tool.call"].includes(c.action)) throw bad(`action: expected exec, mcp.call or tool.call, found ${P.short(c.action, 40)}`);
    const r = c.resource;
    if (!r || r.length > 4096 || /[\x00-\x1f\x7f]/.test(r)) throw bad("resource: expected 1 to 4096 characters without control characters");
    if (c.action === "exec" && !r.startsWith("/")) throw bad(`resource: expected an absolute path for exec, found ${P.short(r, 80)}`);
    if (c.action === "mcp.call" && !/^[^/]+\/./.test(r)) throw bad(`resource: expected server/tool for mcp.call, found ${P.short(r, 80)}`);
    if (!P.DIGEST.test(c.args_digest)) throw bad(`args_digest: expected sha256:<64 hex>, found ${P.short(c.args_digest, 80)}`);
    if (c.zone !== "" && !NAME.test(c.zone)) throw bad(`zone: expected '' or a name, found ${P.short(c.zone, 80)}`);
    if (c.executable_digest !== "" && !P.DIGEST.test(c.executable_digest)) throw bad("executable_digest: expected '' or sha256:<64 hex>");
    const names = Object.keys(obligations);
    if (names.length > 32) throw bad(`obligations: expected at most 32, found ${names.length}`);
    for (const n of names) {
      const v = obligations[n];
      if (!/^[a-z][a-z0-9_]{0,63}$/.test(n)) throw bad(`obligations: expected names of [a-z0-9_] starting with a letter, found ${P.short(n, 80)}`);
      if (typeof v === "number") int(`obligations.${n}`, v, -P.MAX_SAFE, P.MAX_SAFE);
      else if (typeof v === "string" && v.length > 1024) throw bad(`obligations.${n}: expected at most 1024 characters`);
      else if (typeof v !== "string" && typeof v !== "boolean") throw bad(`obligations.${n}: expected int, str or bool`);
    }
    int("not_before", c.not_before, 0, MAX_TIME);
    int("expires", c.expires, c.not_before + 1, MAX_TIME);
    int("lease_ttl_ms", c.lease_ttl_ms, 1, P.MAX_SAFE);
    int("decision_index", c.decision_index, 0, P.MAX_SAFE);
    if (c.parent !== "" && !WARRANT_ID.test(c.parent)) throw bad(`parent: expected '' or a warrant id, found ${P.short(c.parent, 80)}`);
    if (c.parent === c.warrant) throw bad("parent: a warrant cannot be its own parent");
  }

  /**
   * verify_warrant(token, root_public_key, now, request, revoked=∅), steps 1-9.
   * `request`: {action, resource, argsDigest, zone, executableDigest} or null (inspection).
   */
  P.verifyWarrant = async function (token, root, now, request) {
    const payloads = await openToken(token, root); // steps 1-4
    const table = [];
    const blocks = payloads.map((p, i) => readBlock(p, i, table));
    // Step 4b: appended blocks only in the accepted shapes.
    const bounds = { expires: null, resource: [], args_digest: [], zone: [] };
    for (let i = 1; i < blocks.length; i++) {
      const b = blocks[i];
      if (b.facts.length || b.rules.length || !b.checks.length || b.checks.length > 8) {
        throw new StepError(`attenuation block ${i}: facts, rules or too many or no checks; expected only proctor's attenuation checks`);
      }
      for (const c of b.checks) {
        const a = attenuation(c, i);
        if (a.kind === "time") {
          const t = Number(a.before);
          bounds.expires = bounds.expires === null ? t : Math.min(bounds.expires, t);
        } else bounds[a.kind].push(a.value);
      }
    }
    const claims = claimsOf(blocks[0]); // step 5
    // Step 6: nothing is revoked offline (as check.py: revoked=frozenset()).
    // Step 7: not_before <= now < expires, the earliest of every time bound.
    if (now < claims.notBefore) throw new StepError(`warrant ${claims.warrantId} is valid from ${claims.notBefore}, now is ${now}`);
    const expires = bounds.expires === null ? claims.expires : Math.min(claims.expires, bounds.expires);
    if (now >= expires) throw new StepError(`warrant ${claims.warrantId} expired at ${expires}, now is ${now}`);
    // Step 8: the request is within the claims.
    if (request) {
      const mism = [];
      if (request.action !== claims.action) mism.push("action");
      if (request.resource !== claims.resource) mism.push("resource");
      if (request.argsDigest !== claims.argsDigest) mism.push("args_digest");
      if (!["", request.zone].includes(claims.zone)) mism.push("zone");
      if (!["", request.executableDigest].includes(claims.executableDigest)) mism.push("executable_digest");
      if (mism.length) throw new StepError(`warrant ${claims.warrantId} does not cover this request: ${mism.join(", ")} differ`);
      // Step 9: the attenuation checks on the request (inspection(true) passes them
      // when there is no request).
      const asked = { resource: request.resource, args_digest: request.argsDigest, zone: request.zone };
      for (const k of ["resource", "args_digest", "zone"]) {
        if (bounds[k].some((v) => v !== asked[k])) throw new StepError(`warrant ${claims.warrantId}: an attenuation check on ${k} fails (scope)`);
      }
    }
    return claims;
  };
})((globalThis.ProctorProofs = globalThis.ProctorProofs || {}));
