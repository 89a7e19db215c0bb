/* proctor proof viewer: bytes, strict base64, SHA-256, Ed25519 and RFC 8785.
 *
 * Crypto comes from WebCrypto (crypto.subtle): SHA-256 and, where the browser has it,
 * Ed25519. Where it does not (an older browser, or a page that is not a secure
 * context, so that crypto.subtle is missing), the vendored @noble/ed25519 and
 * @noble/hashes (static/vendor/noble/noble.js, window.ProctorNoble) do the same work.
 * `ProctorProofs.cryptoPath()` says which one verified.
 */
(function (P) {
  "use strict";

  class StepError extends Error {}
  P.StepError = StepError;

  const enc = new TextEncoder();
  const utf8 = (s) => enc.encode(s);
  P.utf8 = utf8;

  P.fromUtf8 = function (bytes, what) {
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (e) {
      throw new StepError(`${what}: expected UTF-8 text`);
    }
  };

  P.concat = function (...parts) {
    let n = 0;
    for (const p of parts) n += p.length;
    const out = new Uint8Array(n);
    let i = 0;
    for (const p of parts) {
      out.set(p, i);
      i += p.length;
    }
    return out;
  };

  P.hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

  P.equalBytes = function (a, b) {
    // Constant-time in the length of equal-length inputs (nothing secret is compared here,
    // but the habit costs nothing).
    if (a.length !== b.length) return false;
    let d = 0;
    for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
    return d === 0;
  };

  // RFC 4648 §4 standard base64, padded and canonical: any other spelling of the same
  // bytes is refused, so that no character of a receipt can change unnoticed
  // (as receipts/_parts.py b64decode).
  const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
  P.b64encode = function (bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  };
  P.b64decode = function (text, what) {
    if (typeof text !== "string" || !B64.test(text)) {
      throw new StepError(`${what}: expected standard base64, found ${JSON.stringify(String(text).slice(0, 40))}`);
    }
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    if (P.b64encode(out) !== text) {
      throw new StepError(`${what}: expected canonical padded base64, found ${JSON.stringify(text.slice(0, 40))}`);
    }
    return out;
  };
  // base64url (RFC 4648 §5), unpadded or padded, canonical (warrant tokens).
  P.b64urlDecode = function (text, what) {
    if (!/^[A-Za-z0-9_-]+={0,2}$/.test(text)) throw new StepError(`${what}: expected base64url`);
    const bare = text.replace(/=+$/, "");
    if (bare.length % 4 === 1) throw new StepError(`${what}: the base64 ends mid-byte (truncated)`);
    const std = bare.replace(/-/g, "+").replace(/_/g, "/");
    const padded = std + "=".repeat((4 - (std.length % 4)) % 4);
    const bin = atob(padded);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    if (P.b64encode(out).replace(/=+$/, "") !== std) throw new StepError(`${what}: expected the canonical base64url encoding`);
    return out;
  };

  // --- crypto back ends -------------------------------------------------------------

  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  let path = null; // "webcrypto" | "noble", decided by probe()
  P.forceNoble = false;

  function noble() {
    const N = globalThis.ProctorNoble;
    if (!N) throw new StepError("no Ed25519 in this browser and the vendored @noble/ed25519 did not load");
    return N;
  }

  P.sha256 = async function (bytes) {
    if (subtle && !P.forceNoble) return new Uint8Array(await subtle.digest("SHA-256", bytes));
    return noble().sha256(bytes);
  };

  const keys = new Map();
  async function webKey(pub) {
    const id = P.hex(pub);
    let k = keys.get(id);
    if (!k) {
      k = subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
      keys.set(id, k);
    }
    return k;
  }

  // Whether WebCrypto verifies Ed25519 here: a known-answer test (RFC 8032 §7.1, TEST 1).
  P.probe = async function () {
    if (path) return path;
    path = "noble";
    if (subtle && !P.forceNoble) {
      try {
        const pub = P.fromHexStr("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        const sig = P.fromHexStr(
          "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        const key = await subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
        if (await subtle.verify({ name: "Ed25519" }, key, sig, new Uint8Array(0))) path = "webcrypto";
      } catch (e) {
        path = "noble";
      }
    }
    if (path === "noble") noble();
    return path;
  };
  P.cryptoPath = () => path;
  P.resetCrypto = function () {
    path = null;
    keys.clear();
  };

  P.fromHexStr = function (h) {
    const out = new Uint8Array(h.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(2 * i, 2), 16);
    return out;
  };

  /** Whether `sig` is a valid Ed25519 signature (RFC 8032 §5.1.7) of `msg` by `pub`. */
  P.ed25519Verify = async function (pub, sig, msg) {
    if (pub.length !== 32 || sig.length !== 64) return false;
    if ((await P.probe()) === "webcrypto") {
      try {
        return await subtle.verify({ name: "Ed25519" }, await webKey(pub), sig, msg);
      } catch (e) {
        return false; // a key WebCrypto refuses (not a curve point) verifies nothing
      }
    }
    // zip215: false: RFC 8032 / FIPS 186-5 strictness, as OpenSSL (the Python side).
    try {
      return noble().verify(sig, msg, pub);
    } catch (e) {
      return false;
    }
  };

  /** The Ed25519 public key of a 32-byte seed (RFC 8032 §5.1.5). */
  P.ed25519PublicOf = async function (seed) {
    if ((await P.probe()) === "webcrypto") {
      try {
        // PKCS #8 wrapping of a raw Ed25519 seed (RFC 8410 §7); the JWK export carries x.
        const pkcs8 = P.concat(P.fromHexStr("302e020100300506032b657004220420"), seed);
        const key = await subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
        const jwk = await subtle.exportKey("jwk", key);
        return P.b64urlDecode(jwk.x, "public key");
      } catch (e) {
        if (!globalThis.ProctorNoble) throw e; // a browser that verifies but cannot import a seed
      }
    }
    return noble().publicOf(seed);
  };

  // --- RFC 8785 canonical JSON over proctor's subset (canonical.py) -----------------

  const MAX_SAFE = 2 ** 53 - 1;
  const MAX_DEPTH = 32;
  function canon(v, depth, where) {
    if (v === null) return "null";
    switch (typeof v) {
      case "boolean":
        return v ? "true" : "false";
      case "number":
        // RFC 8785 §3.2.2.3: ECMAScript Number::toString, which JSON.stringify is.
        if (!Number.isFinite(v)) throw new StepError(`${where}: NaN and infinities are not JSON`);
        return JSON.stringify(v);
      case "string":
        // RFC 8785 §3.2.2.2: valid Unicode only (no lone surrogates).
        if (typeof v.isWellFormed === "function" ? !v.isWellFormed() : /[\ud800-\udbff](?![\udc00-\udfff])|(?:[^\ud800-\udbff]|^)[\udc00-\udfff]/.test(v)) {
          throw new StepError(`${where}: a lone surrogate in a string`);
        }
        return JSON.stringify(v);
      case "object": {
        if (depth >= MAX_DEPTH) throw new StepError(`${where}: nested deeper than ${MAX_DEPTH}`);
        if (Array.isArray(v)) return "[" + v.map((x, i) => canon(x, depth + 1, `${where}[${i}]`)).join(",") + "]";
        const ks = Object.keys(v);
        for (const k of ks) {
          // RFC 8785 §3.2.3 sorts by UTF-16 code units; proctor keeps keys ASCII.
          if (!/^[\x00-\x7f]*$/.test(k)) throw new StepError(`${where}: a non-ASCII object key`);
        }
        ks.sort();
        return "{" + ks.map((k) => JSON.stringify(k) + ":" + canon(v[k], depth + 1, `${where}.${k}`)).join(",") + "}";
      }
      default:
        throw new StepError(`${where}: not a JSON value`);
    }
  }
  /** The RFC 8785 encoding of a JSON value, as UTF-8 bytes. */
  P.canonicalize = (v) => utf8(canon(v, 0, "$"));
  P.canonicalText = (v) => canon(v, 0, "$");
  P.MAX_SAFE = MAX_SAFE;

  /** Parse JSON bytes; `limit` bounds the size first. */
  P.parseJson = function (bytes, what, limit) {
    if (limit !== undefined && bytes.length > limit) {
      throw new StepError(`${what}: expected at most ${limit} bytes of JSON, found ${bytes.length}`);
    }
    const text = P.fromUtf8(bytes, what);
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new StepError(`${what}: expected JSON text: ${e.message}`);
    }
  };

  // Numbers spelled as floats ("3.0", "3e0") in the receipt text: Python reads them as
  // floats and refuses them where an integer is expected; JSON.parse cannot tell, so the
  // reviver notes them from their source text (where the browser gives it, ES2025).
  const spelled = new WeakMap();
  P.parseReceiptText = function (text) {
    return JSON.parse(text, function (key, value, context) {
      if (typeof value === "number" && context && typeof context.source === "string" && /[.eE]/.test(context.source)) {
        if (!spelled.has(this)) spelled.set(this, new Set());
        spelled.get(this).add(key);
      }
      return value;
    });
  };
  /** Whether holder[key] is an integer as Python would read it (not spelled as a float). */
  P.isInt = (holder, key) => Number.isInteger(holder[key]) && !(spelled.has(holder) && spelled.get(holder).has(String(key)));

  P.sha256Hex = async (bytes) => P.hex(await P.sha256(bytes));
})((globalThis.ProctorProofs = globalThis.ProctorProofs || {}));
