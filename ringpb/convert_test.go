package ringpb

import (
	"errors"
	"testing"

	"github.com/raftingest/raftingest/ringstate"
)

func TestToCommand_OpOutOfRangeIsRefusedNotTruncated(t *testing.T) {
	// 257 would truncate to 1 (register) in a uint8.
	c := ToCommand(&Command{Op: Op(257), Member: "a", RaftAddr: "127.0.0.1:1"})
	if c.Op != 0 {
		t.Fatalf("op %d, want 0", c.Op)
	}
	if _, _, err := ringstate.New().Apply(c, 1); !errors.Is(err, ringstate.ErrInvalidCommand) {
		t.Fatalf("apply: %v, want ErrInvalidCommand", err)
	}
}

func TestCommandAndMember_RoundTrip(t *testing.T) {
	in := ringstate.Command{Op: ringstate.OpClaimTokens, RequestID: "r", Member: "a", Tokens: ringstate.Tokens{1, 5}, Replace: true}
	out := ToCommand(FromCommand(&in))
	if out.Op != in.Op || out.RequestID != in.RequestID || out.Member != in.Member || !out.Replace || len(out.Tokens) != 2 {
		t.Fatalf("round trip: %+v -> %+v", in, out)
	}
	m := ringstate.Member{ID: "a", RaftAddr: "127.0.0.1:1", State: ringstate.LEAVING, Tokens: ringstate.Tokens{3}, HeartbeatMs: 7, HandoverPeer: "b"}
	if got := ToMember(FromMember(&m)); got.ID != m.ID || got.State != m.State || got.HeartbeatMs != 7 || got.HandoverPeer != "b" || got.Tokens[0] != 3 {
		t.Fatalf("member round trip: %+v", got)
	}
}
