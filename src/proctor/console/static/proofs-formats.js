/* proctor proof viewer: the wire formats, each a port of the Python module named.
 *
 * C2SP signed-note (note.py), C2SP tlog-checkpoint (lineage/checkpoint.py), RFC 9162
 * inclusion proofs (lineage/merkle.py), lineage events (lineage/events.py), DSSE
 * (lineage/dsse.py), tlog-cosignature/v1 and tlog-policy (lineage/cosignature.py,
 * lineage/witness_policy.py), measurements (verification/measurement.py) and policy
 * bundle digests (policy/bundle.py). Every function throws StepError saying what was
 * expected and what was found.
 */
(function (P) {
  "use strict";
  const StepError = P.StepError;
  const short = (v, n) => {
    let s;
    try {
      s = typeof v === "string" ? JSON.stringify(v) : JSON.stringify(v) ?? String(v);
    } catch (e) {
      s = String(v);
    }
    return s.length > n ? s.slice(0, n) + "…" : s;
  };
  P.short = short;
  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  P.isObj = isObj;

  // --- C2SP signed-note (note.py) ----------------------------------------------------

  const SIG_PREFIX = "\u2014 "; // em dash, space
  const MAX_SIGNATURES = 100;
  const validKeyName = (n) => n.length > 0 && !/[\s+]/.test(n);

  async function keyId(name, type, pub) {
    // C2SP signed-note, "Signatures": SHA-256(name || 0x0A || type || key)[:4].
    return (await P.sha256(P.concat(P.utf8(name + "\n"), Uint8Array.of(type), pub))).slice(0, 4);
  }

  /** Parse a vkey `name+hexid+base64(type||key)` of signature type `type`. */
  async function parseVkey(text, type, what) {
    const t = String(text).trim();
    const a = t.indexOf("+");
    const b = a < 0 ? -1 : t.indexOf("+", a + 1);
    if (a < 0 || b < 0) throw new StepError(`expected a ${what} of 3 '+'-separated fields, found ${short(t, 60)}`);
    const name = t.slice(0, a);
    const idHex = t.slice(a + 1, b);
    if (!validKeyName(name)) throw new StepError(`${what}: expected a key name without spaces or '+', found ${short(name, 60)}`);
    if (!/^[0-9a-fA-F]{8}$/.test(idHex)) throw new StepError(`${what}: expected an 8-hex-digit key ID, found ${short(idHex, 20)}`);
    let data;
    try {
      data = lenientB64(t.slice(b + 1)); // note.py: any base64 that decodes (validate=True)
    } catch (e) {
      throw new StepError(`${what}: expected base64 key data`);
    }
    if (data.length !== 33 || data[0] !== type) {
      throw new StepError(`${what}: expected 0x0${type} followed by 32 key bytes, found ${data.length} bytes`);
    }
    const pub = data.slice(1);
    const id = P.fromHexStr(idHex.toLowerCase());
    const want = await keyId(name, type, pub);
    if (!P.equalBytes(id, want)) {
      throw new StepError(`${what}: key ID ${P.hex(id)} does not match its name and key (expected ${P.hex(want)})`);
    }
    return { name, id, pub, text: `${name}+${P.hex(id)}+${P.b64encode(data)}` };
  }
  P.parseLogKey = (text) => parseVkey(text, 0x01, "verifier key");
  P.parseCosignerKey = (text) => parseVkey(text, 0x04, "cosigner verifier key");

  function checkNoteText(text) {
    if (!text.endsWith("\n")) throw new StepError("expected note text ending in a newline");
    if (/[\x00-\x09\x0b-\x1f\x7f]/.test(text)) throw new StepError("expected note text without control characters");
  }

  /** C2SP signed-note: split, parse every line, verify the lines by `verifiers`. */
  P.openNote = async function (note, verifiers) {
    if (!verifiers.length) throw new StepError("no trusted verifier keys given; refusing to accept any note");
    // Step 1: the text and the signatures are separated by the last blank line.
    const split = note.lastIndexOf("\n\n");
    if (split < 0) throw new StepError("expected note text, a blank line, then signature lines; found no blank line");
    const text = note.slice(0, split + 1);
    const block = note.slice(split + 2);
    checkNoteText(text);
    if (!block.endsWith("\n")) throw new StepError("expected the signature block to end in a newline");
    const lines = block.slice(0, -1).split("\n");
    if (lines.length > MAX_SIGNATURES) throw new StepError(`expected at most ${MAX_SIGNATURES} signatures, found ${lines.length}`);
    const message = P.utf8(text);
    const verified = [];
    const unverified = [];
    for (const line of lines) {
      // Step 2: "— <name> <base64(key ID || signature)>".
      if (!line.startsWith(SIG_PREFIX)) throw new StepError(`expected a signature line starting with '— ', found ${short(line, 40)}`);
      const rest = line.slice(SIG_PREFIX.length);
      const sp = rest.lastIndexOf(" ");
      const name = sp < 0 ? "" : rest.slice(0, sp);
      if (sp < 0 || !validKeyName(name)) throw new StepError(`expected '— <key name> <base64>', found ${short(line, 80)}`);
      let raw;
      try {
        raw = lenientB64(rest.slice(sp + 1));
      } catch (e) {
        throw new StepError(`signature of ${short(name, 40)} is not base64`);
      }
      // One text per signature (RFC 4648 §3.5: zero pad bits), as note.py.
      if (P.b64encode(raw) !== rest.slice(sp + 1)) {
        throw new StepError(`signature of ${short(name, 40)}: expected canonical base64, found ${short(rest.slice(-8), 8)} at its end`);
      }
      if (raw.length < 5) throw new StepError(`signature of ${short(name, 40)} is ${raw.length} bytes, expected at least 5`);
      const sig = { name, id: raw.slice(0, 4), sig: raw.slice(4), b64: rest.slice(sp + 1) };
      const v = verifiers.find((k) => k.name === name && P.equalBytes(k.id, sig.id));
      if (!v) {
        unverified.push(sig);
        continue;
      }
      // Step 3: a line by a trusted key must verify.
      if (!(await P.ed25519Verify(v.pub, sig.sig, message))) {
        throw new StepError(`invalid signature by trusted key ${name}+${P.hex(sig.id)}`);
      }
      verified.push(sig);
    }
    // Step 4: at least one trusted signature.
    if (!verified.length) {
      throw new StepError(`no signature by a trusted key (${verifiers.map((v) => v.text).join(", ")}) on this note`);
    }
    return { text, verified, unverified };
  };

  P.b64decodeLoose = lenientB64;
  function lenientB64(text) {
    // Python's base64.b64decode(validate=True): the alphabet and correct padding.
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Error("not base64");
    const bin = atob(text);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }

  // --- C2SP tlog-checkpoint (lineage/checkpoint.py) ---------------------------------

  P.parseCheckpoint = function (text) {
    if (!text.endsWith("\n")) throw new StepError("expected a checkpoint ending in a newline");
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3) throw new StepError(`expected origin, size and root hash lines, found ${lines.length} lines`);
    const [origin, sizeText, rootText] = lines;
    if (!/^(0|[1-9][0-9]{0,19})$/.test(sizeText)) throw new StepError(`expected a decimal tree size, found ${short(sizeText, 30)}`);
    const size = BigInt(sizeText);
    if (size >= 1n << 64n) throw new StepError(`expected a tree size in [0, 2**64), found ${sizeText}`);
    let root;
    try {
      root = P.b64decode(rootText, "root hash");
    } catch (e) {
      throw new StepError(`expected a canonical base64 root hash, found ${short(rootText, 60)}`);
    }
    if (root.length !== 32) throw new StepError(`expected a 32-byte root hash, found ${root.length} bytes`);
    if (!origin || /[\t\n\v\f\r\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/.test(origin)) {
      throw new StepError(`expected a one-line non-empty origin, found ${short(origin, 60)}`);
    }
    for (const ext of lines.slice(3)) if (!ext) throw new StepError("expected non-empty one-line extensions");
    return { origin, size, root, text };
  };

  /** open_checkpoint: signature by `verifier`, then the body, then the origin. */
  P.openCheckpoint = async function (note, verifier) {
    const opened = await P.openNote(note, [verifier]);
    const cp = P.parseCheckpoint(opened.text);
    if (cp.origin !== verifier.name) throw new StepError(`expected a checkpoint of log ${short(verifier.name, 60)}, found ${short(cp.origin, 60)}`);
    return cp;
  };

  // --- RFC 9162 Merkle tree (lineage/merkle.py) ---------------------------------------

  /** RFC 9162 §2.1.1: the leaf hash SHA-256(0x00 || leaf). */
  P.leafHash = (leaf) => P.sha256(P.concat(Uint8Array.of(0), leaf));
  /** RFC 9162 §2.1.1: an interior node SHA-256(0x01 || left || right). */
  const nodeHash = (l, r) => P.sha256(P.concat(Uint8Array.of(1), l, r));

  /** RFC 9162 §2.1.3.2: verify that `leaf` (a leaf hash) is at `index` under `root`. */
  P.verifyInclusion = async function (index, size, leaf, path, root) {
    let fn = BigInt(index);
    let sn = size - 1n;
    // Step 1: the index lies inside the tree.
    if (!(fn >= 0n && fn < size)) throw new StepError(`leaf index ${index} is not inside a tree of size ${size}`);
    for (const h of path) if (h.length !== 32) throw new StepError(`expected 32-byte hashes, found ${h.length} bytes`);
    let r = leaf;
    for (const p of path) {
      if (sn === 0n) throw new StepError(`inclusion proof has ${path.length} hashes, too many for index ${index} in tree size ${size}`);
      if (fn & 1n || fn === sn) {
        r = await nodeHash(p, r);
        while (!(fn & 1n) && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) throw new StepError(`inclusion proof has ${path.length} hashes, too few for index ${index} in a tree of size ${size}`);
    if (!P.equalBytes(r, root)) {
      throw new StepError(`inclusion proof for index ${index} in tree size ${size} leads to root ${P.hex(r)}, expected ${P.hex(root)}`);
    }
  };

  // --- lineage events (lineage/events.py) -------------------------------------------

  const EVENT_TYPES = new Set([
    "policy.activated", "principal.changed", "decision", "warrant.issued", "warrant.failed",
    "execution.started", "execution.verified", "execution.terminated", "execution.completed",
    "revocation", "approval", "approval.requested", "approval.decided", "witness.cosigned",
    "witness.alarm", "key.declared",
  ]);
  const MAX_EVENT_BYTES = 64 * 1024;
  const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?Z$/;
  P.realDate = function (text) {
    const m = RFC3339.exec(text);
    if (!m) return false;
    const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number);
    const t = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
    return y >= 1 && t.getUTCFullYear() === y && t.getUTCMonth() === mo - 1 && t.getUTCDate() === d && h < 24 && mi < 60 && s < 60;
  };

  function parseParent(v) {
    if (!isObj(v) || Object.keys(v).sort().join() !== "index,leaf_hash") {
      throw new StepError(`parent: expected an object with exactly 'index' and 'leaf_hash', found ${short(v, 80)}`);
    }
    if (!Number.isInteger(v.index) || v.index < 0) throw new StepError(`parent.index: expected a non-negative integer, found ${short(v.index, 40)}`);
    const h = P.b64decode(v.leaf_hash, "parent.leaf_hash");
    if (h.length !== 32) throw new StepError("parent.leaf_hash: expected the base64 of a 32-byte SHA-256 hash");
    return { index: v.index, hash: h };
  }
  P.parseParent = parseParent;

  /** Event.from_bytes(raw, strict=True): the exact RFC 8785 bytes of a valid event. */
  P.eventFromBytes = function (raw) {
    const data = P.parseJson(raw, "event", MAX_EVENT_BYTES);
    if (!isObj(data)) throw new StepError(`expected a JSON object, found ${short(data, 40)}`);
    // The leaf is hashed as given; it must also be exactly its canonical encoding.
    if (!P.equalBytes(P.canonicalize(data), raw)) throw new StepError("expected canonical RFC 8785 JSON, found a different encoding");
    if (data.v !== 1) throw new StepError(`v: expected an event format version in [1], found ${short(data.v, 40)}`);
    if (typeof data.type !== "string" || !EVENT_TYPES.has(data.type)) throw new StepError(`type: expected a known event type, found ${short(data.type, 40)}`);
    if (typeof data.time !== "string" || !P.realDate(data.time)) {
      throw new StepError(`time: expected an RFC 3339 UTC timestamp like 2026-01-31T12:00:00Z, found ${short(data.time, 40)}`);
    }
    if ("node" in data && (typeof data.node !== "string" || !data.node)) throw new StepError(`node: expected a non-empty string, found ${short(data.node, 40)}`);
    if ("parent" in data) parseParent(data.parent);
    return data;
  };

  // --- DSSE (lineage/dsse.py) -------------------------------------------------------

  /** DSSE protocol.md "Verify" with proctor's profile: the payload, authenticated. */
  P.openEnvelope = async function (env, payloadType, verifier) {
    // Step 1: exactly payload, payloadType, signatures; 1 to 16 signatures.
    if (!isObj(env) || Object.keys(env).sort().join() !== "payload,payloadType,signatures") {
      throw new StepError(`expected a DSSE envelope with keys ['payload', 'payloadType', 'signatures'], found ${short(isObj(env) ? Object.keys(env).sort() : env, 80)}`);
    }
    const sigs = env.signatures;
    if (!Array.isArray(sigs) || sigs.length < 1 || sigs.length > 16) throw new StepError("expected 1 to 16 signatures in the envelope");
    sigs.forEach((s, i) => {
      if (!isObj(s) || Object.keys(s).sort().join() !== "keyid,sig") throw new StepError(`signatures[${i}]: expected exactly 'keyid' and 'sig'`);
      if (typeof s.keyid !== "string") throw new StepError(`signatures[${i}].keyid: expected a string`);
    });
    // Step 2: the expected type.
    if (env.payloadType !== payloadType) throw new StepError(`expected payloadType ${short(payloadType, 80)}, found ${short(env.payloadType, 80)}`);
    // Step 3: canonical base64 of at most 1 MiB.
    if (typeof env.payload !== "string" || env.payload.length > 4 * Math.floor(((1 << 20) + 2) / 3)) throw new StepError("payload: expected at most 1 MiB of base64");
    const payload = P.b64decode(env.payload, "payload");
    // Step 4: PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
    const type = P.utf8(payloadType);
    const pae = P.concat(P.utf8(`DSSEv1 ${type.length} `), type, P.utf8(` ${payload.length} `), payload);
    const wanted = `${verifier.name}+${P.hex(verifier.id)}`;
    let n = 0;
    for (let i = 0; i < sigs.length; i++) {
      if (sigs[i].keyid !== wanted) continue;
      const sig = P.b64decode(sigs[i].sig, `signatures[${i}].sig`);
      if (sig.length !== 64 || !(await P.ed25519Verify(verifier.pub, sig, pae))) {
        throw new StepError(`signatures[${i}]: invalid signature by trusted key ${wanted}`);
      }
      n++;
    }
    // Step 5: at least one by the trusted key.
    if (!n) throw new StepError(`no signature by the trusted key ${wanted} on this envelope`);
    return payload;
  };

  // --- measurements (verification/measurement.py) -----------------------------------

  const DIGEST = /^sha256:[0-9a-f]{64}$/;
  P.DIGEST = DIGEST;
  P.TOOL_ACTIONS = ["mcp.call", "tool.call"];

  /** measured_resource: what a measurement says ran (step 1 there). */
  P.measuredResource = function (m) {
    if (!isObj(m)) throw new StepError(`measurement: expected an object, found ${short(m, 40)}`);
    if ("tool" in m) {
      if (Object.keys(m).join() !== "tool") throw new StepError("measurement: expected a tool measurement alone");
      const t = m.tool;
      if (!isObj(t) || Object.keys(t).sort().join() !== "definition_digest,resource") throw new StepError(`measurement.tool: expected {resource, definition_digest}, found ${short(t, 120)}`);
      if (typeof t.resource !== "string" || !t.resource.length || t.resource.length > 512) throw new StepError("measurement.tool.resource: expected a tool name");
      if (typeof t.definition_digest !== "string" || !DIGEST.test(t.definition_digest)) throw new StepError("measurement.tool.definition_digest: expected sha256:<64 hex>");
      return { path: t.resource, digest: t.definition_digest, interpreter: "", tool: true };
    }
    const files = m.files;
    if (!Array.isArray(files) || files.length < 1 || files.length > 8) throw new StepError(`measurement.files: expected 1 to 8 measured files, found ${short(files, 80)}`);
    const parsed = files.map((f, i) => {
      if (!isObj(f) || Object.keys(f).sort().join() !== "digest,path,role") throw new StepError(`measurement.files[${i}]: expected {path, digest, role}, found ${short(f, 80)}`);
      if (typeof f.path !== "string" || !f.path.startsWith("/")) throw new StepError(`measurement.files[${i}].path: expected an absolute path, found ${short(f.path, 80)}`);
      if (typeof f.digest !== "string" || !DIGEST.test(f.digest)) throw new StepError(`measurement.files[${i}].digest: expected sha256:<64 hex>, found ${short(f.digest, 80)}`);
      if (!["executable", "interpreter", "script"].includes(f.role)) throw new StepError(`measurement.files[${i}].role: expected executable, interpreter or script, found ${short(f.role, 40)}`);
      return f;
    });
    if (parsed[0].role === "script") throw new StepError("measurement.files[0]: expected the executable or interpreter, found the script");
    const scripts = parsed.filter((f) => f.role === "script");
    if (scripts.length > 1 || (parsed[0].role === "interpreter" && !scripts.length)) throw new StepError("measurement.files: expected at most one script, and one with an interpreter");
    if (scripts.length) return { path: scripts[0].path, digest: scripts[0].digest, interpreter: parsed[0].path, tool: false };
    return { path: parsed[0].path, digest: parsed[0].digest, interpreter: "", tool: false };
  };

  /** check_measurement: whether (action, resource, executable_digest) covers what ran. */
  P.checkMeasurement = function (m, action, resource, executableDigest) {
    const found = P.measuredResource(m); // step 1
    if (P.TOOL_ACTIONS.includes(action)) {
      if (!found.tool) {
        if (executableDigest) throw new StepError(`the warrant binds tool definition digest ${executableDigest}, but the measurement measures no tool definition`); // step 6
        return found;
      }
      if (resource !== found.path) throw new StepError(`the warrant is for tool ${short(resource, 80)}, but the call measured ${short(found.path, 80)}`); // step 7
      if (executableDigest && executableDigest !== found.digest) throw new StepError(`the warrant binds tool definition digest ${executableDigest}, but ${short(found.path, 80)} was called with definition ${found.digest}`); // step 8
      return found;
    }
    if (found.tool) throw new StepError(`a tool measurement cannot start an ${short(action, 40)}: it executes no file`); // step 5
    if (action !== "exec") return found;
    if (!executableDigest) throw new StepError("the warrant binds no executable digest: it cannot start an exec"); // step 2
    if (resource !== found.path) throw new StepError(`the warrant is for ${short(resource, 80)}, but the command executes ${short(found.path, 80)}`); // step 3
    if (executableDigest !== found.digest) throw new StepError(`the warrant binds executable digest ${executableDigest}, but ${short(found.path, 80)} measures ${found.digest}`); // step 4
    return found;
  };

  // --- policy bundle digest (policy/bundle.py) ---------------------------------------

  /** PolicyBundle.from_json(doc).digest: sha256 of the canonical {files, schema, version[, tools]}. */
  P.bundleDigest = async function (doc) {
    const keys = isObj(doc) ? Object.keys(doc).filter((k) => k !== "tools").sort().join() : "";
    if (keys !== "files,schema,version") throw new StepError(`bundle: expected the fields ['files', 'schema', 'version'] (and tools), found ${short(isObj(doc) ? Object.keys(doc).sort() : doc, 80)}`);
    const names = (o, re, what) => {
      if (!isObj(o)) throw new StepError(`bundle.${what}: expected an object of file name to text`);
      for (const [k, v] of Object.entries(o)) {
        if (!re.test(k)) throw new StepError(`bundle.${what}: unexpected file name ${short(k, 60)}`);
        if (typeof v !== "string") throw new StepError(`bundle.${what}[${short(k, 60)}]: expected text`);
      }
    };
    names(doc.files, /^[A-Za-z0-9][A-Za-z0-9._-]*\.cedar$/, "files");
    if (typeof doc.schema !== "string" || !doc.schema.trim()) throw new StepError("bundle.schema: expected Cedar JSON schema text");
    if (!P.isInt(doc, "version") || doc.version < 0 || doc.version > P.MAX_SAFE) throw new StepError("bundle.version: expected an integer from 0 to 2**53-1");
    const body = { files: doc.files, schema: doc.schema, version: doc.version };
    if ("tools" in doc) {
      names(doc.tools, /^[A-Za-z0-9][A-Za-z0-9._-]*\.tools\.json$/, "tools");
      if (!Object.keys(doc.tools).length) throw new StepError("bundle.tools: expected it left out when empty, found {}");
      body.tools = doc.tools;
    }
    return "sha256:" + (await P.sha256Hex(P.canonicalize(body)));
  };
})((globalThis.ProctorProofs = globalThis.ProctorProofs || {}));
