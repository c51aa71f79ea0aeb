package storage

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// SecretMask replaces the value of a secret wherever flags are printed.
const SecretMask = "********"

// secretString is the flag.Value of a flag that holds a secret. It stores into a plain string
// field, and its String — what -help prints as the default and what any dump of the flag set
// shows — is the mask, never the value. Secret marks it for the ingester's registry of secret
// flags (ingester.SecretFlagNames), which masks the value on the command line it serves at
// /debug/pprof/cmdline.
type secretString struct{ p *string }

func (s secretString) String() string {
	if s.p == nil || *s.p == "" {
		return ""
	}
	return SecretMask
}

func (s secretString) Set(v string) error { *s.p = v; return nil }

// Secret reports that the flag holds a secret: its value must never be printed.
func (secretString) Secret() bool { return true }

// AWS environment variables read when no -blocks-storage.s3.secret-access-key* flag is set.
const (
	EnvAccessKeyID     = "AWS_ACCESS_KEY_ID"
	EnvSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	EnvSessionToken    = "AWS_SESSION_TOKEN"
)

// ResolveCredentials fills in the S3 secret access key from where it may come besides its flag:
// the file named by -blocks-storage.s3.secret-access-key-file (its content, surrounding white
// space trimmed), or, when neither flag is set, the AWS environment (AWS_SECRET_ACCESS_KEY, with
// AWS_ACCESS_KEY_ID when -blocks-storage.s3.access-key-id is empty, and AWS_SESSION_TOKEN when
// both come from there). getenv is os.Getenv outside tests. Only the s3 backend reads a secret;
// with another backend only the conflict between the two flags is reported. It is idempotent: a
// Config resolved once keeps what it resolved.
func (c *Config) ResolveCredentials(getenv func(string) string) error {
	s := &c.S3
	if s.SecretAccessKey != "" && s.SecretAccessKeyFile != "" && s.secretSource == "" {
		return errors.New("storage: -blocks-storage.s3.secret-access-key and -blocks-storage.s3.secret-access-key-file conflict: set one")
	}
	if c.Backend != BackendS3 || s.secretSource != "" {
		return nil
	}
	switch {
	case s.SecretAccessKeyFile != "":
		b, err := os.ReadFile(s.SecretAccessKeyFile)
		if err != nil {
			return fmt.Errorf("storage: -blocks-storage.s3.secret-access-key-file: %w", err)
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			return fmt.Errorf("storage: -blocks-storage.s3.secret-access-key-file %s is empty", s.SecretAccessKeyFile)
		}
		s.SecretAccessKey, s.secretSource = key, "file"
	case s.SecretAccessKey != "":
		s.secretSource = "flag"
	default:
		s.secretSource = "none"
		if key := getenv(EnvSecretAccessKey); key != "" {
			s.SecretAccessKey, s.secretSource = key, "env"
			if s.AccessKeyID == "" {
				s.AccessKeyID = getenv(EnvAccessKeyID)
				s.sessionToken = getenv(EnvSessionToken)
				if s.AccessKeyID == "" {
					return fmt.Errorf("storage: %s is set but neither -blocks-storage.s3.access-key-id nor %s is", EnvSecretAccessKey, EnvAccessKeyID)
				}
			}
		}
	}
	return nil
}
