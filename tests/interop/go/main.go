// Command proctor-go-verify checks proctor's signed checkpoints and Merkle proofs
// with Go's own golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog, so
// that interoperability is shown by an independent implementation rather than by
// proctor verifying itself.
//
// It reads one JSON document on stdin:
//
//	{
//	  "vkey":       "origin+hexid+base64(0x01||pub)",   // note.NewVerifier format
//	  "checkpoint": "<signed note text>",                // the tree head to check against
//	  "skey":       "PRIVATE+KEY+...",                   // optional: re-sign the checkpoint
//	                                                     // text with Go and require identical bytes
//	  "leaves": [                                        // optional
//	    {"index": N, "data_b64": "...", "leaf_hash": "...(optional)", "proof": ["b64", ...]}
//	  ],
//	  "consistency": [                                   // optional
//	    {"old_checkpoint": "<signed note>", "old_size": M (optional), "new_size": T (optional),
//	     "hashes": ["b64", ...]}
//	  ]
//	}
//
// and prints one JSON result on stdout. It exits 0 only if everything verified;
// otherwise it prints {"ok": false, "error": "..."} (also on stderr) and exits 1.
//
// Build (GOPATH mode, offline, with Debian's golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o proctor-go-verify tests/interop/go/main.go
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type leafInput struct {
	Index    *int64   `json:"index"`
	DataB64  string   `json:"data_b64"`
	LeafHash string   `json:"leaf_hash"`
	Proof    []string `json:"proof"`
}

type consistencyInput struct {
	OldCheckpoint string   `json:"old_checkpoint"`
	OldSize       *int64   `json:"old_size"`
	NewSize       *int64   `json:"new_size"`
	Hashes        []string `json:"hashes"`
}

type input struct {
	VKey        string             `json:"vkey"`
	Checkpoint  string             `json:"checkpoint"`
	SKey        string             `json:"skey"`
	Leaves      []leafInput        `json:"leaves"`
	Consistency []consistencyInput `json:"consistency"`
}

type result struct {
	OK                  bool   `json:"ok"`
	Origin              string `json:"origin"`
	Size                int64  `json:"size"`
	Root                string `json:"root"`
	KeyHash             string `json:"key_hash"`
	Extensions          int    `json:"extensions"`
	ResignedIdentical   bool   `json:"resigned_identical"`
	LeavesVerified      int    `json:"leaves_verified"`
	ConsistencyVerified int    `json:"consistency_verified"`
}

// b64 is strict standard base64: padding required, no stray trailing bits.
var b64 = base64.StdEncoding.Strict()

// checkpoint is an opened, parsed tree head.
type checkpoint struct {
	origin     string
	size       int64
	root       tlog.Hash
	extensions int
	note       *note.Note
}

// openCheckpoint verifies the signed note with Go's note package and parses the
// C2SP tlog-checkpoint body: origin, decimal size, base64 root, extension lines.
func openCheckpoint(what, msg string, verifier note.Verifier) (*checkpoint, error) {
	n, err := note.Open([]byte(msg), note.VerifierList(verifier))
	if err != nil {
		return nil, fmt.Errorf("%s: note.Open: %w", what, err)
	}
	if len(n.Sigs) != 1 || n.Sigs[0].Name != verifier.Name() || n.Sigs[0].Hash != verifier.KeyHash() {
		return nil, fmt.Errorf("%s: expected one verified signature by %s, found %+v", what, verifier.Name(), n.Sigs)
	}
	if len(n.UnverifiedSigs) != 0 {
		return nil, fmt.Errorf("%s: unexpected unverified signatures %+v", what, n.UnverifiedSigs)
	}
	lines := strings.Split(n.Text, "\n")
	// n.Text ends in "\n", so the last element is "".
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return nil, fmt.Errorf("%s: expected origin, size and root lines, found %q", what, n.Text)
	}
	origin, sizeText, rootText := lines[0], lines[1], lines[2]
	if origin != verifier.Name() {
		return nil, fmt.Errorf("%s: origin line %q is not the verifier name %q", what, origin, verifier.Name())
	}
	size, err := strconv.ParseInt(sizeText, 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != sizeText {
		return nil, fmt.Errorf("%s: malformed tree size %q", what, sizeText)
	}
	raw, err := b64.DecodeString(rootText)
	if err != nil || len(raw) != tlog.HashSize {
		return nil, fmt.Errorf("%s: malformed root hash %q", what, rootText)
	}
	var root tlog.Hash
	copy(root[:], raw)
	return &checkpoint{origin, size, root, len(lines) - 4, n}, nil
}

func decodeHashes(what string, list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		raw, err := b64.DecodeString(s)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("%s: hash %d is not base64 of %d bytes: %q", what, i, tlog.HashSize, s)
		}
		copy(out[i][:], raw)
	}
	return out, nil
}

func run(in *input) (*result, error) {
	verifier, err := note.NewVerifier(in.VKey)
	if err != nil {
		return nil, fmt.Errorf("note.NewVerifier(%q): %w", in.VKey, err)
	}
	head, err := openCheckpoint("checkpoint", in.Checkpoint, verifier)
	if err != nil {
		return nil, err
	}
	res := &result{
		Origin:     head.origin,
		Size:       head.size,
		Root:       b64.EncodeToString(head.root[:]),
		KeyHash:    fmt.Sprintf("%08x", verifier.KeyHash()),
		Extensions: head.extensions,
	}

	if in.SKey != "" {
		signer, err := note.NewSigner(in.SKey)
		if err != nil {
			return nil, fmt.Errorf("note.NewSigner: %w", err)
		}
		msg, err := note.Sign(&note.Note{Text: head.note.Text}, signer)
		if err != nil {
			return nil, fmt.Errorf("note.Sign: %w", err)
		}
		if !bytes.Equal(msg, []byte(in.Checkpoint)) {
			return nil, fmt.Errorf("Go's note.Sign gives %q, proctor gave %q", msg, in.Checkpoint)
		}
		res.ResignedIdentical = true
	}

	for i, leaf := range in.Leaves {
		what := fmt.Sprintf("leaf %d", i)
		if leaf.Index == nil {
			return nil, fmt.Errorf("%s: missing index", what)
		}
		what = fmt.Sprintf("leaf index %d", *leaf.Index)
		data, err := b64.DecodeString(leaf.DataB64)
		if err != nil {
			return nil, fmt.Errorf("%s: data_b64 is not base64: %w", what, err)
		}
		h := tlog.RecordHash(data)
		if leaf.LeafHash != "" && leaf.LeafHash != b64.EncodeToString(h[:]) {
			return nil, fmt.Errorf("%s: tlog.RecordHash gives %s, proctor's leaf_hash is %s",
				what, b64.EncodeToString(h[:]), leaf.LeafHash)
		}
		proof, err := decodeHashes(what, leaf.Proof)
		if err != nil {
			return nil, err
		}
		if err := tlog.CheckRecord(tlog.RecordProof(proof), head.size, head.root, *leaf.Index, h); err != nil {
			return nil, fmt.Errorf("%s: tlog.CheckRecord(size %d): %w", what, head.size, err)
		}
		res.LeavesVerified++
	}

	for i, c := range in.Consistency {
		what := fmt.Sprintf("consistency %d", i)
		old, err := openCheckpoint(what+" old checkpoint", c.OldCheckpoint, verifier)
		if err != nil {
			return nil, err
		}
		what = fmt.Sprintf("consistency %d -> %d", old.size, head.size)
		if c.OldSize != nil && *c.OldSize != old.size {
			return nil, fmt.Errorf("%s: proof is for old size %d", what, *c.OldSize)
		}
		if c.NewSize != nil && *c.NewSize != head.size {
			return nil, fmt.Errorf("%s: proof is for new size %d", what, *c.NewSize)
		}
		proof, err := decodeHashes(what, c.Hashes)
		if err != nil {
			return nil, err
		}
		if err := tlog.CheckTree(tlog.TreeProof(proof), head.size, head.root, old.size, old.root); err != nil {
			return nil, fmt.Errorf("%s: tlog.CheckTree: %w", what, err)
		}
		res.ConsistencyVerified++
	}
	res.OK = true
	return res, nil
}

func fail(err error) {
	msg, _ := json.Marshal(map[string]interface{}{"ok": false, "error": err.Error()})
	os.Stdout.Write(append(msg, '\n'))
	fmt.Fprintln(os.Stderr, "proctor-go-verify:", err)
	os.Exit(1)
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(fmt.Errorf("reading stdin: %w", err))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var in input
	if err := dec.Decode(&in); err != nil {
		fail(fmt.Errorf("decoding input JSON: %w", err))
	}
	res, err := run(&in)
	if err != nil {
		fail(err)
	}
	out, err := json.Marshal(res)
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(append(out, '\n'))
}
