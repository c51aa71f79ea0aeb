package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/thanos-io/objstore"
)

// S3ConfigError is an error of the S3 bucket that its configuration causes (an unknown access key,
// a secret that does not match it, a bucket that does not exist, a wrong region, an endpoint that
// does not answer or speaks plain HTTP), naming the flag to fix. Err is the error the S3 client
// returned; errors.Is/As and github.com/pkg/errors.Cause (which objstore's IsObjNotFoundErr and
// IsAccessDeniedErr use) both reach it.
type S3ConfigError struct {
	Flag string // the flag to fix, e.g. "-blocks-storage.s3.bucket-name"
	Msg  string // what is wrong, naming Flag
	Err  error
}

func (e *S3ConfigError) Error() string { return "storage: " + e.Msg + ": " + e.Err.Error() }

// Unwrap returns the S3 client's error.
func (e *S3ConfigError) Unwrap() error { return e.Err }

// Cause is github.com/pkg/errors' Unwrap: objstore's error classifiers follow it.
func (e *S3ConfigError) Cause() error { return e.Err }

// Flags of the S3 bucket, as error messages name them.
const (
	flagS3Endpoint = "-blocks-storage.s3.endpoint"
	flagS3Bucket   = "-blocks-storage.s3.bucket-name"
	flagS3KeyID    = "-blocks-storage.s3.access-key-id"
	flagS3Secret   = "-blocks-storage.s3.secret-access-key"
	flagS3Region   = "-blocks-storage.s3.region"
	flagS3Insecure = "-blocks-storage.s3.insecure"
)

// explainS3 returns err as an *S3ConfigError when the S3 server's answer (or the lack of one) points
// at a setting, else err unchanged: an object that is not there (NoSuchKey), a server error or a
// timeout are not the configuration's fault and keep their own error, so objstore's
// IsObjNotFoundErr still recognises them.
func (c S3Config) explainS3(err error) error {
	if err == nil {
		return nil
	}
	var already *S3ConfigError
	if errors.As(err, &already) {
		return err
	}
	at := c.Endpoint
	wrap := func(flag, format string, args ...any) error {
		return &S3ConfigError{Flag: flag, Msg: fmt.Sprintf(format, args...), Err: err}
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case "InvalidAccessKeyId", "XAdminUserNotFound": // AWS's code; versitygw's
			return wrap(flagS3KeyID, "%s %q is not known to the S3 server at %s", flagS3KeyID, c.AccessKeyID, at)
		case "SignatureDoesNotMatch":
			return wrap(flagS3Secret, "the S3 secret access key (%s, %s-file or $%s) does not match %s %q at %s",
				flagS3Secret, flagS3Secret, EnvSecretAccessKey, flagS3KeyID, c.AccessKeyID, at)
		case "NoSuchBucket":
			return wrap(flagS3Bucket, "%s %q: no such bucket at %s (create it, or fix the name)", flagS3Bucket, c.BucketName, at)
		case "InvalidBucketName":
			return wrap(flagS3Bucket, "%s %q is not a valid bucket name", flagS3Bucket, c.BucketName)
		case "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "PermanentRedirect":
			return wrap(flagS3Region, "%s %q does not match the bucket's region at %s", flagS3Region, c.Region, at)
		case "AccessDenied":
			return wrap(flagS3KeyID, "access to bucket %q at %s denied to %s %q (its permissions, or %s)",
				c.BucketName, at, flagS3KeyID, c.AccessKeyID, flagS3Secret)
		}
		return err
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return wrap(flagS3Insecure, "%s %s answers plain HTTP: set %s", flagS3Endpoint, at, flagS3Insecure)
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return wrap(flagS3Insecure, "%s %s does not answer TLS: set %s for plain HTTP", flagS3Endpoint, at, flagS3Insecure)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return wrap(flagS3Endpoint, "%s %s: host not found", flagS3Endpoint, at)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return wrap(flagS3Endpoint, "%s %s does not answer", flagS3Endpoint, at)
	}
	return err
}

// s3Bucket is the S3 bucket with explainS3 applied to every error: an upload, a read or a listing
// that fails because of the configuration says which flag to fix (the flush's 500, the querier's
// error, the logs), instead of the S3 server's words alone.
type s3Bucket struct {
	objstore.Bucket
	c S3Config
}

// nameS3Flags wraps the S3 bucket b opened with c (NewBucket) so that its errors name the flag
// to fix (explainS3).
func nameS3Flags(b objstore.Bucket, c S3Config) objstore.Bucket { return s3Bucket{Bucket: b, c: c} }

func (b s3Bucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	return b.c.explainS3(b.Bucket.Upload(ctx, name, r, opts...))
}

func (b s3Bucket) Delete(ctx context.Context, name string) error {
	return b.c.explainS3(b.Bucket.Delete(ctx, name))
}

func (b s3Bucket) Iter(ctx context.Context, dir string, f func(string) error, opts ...objstore.IterOption) error {
	return b.c.explainS3(b.Bucket.Iter(ctx, dir, f, opts...))
}

func (b s3Bucket) IterWithAttributes(ctx context.Context, dir string, f func(objstore.IterObjectAttributes) error, opts ...objstore.IterOption) error {
	return b.c.explainS3(b.Bucket.IterWithAttributes(ctx, dir, f, opts...))
}

func (b s3Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := b.Bucket.Get(ctx, name)
	return rc, b.c.explainS3(err)
}

func (b s3Bucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	rc, err := b.Bucket.GetRange(ctx, name, off, length)
	return rc, b.c.explainS3(err)
}

// Exists answers false without an error when the server answers 404 to its HEAD request, which S3
// also does for a bucket that does not exist (a HEAD answer has no body to say which): CheckBucket
// is what tells a missing bucket apart.
func (b s3Bucket) Exists(ctx context.Context, name string) (bool, error) {
	ok, err := b.Bucket.Exists(ctx, name)
	return ok, b.c.explainS3(err)
}

func (b s3Bucket) Attributes(ctx context.Context, name string) (objstore.ObjectAttributes, error) {
	a, err := b.Bucket.Attributes(ctx, name)
	return a, b.c.explainS3(err)
}

// errStopListing ends CheckBucket's listing at its first entry.
var errStopListing = errors.New("stop listing")

// CheckBucket makes one request that needs the whole configuration to be right — a listing of the
// bucket's top level, stopped at its first entry — and returns its error: for S3, naming the flag
// to fix when the configuration is at fault (S3ConfigError). A missing bucket, an unknown key or
// a wrong secret show here at once, where an upload would meet them only at the first flush and
// an existence check (HEAD) would read a missing bucket as a missing object. Bound ctx: an S3
// endpoint that does not answer is retried by the client.
func CheckBucket(ctx context.Context, bkt objstore.Bucket) error {
	err := bkt.Iter(ctx, "", func(string) error { return errStopListing })
	if errors.Is(err, errStopListing) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage: bucket %s: %w", bkt.Name(), err)
	}
	return nil
}
