package ringstate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// join registers id and claims tokens ts for it, ACTIVE. Unlike mustApply it does not check the
// invariants after every command (growing a ring of 300 members would take minutes); the tests
// check them at intervals.
func join(t testing.TB, r *Ring, id MemberID, ts Tokens) *Ring {
	t.Helper()
	for _, c := range []Command{register(id), claim(id, ts...), activate(id)} {
		next, _, err := r.Apply(c, r.TimeMs()+1)
		if err != nil {
			t.Fatalf("apply %s %s: %v", c.Op, c.Member, err)
		}
		r = next
	}
	return r
}

// growBalanced joins members 0..n-1 one after the other, each with BalancedTokens of the ring it
// joins, and calls each (if not nil) after every join.
func growBalanced(t testing.TB, n, tokens int, each func(r *Ring, members int)) *Ring {
	t.Helper()
	r := New()
	for i := range n {
		ts, err := r.BalancedTokens(tokens)
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		r = join(t, r, MemberID(fmt.Sprintf("m%04d", i)), ts)
		if each != nil {
			each(r, i+1)
		}
	}
	return r
}

// growRandom is growBalanced with random tokens, for comparison.
func growRandom(t testing.TB, n, tokens int, rng *rand.Rand) *Ring {
	t.Helper()
	r := New()
	for i := range n {
		ts, err := r.FreeTokens(tokens, rng)
		if err != nil {
			t.Fatal(err)
		}
		r = join(t, r, MemberID(fmt.Sprintf("m%04d", i)), ts)
	}
	return r
}

// The bound: from 3 to 300 members of 128 tokens, joined one at a time, the largest owner
// holds at most 1.1 times what the smallest holds, after every join. Random tokens are printed
// beside for comparison.
func TestBalancedTokens_SpreadAtMost1_1From3To300Members(t *testing.T) {
	// 300 members as the issue asks; under -race (make test) 120, which takes the same time there.
	n := 300
	if testing.Short() || raceEnabled {
		n = 120
	}
	worst, worstAt := 0.0, 0
	final := growBalanced(t, n, 128, func(r *Ring, members int) {
		if members%50 == 0 {
			if err := checkInvariants(r); err != nil {
				t.Fatalf("%d members: %v", members, err)
			}
		}
		if members < 3 {
			return
		}
		if s := r.OwnershipSpread(); s > worst {
			worst, worstAt = s, members
		}
	})
	if worst > 1.1 {
		t.Fatalf("ownership spread %.4f at %d members, want at most 1.1", worst, worstAt)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, m := range []int{3, 10, 100} {
		b := growBalanced(t, m, 128, nil).OwnershipSpread()
		rs := growRandom(t, m, 128, rng).OwnershipSpread()
		t.Logf("%4d members x 128 tokens: spread balanced %.4f, random %.4f", m, b, rs)
	}
	t.Logf("worst balanced spread from 3 to %d members: %.4f (at %d); at %d: %.4f", n, worst, worstAt, n, final.OwnershipSpread())
}

// Other token counts. With very few tokens a joiner can take from only that many ranges, so the
// bound is looser there.
func TestBalancedTokens_OtherTokenCounts(t *testing.T) {
	for _, tokens := range []int{4, 32, 512} {
		r := growBalanced(t, 24, tokens, nil)
		if s := r.OwnershipSpread(); tokens >= 32 && s > 1.1 || s > 2 {
			t.Errorf("%d tokens a member, 24 members: spread %.4f", tokens, s)
		}
	}
}

// Members removed without a hand-over leave their ranges to their successors; the joiners that
// follow take from the richest first, so the spread comes back down.
func TestBalancedTokens_JoinersRepairAfterRemovals(t *testing.T) {
	r := growBalanced(t, 40, 128, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, i := range rng.Perm(40)[:6] {
		r = mustApply(t, r, remove(MemberID(fmt.Sprintf("m%04d", i))))
	}
	after := r.OwnershipSpread()
	for i := range 6 {
		ts, err := r.BalancedTokens(128)
		if err != nil {
			t.Fatal(err)
		}
		r = join(t, r, MemberID(fmt.Sprintf("new%d", i)), ts)
	}
	if err := checkInvariants(r); err != nil {
		t.Fatal(err)
	}
	if s := r.OwnershipSpread(); s > 1.1 || s >= after {
		t.Fatalf("spread %.4f after 6 removals, %.4f after 6 balanced joins: want at most 1.1", after, s)
	}
}

// The tokens are a function of the committed ring: the same ring gives the same tokens, sorted,
// unique, none owned already (so the claim can only be refused by a concurrent claim).
func TestBalancedTokens_DeterministicAndFree(t *testing.T) {
	r := growBalanced(t, 7, 64, nil)
	a, err := r.BalancedTokens(64)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := r.BalancedTokens(64)
	if !slices.Equal(a, b) {
		t.Fatal("two calls on the same ring gave different tokens")
	}
	if !slices.IsSorted(a) || len(slices.Compact(slices.Clone(a))) != len(a) {
		t.Fatalf("tokens not sorted and unique: %v", a)
	}
	for _, tk := range a {
		if owner, ok := r.Owner(tk); ok {
			t.Fatalf("token %d is owned by %s", tk, owner)
		}
	}
	if _, err := r.BalancedTokens(0); err == nil {
		t.Fatal("0 tokens accepted")
	}
	if _, err := r.BalancedTokens(MaxTokensPerMember + 1); err == nil {
		t.Fatal("too many tokens accepted")
	}
}

func BenchmarkBalancedTokens(b *testing.B) {
	for _, members := range []int{100, 1000} {
		r := growBalanced(b, members, 128, nil)
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.BalancedTokens(128); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
