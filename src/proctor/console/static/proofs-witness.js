/* proctor proof viewer: witness policies and cosignatures
 * (c2sp.org/tlog-policy: lineage/witness_policy.py; c2sp.org/tlog-cosignature:
 * lineage/cosignature.py).
 */
(function (P) {
  "use strict";
  const StepError = P.StepError;
  const MAX_ENTRIES = 256;
  const MAX_POLICY_BYTES = 256 << 10;
  const MAX_TIMESTAMP = (1n << 63n) - 1n;

  /** WitnessPolicy.from_text: log, witness, group and quorum lines. */
  P.parseWitnessPolicy = async function (text) {
    const raw = P.utf8(text);
    if (raw.length > MAX_POLICY_BYTES) throw new StepError(`witness policy: expected at most ${MAX_POLICY_BYTES} bytes, found ${raw.length}`);
    const logs = [];
    const witnesses = new Map();
    const groups = new Map();
    let quorum = null;
    const lines = text.split("\n");
    for (let no = 1; no <= lines.length; no++) {
      const line = lines[no - 1];
      const fail = (expected) => new StepError(`witness policy line ${no}: expected ${expected}, found ${P.short(line.trim(), 80)}`);
      if (/[\x00-\x08\x0b-\x1f\x7f]/.test(line)) throw fail("only tab, newline and printable characters");
      const items = line.replace(/\t/g, " ").split(" ").filter((x) => x);
      if (!items.length || items[0].startsWith("#")) continue;
      const [kw, ...args] = items;
      const newName = (n, what) => {
        if (n === "none" || witnesses.has(n) || groups.has(n)) throw fail(`a new ${what} name (not 'none', not defined before)`);
      };
      if (kw === "log") {
        if (args.length < 1 || args.length > 2) throw fail("'log <vkey> [<url>]'");
        const k = await P.parseLogKey(args[0]).catch((e) => { throw fail(`a log verifier key (Ed25519, type 0x01): ${e.message}`); });
        if (logs.some((l) => P.equalBytes(l.pub, k.pub))) throw fail("each log's key once");
        logs.push(k);
      } else if (kw === "witness") {
        if (args.length < 2 || args.length > 3) throw fail("'witness <name> <vkey> [<url>]'");
        newName(args[0], "witness");
        const k = await P.parseCosignerKey(args[1]).catch((e) => { throw fail(`a witness verifier key (cosignature/v1, type 0x04): ${e.message}`); });
        for (const w of witnesses.values()) if (P.equalBytes(w.pub, k.pub)) throw fail("each witness's key once");
        witnesses.set(args[0], k);
      } else if (kw === "group") {
        if (args.length < 3) throw fail("'group <name> <all|any|k> <member>...' with at least one member");
        const [name, kind, ...members] = args;
        newName(name, "group");
        for (const m of members) if (!witnesses.has(m) && !groups.has(m)) throw fail(`members defined on earlier lines; ${JSON.stringify(m)} is not`);
        if (new Set(members).size !== members.length) throw fail("each member once");
        let k;
        if (kind === "all") k = members.length;
        else if (kind === "any") k = 1;
        else if (/^[1-9][0-9]{0,3}$/.test(kind) && Number(kind) <= members.length) k = Number(kind);
        else throw fail(`a threshold 'all', 'any' or k in 1..${members.length}`);
        groups.set(name, { k, members });
      } else if (kw === "quorum") {
        if (args.length !== 1) throw fail("'quorum <name>'");
        if (quorum !== null) throw fail("one quorum line; this is the second");
        if (args[0] === "none") throw fail("a witness or group: 'quorum none' asks for no cosignature, and a policy that checks nothing is refused");
        if (!witnesses.has(args[0]) && !groups.has(args[0])) throw fail("a witness or group defined on an earlier line");
        quorum = args[0];
      } else throw fail("a line starting with log, witness, group, quorum or #");
      if (Math.max(logs.length, witnesses.size, groups.size) > MAX_ENTRIES) throw fail(`at most ${MAX_ENTRIES} logs, witnesses and groups each`);
    }
    if (quorum === null) throw new StepError("witness policy: expected a 'quorum <name>' line, found none");
    return { logs, witnesses, groups, quorum };
  };

  function met(policy, name, cosigned) {
    const g = policy.groups.get(name);
    if (!g) return cosigned.has(name);
    return g.members.filter((m) => met(policy, m, cosigned)).length >= g.k;
  }

  /** WitnessPolicy.check(note, log): a quorum not met is a result, anything malformed an error. */
  P.checkWitnesses = async function (policy, note, log) {
    // Step 1: the logs.
    let logs;
    if (policy.logs.length && log) {
      if (!policy.logs.some((k) => k.text === log.text)) throw new StepError(`the log key ${log.text} is not one of the witness policy's logs`);
      logs = [log];
    } else if (policy.logs.length) logs = policy.logs;
    else if (log) logs = [log];
    else throw new StepError("the witness policy lists no log and no log key was given");
    // Step 2: a checkpoint signed by one of them, of its origin.
    const opened = await P.openNote(note, logs);
    const signer = logs.find((v) => opened.verified.some((s) => s.name === v.name && P.equalBytes(s.id, v.id)));
    const cp = P.parseCheckpoint(opened.text);
    if (cp.origin !== signer.name) throw new StepError(`expected a checkpoint of log ${JSON.stringify(signer.name)}, found origin ${JSON.stringify(cp.origin)}`);
    // Step 3: every cosignature line by a policy witness verifies (c2sp.org/tlog-cosignature:
    // the payload is a big-endian u64 time and the Ed25519 signature of
    // "cosignature/v1\ntime <t>\n" followed by the checkpoint body).
    const cosigned = new Map();
    for (const sig of opened.unverified) {
      const entry = [...policy.witnesses.entries()].find(([, k]) => k.name === sig.name && P.equalBytes(k.id, sig.id));
      if (!entry) continue;
      const [name, key] = entry;
      if (sig.sig.length !== 72) throw new StepError(`cosignature of ${JSON.stringify(sig.name)}: expected an 8-byte time and a 64-byte signature, found ${sig.sig.length} bytes`);
      let t = 0n;
      for (const b of sig.sig.slice(0, 8)) t = (t << 8n) | BigInt(b);
      const message = P.concat(P.utf8(`cosignature/v1\ntime ${t}\n`), P.utf8(opened.text));
      if (t === 0n || t > MAX_TIMESTAMP || !(await P.ed25519Verify(key.pub, sig.sig.slice(8), message))) {
        throw new StepError(`invalid cosignature by trusted witness ${key.name}+${P.hex(key.id)} (time ${t}): it does not sign this checkpoint`);
      }
      if (!cosigned.has(name) || cosigned.get(name) < t) cosigned.set(name, t);
    }
    // Step 4: the quorum.
    const satisfied = met(policy, policy.quorum, cosigned);
    const names = [...cosigned.keys()].sort().join(", ") || "no witness of the policy";
    const detail = `quorum '${policy.quorum}' ${satisfied ? "met" : "not met"} at size ${cp.size}: cosigned by ${names}`;
    return { satisfied, detail, checkpoint: cp };
  };
})((globalThis.ProctorProofs = globalThis.ProctorProofs || {}));
