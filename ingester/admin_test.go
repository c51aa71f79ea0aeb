package ingester

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/raftingest/raftingest/ringstate"
)

// TestMaskArgs_HidesSecretFlagValues: /debug/pprof/cmdline served the S3 secret access key as it
// was typed (issue 11). Both spellings of a flag's value, with one or two dashes, are masked; other
// flags, and a secret flag given an empty value, are kept as typed.
func TestMaskArgs_HidesSecretFlagValues(t *testing.T) {
	const key = "blocks-storage.s3.secret-access-key"
	for _, tc := range []struct {
		name     string
		in, want []string
	}{
		{"separate value", []string{"-node.id", "a", "-" + key, "S3CRET", "-bootstrap"},
			[]string{"-node.id", "a", "-" + key, SecretMask, "-bootstrap"}},
		{"equals form", []string{"-" + key + "=S3CRET", "-http.addr=127.0.0.1:1"},
			[]string{"-" + key + "=" + SecretMask, "-http.addr=127.0.0.1:1"}},
		{"two dashes, separate value", []string{"--" + key, "S3CRET"}, []string{"--" + key, SecretMask}},
		{"two dashes, equals form", []string{"--" + key + "=S3CRET"}, []string{"--" + key + "=" + SecretMask}},
		{"a value with '=' in it", []string{"-" + key + "=a=b"}, []string{"-" + key + "=" + SecretMask}},
		{"empty value stays empty", []string{"-" + key + "="}, []string{"-" + key + "="}},
		{"last argument without a value", []string{"-" + key}, []string{"-" + key}},
		{"the file flag names a path, not a secret", []string{"-" + key + "-file", "/run/secrets/s3"}, []string{"-" + key + "-file", "/run/secrets/s3"}},
		{"a value that looks like the flag is not a flag", []string{"-node.id", key}, []string{"-node.id", key}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			if got := MaskArgs(in); !slices.Equal(got, tc.want) {
				t.Fatalf("MaskArgs(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Fatalf("MaskArgs changed its argument: %q", in)
			}
		})
	}
}

// TestSecretFlags_Registry: the registry finds the secret flags by their Value, so a new secret
// flag needs no edit here; today it holds exactly the S3 secret access key.
func TestSecretFlags_Registry(t *testing.T) {
	if !IsSecretFlag("blocks-storage.s3.secret-access-key") {
		t.Fatal("the S3 secret access key is not registered as secret")
	}
	for _, name := range []string{"blocks-storage.s3.access-key-id", "blocks-storage.s3.secret-access-key-file", "node.id", "server.http-tls-key-path"} {
		if IsSecretFlag(name) {
			t.Errorf("%s is registered as secret", name)
		}
	}
}

// A flush while LEAVING with a node-local bucket could write a block after the leave listed the
// blocks it hands over: refused with 409; in every other state, or with a shared bucket, the
// flusher answers.
func TestRefuseFlushWhileLeaving(t *testing.T) {
	for _, tc := range []struct {
		shared bool
		state  ringstate.State
		method string
		want   int
	}{
		{false, ringstate.LEAVING, http.MethodPost, http.StatusConflict},
		{false, ringstate.ACTIVE, http.MethodPost, http.StatusOK},
		{false, ringstate.JOINING, http.MethodPost, http.StatusOK},
		{false, ringstate.PENDING, http.MethodPost, http.StatusOK},
		{true, ringstate.LEAVING, http.MethodPost, http.StatusOK},
		{false, ringstate.LEAVING, http.MethodGet, http.StatusMethodNotAllowed}, // the flusher's own answer
	} {
		flusher := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				http.Error(w, "POST", http.StatusMethodNotAllowed)
				return
			}
			w.WriteHeader(http.StatusOK)
		})
		h := refuseFlushWhileLeaving(tc.shared, func() ringstate.State { return tc.state }, flusher)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, "/ingester/flush", nil))
		if rec.Code != tc.want {
			t.Errorf("shared=%v state=%s %s: %d %q, want %d", tc.shared, tc.state, tc.method, rec.Code, rec.Body.String(), tc.want)
		}
		if tc.want == http.StatusConflict && !strings.Contains(rec.Body.String(), "LEAVING") {
			t.Errorf("the refusal does not say why: %q", rec.Body.String())
		}
	}
}
