package ingester

import (
	"slices"
	"testing"
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
