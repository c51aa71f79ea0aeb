package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/internal/certgen"
	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/transferpb"
)

// testPKI is a CA and the certificates it signed, written under dir as NAME.crt and NAME.key.
type testPKI struct {
	t   *testing.T
	dir string
	ca  *certgen.CA
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	ca, err := certgen.NewCA(name, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: filepath.Join(t.TempDir(), name), ca: ca}
	if err := os.MkdirAll(p.dir, 0o750); err != nil {
		t.Fatal(err)
	}
	p.writeCA(ca.CertPEM)
	return p
}

func (p *testPKI) caPath() string { return filepath.Join(p.dir, "ca.crt") }

// writeCA replaces the CA bundle file (atomically, as an operator's tooling should).
func (p *testPKI) writeCA(bundle []byte) {
	p.t.Helper()
	tmp := p.caPath() + ".tmp"
	if err := os.WriteFile(tmp, bundle, 0o644); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, p.caPath()); err != nil {
		p.t.Fatal(err)
	}
}

// issue writes a certificate for name (a member's when node, else an operator's), replacing any
// earlier one, and returns its auth.Config. The key is renamed into place before the certificate,
// so a reader never pairs a new certificate with an old key for long.
func (p *testPKI) issue(name string, node bool) auth.Config {
	p.t.Helper()
	var c, k []byte
	var err error
	if node {
		c, k, err = p.ca.IssueNode(name, []string{"127.0.0.1"}, 24*time.Hour)
	} else {
		c, k, err = p.ca.IssueOperator(name, 24*time.Hour)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	cfg := auth.Config{CertPath: filepath.Join(p.dir, name+".crt"), KeyPath: filepath.Join(p.dir, name+".key"),
		CAPath: p.caPath(), OperatorNames: []string{auth.DefaultOperatorName}}
	if err := certgen.WriteFiles(cfg.CertPath+".new", cfg.KeyPath+".new", c, k, true); err != nil {
		p.t.Fatal(err)
	}
	for _, f := range []string{cfg.KeyPath, cfg.CertPath} {
		if err := os.Rename(f+".new", f); err != nil {
			p.t.Fatal(err)
		}
	}
	return cfg
}

// flags are a member's -tls.* flags.
func tlsFlags(cfg auth.Config) []string {
	return []string{"-tls.cert-path", cfg.CertPath, "-tls.key-path", cfg.KeyPath, "-tls.ca-path", cfg.CAPath}
}

// useRingctlCert makes every bin/ringctl the test runs present cfg's certificate.
func useRingctlCert(t *testing.T, cfg auth.Config) {
	t.Setenv("RINGCTL_TLS_CERT_PATH", cfg.CertPath)
	t.Setenv("RINGCTL_TLS_KEY_PATH", cfg.KeyPath)
	t.Setenv("RINGCTL_TLS_CA_PATH", cfg.CAPath)
}

// identity is one way an attacker connects: its gRPC credentials, and its TLS config for raw
// connections (nil: plain TCP).
type identity struct {
	name string
	grpc grpc.DialOption
	tls  *tls.Config
}

func clientIdentity(t *testing.T, name string, cfg *auth.Config) identity {
	t.Helper()
	if cfg == nil {
		return identity{name: name, grpc: insecureCreds}
	}
	a, err := auth.NewClient(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return identity{name: name, grpc: a.DialOption(nil), tls: a.ClientTLS("")}
}

// attackerIdentity presents cfg's certificate but, as an attacker would, trusts any server: what
// is tested is the server's refusal, not the client's.
func attackerIdentity(t *testing.T, name string, cfg *auth.Config) identity {
	t.Helper()
	if cfg == nil {
		return identity{name: name, grpc: insecureCreds}
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertPath, cfg.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	// GetClientCertificate, not Certificates: Go's client would hold back a certificate that the
	// server's list of acceptable CAs does not name, and the server would never see it.
	tc := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, //nolint:gosec
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	return identity{name: name, grpc: grpc.WithTransportCredentials(credentials.NewTLS(tc)), tls: tc}
}

func dialGRPC(t *testing.T, addr string, creds grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// clusterPicture is what an attack must not change: the ring's members with their states,
// addresses and tokens, and the Raft configuration.
func clusterPicture(t *testing.T, addr string, creds grpc.DialOption) string {
	t.Helper()
	cl := ringpb.NewRingClient(dialGRPC(t, addr, creds))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cl.GetRing(ctx, &ringpb.GetRingRequest{Linearizable: true})
	if err != nil {
		t.Fatalf("read the ring through %s: %v", addr, err)
	}
	st, err := cl.Status(ctx, &ringpb.StatusRequest{})
	if err != nil {
		t.Fatalf("raft status of %s: %v", addr, err)
	}
	var lines []string
	for _, m := range r.GetMembers() {
		lines = append(lines, fmt.Sprintf("member %s %s raft=%s grpc=%s http=%s tokens=%d first=%v",
			m.GetId(), m.GetState(), m.GetRaftAddr(), m.GetGrpcAddr(), m.GetHttpAddr(), len(m.GetTokens()), m.GetTokens()[:min(3, len(m.GetTokens()))]))
	}
	for _, s := range st.GetServers() {
		lines = append(lines, fmt.Sprintf("raft %s %s voter=%v", s.GetId(), s.GetAddress(), s.GetVoter()))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestProcess_MutualTLS runs a 3-node cluster with mutual TLS on the cluster plane, replays the
// attacks of issue 11 against it with no certificate, a certificate of another CA, a valid
// certificate of a member-to-be that is not in the cluster, and a valid member certificate acting
// beyond its rights, and checks that each is refused and changes nothing: the ring, the Raft
// configuration and the tenants' data are the same before and after. Then an operator adds a
// fourth node with ringctl, a member hands over to it on SIGINT over mTLS, and a member flushes.
func TestProcess_MutualTLS(t *testing.T) {
	skipShort(t)
	pki := newTestPKI(t, "cluster-ca")
	other := newTestPKI(t, "other-ca")
	certs := map[string]auth.Config{}
	for _, id := range []string{"a", "b", "c", "d"} {
		certs[id] = pki.issue(id, true)
	}
	operator := pki.issue("operator", false)
	evil := pki.issue("evil", true)            // signed by the cluster's CA, but never added to the cluster
	impostor := other.issue("operator", false) // an operator name, from another CA
	otherA := other.issue("a", true)           // a member's id, from another CA
	useRingctlCert(t, operator)

	c := pc.New(t, append(slicesClone(fastFlags), handoverFlags...)...)
	a := c.Start("a", append([]string{"-bootstrap"}, tlsFlags(certs["a"])...)...)
	waitActive(t, c, a.GRPCAddr, "a")
	b := c.Start("b", append([]string{"-join", a.GRPCAddr}, tlsFlags(certs["b"])...)...)
	cn := c.Start("c", append([]string{"-join", a.GRPCAddr}, tlsFlags(certs["c"])...)...)
	for _, n := range []*pc.Node{a, b, cn} {
		waitActive(t, c, n.GRPCAddr, "a", "b", "c")
	}
	w := startWriter(a.HTTPAddr, "", 20)
	t.Cleanup(w.Stop)
	w.waitRounds(t, 20)

	member := clientIdentity(t, "member a", &auth.Config{CertPath: certs["a"].CertPath, KeyPath: certs["a"].KeyPath, CAPath: certs["a"].CAPath, OperatorNames: []string{"operator"}})
	opID := clientIdentity(t, "operator", &operator)
	before := clusterPicture(t, a.GRPCAddr, opID.grpc)

	const memberB = "member b beyond its rights"
	attackers := []identity{
		attackerIdentity(t, "no certificate", nil),
		attackerIdentity(t, "another CA's operator", &impostor),
		attackerIdentity(t, "another CA's member a", &otherA),
		attackerIdentity(t, "a valid certificate outside the cluster (evil)", &evil),
		attackerIdentity(t, memberB, &auth.Config{CertPath: certs["b"].CertPath, KeyPath: certs["b"].KeyPath}),
	}
	// Every refusal is one of these: the handshake fails (no certificate, another CA), or the call
	// is PermissionDenied (or refused by the ring's own checks for a member acting for itself).
	refused := func(t *testing.T, who identity, what string, err error, allowed ...codes.Code) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: %s was accepted", who.name, what)
			return
		}
		code := status.Code(err)
		if code == codes.Unavailable || code == codes.PermissionDenied || slices.Contains(allowed, code) {
			t.Logf("%s: %s refused: %v", who.name, what, status.Convert(err).Message())
			return
		}
		t.Errorf("%s: %s: unexpected error %v", who.name, what, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	freePorts := pc.FreePorts(t, 3)
	ghost := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", freePorts[i]) }
	for _, who := range attackers {
		for _, target := range []*pc.Node{a, b} { // the leader (a) and a follower
			ring := ringpb.NewRingClient(dialGRPC(t, target.GRPCAddr, who.grpc))
			// 1. ringctl join evilN ... -voter: three voters that never answer end elections.
			for i := range 3 {
				_, err := ring.Join(ctx, &ringpb.JoinRequest{Id: fmt.Sprintf("evil%d", i), RaftAddr: ghost(i), Voter: true})
				refused(t, who, "join a ghost voter via "+target.ID, err)
			}
			// 2. Register with a live member's id and raft address: rewrite its gRPC address.
			_, err := ring.Apply(ctx, &ringpb.ApplyRequest{Command: &ringpb.Command{Op: ringpb.Op_OP_REGISTER,
				Member: "c", RaftAddr: cn.RaftAddr, GrpcAddr: ghost(0), HttpAddr: ghost(1)}})
			refused(t, who, "re-register member c at the attacker's address via "+target.ID, err, codes.FailedPrecondition)
			// 3. A fake PENDING member to receive a victim's hand-over.
			_, err = ring.Apply(ctx, &ringpb.ApplyRequest{Command: &ringpb.Command{Op: ringpb.Op_OP_REGISTER,
				Member: "evil", RaftAddr: ghost(2), GrpcAddr: ghost(0), HttpAddr: ghost(1)}})
			refused(t, who, "register a fake PENDING member via "+target.ID, err, codes.FailedPrecondition)
			// 4. Operator commands.
			_, err = ring.RemovePeer(ctx, &ringpb.RemovePeerRequest{Id: "c"})
			refused(t, who, "remove member c via "+target.ID, err)
			_, err = ring.TransferLeadership(ctx, &ringpb.TransferLeadershipRequest{Id: "b"})
			refused(t, who, "transfer leadership via "+target.ID, err)
			_, err = ring.Leave(ctx, &ringpb.LeaveRequest{Id: "c"})
			refused(t, who, "make c leave via "+target.ID, err)
			_, err = ring.Apply(ctx, &ringpb.ApplyRequest{Command: &ringpb.Command{Op: ringpb.Op_OP_LEAVE, Member: "c"}})
			refused(t, who, "commit LEAVING for member c via "+target.ID, err)
			_, err = ring.Apply(ctx, &ringpb.ApplyRequest{Command: &ringpb.Command{Op: ringpb.Op_OP_REMOVE, Member: "c"}})
			refused(t, who, "remove member c from the ring via "+target.ID, err)

			// 5. Ingester data RPCs: write and read any tenant, skipping the distributor. (A member
			// may: every member is a distributor, which writes and reads every tenant's replicas.)
			if who.name != memberB {
				ing := ingesterpb.NewIngesterClient(dialGRPC(t, target.GRPCAddr, who.grpc))
				_, err = ing.Push(ingesterpb.WithTenant(ctx, "victim"), forgedPush())
				refused(t, who, "push to tenant victim on "+target.ID, err)
				_, err = queryIngesterWith(ctx, target.GRPCAddr, "anonymous", "e2e_writes", who.grpc)
				refused(t, who, "read tenant anonymous from "+target.ID, err)
				_, err = ing.QueryExemplars(ingesterpb.WithTenant(ctx, "anonymous"), &ingesterpb.ExemplarQueryRequest{EndTimestampMs: 1,
					MatcherSets: []*ingesterpb.ExemplarMatchers{{Matchers: []*ingesterpb.LabelMatcher{{Name: "__name__", Value: "e2e_writes"}}}}})
				refused(t, who, "read tenant anonymous's exemplars from "+target.ID, err)
				_, err = ing.MetricsMetadata(ingesterpb.WithTenant(ctx, "anonymous"), &ingesterpb.MetricsMetadataRequest{})
				refused(t, who, "read tenant anonymous's metadata from "+target.ID, err)
			}
		}
		// 6. A hand-over stream into a node that is not receiving one.
		tr, err := transferpb.NewTransferClient(dialGRPC(t, b.GRPCAddr, who.grpc)).TransferChunks(ctx)
		if err == nil {
			_ = tr.Send(&transferpb.Frame{Leaver: "c", Epoch: 1})
			_, err = tr.CloseAndRecv()
		}
		refused(t, who, "stream a hand-over into b", err)

		// 7. Raft: pose as a leader on a follower's Raft port with an entry no replica can apply.
		// (A member's own certificate does reach Raft: a member is trusted as a Raft peer.)
		if who.name != memberB {
			if err := forgeAppendEntries(b.RaftAddr, who.tls); err == nil {
				t.Errorf("%s: a forged AppendEntries reached b's raft", who.name)
			} else {
				t.Logf("%s: forged AppendEntries refused: %v", who.name, err)
			}
		}
	}
	// The cluster's own operator is no member: it may not write or read tenants' data directly.
	_, err := ingesterpb.NewIngesterClient(dialGRPC(t, a.GRPCAddr, opID.grpc)).Push(ingesterpb.WithTenant(ctx, "victim"), forgedPush())
	refused(t, opID, "push to tenant victim on a", err)
	_, err = queryIngesterWith(ctx, a.GRPCAddr, "anonymous", "e2e_writes", opID.grpc)
	refused(t, opID, "read tenant anonymous from a", err)
	// ringctl itself, with a member's certificate: an operator command is refused, and says why.
	useRingctlCert(t, certs["b"])
	// -force: nothing listens at the ghost address, and ringctl would refuse that before it asks.
	_, stderr, code := c.Ringctl("-addr", a.GRPCAddr, "join", "evil9", ghost(0), "-voter", "-force")
	if code != 1 || !strings.Contains(stderr, "permission denied") || !strings.Contains(stderr, "node b") {
		t.Errorf("ringctl join with member b's certificate: exit %d, %q", code, stderr)
	}
	useRingctlCert(t, operator)

	after := clusterPicture(t, a.GRPCAddr, opID.grpc)
	if after != before {
		t.Fatalf("the attacks changed the cluster:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, n := range []*pc.Node{a, b, cn} {
		if got, err := queryIngesterWith(ctx, n.GRPCAddr, "victim", "e2e_writes", member.grpc); err != nil || len(got) > 0 {
			t.Fatalf("tenant victim on %s after the attacks: %d samples, err %v", n.ID, len(got), err)
		}
		if !n.Running() {
			t.Fatalf("%s stopped during the attacks:\n%s", n.ID, n.Log())
		}
	}
	w.waitRounds(t, w.ackedCount()/20+20)

	// The operator adds d with ringctl; it waits PENDING (join-after 1h). c leaves on SIGINT and
	// hands its data and tokens to d over mutual TLS.
	d := c.Start("d", append([]string{"-ingester.join-after", "1h"}, tlsFlags(certs["d"])...)...)
	if out, stderr, code := c.Ringctl("-addr", b.GRPCAddr, "join", "d", d.RaftAddr); code != 0 {
		t.Fatalf("ringctl join d through a follower: exit %d\n%s%s", code, out, stderr)
	}
	waitState(t, c, a.GRPCAddr, "d", "PENDING")
	v := checkRing(t, c, a.GRPCAddr)
	leaverTokens := mustMember(t, v, "c").Tokens
	// What d must hold is what c held when it left (see leaverWatch for why that is not "every
	// sample acked before the SIGINT"): read c just before the SIGINT and while it leaves.
	lw := watchLeaver(t, cn, member.grpc)
	sigAt := time.Now()
	cn.Signal(syscall.SIGINT)
	if code, err := cn.Wait(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("leaver c: exit %d, %v\n%s", code, err, cn.Log())
	}
	held := lw.stop()
	v = waitActive(t, c, a.GRPCAddr, "a", "b", "d")
	if dm := mustMember(t, v, "d"); !slices.Equal(dm.Tokens, leaverTokens) {
		t.Fatalf("d owns %d tokens, want exactly c's %d", len(dm.Tokens), len(leaverTokens))
	}
	w.waitRounds(t, w.ackedCount()/20+20)
	w.Stop()
	acked, failures, rounds := w.snapshot()
	if len(failures) > 0 {
		t.Errorf("failed pushes during the test (%d rounds): %v", rounds, failures)
	}
	counts := copiesWith(t, acked, "anonymous", member.grpc, a, b, d)
	for k := range acked {
		if counts[k] < 2 {
			t.Fatalf("acked sample %v on %d of a, b, d; want 2", k, counts[k])
		}
	}
	requireHeld(t, held, member.grpc, d)
	logNeverHeld(t, w, sigAt, held, d, member.grpc)
	t.Logf("%d samples acked in %d rounds, all present", len(acked), rounds)

	// A flush through the admin listener writes blocks.
	resp, err := http.Post("http://"+a.AdminAddr+"/ingester/flush", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /ingester/flush on a: %d %s", resp.StatusCode, body)
	}
	blocks, _ := filepath.Glob(filepath.Join(a.DataDir, "blocks", "anonymous", "*", "meta.json"))
	if len(blocks) == 0 {
		t.Fatalf("no block in %s after the flush (%s)", filepath.Join(a.DataDir, "blocks"), body)
	}
}

// forgedPush is one sample of e2e_writes, for tenant victim when sent with its header.
func forgedPush() *ingesterpb.PushRequest {
	return &ingesterpb.PushRequest{Timeseries: []*ingesterpb.TimeSeries{{
		Labels:  []*ingesterpb.Label{{Name: "__name__", Value: "e2e_writes"}, {Name: "series", Value: "forged"}},
		Samples: []*ingesterpb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 666}},
	}}}
}

// forgeAppendEntries connects to a Raft port (over TLS with cfg, plain TCP when cfg is nil) and
// sends an AppendEntries from a made-up leader with a far higher term and an entry of an unknown
// command version, which would halt every replica that applied it. It returns nil when the peer
// answered the RPC, i.e. the forged leader was heard.
func forgeAppendEntries(raftAddr string, cfg *tls.Config) error {
	layer := &forgeLayer{cfg: cfg, closed: make(chan struct{})}
	trans := raft.NewNetworkTransport(layer, 1, 5*time.Second, io.Discard)
	defer trans.Close()
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte("127.0.0.1:1")},
		Term:      1 << 40, PrevLogEntry: 0, PrevLogTerm: 0, LeaderCommitIndex: 1 << 40,
		Entries: []*raft.Log{{Index: 1, Term: 1 << 40, Type: raft.LogCommand, Data: []byte{0xff, 1, 2, 3}}},
	}
	var resp raft.AppendEntriesResponse
	return trans.AppendEntries("b", raft.ServerAddress(raftAddr), req, &resp)
}

// forgeLayer is a raft.StreamLayer that only dials, over TLS when cfg is set.
type forgeLayer struct {
	cfg       *tls.Config
	closeOnce sync.Once
	closed    chan struct{}
}

func (l *forgeLayer) Accept() (net.Conn, error) {
	<-l.closed
	return nil, net.ErrClosed
}
func (l *forgeLayer) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}
func (l *forgeLayer) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (l *forgeLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil || l.cfg == nil {
		return c, err
	}
	tc := tls.Client(c, l.cfg)
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// TestProcess_TLSRotationUnderLoad rotates every member's certificate while a writer pushes: first
// new keys from the same CA, then a new CA (the bundle holds both, then only the new one), without
// restarting anything; then a member restarts, so that every link it has is a new handshake with
// the new CA alone. No acknowledged sample is lost, and the old CA's operator is refused at the end.
func TestProcess_TLSRotationUnderLoad(t *testing.T) {
	skipShort(t)
	pki := newTestPKI(t, "ca-1")
	certs := map[string]auth.Config{}
	for _, id := range []string{"a", "b", "c"} {
		certs[id] = pki.issue(id, true)
	}
	useRingctlCert(t, pki.issue("operator", false))
	oldOperator := pki.issue("operator-1", false) // operators are named by -tls.operator-names
	c := pc.New(t, append(slicesClone(fastFlags), "-tls.operator-names", "operator,operator-1")...)
	a := c.Start("a", append([]string{"-bootstrap"}, tlsFlags(certs["a"])...)...)
	waitActive(t, c, a.GRPCAddr, "a")
	b := c.Start("b", append([]string{"-join", a.GRPCAddr}, tlsFlags(certs["b"])...)...)
	cn := c.Start("c", append([]string{"-join", a.GRPCAddr}, tlsFlags(certs["c"])...)...)
	nodes := []*pc.Node{a, b, cn}
	for _, n := range nodes {
		waitActive(t, c, n.GRPCAddr, "a", "b", "c")
	}
	w := startWriter(a.HTTPAddr, "", 20)
	t.Cleanup(w.Stop)
	w.waitRounds(t, 20)

	// waitReloads waits until every member has re-read its files at least n times (a scrape of
	// /metrics checks the files, as every handshake does).
	waitReloads := func(n float64) {
		t.Helper()
		for _, node := range nodes {
			pc.Eventually(t, 20*time.Second, node.ID+" reloads its certificates", func() (bool, string) {
				got := metricOf(t, node, "raftingest_tls_certificate_reloads_total")
				return got >= n, fmt.Sprintf("raftingest_tls_certificate_reloads_total %v, want %v", got, n)
			})
		}
	}
	// 1. New keys, same CA.
	for _, id := range []string{"a", "b", "c"} {
		pki.issue(id, true)
	}
	waitReloads(1)
	w.waitRounds(t, w.ackedCount()/20+20)

	// 2. A new CA: first trusted beside the old one, then member certificates from it, then the old
	// CA dropped.
	ca2, err := certgen.NewCA("ca-2", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	oldCA := pki.ca
	pki.writeCA(append(slices.Clone(oldCA.CertPEM), ca2.CertPEM...))
	waitReloads(2)
	pki.ca = ca2
	for _, id := range []string{"a", "b", "c"} {
		pki.issue(id, true)
	}
	newOperator := pki.issue("operator", false)
	waitReloads(3)
	pki.writeCA(ca2.CertPEM)
	waitReloads(4)
	w.waitRounds(t, w.ackedCount()/20+20)

	// 3. b restarts: every connection to and from it is a new handshake under the new CA only.
	b.Kill()
	b.Start()
	for _, n := range nodes {
		waitActive(t, c, n.GRPCAddr, "a", "b", "c")
	}
	w.waitRounds(t, w.ackedCount()/20+20)
	w.Stop()

	acked, failures, rounds := w.snapshot()
	t.Logf("%d samples acked in %d rounds; failed pushes: %v", len(acked), rounds, failures)
	member := clientIdentity(t, "member a", &auth.Config{CertPath: certs["a"].CertPath, KeyPath: certs["a"].KeyPath, CAPath: certs["a"].CAPath, OperatorNames: []string{"operator"}})
	counts := copiesWith(t, acked, "anonymous", member.grpc, a, b, cn)
	for k := range acked {
		if counts[k] < 2 {
			t.Fatalf("acked sample %v on %d of 3 members, want at least 2", k, counts[k])
		}
	}
	if len(acked) == 0 {
		t.Fatal("nothing was acknowledged")
	}
	// The old CA's operator certificate no longer opens the cluster; the new one does.
	useRingctlCert(t, oldOperator)
	if _, stderr, code := c.Ringctl("-addr", a.GRPCAddr, "status"); code == 0 {
		t.Fatalf("an operator certificate of the dropped CA still works: %s", stderr)
	}
	useRingctlCert(t, newOperator)
	if _, stderr, code := c.Ringctl("-addr", a.GRPCAddr, "status"); code != 0 {
		t.Fatalf("the new CA's operator is refused: %s", stderr)
	}
}
