// Package storage is raftingest's long-term storage: a bucket (thanos-io/objstore: a local
// directory or S3) holding Prometheus TSDB blocks laid out as Thanos and Mimir lay them out,
// the writer that turns in-memory chunks into such blocks, their upload, and a Prometheus
// Queryable that reads a tenant's blocks back, deduplicating the replicas' copies.
//
// Layout: <tenant>/<block ULID>/{meta.json,index,chunks/000001,...}. meta.json is uploaded last,
// so a block without it is partial (an upload in progress or one that failed) and is never read.
// Keys are built only from validated parts (BlockKey: a tenant that passes tenant.Validate, a
// ULID, a clean relative file path) and checked again by the filesystem bucket before any path
// is made from them.
package storage

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	gokitlog "github.com/go-kit/log"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/s3"
)

// Backends of -blocks-storage.backend.
const (
	BackendFilesystem = "filesystem"
	BackendS3         = "s3"
)

// Config is the bucket's configuration, with Mimir's flag names.
type Config struct {
	// Backend is "filesystem" (default) or "s3". Flag: -blocks-storage.backend.
	Backend string
	// Filesystem is used when Backend is "filesystem".
	Filesystem FilesystemConfig
	// S3 is used when Backend is "s3".
	S3 S3Config
}

// FilesystemConfig is a bucket in a local directory.
type FilesystemConfig struct {
	// Dir is the bucket's root directory. Flag: -blocks-storage.filesystem.dir; empty means
	// <data.dir>/blocks, filled in by the ingester's Config.Validate.
	Dir string
	// Shared declares that every member's Dir is the same directory (a network filesystem, or one
	// directory on one machine): a querier then reads it directly, as it reads S3, and asks no
	// member for blocks. Flag: -blocks-storage.filesystem.shared. False (the default): the
	// directory is node-local; each member serves its own blocks to the others.
	Shared bool
}

// S3Config is an S3 (or S3-compatible: MinIO, Ceph RGW) bucket.
type S3Config struct {
	Endpoint        string // -blocks-storage.s3.endpoint, host[:port] without scheme
	BucketName      string // -blocks-storage.s3.bucket-name
	AccessKeyID     string // -blocks-storage.s3.access-key-id
	SecretAccessKey string // -blocks-storage.s3.secret-access-key (a secret: masked wherever flags are printed)
	// SecretAccessKeyFile is -blocks-storage.s3.secret-access-key-file: a file holding the secret
	// access key, read by ResolveCredentials into SecretAccessKey.
	SecretAccessKeyFile string
	Region              string // -blocks-storage.s3.region
	Insecure            bool   // -blocks-storage.s3.insecure: plain HTTP

	// Set by ResolveCredentials: where SecretAccessKey came from ("flag", "file", "env", "none"; ""
	// before it ran), and AWS_SESSION_TOKEN when both keys came from the environment.
	secretSource string
	sessionToken string
}

// RegisterFlags registers the bucket flags with their defaults on f.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.Backend, "blocks-storage.backend", BackendFilesystem, "Backend for blocks storage: filesystem or s3.")
	f.StringVar(&c.Filesystem.Dir, "blocks-storage.filesystem.dir", "", "Local directory of the filesystem bucket (default <data.dir>/blocks).")
	f.BoolVar(&c.Filesystem.Shared, "blocks-storage.filesystem.shared", false, "The filesystem bucket's directory is the same for every member (a network filesystem, or one directory for a cluster on one machine): queriers read it directly and ask no member for blocks. Off (the default): each member's directory is its own; members serve their blocks to each other's queriers, hand them over when they leave, and the compactor keeps replication-factor copies.")
	f.StringVar(&c.S3.Endpoint, "blocks-storage.s3.endpoint", "", "S3 endpoint, host[:port] without a scheme (e.g. s3.eu-west-1.amazonaws.com or 127.0.0.1:9000).")
	f.StringVar(&c.S3.BucketName, "blocks-storage.s3.bucket-name", "", "S3 bucket name.")
	f.StringVar(&c.S3.AccessKeyID, "blocks-storage.s3.access-key-id", "", "S3 access key id; empty takes $"+EnvAccessKeyID+" when the secret comes from $"+EnvSecretAccessKey+", else the AWS credential chain (environment, instance role).")
	f.Var(secretString{&c.S3.SecretAccessKey}, "blocks-storage.s3.secret-access-key", "S3 `secret` access key. Without it or -blocks-storage.s3.secret-access-key-file it is read from $"+EnvSecretAccessKey+" (with $"+EnvAccessKeyID+" when -blocks-storage.s3.access-key-id is empty). Masked in -help and /debug/pprof/cmdline; a file or the environment also keeps it out of process listings.")
	f.StringVar(&c.S3.SecretAccessKeyFile, "blocks-storage.s3.secret-access-key-file", "", "File holding the S3 secret access key (white space around it is trimmed); conflicts with -blocks-storage.s3.secret-access-key.")
	f.StringVar(&c.S3.Region, "blocks-storage.s3.region", "", "S3 region; empty lets the client discover it.")
	f.BoolVar(&c.S3.Insecure, "blocks-storage.s3.insecure", false, "Use plain HTTP instead of HTTPS to reach S3.")
}

// Validate reports every invalid setting, naming its flag. It never fills in defaults: the
// filesystem directory's default depends on -data.dir and is set by the caller before NewBucket.
// Call ResolveCredentials first: a secret access key may come from a file or the environment.
func (c *Config) Validate() error {
	var errs []error
	switch c.Backend {
	case BackendFilesystem:
		// An empty directory is the caller's default (<data.dir>/blocks), filled in before NewBucket.
	case BackendS3:
		if c.S3.Endpoint == "" {
			errs = append(errs, errors.New("storage: -blocks-storage.s3.endpoint must be set with -blocks-storage.backend=s3"))
		}
		if c.S3.BucketName == "" {
			errs = append(errs, errors.New("storage: -blocks-storage.s3.bucket-name must be set with -blocks-storage.backend=s3"))
		}
		if (c.S3.AccessKeyID == "") != (c.S3.SecretAccessKey == "" && c.S3.SecretAccessKeyFile == "") {
			errs = append(errs, errors.New("storage: -blocks-storage.s3.access-key-id and -blocks-storage.s3.secret-access-key (or -blocks-storage.s3.secret-access-key-file, or $"+EnvSecretAccessKey+") must be set together"))
		}
		if c.S3.SecretAccessKey != "" && c.S3.SecretAccessKeyFile != "" && c.S3.secretSource == "" {
			errs = append(errs, errors.New("storage: -blocks-storage.s3.secret-access-key and -blocks-storage.s3.secret-access-key-file conflict: set one"))
		}
	default:
		errs = append(errs, fmt.Errorf("storage: -blocks-storage.backend %q: want filesystem or s3", c.Backend))
	}
	return errors.Join(errs...)
}

// LocalDir returns the bucket's root directory when the backend is the filesystem, else "".
// Blocks there can be opened in place instead of being downloaded.
func (c *Config) LocalDir() string {
	if c.Backend == BackendFilesystem {
		return c.Filesystem.Dir
	}
	return ""
}

// Shared reports whether every member reads and writes one bucket (S3, or a filesystem directory
// declared shared): blocks are then read from the bucket directly and never moved between members.
// Otherwise the bucket is node-local: members serve, hand over and place their blocks themselves.
func (c *Config) Shared() bool {
	return c.Backend == BackendS3 || c.Filesystem.Shared
}

// NewBucket opens the configured bucket. The filesystem bucket (FilesystemBucket) creates its
// directory if missing, makes every upload durable before it returns, and refuses object keys
// that could name a file outside its directory.
func NewBucket(c Config, logger *slog.Logger) (objstore.Bucket, error) {
	switch c.Backend {
	case BackendFilesystem:
		if c.Filesystem.Dir == "" {
			return nil, errors.New("storage: -blocks-storage.filesystem.dir is empty")
		}
		b, err := NewFilesystemBucket(c.Filesystem.Dir)
		if err != nil {
			return nil, fmt.Errorf("-blocks-storage.filesystem.dir: %w", err)
		}
		return b, nil
	case BackendS3:
		if err := c.ResolveCredentials(os.Getenv); err != nil { // a no-op when the caller already did
			return nil, err
		}
		sc := s3.DefaultConfig
		sc.Endpoint, sc.Bucket, sc.Region, sc.Insecure = c.S3.Endpoint, c.S3.BucketName, c.S3.Region, c.S3.Insecure
		sc.AccessKey, sc.SecretKey, sc.SessionToken = c.S3.AccessKeyID, c.S3.SecretAccessKey, c.S3.sessionToken
		b, err := s3.NewBucketWithConfig(slogKit{logger}, sc, "raftingest-ingester", nil)
		if err != nil {
			return nil, fmt.Errorf("storage: s3 bucket %q at %s: %w", c.S3.BucketName, c.S3.Endpoint, err)
		}
		return nameS3Flags(b, c.S3), nil
	}
	return nil, fmt.Errorf("storage: -blocks-storage.backend %q: want filesystem or s3", c.Backend)
}

// slogKit adapts slog to the go-kit logger objstore's providers take.
type slogKit struct{ l *slog.Logger }

var _ gokitlog.Logger = slogKit{}

func (k slogKit) Log(kv ...any) error {
	if k.l != nil {
		k.l.Debug("objstore", kv...)
	}
	return nil
}
