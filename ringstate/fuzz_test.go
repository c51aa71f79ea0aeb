package ringstate

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

// FuzzApply turns bytes into a command sequence (see genCommand) and checks, after every Apply,
// everything applyChecked checks: no panic, parent unchanged, refusals change nothing, retries
// return their first outcome, invariants hold and Restore reproduces the ring.
//
//	go test -fuzz FuzzApply -fuzztime 30s ./ringstate/
func FuzzApply(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 0, 5, 1, 2, 3, 4})
	f.Add([]byte("registerclaimactivateleaveclaimjoinercompleteabortremove"))
	for seed := range 8 {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(uint64(i*31+seed*17) * 2654435761 >> 13)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &byteSource{b: data}
		r := New()
		for step := 0; !s.empty() && step < 400; step++ {
			c, now := genStep(s, r)
			next, _, bad := applyChecked(r, c, now)
			if bad != nil {
				t.Fatalf("step %d: %v", step, bad)
			}
			r = next
		}
		// Determinism: the same bytes again give a deep-equal ring.
		s2 := &byteSource{b: data}
		r2 := New()
		for step := 0; !s2.empty() && step < 400; step++ {
			c, now := genStep(s2, r2)
			r2, _, _ = r2.Apply(c, now)
		}
		if e := ringsEqual(r, r2); e != nil {
			t.Fatal(e)
		}
	})
}

// FuzzParseTokensFile: never panics; whatever parses is sorted and unique and survives a round trip.
// Any list of tokens, turned into a set, round-trips through the file format.
//
//	go test -fuzz FuzzParseTokensFile -fuzztime 30s ./ringstate/
func FuzzParseTokensFile(f *testing.F) {
	f.Add([]byte(`{"tokens":[1,2,3]}`))
	f.Add([]byte(`{"tokens":[4294967295,0]}`))
	f.Add([]byte(`{"tokens":[1,1]}`))
	f.Add([]byte(`{"tokens":[]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := ParseTokensFile(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidTokens) {
				t.Fatalf("error %v does not wrap ErrInvalidTokens", err)
			}
		} else {
			if len(ts) == 0 || !slices.IsSorted(ts) || len(slices.Compact(slices.Clone(ts))) != len(ts) {
				t.Fatalf("parsed %v", ts)
			}
			back, err := ParseTokensFile(FormatTokensFile(ts))
			if err != nil || !slices.Equal(back, ts) {
				t.Fatalf("round trip of %v: %v, %v", ts, back, err)
			}
		}
		// The bytes as a list of tokens: format then parse gives the set back.
		var x Tokens
		for i := 0; i+4 <= len(data); i += 4 {
			x = append(x, Token(binary.LittleEndian.Uint32(data[i:])))
		}
		slices.Sort(x)
		x = slices.Compact(x)
		if len(x) == 0 {
			return
		}
		got, err := ParseTokensFile(FormatTokensFile(x))
		if err != nil || !slices.Equal(got, x) {
			t.Fatalf("parse(format(%v)) = %v, %v", x, got, err)
		}
	})
}

// FuzzRestore: random member lists either restore to a ring that satisfies every invariant (and
// accepts commands) or are refused with ErrCorruptState.
//
//	go test -fuzz FuzzRestore -fuzztime 30s ./ringstate/
func FuzzRestore(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0, 5, 2, 1, 2, 1, 1, 0, 0, 3, 0})
	f.Add([]byte{3, 1, 0, 1, 3, 0, 1, 0, 2, 0, 0, 0, 0, 3, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		restoreChecked(t, randomMembers(&byteSource{b: data}))
	})
}
