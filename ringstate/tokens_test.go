package ringstate

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func seeded(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

func TestGenerateTokens_DeterministicSortedUniqueAvoidsTaken(t *testing.T) {
	taken := func(tok Token) bool { return tok%3 == 0 }
	a, err := GenerateTokens(512, taken, seeded(7))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateTokens(512, taken, seeded(7))
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different tokens")
	}
	c, _ := GenerateTokens(512, taken, seeded(8))
	if slices.Equal(a, c) {
		t.Fatal("different seeds, same tokens")
	}
	if len(a) != 512 || !slices.IsSorted(a) || len(slices.Compact(slices.Clone(a))) != 512 {
		t.Fatalf("not 512 sorted unique tokens: %d", len(a))
	}
	for _, tok := range a {
		if taken(tok) {
			t.Fatalf("token %d is taken", tok)
		}
	}
}

func TestGenerateTokens_RefusesBadCountsAndExhaustion(t *testing.T) {
	for _, n := range []int{0, -1, MaxTokensPerMember + 1, 1 << 40} {
		if _, err := GenerateTokens(n, nil, seeded(1)); !errors.Is(err, ErrInvalidTokens) {
			t.Errorf("GenerateTokens(%d): %v", n, err)
		}
	}
	if _, err := GenerateTokens(3, func(Token) bool { return true }, seeded(1)); !errors.Is(err, ErrInvalidTokens) {
		t.Errorf("all taken: %v", err)
	}
}

func TestRing_FreeTokens_AvoidsOwned(t *testing.T) {
	r := zoo(t)
	// A generator that keeps proposing owned tokens first must still end with free ones.
	ts, err := r.FreeTokens(64, seeded(3))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range ts {
		if o, owned := r.Owner(tok); owned {
			t.Fatalf("token %d owned by %s", tok, o)
		}
	}
	mustApply(t, r, claim("p", ts...))
}

func TestRing_Fit(t *testing.T) {
	r := zoo(t) // owns 100..900
	t.Run("TopUpKeepsExistingTokens", func(t *testing.T) {
		have := Tokens{100, 200}
		got, err := r.Fit(have, 5, seeded(1))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 5 || !slices.IsSorted(got) || !slices.Contains(got, 100) || !slices.Contains(got, 200) {
			t.Fatalf("got %v", got)
		}
		for _, tok := range got {
			if o, owned := r.Owner(tok); owned && tok != 100 && tok != 200 {
				t.Fatalf("new token %d owned by %s", tok, o)
			}
		}
		again, _ := r.Fit(have, 5, seeded(1))
		if !slices.Equal(got, again) {
			t.Fatal("Fit not deterministic for a seed")
		}
	})
	t.Run("TrimKeepsLowestDeterministically", func(t *testing.T) {
		got, _ := r.Fit(Tokens{9, 3, 7, 5}, 2, seeded(1))
		if !slices.Equal(got, Tokens{3, 5}) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("ExactCountIsUnchanged", func(t *testing.T) {
		got, _ := r.Fit(Tokens{3, 5}, 2, nil)
		if !slices.Equal(got, Tokens{3, 5}) {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("DoesNotModifyHave", func(t *testing.T) {
		have := Tokens{9, 3, 7}
		r.Fit(have, 2, seeded(1))
		r.Fit(have, 6, seeded(1))
		if !slices.Equal(have, Tokens{9, 3, 7}) {
			t.Fatalf("have changed: %v", have)
		}
	})
	t.Run("RefusesBadWant", func(t *testing.T) {
		for _, w := range []int{0, -3, MaxTokensPerMember + 1} {
			if _, err := r.Fit(Tokens{1}, w, seeded(1)); !errors.Is(err, ErrInvalidTokens) {
				t.Errorf("want %d: %v", w, err)
			}
		}
	})
}

// Regression: Fit trimmed by position, so an unsorted have kept arbitrary tokens (not the lowest),
// and duplicates in have came back as duplicates, which the claim then refused.
func TestRing_Fit_UnsortedOrDuplicateHave(t *testing.T) {
	r := New()
	got, err := r.Fit(Tokens{50, 10, 10, 40, 20}, 3, seeded(1))
	if err != nil || !slices.Equal(got, Tokens{10, 20, 40}) {
		t.Fatalf("trim: %v, %v", got, err)
	}
	got, err = r.Fit(Tokens{7, 7, 7}, 3, seeded(1))
	if err != nil || len(got) != 3 || len(slices.Compact(slices.Clone(got))) != 3 || !slices.Contains(got, 7) {
		t.Fatalf("top up: %v, %v", got, err)
	}
}

// FitMember drops tokens another member took meanwhile, so the claim that follows cannot be
// refused for them forever.
func TestRing_FitMember_DropsTokensOwnedByOthers(t *testing.T) {
	r := zoo(t)
	got, err := r.FitMember("a", Tokens{100, 200, 300, 12}, 4, seeded(1))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, 300) || !slices.Contains(got, 100) || !slices.Contains(got, 200) || !slices.Contains(got, 12) || len(got) != 4 {
		t.Fatalf("got %v", got)
	}
	mustApply(t, r, resize("a", got...))
}

func TestTokensFile_RoundTripAndRefusals(t *testing.T) {
	ts := Tokens{0, 5, 1 << 31, 4294967295}
	got, err := ParseTokensFile(FormatTokensFile(ts))
	if err != nil || !slices.Equal(got, ts) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	got, err = ParseTokensFile([]byte(`{"tokens":[9,1,5], "other": true}`))
	if err != nil || !slices.Equal(got, Tokens{1, 5, 9}) {
		t.Fatalf("unsorted file: %v, %v", got, err)
	}
	for _, bad := range []string{``, `{}`, `{"tokens":[]}`, `{"tokens":null}`, `{"tokens":[1,1]}`,
		`{"tokens":[-1]}`, `{"tokens":[4294967296]}`, `{"tokens":[1.5]}`, `[1,2]`, `{"tokens":[1]} x`} {
		if _, err := ParseTokensFile([]byte(bad)); !errors.Is(err, ErrInvalidTokens) {
			t.Errorf("ParseTokensFile(%q) = %v", bad, err)
		}
	}
	big := make(Tokens, MaxTokensPerMember+1)
	for i := range big {
		big[i] = Token(i)
	}
	if _, err := ParseTokensFile(FormatTokensFile(big)); !errors.Is(err, ErrInvalidTokens) {
		t.Errorf("oversized file: %v", err)
	}
}
