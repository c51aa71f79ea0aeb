package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/raftingest/raftingest/internal/certgen"
	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// httpsFiles are the PEM files of an HTTPS test: the CA, the node's server certificate for
// 127.0.0.1, and a client certificate (what Prometheus or Grafana would hold).
type httpsFiles struct {
	dir                   string
	ca                    string
	serverCert, serverKey string
	clientCert, clientKey string
}

func newHTTPSFiles(t *testing.T, caName string) httpsFiles {
	t.Helper()
	ca, err := certgen.NewCA(caName, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := httpsFiles{dir: t.TempDir()}
	f.ca = filepath.Join(f.dir, "ca.pem")
	if err := os.WriteFile(f.ca, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name string, cert, key []byte, err error) (string, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		cp, kp := filepath.Join(f.dir, name+".pem"), filepath.Join(f.dir, name+"-key.pem")
		if err := certgen.WriteFiles(cp, kp, cert, key, false); err != nil {
			t.Fatal(err)
		}
		return cp, kp
	}
	c, k, err := ca.IssueServer("ingester", []string{"127.0.0.1", "localhost"}, 24*time.Hour)
	f.serverCert, f.serverKey = write("server", c, k, err)
	c, k, err = ca.IssueOperator("prometheus", 24*time.Hour)
	f.clientCert, f.clientKey = write("client", c, k, err)
	return f
}

// flags are the node's flags for HTTPS that requires and verifies client certificates.
func (f httpsFiles) flags() []string {
	return []string{"-server.http-tls-cert-path=" + f.serverCert, "-server.http-tls-key-path=" + f.serverKey,
		"-server.http-tls-ca-path=" + f.ca, "-server.http-tls-client-auth=RequireAndVerifyClientCert"}
}

// client is an HTTPS client trusting the CA of f, presenting the client certificate of cert
// (none when cert is the zero value).
func (f httpsFiles) client(t *testing.T, cert httpsFiles) *http.Client {
	t.Helper()
	caPEM, err := os.ReadFile(f.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert.clientCert != "" {
		kp, err := tls.LoadX509KeyPair(cert.clientCert, cert.clientKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// httpsPush sends one remote-write request to baseURL/api/v1/push with cl.
func httpsPush(cl *http.Client, baseURL string, req *prompb.WriteRequest) (int, string, error) {
	raw, err := req.Marshal()
	if err != nil {
		return 0, "", err
	}
	hreq, err := http.NewRequest(http.MethodPost, baseURL+"/api/v1/push", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		return 0, "", err
	}
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := cl.Do(hreq)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// httpsQuery runs an instant PromQL query through baseURL's Prometheus API and returns the vector.
func httpsQuery(cl *http.Client, baseURL, q string) ([]struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}, error) {
	resp, err := cl.Get(baseURL + "/prometheus/api/v1/query?" + url.Values{"query": {q}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var a struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &a); err != nil || a.Status != "success" {
		return nil, fmt.Errorf("query %q: %d %v: %.300s", q, resp.StatusCode, err, body)
	}
	return a.Data.Result, nil
}

// TestProcess_HTTPS: with -server.http-tls-client-auth=RequireAndVerifyClientCert, a client with a
// certificate of the CA pushes and queries over HTTPS; a client without a certificate, or with one
// from another CA of the same name, is refused in the handshake; plain HTTP is refused; the admin
// listener takes the same TLS.
func TestProcess_HTTPS(t *testing.T) {
	skipShort(t)
	f := newHTTPSFiles(t, "raftingest-http-ca")
	rogue := newHTTPSFiles(t, "raftingest-http-ca")
	c := pc.New(t, append(slicesClone(fastFlags), f.flags()...)...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")
	base, admin := "https://"+a.HTTPAddr, "https://"+a.AdminAddr
	good := f.client(t, f)

	now := time.Now().UnixMilli()
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]string{"__name__", "e2e_https", "job", "https"}, prompb.Sample{Timestamp: now, Value: 42})}}
	if code, body, err := httpsPush(good, base, req); err != nil || code/100 != 2 {
		t.Fatalf("push over HTTPS with a client certificate: %d %q %v", code, body, err)
	}
	res, err := httpsQuery(good, base, "e2e_https")
	if err != nil || len(res) != 1 || res[0].Value[1] != "42" {
		t.Fatalf("query over HTTPS: %+v %v", res, err)
	}

	for _, bad := range []struct {
		what string
		cl   *http.Client
	}{
		{"no client certificate", f.client(t, httpsFiles{})},
		{"a client certificate from another CA", f.client(t, rogue)},
	} {
		if code, body, err := httpsPush(bad.cl, base, req); err == nil {
			t.Errorf("push with %s: accepted (%d %q), want the handshake refused", bad.what, code, body)
		}
		if res, err := httpsQuery(bad.cl, base, "e2e_https"); err == nil {
			t.Errorf("query with %s: answered %+v, want the handshake refused", bad.what, res)
		}
		if _, err := bad.cl.Get(admin + "/debug/pprof/cmdline"); err == nil {
			t.Errorf("admin with %s: answered, want the handshake refused", bad.what)
		}
	}
	// Plain HTTP on the HTTPS ports: Go's server answers 400 before any handler runs.
	if code, body, err := push(a.HTTPAddr, "", req); err == nil && code != http.StatusBadRequest {
		t.Errorf("plain HTTP push to the HTTPS listener: %d %q, want 400 or a refused connection", code, body)
	}
	if code, _, err := pc.HTTPGet(a.AdminAddr, "/debug/pprof/cmdline", ""); err == nil && code != http.StatusBadRequest {
		t.Errorf("plain HTTP to the HTTPS admin listener: %d, want 400 or a refused connection", code)
	}

	// The admin listener serves HTTPS with the same certificates.
	resp, err := good.Get(admin + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatalf("admin over HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin over HTTPS: %d", resp.StatusCode)
	}
	if log := a.Log(); !strings.Contains(log, "https=true") || strings.Contains(log, "without TLS") {
		t.Errorf("start-up log: want https=true and no plain-HTTP warning:\n%s", log)
	}
}

// TestProcess_PrometheusRemoteWriteHTTPS runs Debian's Prometheus 2.42 with nothing but its
// standard tls_config (CA, client certificate and key) against a node that requires and verifies
// client certificates: it scrapes the node's /metrics over HTTPS and remote-writes what it scraped
// back to the node, and those samples are then read through the node's HTTPS query API.
func TestProcess_PrometheusRemoteWriteHTTPS(t *testing.T) {
	skipShort(t)
	f := newHTTPSFiles(t, "raftingest-http-ca")
	c := pc.New(t, append(slicesClone(fastFlags), f.flags()...)...)
	a := c.Start("a", "-bootstrap")
	waitActive(t, c, a.GRPCAddr, "a")

	tlsConfig := fmt.Sprintf(`
      ca_file: %s
      cert_file: %s
      key_file: %s`, f.ca, f.clientCert, f.clientKey)
	prom := startPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: raftingest
    scheme: https
    tls_config:%s
    static_configs:
      - targets: ['%s']
remote_write:
  - url: https://%s/api/v1/push
    tls_config:%s
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 50ms
`, tlsConfig, a.HTTPAddr, a.HTTPAddr, tlsConfig))

	pc.Eventually(t, 60*time.Second, "prometheus remote-wrote over HTTPS", func() (bool, string) {
		code, body, err := pc.HTTPGet(prom.addr, "/metrics", "")
		if err != nil || code != 200 {
			return false, fmt.Sprint(code, err)
		}
		sent := metricValue(body, "prometheus_remote_storage_samples_total") + metricValue(body, "prometheus_remote_storage_succeeded_samples_total")
		return sent > 200, fmt.Sprintf("sent %v", sent)
	})
	_, body, _ := pc.HTTPGet(prom.addr, "/metrics", "")
	if failed := metricValue(body, "prometheus_remote_storage_samples_failed_total") + metricValue(body, "prometheus_remote_storage_failed_samples_total"); failed > 0 {
		t.Errorf("prometheus reports %v failed samples", failed)
	}

	good := f.client(t, f)
	pc.Eventually(t, 30*time.Second, "the scraped series are queryable over HTTPS", func() (bool, string) {
		res, err := httpsQuery(good, "https://"+a.HTTPAddr, `up{job="raftingest"}`)
		if err != nil {
			return false, err.Error()
		}
		if len(res) != 1 || res[0].Value[1] != "1" {
			return false, fmt.Sprintf("%+v", res)
		}
		return true, ""
	})
	res, err := httpsQuery(good, "https://"+a.HTTPAddr, `count(count by (__name__) ({job="raftingest"}))`)
	if err != nil || len(res) != 1 {
		t.Fatalf("count the remote-written metric names: %+v %v", res, err)
	}
	t.Logf("%v metric names remote-written by Prometheus over HTTPS", res[0].Value[1])
}
