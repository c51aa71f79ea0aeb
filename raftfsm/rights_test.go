package raftfsm

import (
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/raftingest/raftingest/auth"
	"github.com/raftingest/raftingest/internal/certgen"
	"github.com/raftingest/raftingest/ringstate"
)

// tlsNode is a Node with only the Authority set, enough for the rights checks.
func tlsNode(t *testing.T) *Node {
	t.Helper()
	ca, err := certgen.NewCA("ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key, err := ca.IssueNode("a", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := auth.Config{CertPath: filepath.Join(dir, "a.crt"), KeyPath: filepath.Join(dir, "a.key"),
		CAPath: filepath.Join(dir, "ca.crt"), OperatorNames: []string{"operator"}}
	if err := certgen.WriteFiles(cfg.CertPath, cfg.KeyPath, cert, key, false); err != nil {
		t.Fatal(err)
	}
	if err := certgen.WriteFiles(cfg.CAPath, filepath.Join(dir, "ca.key"), ca.CertPEM, ca.KeyPEM, false); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(cfg, "a", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Node{cfg: Config{ID: "a", TLS: a}}
}

func TestRights_ApplyOnlyAsItself(t *testing.T) {
	n := tlsNode(t)
	b := auth.Principal{Name: "b", Kind: auth.Node}
	op := auth.Principal{Name: "operator", Kind: auth.Operator}
	for _, tc := range []struct {
		why  string
		p    auth.Principal
		cmd  ringstate.Command
		okay bool
	}{
		{"a member registers itself", b, ringstate.Command{Op: ringstate.OpRegister, Member: "b"}, true},
		{"a member heartbeats for itself", b, ringstate.Command{Op: ringstate.OpHeartbeat, Member: "b"}, true},
		{"registering another member rewrites its addresses", b, ringstate.Command{Op: ringstate.OpRegister, Member: "c"}, false},
		{"a fake PENDING member", b, ringstate.Command{Op: ringstate.OpRegister, Member: "evil"}, false},
		{"heartbeats keep another member healthy", b, ringstate.Command{Op: ringstate.OpHeartbeat, Member: "c"}, false},
		{"LEAVING is the member's own decision", b, ringstate.Command{Op: ringstate.OpLeave, Member: "c"}, false},
		{"a leaver claims its joiner", b, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "b", Peer: "d"}, true},
		{"claiming a joiner for another leaver", b, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "c", Peer: "d"}, false},
		{"the joiner completes the hand-over", b, ringstate.Command{Op: ringstate.OpCompleteHandover, Member: "c", Peer: "b"}, true},
		{"a member claims the compactor lease for itself", b, ringstate.Command{Op: ringstate.OpClaimCompactor, Member: "b", LeaseMs: 1000}, true},
		{"claiming the compactor lease for another member", b, ringstate.Command{Op: ringstate.OpClaimCompactor, Member: "c", LeaseMs: 1000}, false},
		{"the leaver cannot complete it: the joiner says it has the data", b, ringstate.Command{Op: ringstate.OpCompleteHandover, Member: "b", Peer: "d"}, false},
		{"a third member cannot complete it", b, ringstate.Command{Op: ringstate.OpCompleteHandover, Member: "c", Peer: "d"}, false},
		{"the leaver aborts", b, ringstate.Command{Op: ringstate.OpAbortHandover, Member: "b", Peer: "d"}, true},
		{"the joiner aborts", b, ringstate.Command{Op: ringstate.OpAbortHandover, Member: "c", Peer: "b"}, true},
		{"a third member cannot abort", b, ringstate.Command{Op: ringstate.OpAbortHandover, Member: "c", Peer: "d"}, false},
		{"a member removes itself after its flush", b, ringstate.Command{Op: ringstate.OpRemove, Member: "b"}, true},
		{"removing another member is an operator's (RemovePeer)", b, ringstate.Command{Op: ringstate.OpRemove, Member: "c"}, false},
		{"operators do not apply ring commands", op, ringstate.Command{Op: ringstate.OpRemove, Member: "c"}, false},
		{"anonymous callers cannot exist under TLS, and may do nothing", auth.Principal{}, ringstate.Command{Op: ringstate.OpHeartbeat, Member: ""}, false},
	} {
		t.Run(tc.why, func(t *testing.T) {
			err := n.authorizeCommand(tc.p, &tc.cmd)
			if tc.okay != (err == nil) {
				t.Fatalf("allowed %v, want %v: %v", err == nil, tc.okay, err)
			}
			if err != nil && status.Code(err) != codes.PermissionDenied {
				t.Fatalf("refusal is %v, want PermissionDenied", status.Code(err))
			}
		})
	}
	// Without TLS everyone may do everything, as before identities.
	plain := &Node{cfg: Config{ID: "a"}}
	if err := plain.authorizeCommand(auth.Principal{}, &ringstate.Command{Op: ringstate.OpRemove, Member: "c"}); err != nil {
		t.Fatal(err)
	}
}

func TestRights_OperatorCommands(t *testing.T) {
	n := tlsNode(t)
	b := auth.Principal{Name: "b", Kind: auth.Node}
	op := auth.Principal{Name: "operator", Kind: auth.Operator}
	check := func(what string, err error, okay bool) {
		t.Helper()
		if okay != (err == nil) {
			t.Errorf("%s: allowed %v, want %v: %v", what, err == nil, okay, err)
		}
	}
	check("an operator joins a node as a voter", n.authorizeJoin(op, "d", "127.0.0.1:1", true), true)
	check("a member joins itself (-join)", n.authorizeJoin(b, "b", "127.0.0.1:1", false), true)
	check("a member forces itself in as a voter", n.authorizeJoin(b, "b", "127.0.0.1:1", true), false)
	check("a member joins a ghost", n.authorizeJoin(b, "evil1", "127.0.0.1:1", false), false)
	check("an operator removes a member", n.authorizeRemove(op, "c"), true)
	check("a member removes itself (leave)", n.authorizeRemove(b, "b"), true)
	check("a member removes another", n.authorizeRemove(b, "c"), false)
	check("a member transfers leadership", n.authorizeOperator(b, "transfer raft leadership"), false)
	check("an operator transfers leadership", n.authorizeOperator(op, "transfer raft leadership"), true)
}
