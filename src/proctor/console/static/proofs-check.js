/* proctor proof viewer: the receipt check, a port of receipts/check.py (and _parts.py).
 *
 * The same numbered steps, in the same order, each stopping the check when it fails:
 *   1 shape, 2 log-key, 3 checkpoint, 4 inclusion, 5 linkage, 6 warrant-chain,
 *   7 statement, 8 replay (only when the receipt carries a policy: the bundle digest;
 *   a Cedar re-evaluation, `proctor verify --replay`, is not done in the browser),
 *   9 witnesses (only with a witness policy).
 * No clock is read: warrants are judged at the times the receipt's own events record.
 */
(function (P) {
  "use strict";
  const StepError = P.StepError;
  const short = P.short;
  const isObj = P.isObj;

  P.STEP_NAMES = { 1: "shape", 2: "log-key", 3: "checkpoint", 4: "inclusion", 5: "linkage", 6: "warrant-chain", 7: "statement", 8: "replay", 9: "witnesses" };
  const MAX_RECEIPT_EVENTS = 512;
  const MAX_WARRANT_CHAIN = 32;
  const MAX_RECEIPT_BYTES = 16 << 20;
  const MAX_INDEX = 2 ** 53 - 1;
  const KEYS = ["checkpoint", "events", "log_key", "statement", "v", "warrant_chain"];
  const OPTIONAL = ["openings", "policy"];
  const TERMINAL = ["execution.terminated", "execution.completed"];
  const ROLES = new Set(["key.declared", "policy.activated", "decision", "warrant.issued", "execution.started", "execution.verified", ...TERMINAL]);
  const PAYLOAD_TYPE = "application/vnd.in-toto+json";
  const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
  const PREDICATE_TYPE = "https://proctor.dev/execution/v1";
  const MAX_LEAF_CHARS = 4 * Math.floor((64 * 1024 + 2) / 3);

  const boundedStr = (v, what, high) => {
    if (typeof v !== "string" || v.length < 1 || v.length > high) {
      throw new StepError(`${what}: expected a string of 1 to ${high} characters, found ${typeof v === "string" ? v.length + " characters" : short(v, 20)}`);
    }
    return v;
  };
  const boundedList = (v, what, low, high) => {
    if (!Array.isArray(v) || v.length < low || v.length > high) {
      throw new StepError(`${what}: expected an array of ${low} to ${high} items, found ${Array.isArray(v) ? v.length + " items" : short(v, 20)}`);
    }
    return v;
  };
  const readIndex = (holder, key, what) => {
    const v = holder[key];
    if (!P.isInt(holder, key) || v < 0 || v > MAX_INDEX) throw new StepError(`${what}: expected a log index in [0, 2**53), found ${short(v, 40)}`);
    return v;
  };
  const sha256Hex = (v, where) => {
    if (typeof v !== "string" || !P.DIGEST.test(v)) throw new StepError(`${where}: expected sha256:<64 lowercase hex>, found ${short(v, 80)}`);
    return v.slice(7);
  };
  const same = (a, b) => P.canonicalText(a) === P.canonicalText(b);

  // One proven event: its index, data and leaf hash (_parts.Entry).
  class Entry {
    constructor(index, data, hash) {
      Object.assign(this, { index, data, hash, kind: data.type, where: `${data.type} at index ${index}` });
    }
    field(name, kind) {
      const v = this.data[name];
      const ok = kind === "int" ? Number.isInteger(v) : kind === "dict" ? isObj(v) : typeof v === kind;
      if (!ok) throw new StepError(`${this.where}: expected ${name} to be a ${kind === "string" ? "str" : kind}, found ${short(v, 80)}`);
      return v;
    }
    // Authorization ancestry: a parent link names an earlier event by index and leaf hash.
    follow(byIndex, expected) {
      if (!("parent" in this.data)) throw new StepError(`${this.where}: expected a parent link to a ${expected} event`);
      const link = P.parseParent(this.data.parent);
      const target = byIndex.get(link.index);
      if (!target) throw new StepError(`${this.where}: its parent, index ${link.index}, is not in the receipt`);
      if (!P.equalBytes(link.hash, target.hash) || target.index >= this.index) throw new StepError(`${this.where}: its parent link does not match the event at ${link.index}`);
      if (target.kind !== expected) throw new StepError(`${this.where}: expected its parent to be ${expected}, found ${target.kind}`);
      return target;
    }
  }

  const seconds = (e) => Math.floor(Date.parse(String(e.data.time).slice(0, 19) + "Z") / 1000);

  function outputs(terminal) {
    const found = [];
    for (const name of ["stdout", "stderr"]) {
      const v = terminal.data[`${name}_digest`] ?? "";
      if (v !== "") found.push([name, sha256Hex(v, `${terminal.where}: ${name}_digest`)]);
    }
    return found;
  }

  function measuredSubject(m) {
    if (isObj(m) && "tool" in m) {
      let tool;
      try {
        tool = P.measuredResource(m);
      } catch (e) {
        throw new StepError(`execution.started: ${e.message}`);
      }
      return [tool.path, sha256Hex(tool.digest, "execution.started measurement.tool.definition_digest")];
    }
    if (typeof m.executable !== "string" || !m.executable) throw new StepError("execution.started: expected measurement.executable, a path");
    return [m.executable, sha256Hex(m.executable_digest, "execution.started measurement.executable_digest")];
  }

  /** _parts.link_roles: every event's role and every parent link (step 5). */
  function linkRoles(entries, activatedIndex) {
    const byIndex = new Map(entries.map((e) => [e.index, e]));
    const byType = new Map();
    for (const e of entries) {
      if (!ROLES.has(e.kind)) throw new StepError(`${e.where} has no role in an execution receipt`);
      if (!byType.has(e.kind)) byType.set(e.kind, []);
      byType.get(e.kind).push(e);
    }
    const of = (k) => byType.get(k) || [];
    const only = (k) => {
      if (of(k).length !== 1) throw new StepError(`expected exactly one ${k} event, found ${of(k).length}`);
      return of(k)[0];
    };
    const key = only("key.declared");
    if (key.field("purpose", "string") !== "warrant" || key.field("algorithm", "string") !== "ed25519") {
      throw new StepError(`key.declared at index ${key.index}: expected an ed25519 key for purpose 'warrant'`);
    }
    key.field("public_key", "string");
    const started = only("execution.started");
    const execution = started.field("execution", "string");
    if (!execution.startsWith("ex_")) throw new StepError(`execution.started at ${started.index}: expected an ex_… id, found ${short(execution, 80)}`);
    const terminals = TERMINAL.flatMap(of);
    if (terminals.length !== 1) throw new StepError(`expected exactly one execution.terminated or execution.completed, found ${terminals.length}`);
    const terminal = terminals[0];
    for (const e of [...of("execution.verified"), terminal]) {
      if (e.field("execution", "string") !== execution) throw new StepError(`${e.where} names another execution than ${execution}`);
      e.follow(byIndex, "execution.started");
      if (e.index > terminal.index) throw new StepError(`${e.where} comes after the end of the execution`);
    }
    measuredSubject(started.field("measurement", "dict"));
    if (terminal.kind === "execution.completed") terminal.field("exit_status", "int");
    else terminal.field("reason", "string");
    outputs(terminal);
    // Ancestry: start → warrant.issued → decision, for the execution and every ancestor.
    const own = started.follow(byIndex, "warrant.issued");
    if (own.field("warrant", "string") !== started.field("warrant", "string")) throw new StepError("execution.started names another warrant than its parent warrant.issued");
    const issued = new Map();
    const decided = new Set();
    for (const w of of("warrant.issued")) {
      const wid = w.field("warrant", "string");
      const d = w.follow(byIndex, "decision");
      if (issued.has(wid) || decided.has(d.index)) throw new StepError(`warrant.issued at index ${w.index}: a warrant or decision appears twice`);
      if (d.field("decision", "string") !== "allow") throw new StepError(`decision at index ${d.index}: expected allow, found ${short(d.data.decision, 40)}`);
      if (d.field("principal", "string") !== w.field("principal", "string")) throw new StepError(`warrant.issued at index ${w.index}: principal differs from its decision's`);
      d.field("now", "int");
      issued.set(wid, w);
      decided.add(d.index);
    }
    const decisions = new Set(of("decision").map((d) => d.index));
    if (decided.size !== decisions.size || [...decided].some((i) => !decisions.has(i))) throw new StepError("a decision in the receipt issued no warrant of the chain");
    if (key.index > Math.min(...decided)) throw new StepError(`the warrant key is declared at ${key.index}, after a warrant it signed`);
    const decision = own.follow(byIndex, "decision");
    if (started.field("principal", "string") !== own.field("principal", "string")) throw new StepError("execution.started: principal differs from its warrant's");
    if (activatedIndex === null) {
      if (of("policy.activated").length) throw new StepError("a policy.activated event without the receipt's policy");
    } else {
      const activation = only("policy.activated");
      if (activation.index !== activatedIndex || activation.index > decision.index) {
        throw new StepError(`policy.activated is at index ${activation.index}; the receipt says ${activatedIndex}, and it must precede the decision at ${decision.index}`);
      }
      if (activation.field("bundle", "string") !== decision.field("bundle", "string")) throw new StepError("policy.activated names another bundle than the decision");
    }
    return { execution, key, started, terminal, issued, decision, byIndex };
  }

  // policy/commitment.py: the opening of an argument commitment, checked.
  async function reveal(request, opening) {
    const logged = request.args_commitment;
    if (typeof logged !== "string" || !P.DIGEST.test(logged)) throw new StepError(`request.args_commitment: expected sha256:<64 hex>, found ${short(logged, 80)}`);
    if (!isObj(opening) || Object.keys(opening).sort().join() !== "arguments,argv,salt") throw new StepError(`opening: expected exactly salt, argv and arguments, found ${short(opening, 80)}`);
    const { salt, argv, arguments: args } = opening;
    if (!Array.isArray(argv) || argv.some((a) => typeof a !== "string")) throw new StepError("opening.argv: expected an array of strings");
    if (args !== null && !isObj(args)) throw new StepError("opening.arguments: expected an object or null");
    let raw;
    try {
      raw = typeof salt === "string" ? P.b64decodeLoose(salt) : new Uint8Array(0);
    } catch (e) {
      throw new StepError("opening.salt: expected base64");
    }
    if (raw.length !== 16) throw new StepError("opening salt: expected 16 bytes");
    if (!Array.isArray(request.argv) || request.argv.length !== 0 || request.arguments !== null) throw new StepError("a redacted request carries its arguments only as a commitment");
    // args_commitment = "sha256:" + hex(SHA-256(DOMAIN || salt || JCS({argv, arguments}))).
    const domain = P.utf8("proctor/args-commitment/v1\0");
    const digest = "sha256:" + (await P.sha256Hex(P.concat(domain, raw, P.canonicalize({ argv, arguments: args }))));
    if (digest !== logged) throw new StepError("the opening does not match the logged argument commitment");
    const full = Object.fromEntries(Object.entries(request).filter(([k]) => k !== "args_commitment"));
    full.argv = argv;
    full.arguments = args;
    return full;
  }

  class Checker {
    constructor(text, logKey, witnessPolicy) {
      Object.assign(this, { text, logKey, witnessPolicy, doc: null, verifier: null, cp: null, entries: [], ex: null, openings: new Map() });
    }

    async revealed(decision) {
      const request = decision.field("request", "dict");
      if (!("args_commitment" in request)) return request;
      if (!this.openings.has(decision.index)) return null;
      try {
        return await reveal(request, this.openings.get(decision.index));
      } catch (e) {
        throw new StepError(`the opening of the decision at ${decision.index}: ${e.message}`);
      }
    }

    async shape() {
      // Step 1: the receipt's own fields.
      const raw = P.utf8(this.text);
      if (raw.length > MAX_RECEIPT_BYTES) throw new StepError(`expected at most ${MAX_RECEIPT_BYTES} bytes of receipt, found ${raw.length}`);
      let doc;
      try {
        doc = P.parseReceiptText(this.text);
      } catch (e) {
        throw new StepError(`expected JSON text: ${e.message}`);
      }
      if (!isObj(doc)) throw new StepError(`expected a receipt object, found ${short(doc, 40)}`);
      const keys = Object.keys(doc);
      const missing = KEYS.filter((k) => !keys.includes(k));
      const unknown = keys.filter((k) => !KEYS.includes(k) && !OPTIONAL.includes(k)).sort();
      if (missing.length || unknown.length) throw new StepError(`expected the keys ${short(KEYS, 200)} (and optionally ${short(OPTIONAL, 80)}), found missing ${short(missing, 80)} and unknown ${short(unknown, 80)}`);
      if (!P.isInt(doc, "v") || doc.v !== 1) throw new StepError(`v: expected receipt format 1, found ${short(doc.v, 40)}`);
      boundedStr(doc.checkpoint, "checkpoint", 32 << 10);
      boundedStr(doc.log_key, "log_key", 1024);
      const events = boundedList(doc.events, "events", 1, MAX_RECEIPT_EVENTS);
      events.forEach((ev, i) => {
        if (!isObj(ev) || Object.keys(ev).sort().join() !== "hashes,leaf,leaf_index") throw new StepError(`events[${i}]: expected exactly leaf_index, leaf and hashes, found ${short(ev, 80)}`);
        readIndex(ev, "leaf_index", `events[${i}].leaf_index`);
        boundedStr(ev.leaf, `events[${i}].leaf`, MAX_LEAF_CHARS);
        boundedList(ev.hashes, `events[${i}].hashes`, 0, 64).forEach((h, j) => boundedStr(h, `events[${i}].hashes[${j}]`, 44));
      });
      boundedList(doc.warrant_chain, "warrant_chain", 1, MAX_WARRANT_CHAIN).forEach((t, i) => boundedStr(t, `warrant_chain[${i}]`, 16 * 1024));
      if (!isObj(doc.statement)) throw new StepError(`statement: expected a DSSE envelope object, found ${short(doc.statement, 40)}`);
      if ("policy" in doc) {
        const p = doc.policy;
        if (!isObj(p) || Object.keys(p).sort().join() !== "activated_index,bundle") throw new StepError(`policy: expected exactly bundle and activated_index, found ${short(p, 80)}`);
        if (!isObj(p.bundle)) throw new StepError("policy.bundle: expected a policy bundle object");
        readIndex(p, "activated_index", "policy.activated_index");
      }
      boundedList(doc.openings ?? [], "openings", 0, MAX_WARRANT_CHAIN).forEach((item, i) => {
        if (!isObj(item) || Object.keys(item).sort().join() !== "index,opening") throw new StepError(`openings[${i}]: expected exactly index and opening, found ${short(item, 80)}`);
        readIndex(item, "index", `openings[${i}].index`);
        if (this.openings.has(item.index)) throw new StepError(`openings[${i}]: index ${item.index} is opened twice`);
        this.openings.set(item.index, item.opening);
      });
      this.doc = doc;
      return `receipt v1: ${events.length} events, ${doc.warrant_chain.length} warrants`;
    }

    async logKeyStep() {
      // Step 2: the trusted key is the one given; the receipt's copy must be exactly it.
      let v;
      try {
        v = await P.parseLogKey(this.logKey);
      } catch (e) {
        throw new StepError(`the trusted log key does not parse: ${e.message}`);
      }
      if (this.doc.log_key !== v.text) throw new StepError(`the receipt's log key is not the trusted key ${v.text}`);
      this.verifier = v;
      return `log key ${v.name}+${P.hex(v.id)}`;
    }

    async checkpoint() {
      // Step 3: C2SP signed-note signature by the trusted key, the tlog-checkpoint body, origin.
      const note = this.doc.checkpoint;
      this.cp = await P.openCheckpoint(note, this.verifier);
      for (const line of note.slice(note.lastIndexOf("\n\n") + 2, -1).split("\n")) {
        P.b64decode(line.slice(line.lastIndexOf(" ") + 1), "checkpoint signature");
      }
      return `checkpoint of ${this.cp.origin} at size ${this.cp.size}`;
    }

    async inclusion() {
      // Step 4: each leaf is a canonical event proven under the checkpoint's root.
      let previous = -1;
      for (let i = 0; i < this.doc.events.length; i++) {
        const ev = this.doc.events[i];
        if (ev.leaf_index <= previous) throw new StepError(`events[${i}]: expected ascending log order, found ${ev.leaf_index} after ${previous}`);
        previous = ev.leaf_index;
        const raw = P.b64decode(ev.leaf, `events[${i}].leaf`);
        let data;
        try {
          data = P.eventFromBytes(raw); // hashed as given, never re-serialized
        } catch (e) {
          throw new StepError(`events[${i}]: ${e.message}`);
        }
        const hashes = ev.hashes.map((h, j) => P.b64decode(h, `events[${i}].hashes[${j}]`));
        const h = await P.leafHash(raw); // RFC 9162 §2.1.1
        await P.verifyInclusion(ev.leaf_index, this.cp.size, h, hashes, this.cp.root); // RFC 9162 §2.1.3.2
        this.entries.push(new Entry(ev.leaf_index, data, h));
      }
      return `${this.entries.length} events included in the tree of size ${this.cp.size}`;
    }

    async linkage() {
      // Step 5: parent links are the ancestry (docs/architecture.md, "Lineage events").
      const policy = this.doc.policy;
      this.ex = linkRoles(this.entries, policy === undefined ? null : policy.activated_index);
      const decided = new Set(this.entries.filter((e) => e.kind === "decision").map((e) => e.index));
      const stray = [...this.openings.keys()].filter((i) => !decided.has(i)).sort((a, b) => a - b);
      if (stray.length) throw new StepError(`openings: expected the indices of the receipt's decisions, found [${stray.join(", ")}]`);
      const ex = this.ex;
      return `execution ${ex.execution}: ${ex.terminal.kind} at ${ex.terminal.index}, started at ${ex.started.index}, decided at ${ex.decision.index}`;
    }

    async warrantChain() {
      // Step 6: every token verifies under the declared key and matches the log.
      const ex = this.ex;
      const tokens = this.doc.warrant_chain;
      if (tokens.length !== ex.issued.size) throw new StepError(`expected one token per warrant.issued event (${ex.issued.size}), found ${tokens.length}`);
      const rootB64 = ex.key.field("public_key", "string");
      let root;
      try {
        root = P.b64decode(rootB64, "public key");
      } catch (e) {
        throw new StepError(`key.declared public key: ${e.message}`);
      }
      if (root.length !== 32) throw new StepError("key.declared: expected 32 bytes of Ed25519 public key");
      const started = ex.started.data;
      // Leaf first; each token at the time the log says it was used.
      let now = Math.max(seconds(ex.started), ex.decision.data.now);
      let request = null;
      let child = null;
      const used = new Set();
      for (let position = tokens.length - 1; position >= 0; position--) {
        const token = tokens[position];
        let claims;
        try {
          claims = await P.verifyWarrant(token, root, now, request);
        } catch (e) {
          throw new StepError(`warrant_chain[${position}]: ${e.message}`);
        }
        const issued = ex.issued.get(claims.warrantId);
        if (!issued || used.has(claims.warrantId)) throw new StepError(`warrant_chain[${position}]: ${claims.warrantId} has no warrant.issued event`);
        used.add(claims.warrantId);
        const digest = sha256Hex(issued.data.token_digest, "warrant.issued token_digest");
        if ((await P.sha256Hex(P.utf8(token))) !== digest) throw new StepError(`warrant_chain[${position}]: its sha256 is not the logged token_digest`);
        const decision = issued.follow(ex.byIndex, "decision");
        const logged = issued.data;
        const checks = [
          ["decision_index", claims.decisionIndex === decision.index && decision.index === logged.decision_index],
          ["principal", claims.principal === logged.principal],
          ["parent_warrant", (logged.parent_warrant ?? "") === claims.parent],
          ["decision parent_warrant", (decision.data.parent_warrant ?? "") === claims.parent],
          ["root has no parent", position > 0 || claims.parent === ""],
        ];
        if (child === null) {
          // The execution's own warrant: the one the start names, covering what ran.
          checks.push(["started.warrant", claims.warrantId === started.warrant]);
          checks.push(["zone", claims.zone === "" || claims.zone === started.zone]);
          try {
            P.checkMeasurement(started.measurement, claims.action, claims.resource, claims.executableDigest);
          } catch (e) {
            throw new StepError(`warrant_chain[${position}] (${claims.warrantId}) does not cover what ran: ${e.message}`);
          }
        } else checks.push(["child's parent", child.parent === claims.warrantId]);
        const revealed = await this.revealed(decision);
        if (revealed !== null) {
          // The opened arguments are the ones the warrant binds (claims.py args_digest).
          const opened = revealed.arguments;
          const bound = "sha256:" + (await P.sha256Hex(P.canonicalize(isObj(opened) ? opened : revealed.argv ?? [])));
          checks.push(["args_digest", bound === claims.argsDigest]);
        }
        const mism = checks.filter(([, ok]) => !ok).map(([n]) => n);
        if (mism.length) throw new StepError(`warrant_chain[${position}] (${claims.warrantId}) disagrees with the log: ${mism.join(", ")}`);
        request = { action: claims.action, resource: claims.resource, argsDigest: claims.argsDigest, zone: claims.zone, executableDigest: claims.executableDigest };
        now = decision.data.now;
        child = claims;
      }
      return `${tokens.length} warrant(s) verified under the declared key at index ${ex.key.index}`;
    }

    async statement() {
      // Step 7: DSSE "Verify" (signature over PAE first), then the in-toto Statement v1.
      const ex = this.ex;
      const payload = await P.openEnvelope(this.doc.statement, PAYLOAD_TYPE, this.verifier);
      const st = P.parseJson(payload, "statement");
      if (!isObj(st) || !P.equalBytes(P.canonicalize(st), payload)) throw new StepError("expected the statement as one canonical (RFC 8785) JSON object");
      if (Object.keys(st).sort().join() !== "_type,predicate,predicateType,subject" || st._type !== STATEMENT_TYPE) {
        throw new StepError("expected an in-toto Statement v1 with exactly ['_type', 'predicate', 'predicateType', 'subject']");
      }
      const s = ex.started.data;
      const end = ex.terminal.data;
      const [name, hex] = measuredSubject(s.measurement);
      const subjects = [{ name, digest: { sha256: hex } }, ...outputs(ex.terminal).map(([n, h]) => ({ name: n, digest: { sha256: h } }))];
      const outcome = ex.terminal.kind === "execution.completed" ? { outcome: "completed", exit_status: end.exit_status } : { outcome: "terminated", reason: end.reason };
      const predicate = {
        execution: ex.execution, warrant: s.warrant, principal: s.principal, ...outcome,
        log: { origin: this.cp.origin, checkpoint_size: Number(this.cp.size), indices: this.entries.map((e) => e.index) },
      };
      if (!same(st.subject, subjects)) throw new StepError(`the statement's subjects are not the measured executable and outputs: ${short(subjects, 200)}`);
      if (st.predicateType === PREDICATE_TYPE) {
        if (!same(st.predicate, predicate)) throw new StepError(`the statement's predicate differs from the events: expected ${short(predicate, 300)}`);
        return `statement signed by the log key; ${subjects.length} subjects and the predicate match`;
      }
      if (typeof st.predicateType !== "string" || !st.predicateType) throw new StepError(`expected a predicateType URI, found ${short(st.predicateType, 80)}`);
      return `statement signed by the log key; ${subjects.length} subjects match; predicate ${st.predicateType} not read`;
    }

    async replay() {
      // Step 8, without --replay: the carried bundle is the one the decision names.
      const digest = await P.bundleDigest(this.doc.policy.bundle);
      const named = this.ex.decision.field("bundle", "string");
      if (digest !== named) throw new StepError(`the carried bundle is ${digest}; the decision names ${named}`);
      return `bundle ${digest} is the one the decision names (not replayed)`;
    }

    async witnesses() {
      // Step 9 (c2sp.org/tlog-policy): the checkpoint's cosignatures meet the quorum.
      const policy = await P.parseWitnessPolicy(this.witnessPolicy);
      const result = await P.checkWitnesses(policy, this.doc.checkpoint, this.verifier);
      if (!result.satisfied) throw new StepError(`the checkpoint is not witnessed as the policy requires: ${result.detail}`);
      return result.detail;
    }
  }

  const shown = (c) => c.entries.map((e) => ({ index: e.index, data: e.data }));

  /**
   * check_receipt(text, log_key, witness_policy): {ok, steps: [{number, name, ok, detail}],
   * failed, execution}. Never throws: any failure is the failing step.
   */
  P.checkReceipt = async function (text, logKey, witnessPolicy) {
    // As `proctor verify --witness-policy FILE`: a policy that does not parse is bad
    // input, refused before any step runs.
    if (witnessPolicy) {
      try {
        await P.parseWitnessPolicy(witnessPolicy);
      } catch (e) {
        return { ok: false, steps: [], failed: null, execution: null, events: [], error: e.message };
      }
    }
    const c = new Checker(text, logKey, witnessPolicy || null);
    const steps = [c.shape, c.logKeyStep, c.checkpoint, c.inclusion, c.linkage, c.warrantChain, c.statement, c.replay, c.witnesses];
    const done = [];
    for (let number = 1; number <= steps.length; number++) {
      if (number === 8 && !(c.doc && "policy" in c.doc)) continue;
      if (number === 9 && !witnessPolicy) break;
      try {
        const detail = await steps[number - 1].call(c);
        done.push({ number, name: P.STEP_NAMES[number], ok: true, detail });
      } catch (e) {
        const detail = e instanceof StepError ? e.message : `${e.name}: ${e.message}`;
        const failed = { number, name: P.STEP_NAMES[number], ok: false, detail };
        done.push(failed);
        return { ok: false, steps: done, failed: number, execution: c.ex ? c.ex.execution : null, events: shown(c) };
      }
    }
    return { ok: true, steps: done, failed: null, execution: c.ex ? c.ex.execution : null, events: shown(c) };
  };

  /** A checkpoint alone: its log key, its signature, and (with a policy) its witnesses. */
  P.checkCheckpoint = async function (note, logKey, witnessPolicy) {
    const done = [];
    const run = async (number, name, fn) => {
      try {
        done.push({ number, name, ok: true, detail: await fn() });
        return true;
      } catch (e) {
        done.push({ number, name, ok: false, detail: e instanceof StepError ? e.message : `${e.name}: ${e.message}` });
        return false;
      }
    };
    let v = null;
    let ok = await run(1, "log-key", async () => {
      try {
        v = await P.parseLogKey(logKey);
      } catch (e) {
        throw new StepError(`the trusted log key does not parse: ${e.message}`);
      }
      return `log key ${v.name}+${P.hex(v.id)}`;
    });
    ok = ok && (await run(2, "checkpoint", async () => {
      const cp = await P.openCheckpoint(note, v);
      return `checkpoint of ${cp.origin} at size ${cp.size}, root ${P.hex(cp.root)}`;
    }));
    if (ok && witnessPolicy) {
      ok = await run(3, "witnesses", async () => {
        const r = await P.checkWitnesses(await P.parseWitnessPolicy(witnessPolicy), note, v);
        if (!r.satisfied) throw new StepError(`the checkpoint is not witnessed as the policy requires: ${r.detail}`);
        return r.detail;
      });
    }
    const failed = done.find((s) => !s.ok);
    return { ok, steps: done, failed: failed ? failed.number : null, execution: null };
  };
})((globalThis.ProctorProofs = globalThis.ProctorProofs || {}));
