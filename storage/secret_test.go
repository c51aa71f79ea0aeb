package storage

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

// TestConfig_ResolveCredentials covers every place the S3 secret access key may come from, and
// that each conflict or gap is refused with the flag or variable named.
func TestConfig_ResolveCredentials(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	awsEnv := env(map[string]string{EnvAccessKeyID: "env-id", EnvSecretAccessKey: "env-secret", EnvSessionToken: "env-token"})
	for _, tc := range []struct {
		name                string
		backend             string
		id, secret, file    string
		getenv              func(string) string
		wantID, wantSecret  string
		wantToken, wantErr  string
		wantValidateErrPart string
	}{
		{name: "the flag wins over the environment", backend: BackendS3, id: "i", secret: "s", getenv: awsEnv, wantID: "i", wantSecret: "s"},
		{name: "the file is read and trimmed", backend: BackendS3, id: "i", file: keyFile, getenv: awsEnv, wantID: "i", wantSecret: "from-file"},
		{name: "an empty file is refused, named", backend: BackendS3, id: "i", file: emptyFile, getenv: env(nil), wantErr: "-blocks-storage.s3.secret-access-key-file"},
		{name: "a missing file is refused, named", backend: BackendS3, id: "i", file: filepath.Join(dir, "nope"), getenv: env(nil), wantErr: "-blocks-storage.s3.secret-access-key-file"},
		{name: "flag and file conflict", backend: BackendS3, id: "i", secret: "s", file: keyFile, getenv: env(nil), wantErr: "conflict"},
		{name: "flag and file conflict whatever the backend", backend: BackendFilesystem, secret: "s", file: keyFile, getenv: env(nil), wantErr: "conflict"},
		{name: "neither flag: both keys and the session token from the environment", backend: BackendS3, getenv: awsEnv, wantID: "env-id", wantSecret: "env-secret", wantToken: "env-token"},
		{name: "the id flag with the secret from the environment; no session token of another id", backend: BackendS3, id: "i", getenv: awsEnv, wantID: "i", wantSecret: "env-secret"},
		{name: "the secret in the environment without an id anywhere", backend: BackendS3, getenv: env(map[string]string{EnvSecretAccessKey: "x"}), wantErr: EnvAccessKeyID},
		{name: "nothing anywhere: the credential chain (instance role)", backend: BackendS3, getenv: env(nil)},
		{name: "an id without any secret is refused by Validate", backend: BackendS3, id: "i", getenv: env(nil), wantID: "i", wantValidateErrPart: "must be set together"},
		{name: "the filesystem backend reads no secret", backend: BackendFilesystem, file: filepath.Join(dir, "nope"), getenv: awsEnv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Backend: tc.backend, S3: S3Config{Endpoint: "127.0.0.1:1", BucketName: "b",
				AccessKeyID: tc.id, SecretAccessKey: tc.secret, SecretAccessKeyFile: tc.file}}
			err := c.ResolveCredentials(tc.getenv)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.S3.AccessKeyID != tc.wantID || c.S3.SecretAccessKey != tc.wantSecret || c.S3.sessionToken != tc.wantToken {
				t.Fatalf("id %q secret %q token %q, want %q %q %q", c.S3.AccessKeyID, c.S3.SecretAccessKey, c.S3.sessionToken, tc.wantID, tc.wantSecret, tc.wantToken)
			}
			// Idempotent: a second resolution (wireStorage validates again) changes nothing and
			// does not take a secret read from the file for a conflicting flag.
			before := c.S3
			if err := c.ResolveCredentials(env(nil)); err != nil || c.S3 != before {
				t.Fatalf("second ResolveCredentials: %v, %+v -> %+v", err, before, c.S3)
			}
			err = c.Validate()
			if tc.wantValidateErrPart == "" && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tc.wantValidateErrPart != "" && (err == nil || !strings.Contains(err.Error(), tc.wantValidateErrPart)) {
				t.Fatalf("Validate: %v, want %q", err, tc.wantValidateErrPart)
			}
		})
	}
}

// TestConfig_SecretFlagNeverPrinted: -help shows no secret, whether it was set on the command
// line before -help or given as a default, and the flag's value prints masked.
func TestConfig_SecretFlagNeverPrinted(t *testing.T) {
	const secret = "wJalrXUtnFEMI-K7MDENG"
	var c Config
	fs := flag.NewFlagSet("ingester", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"-blocks-storage.s3.secret-access-key=" + secret, "-help"}); err != flag.ErrHelp {
		t.Fatalf("parse: %v, want flag.ErrHelp", err)
	}
	if c.S3.SecretAccessKey != secret {
		t.Fatalf("the flag did not set the field: %q", c.S3.SecretAccessKey)
	}
	if strings.Contains(out.String(), secret) {
		t.Fatalf("-help prints the secret:\n%s", out.String())
	}
	f := fs.Lookup("blocks-storage.s3.secret-access-key")
	if got := f.Value.String(); got != SecretMask {
		t.Fatalf("the flag's value prints as %q, want the mask", got)
	}
	if s, ok := f.Value.(interface{ Secret() bool }); !ok || !s.Secret() {
		t.Fatal("the flag is not marked secret")
	}
}
