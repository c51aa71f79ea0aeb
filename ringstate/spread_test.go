package ringstate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// pending registers id (PENDING, no tokens) on r.
func pending(t *testing.T, r *Ring, id MemberID, zone string) *Ring {
	t.Helper()
	c := register(id)
	c.Zone = zone
	next, _, err := r.Apply(c, r.TimeMs()+1)
	if err != nil {
		t.Fatal(err)
	}
	return next
}

func TestCheckClaimSpread(t *testing.T) {
	const tokens = 128
	balanced := growBalanced(t, 12, tokens, nil)
	rng := rand.New(rand.NewPCG(7, 7))
	random := growRandom(t, 12, tokens, rng)
	place := Placement{RF: 3}

	t.Run("a balanced joiner passes", func(t *testing.T) {
		r := pending(t, balanced, "joiner", "")
		ts, err := r.BalancedTokens(tokens)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.CheckClaimSpread(claim("joiner", ts...), place, 1.1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a random joiner on a balanced ring is refused", func(t *testing.T) {
		r := pending(t, balanced, "joiner", "")
		refused := 0
		for range 20 {
			ts, err := r.FreeTokens(tokens, rng)
			if err != nil {
				t.Fatal(err)
			}
			err = r.CheckClaimSpread(claim("joiner", ts...), place, 1.1)
			if err != nil {
				if !errors.Is(err, ErrSpread) || !strings.Contains(err.Error(), "-ring.max-ownership-spread") {
					t.Fatalf("refusal %v: want ErrSpread naming the flag", err)
				}
				refused++
			}
		}
		// 128 random tokens among 12 balanced members give the joiner about ±9% of its share:
		// most such claims break a 1.1 bound.
		if refused < 15 {
			t.Errorf("%d of 20 random claims refused on a balanced ring, want most", refused)
		}
	})
	t.Run("a balanced joiner on an uneven ring passes: it improves it", func(t *testing.T) {
		before := random.PlacementSpread(place)
		if before <= 1.1 {
			t.Fatalf("the random ring's spread is %v: the test needs an uneven one", before)
		}
		r := pending(t, random, "joiner", "")
		ts, err := r.BalancedTokens(tokens)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.CheckClaimSpread(claim("joiner", ts...), place, 1.1); err != nil {
			t.Fatalf("spread %v before: %v", before, err)
		}
	})
	t.Run("disabled, other ops, small rings", func(t *testing.T) {
		r := pending(t, balanced, "joiner", "")
		bad := Tokens{1, 2, 3} // three tokens: the joiner owns almost nothing
		if err := r.CheckClaimSpread(claim("joiner", bad...), place, 0); err != nil {
			t.Errorf("maxSpread 0: %v", err)
		}
		if err := r.CheckClaimSpread(claim("joiner", bad...), place, 1.1); !errors.Is(err, ErrSpread) {
			t.Errorf("a three-token claim on a balanced ring: %v, want ErrSpread", err)
		}
		if err := r.CheckClaimSpread(activate("m0001"), place, 1.1); err != nil {
			t.Errorf("activate: %v", err)
		}
		two := pending(t, growRandom(t, 1, tokens, rng), "joiner", "")
		if err := two.CheckClaimSpread(claim("joiner", bad...), place, 1.1); err != nil {
			t.Errorf("a second member of a ring of one: %v", err)
		}
	})
}

// TestCheckClaimSpread_ZoneAware: under zone-aware placement the bound is per zone: a zone-balanced
// joiner passes even though the whole ring is uneven; a claim that skews its own zone is refused.
func TestCheckClaimSpread_ZoneAware(t *testing.T) {
	const tokens = 128
	r := New()
	for i := range 9 {
		zone := fmt.Sprintf("z%d", i%3)
		id := MemberID(fmt.Sprintf("m%02d", i))
		r = pending(t, r, id, zone)
		ts, err := r.BalancedTokensFor(tokens, zone, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []Command{claim(id, ts...), activate(id)} {
			if r, _, err = r.Apply(c, r.TimeMs()+1); err != nil {
				t.Fatal(err)
			}
		}
	}
	place := Placement{RF: 3, ZoneAware: true}
	if s := r.PlacementSpread(place); s > 1.1 {
		t.Fatalf("per-zone spread %v after zone-balanced joins", s)
	}
	r = pending(t, r, "joiner", "z1")
	ts, err := r.BalancedTokensFor(tokens, "z1", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckClaimSpread(claim("joiner", ts...), place, 1.1); err != nil {
		t.Fatalf("a zone-balanced joiner: %v", err)
	}
	if err := r.CheckClaimSpread(claim("joiner", 10, 20, 30), place, 1.1); !errors.Is(err, ErrSpread) || !strings.Contains(err.Error(), `in zone "z1"`) {
		t.Fatalf("a three-token joiner in z1: %v, want ErrSpread for a zone", err)
	}
}

// TestCheckClaimSpread_NeverStuck: the two cases review found stuck for ever — a ring shrunk to two
// members growing back (nothing to judge before the claim) and a member changing its token count
// (replacing tokens it owns) — always pass.
func TestCheckClaimSpread_NeverStuck(t *testing.T) {
	const tokens = 128
	place := Placement{RF: 3}
	for n := 3; n <= 12; n++ {
		r := growBalanced(t, n, tokens, nil)
		for i := 2; i < n; i++ {
			next, _, err := r.Apply(remove(MemberID(fmt.Sprintf("m%04d", i))), r.TimeMs()+1)
			if err != nil {
				t.Fatal(err)
			}
			r = next
		}
		r = pending(t, r, "joiner", "")
		ts, err := r.BalancedTokens(tokens)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.CheckClaimSpread(claim("joiner", ts...), place, 1.1); err != nil {
			t.Errorf("%d members shrunk to 2, a third joins: %v", n, err)
		}
	}
	r := growBalanced(t, 6, tokens, nil)
	m, _ := r.Member("m0002")
	if err := r.CheckClaimSpread(claim("m0002", m.Tokens[:64]...), place, 1.1); err != nil {
		t.Errorf("a member trimming its tokens to 64: %v", err)
	}
}
