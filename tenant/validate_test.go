package tenant_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/raftingest/raftingest/tenant"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		id, why string
		ok      bool
	}{
		{"team-a", "an ordinary id", true},
		{"anonymous", "the default tenant when multi-tenancy is off", true},
		{"A.b_c-1!*'()", "every punctuation dskit allows", true},
		{strings.Repeat("x", tenant.MaxIDLength), "exactly the longest id", true},
		{"...", "three dots are no path element of their own", true},
		{"", "no tenant at all", false},
		{".", "the current directory", false},
		{"..", "the parent directory", false},
		{"../../outside", "a path out of the bucket (issue 12)", false},
		{"a/b", "a path separator", false},
		{`a\b`, "a Windows path separator", false},
		{"a\x00b", "NUL ends a C string", false},
		{"a b", "a space", false},
		{"caf\xc3\xa9", "non-ASCII", false},
		{"\xff", "not UTF-8", false},
		{strings.Repeat("x", tenant.MaxIDLength+1), "one byte too long", false},
	}
	for _, tc := range cases {
		err := tenant.Validate(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate(%q) = %v, want ok=%v", tc.why, tc.id, err, tc.ok)
		}
		if err != nil && !errors.Is(err, tenant.ErrInvalid) {
			t.Errorf("%s: error %v does not wrap ErrInvalid", tc.why, err)
		}
	}
}

// FuzzValidate: an accepted id is one path element that stays in its directory; a refusal says why
// in valid UTF-8 (it travels in gRPC status messages and HTTP bodies).
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"team-a", "..", "../../outside", "a/b", "", "\xff", strings.Repeat("z", 151)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if err := tenant.Validate(id); err != nil {
			if !errors.Is(err, tenant.ErrInvalid) || !utf8.ValidString(err.Error()) {
				t.Fatalf("%q: error %q does not wrap ErrInvalid or is not valid UTF-8", id, err)
			}
			return
		}
		base := filepath.Join("/bucket", "root")
		if p := filepath.Join(base, id); filepath.Dir(p) != base || filepath.Base(p) != id {
			t.Fatalf("accepted %q escapes or changes as a path element: %s", id, p)
		}
	})
}
