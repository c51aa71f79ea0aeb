package ringstate

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
)

// GenerateTokens draws n distinct random tokens that taken reports as free, using rng so that the
// caller decides the seed. taken may be nil. It fails if n is not in [1, MaxTokensPerMember], or if
// it cannot find n free tokens (taken rejects almost everything).
func GenerateTokens(n int, taken func(Token) bool, rng *rand.Rand) (Tokens, error) {
	if n <= 0 || n > MaxTokensPerMember {
		return nil, fmt.Errorf("%w: asked for %d tokens, want 1 to %d", ErrInvalidTokens, n, MaxTokensPerMember)
	}
	picked := make(map[Token]struct{}, n)
	out := make(Tokens, 0, n)
	// The space has 2^32 tokens and rings hold at most tens of thousands, so a collision is rare;
	// the attempt bound only protects against a caller whose taken rejects almost everything.
	for attempts := 0; len(out) < n; attempts++ {
		if attempts > 64*n+1024 {
			return nil, fmt.Errorf("%w: found only %d free tokens of %d after %d attempts", ErrInvalidTokens, len(out), n, attempts)
		}
		t := Token(rng.Uint32())
		if _, dup := picked[t]; dup || (taken != nil && taken(t)) {
			continue
		}
		picked[t] = struct{}{}
		out = append(out, t)
	}
	slices.Sort(out)
	return out, nil
}

// FreeTokens draws n tokens that no member of r owns. A concurrent claim can still take one of them
// before ours commits; the claim's compare-and-set then refuses ours and the caller draws again.
func (r *Ring) FreeTokens(n int, rng *rand.Rand) (Tokens, error) {
	return GenerateTokens(n, func(t Token) bool { _, owned := r.Owner(t); return owned }, rng)
}

// Fit tops up or trims have to want tokens, keeping as many of have as it can so that a restart with
// another -ring.num-tokens moves as little data as possible (mimir#3801). have may be in any order and
// hold duplicates; the result is sorted and unique. Trimming keeps the lowest tokens; topping up draws
// new ones that r does not own. Fit keeps tokens of have that another member owns (it does not know
// whose tokens have are): a member that may have lost some should use FitMember.
func (r *Ring) Fit(have Tokens, want int, rng *rand.Rand) (Tokens, error) {
	return r.fit(have, want, rng)
}

// FitMember is Fit for member id: it first drops the tokens of have that another member owns, so the
// claim that follows cannot be refused for them (a member removed and restarted with its old tokens
// file, whose tokens someone else claimed meanwhile).
func (r *Ring) FitMember(id MemberID, have Tokens, want int, rng *rand.Rand) (Tokens, error) {
	mine := make(Tokens, 0, len(have))
	for _, t := range have {
		if owner, ok := r.Owner(t); !ok || owner == id {
			mine = append(mine, t)
		}
	}
	return r.fit(mine, want, rng)
}

func (r *Ring) fit(have Tokens, want int, rng *rand.Rand) (Tokens, error) {
	if want <= 0 || want > MaxTokensPerMember {
		return nil, fmt.Errorf("%w: want %d tokens, want 1 to %d", ErrInvalidTokens, want, MaxTokensPerMember)
	}
	have = slices.Compact(slices.Sorted(slices.Values(have)))
	if len(have) >= want {
		return slices.Clip(have[:want]), nil
	}
	mine := make(map[Token]struct{}, len(have))
	for _, t := range have {
		mine[t] = struct{}{}
	}
	extra, err := GenerateTokens(want-len(have), func(t Token) bool {
		if _, ok := mine[t]; ok {
			return true
		}
		_, owned := r.Owner(t)
		return owned
	}, rng)
	if err != nil {
		return nil, err
	}
	out := append(slices.Clone(have), extra...)
	slices.Sort(out)
	return out, nil
}

// tokensFile is the on-disk form of -ring.tokens-file-path, the same JSON Cortex and Mimir write.
type tokensFile struct {
	Tokens []uint32 `json:"tokens"`
}

// ParseTokensFile decodes a tokens file. It refuses empty lists and duplicate tokens, naming the
// offending token, and returns the tokens sorted.
func ParseTokensFile(data []byte) (Tokens, error) {
	var f tokensFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: tokens file: %v (want {\"tokens\":[...]})", ErrInvalidTokens, err)
	}
	if len(f.Tokens) == 0 {
		return nil, fmt.Errorf("%w: tokens file lists no tokens", ErrInvalidTokens)
	}
	if len(f.Tokens) > MaxTokensPerMember {
		return nil, fmt.Errorf("%w: tokens file lists %d tokens, at most %d", ErrInvalidTokens, len(f.Tokens), MaxTokensPerMember)
	}
	out := make(Tokens, len(f.Tokens))
	for i, t := range f.Tokens {
		out[i] = Token(t)
	}
	slices.Sort(out)
	for i := 1; i < len(out); i++ {
		if out[i] == out[i-1] {
			return nil, fmt.Errorf("%w: tokens file lists token %d twice", ErrInvalidTokens, out[i])
		}
	}
	return out, nil
}

// FormatTokensFile encodes tokens as a tokens file.
func FormatTokensFile(ts Tokens) []byte {
	f := tokensFile{Tokens: make([]uint32, len(ts))}
	for i, t := range ts {
		f.Tokens[i] = uint32(t)
	}
	b, _ := json.Marshal(f) // cannot fail: a struct of integers
	return append(b, '\n')
}
