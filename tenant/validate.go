package tenant

import (
	"errors"
	"fmt"
	"strconv"
)

// MaxIDLength is the longest tenant id accepted, in bytes (dskit's tenant.MaxTenantIDLength).
const MaxIDLength = 150

// ErrInvalid is what every error of Validate wraps (errors.Is). The error's text is the reason alone,
// with the same wording as the distributor's answer to a bad X-Scope-OrgID.
var ErrInvalid = errors.New("tenant: invalid tenant id")

// invalidError is an error of Validate: its text is the reason, and it matches ErrInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// Validate checks a tenant id with the rules of dskit's tenant.ValidTenantID, which Mimir applies to
// X-Scope-OrgID: 1 to 150 bytes from a-z A-Z 0-9 and !-_.*'(), and neither "." nor "..". The rules
// keep a tenant id usable as one path element (directory names, bucket object keys): no "/", no
// "\", no NUL, no "..". Every boundary where a tenant id enters a node applies them — the
// X-Scope-OrgID header, the tenant metadata of an ingester RPC (Push, QueryStream), every series of
// a hand-over frame — so that no other code has to distrust a tenant id it is given.
//
// The error, which wraps ErrInvalid, says why, quoting the id (escaped, cut at 200 bytes).
func Validate(id string) error {
	if id == "" {
		return &invalidError{"no org id"}
	}
	if len(id) > MaxIDLength {
		return &invalidError{fmt.Sprintf("tenant id %s is too long: %d characters, at most %d", quoteTrunc(id), len(id), MaxIDLength)}
	}
	if id == "." || id == ".." {
		return &invalidError{fmt.Sprintf("tenant id %q is not allowed", id)}
	}
	for i := 0; i < len(id); i++ {
		if !validByte[id[i]] {
			return &invalidError{fmt.Sprintf("tenant id %s has an invalid character %q at byte %d: allowed are a-z, A-Z, 0-9 and !-_.*'()",
				quoteTrunc(id), rune(id[i]), i)}
		}
	}
	return nil
}

// validByte is the set of bytes a tenant id may hold.
var validByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range []byte("!-_.*'()") {
		t[c] = true
	}
	return t
}()

// quoteTrunc quotes s (escaping invalid UTF-8), cut to 200 bytes with "…" when longer.
func quoteTrunc(s string) string {
	const max = 200
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
