package s3server

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// TestServer_StoreKillRestart: the server listens on loopback, its bucket exists, an object put
// through S3 is the file <Dir>/<bucket>/<key>; killed, it refuses connections; restarted on the
// same directory, the object reads back; paused, a request waits until it resumes; wrong keys are
// refused.
func TestServer_StoreKillRestart(t *testing.T) {
	s := Start(t, Options{})
	if !strings.HasPrefix(s.Endpoint, "127.0.0.1:") {
		t.Fatalf("endpoint %s: want loopback", s.Endpoint)
	}
	cl, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, err := cl.BucketExists(ctx, s.Bucket); err != nil || !ok {
		t.Fatalf("bucket %s: exists %v, %v", s.Bucket, ok, err)
	}
	body := []byte("hello from a test")
	if _, err := cl.PutObject(ctx, s.Bucket, "t/a/b", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(s.BucketDir(""), "t", "a", "b")); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("object on disk: %q, %v", got, err)
	}

	s.Kill()
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = cl.ListBuckets(short)
	cancel()
	if err == nil {
		t.Fatal("a killed server answered")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	get := func() ([]byte, error) {
		obj, err := cl.GetObject(ctx, s.Bucket, "t/a/b", minio.GetObjectOptions{})
		if err != nil {
			return nil, err
		}
		defer obj.Close()
		return io.ReadAll(obj)
	}
	if got, err := get(); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("after restart: %q, %v", got, err)
	}

	s.Pause()
	done := make(chan error, 1)
	go func() { _, err := get(); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("a paused server answered: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	s.Resume()
	if err := <-done; err != nil {
		t.Fatalf("after resume: %v", err)
	}

	bad := &Server{Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: "wrong-" + s.SecretKey}
	bcl, err := bad.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bcl.ListBuckets(ctx); err == nil || minio.ToErrorResponse(err).Code != "SignatureDoesNotMatch" {
		t.Fatalf("wrong secret: %v, want SignatureDoesNotMatch", err)
	}
}

// TestStart_NoBucketAndCreate: NoBucket makes none; CreateBucket makes another through S3.
func TestStart_NoBucketAndCreate(t *testing.T) {
	s := Start(t, Options{NoBucket: true, Bucket: "later"})
	cl, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := cl.BucketExists(context.Background(), "later"); err != nil || ok {
		t.Fatalf("bucket before CreateBucket: exists %v, %v", ok, err)
	}
	if err := s.CreateBucket("later"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(s.BucketDir("later")); err != nil || !st.IsDir() {
		t.Fatalf("bucket directory: %v", err)
	}
}
