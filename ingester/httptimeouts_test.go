package ingester

import (
	"flag"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHTTPTimeouts_Flags: the -server.http-*-timeout flags reach both servers, the admin one
// without a write timeout (flushes and profiles run longer), and a write timeout below
// -querier.timeout is refused naming both flags (Mimir's rule).
func TestHTTPTimeouts_Flags(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"-server.http-read-timeout=7s", "-server.http-read-header-timeout=3s", "-server.http-write-timeout=5m", "-server.http-idle-timeout=9s"}); err != nil {
		t.Fatal(err)
	}
	pub, adm := &http.Server{}, &http.Server{}
	c.HTTPServer.setTimeouts(pub, false)
	c.HTTPServer.setTimeouts(adm, true)
	if pub.ReadTimeout != 7*time.Second || pub.ReadHeaderTimeout != 3*time.Second || pub.WriteTimeout != 5*time.Minute || pub.IdleTimeout != 9*time.Second {
		t.Fatalf("public server %+v", pub)
	}
	if adm.WriteTimeout != 0 || adm.ReadTimeout != 7*time.Second {
		t.Fatalf("admin server: write %s read %s", adm.WriteTimeout, adm.ReadTimeout)
	}
	c.HTTPServer.WriteTimeout = time.Minute
	c.HTTPServer.IdleTimeout = -time.Second
	err := c.validateHTTPServer()
	for _, want := range []string{"-querier.timeout=2m0s must not be above -server.http-write-timeout=1m0s", "-server.http-idle-timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// TestHTTPTimeouts_SlowHeadersCut: a client that never finishes its headers is disconnected after
// the read-header timeout, instead of holding its connection (and goroutine) for good.
func TestHTTPTimeouts_SlowHeadersCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	h := httpServerConfig{ReadTimeout: 5 * time.Second, ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: time.Second}
	h.setTimeouts(srv, false)
	go srv.Serve(ln)
	defer srv.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("POST /api/v1/push HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn)
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("the server did not close a connection stuck in its headers: %v after %s", err, time.Since(start))
	}
}
