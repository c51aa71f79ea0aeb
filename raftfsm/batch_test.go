package raftfsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/ringstate"
)

func TestHeartbeatBatchCodec_RoundTrip(t *testing.T) {
	beats := []ringstate.Beat{{Member: "a"}, {Member: "ingester-0999", CommandVersion: 4}, {Member: "a", CommandVersion: 1 << 31},
		{Member: ringstate.MemberID(strings.Repeat("x", ringstate.MaxIDLen)), CommandVersion: 3}}
	data, err := EncodeHeartbeatBatch(beats, 1_700_000_000_123)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != HeartbeatBatchCommandVersion {
		t.Fatalf("version byte %d", data[0])
	}
	cmd, ts, stamped, err := DecodeStamped(data)
	if err != nil || !stamped || ts != 1_700_000_000_123 || cmd.Op != ringstate.OpHeartbeatBatch ||
		fmt.Sprint(cmd.Beats) != fmt.Sprint(beats) {
		t.Fatalf("decoded %+v at %d (stamped %v), %v", cmd, ts, stamped, err)
	}
	got, at, err := DecodeLog(&raft.Log{Type: raft.LogCommand, Data: data, AppendedAt: time.Unix(5, 0)}, 7)
	if err != nil || at != 1_700_000_000_123 || len(got.Beats) != len(beats) {
		t.Fatalf("DecodeLog: %+v at %d, %v", got, at, err)
	}
}

func TestHeartbeatBatchCodec_Refuses(t *testing.T) {
	many := make([]ringstate.Beat, ringstate.MaxBeats+1)
	for i := range many {
		many[i].Member = "a"
	}
	for name, beats := range map[string][]ringstate.Beat{
		"none":     nil,
		"too many": many,
		"empty id": {{Member: ""}},
		"long id":  {{Member: ringstate.MemberID(strings.Repeat("x", ringstate.MaxIDLen+1))}},
		"not utf8": {{Member: "a\xff"}},
	} {
		if _, err := EncodeHeartbeatBatch(beats, 1); !errors.Is(err, ErrUnencodable) || !errors.Is(err, ringstate.ErrInvalidCommand) {
			t.Errorf("%s: %v, want ErrUnencodable", name, err)
		}
	}
	if _, err := EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeatBatch, Beats: []ringstate.Beat{{Member: "a"}}}); !errors.Is(err, ErrUnencodable) {
		t.Errorf("EncodeCommand of a batch: %v, want ErrUnencodable (the protobuf form would drop the beats)", err)
	}
	if _, err := EncodeCommand(ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a", Beats: []ringstate.Beat{{Member: "b"}}}); !errors.Is(err, ErrUnencodable) {
		t.Errorf("EncodeCommand of a heartbeat with beats: %v, want ErrUnencodable", err)
	}

	good, err := EncodeHeartbeatBatch([]ringstate.Beat{{Member: "ab", CommandVersion: 4}}, 9)
	if err != nil {
		t.Fatal(err)
	}
	head := good[:1+stampLen]
	corrupt := map[string][]byte{
		"no stamp":         good[:5],
		"no count":         head,
		"zero beats":       append(bytes.Clone(head), 0),
		"count too large":  append(bytes.Clone(head), 0x81, 0x40, 2, 'a', 'b', 4), // 8193
		"count past input": append(bytes.Clone(head), 3, 2, 'a', 'b', 4),
		"empty id":         append(bytes.Clone(head), 1, 0, 4, 4),
		"id past input":    append(bytes.Clone(head), 1, 9, 'a', 'b'),
		"id not utf8":      append(bytes.Clone(head), 1, 1, 0xff, 4),
		"no version":       append(bytes.Clone(head), 1, 2, 'a', 'b'),
		"version > uint32": append(bytes.Clone(head), 1, 1, 'a', 0xff, 0xff, 0xff, 0xff, 0x7f),
		"trailing bytes":   append(bytes.Clone(good), 0),
	}
	for name, data := range corrupt {
		if _, _, _, err := DecodeStamped(data); !errors.Is(err, ErrCorruptCommand) {
			t.Errorf("%s: %v, want ErrCorruptCommand", name, err)
		}
	}
	// A heartbeat-batch op in a version-2 protobuf entry (no build writes one) is an op of the
	// wrong version: applied as op 0, refused alike by every build.
	pbc := ringpb.FromCommand(&ringstate.Command{Op: ringstate.OpHeartbeat, Member: "a"})
	pbc.Op = ringpb.Op(ringstate.OpHeartbeatBatch)
	raw, err := proto.Marshal(pbc)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := StampCommand(append([]byte{CommandVersion}, raw...), 5)
	if err != nil {
		t.Fatal(err)
	}
	var operr *OpVersionError
	if _, _, _, err := DecodeStamped(v2); !errors.As(err, &operr) || operr.MinVersion != HeartbeatBatchCommandVersion {
		t.Fatalf("batch op in a version-2 entry: %v, want *OpVersionError naming version 4", err)
	}
}

// FuzzDecodeHeartbeatBatch: the batch decoder never panics, and what it accepts re-encodes to the
// same beats.
func FuzzDecodeHeartbeatBatch(f *testing.F) {
	good, _ := EncodeHeartbeatBatch([]ringstate.Beat{{Member: "a", CommandVersion: 4}, {Member: "b"}}, 42)
	f.Add(good[1+stampLen:])
	f.Add([]byte{1, 1, 'a', 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		beats, err := decodeBeats(body)
		if err != nil {
			return
		}
		again, err := EncodeHeartbeatBatch(beats, 0)
		if err != nil {
			t.Fatalf("decoded %v, which does not encode: %v", beats, err)
		}
		back, err := decodeBeats(again[1+stampLen:])
		if err != nil || fmt.Sprint(back) != fmt.Sprint(beats) {
			t.Fatalf("%v -> %v, %v", beats, back, err)
		}
	})
}

// TestHeartbeatBatcher_Coalesces: concurrent heartbeats within a window become one proposal, each
// sender gets its own beat's outcome, a full batch goes without waiting out the window, and Close
// fails what is pending.
func TestHeartbeatBatcher_Coalesces(t *testing.T) {
	var calls atomic.Int32
	var mu sync.Mutex
	var sizes []int
	b := NewHeartbeatBatcher(50*time.Millisecond, 64, func(beats []ringstate.Beat) []BeatResult {
		calls.Add(1)
		mu.Lock()
		sizes = append(sizes, len(beats))
		mu.Unlock()
		var events []ringstate.Event
		for _, x := range beats {
			if strings.HasPrefix(string(x.Member), "ghost") {
				events = append(events, ringstate.Event{Kind: ringstate.EventHeartbeatSkipped, Member: x.Member})
			}
		}
		return BatchResults(beats, 7, events, nil)
	})
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		id := fmt.Sprintf("m%d", i)
		if i%10 == 0 {
			id = fmt.Sprintf("ghost%d", i)
		}
		wg.Go(func() {
			r := b.Submit(context.Background(), ringstate.Beat{Member: ringstate.MemberID(id)})
			if r.Index != 7 {
				r.Err = fmt.Errorf("index %d: %v", r.Index, r.Err)
			}
			errs[i] = r.Err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%10 == 0 {
			if !errors.Is(err, ringstate.ErrUnknownMember) {
				t.Errorf("ghost %d: %v, want ErrUnknownMember", i, err)
			}
		} else if err != nil {
			t.Errorf("beat %d: %v", i, err)
		}
	}
	if n := calls.Load(); n > 3 {
		t.Errorf("40 concurrent heartbeats took %d proposals (sizes %v)", n, sizes)
	}

	b.Close()

	// A batch that reaches its bound is proposed at once, not at the end of its (hour-long) window.
	full := NewHeartbeatBatcher(time.Hour, 8, func(beats []ringstate.Beat) []BeatResult { return BatchResults(beats, 3, nil, nil) })
	defer full.Close()
	for i := range 8 {
		wg.Go(func() {
			if r := full.Submit(ctxT(t, 10*time.Second), ringstate.Beat{Member: ringstate.MemberID(fmt.Sprintf("f%d", i))}); r.Err != nil {
				t.Errorf("beat %d of a full batch: %v", i, r.Err)
			}
		})
	}
	wg.Wait()

	// A forwarded group joins one batch, each beat answered in order; a group larger than the bound
	// is split over batches.
	var got [][]ringstate.Beat
	group := NewHeartbeatBatcher(time.Hour, 4, func(beats []ringstate.Beat) []BeatResult {
		mu.Lock()
		got = append(got, beats)
		mu.Unlock()
		return BatchResults(beats, uint64(len(beats)), nil, nil)
	})
	defer group.Close()
	beats := []ringstate.Beat{{Member: "g0"}, {Member: "g1"}, {Member: "g2"}, {Member: "g3"}, {Member: "g4"}, {Member: "g5"},
		{Member: "g6"}, {Member: "g7"}}
	res := group.SubmitAll(ctxT(t, 10*time.Second), beats)
	if len(res) != len(beats) || len(got) != 2 || len(got[0]) != 4 || len(got[1]) != 4 {
		t.Fatalf("group of 8 with a bound of 4: results %v, batches %v", res, got)
	}
	for i, r := range res {
		if r.Err != nil || r.Index != 4 {
			t.Errorf("beat %d: %+v", i, r)
		}
	}

	// Close fails the pending beat and refuses new ones.
	slow := NewHeartbeatBatcher(time.Hour, 64, func(beats []ringstate.Beat) []BeatResult { return BatchResults(beats, 1, nil, nil) })
	done := make(chan error, 1)
	go func() { done <- slow.Submit(context.Background(), ringstate.Beat{Member: "a"}).Err }()
	time.Sleep(20 * time.Millisecond)
	slow.Close()
	if err := <-done; !errors.Is(err, ErrBatcherClosed) {
		t.Fatalf("pending beat at Close: %v", err)
	}
	if err := slow.Submit(context.Background(), ringstate.Beat{Member: "a"}).Err; !errors.Is(err, ErrBatcherClosed) {
		t.Fatalf("beat after Close: %v", err)
	}
}

// TestCluster_HeartbeatsBatched: on a real 3-node cluster, many concurrent heartbeats sent through
// every node (followers forward them to the leader) are acknowledged each, are visible in the ring
// at the time of the entry that carried them, and take far fewer entries than heartbeats; a
// heartbeat of a member the ring does not know gets ErrUnknownMember without failing the others.
func TestCluster_HeartbeatsBatched(t *testing.T) {
	c := newCluster(t)
	c.cfg.HeartbeatBatchWindow = 100 * time.Millisecond
	nodes := c.cluster(3)
	const members = 60
	for i := range members {
		c.mustApply(nodes[0], ringstate.Command{Op: ringstate.OpRegister, Member: ringstate.MemberID(fmt.Sprintf("m%02d", i)),
			RaftAddr: fmt.Sprintf("127.0.0.2:%d", 1000+i), CommandVersion: uint32(MaxCommandVersion)})
	}
	l := c.leader()
	before := l.node.Ring().TimeMs()
	first := l.node.AppliedIndex()
	ctx := ctxT(t, 20*time.Second)
	var wg sync.WaitGroup
	errs := make([]error, members+1)
	idxs := make([]uint64, members+1)
	for i := range members + 1 {
		id := ringstate.MemberID(fmt.Sprintf("m%02d", i))
		if i == members {
			id = "ghost"
		}
		wg.Go(func() {
			idxs[i], errs[i] = nodes[i%3].node.Apply(ctx, ringstate.Command{Op: ringstate.OpHeartbeat, Member: id,
				CommandVersion: uint32(MaxCommandVersion)})
		})
	}
	wg.Wait()
	entries := l.node.AppliedIndex() - first
	for i, err := range errs[:members] {
		if err != nil || idxs[i] == 0 {
			t.Errorf("heartbeat m%02d: index %d, %v", i, idxs[i], err)
		}
	}
	if !errors.Is(errs[members], ringstate.ErrUnknownMember) {
		t.Errorf("heartbeat of a member the ring does not know: %v, want ErrUnknownMember", errs[members])
	}
	if c.leader() != l {
		t.Skip("leadership moved during the test")
	}
	if entries == 0 || entries > members/4 {
		t.Errorf("%d heartbeats took %d entries, want far fewer", members+1, entries)
	}
	for _, n := range nodes {
		if err := n.node.WaitApplied(ctx, slicesMax(idxs)); err != nil {
			t.Fatal(err)
		}
		r := n.node.Ring()
		for i := range members {
			m, ok := r.Member(ringstate.MemberID(fmt.Sprintf("m%02d", i)))
			if !ok || m.HeartbeatMs <= before {
				t.Errorf("%s: m%02d heartbeat at %d, not after %d", n.id, i, m.HeartbeatMs, before)
			}
		}
	}
	t.Logf("%d heartbeats through 3 nodes: %d entries", members+1, entries)
	c.checkConsistent()
}

func slicesMax(s []uint64) uint64 {
	var m uint64
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

// TestCluster_HeartbeatsSingleWhileAMemberReadsNoBatches: while the members advertise only command
// version 3 (a build before batches, which would halt on a version-4 entry), or while a Raft server
// is not a ring member, the leader proposes every heartbeat as an entry of its own; once every
// member advertises 4 and every server is a member, heartbeats are batched.
func TestCluster_HeartbeatsSingleWhileAMemberReadsNoBatches(t *testing.T) {
	c := newCluster(t)
	c.cfg.HeartbeatBatchWindow = 100 * time.Millisecond
	n1 := c.bootstrap("n1")
	const members = 20
	register := func(v uint32) {
		for i := range members {
			c.mustApply(n1, ringstate.Command{Op: ringstate.OpRegister, Member: ringstate.MemberID(fmt.Sprintf("m%02d", i)),
				RaftAddr: fmt.Sprintf("127.0.0.2:%d", 1000+i), CommandVersion: v})
		}
	}
	// beat sends a heartbeat of every member concurrently and counts the command entries they took:
	// single heartbeats and batches.
	beat := func() (singles, batches int) {
		t.Helper()
		first := n1.node.AppliedIndex()
		ctx := ctxT(t, 20*time.Second)
		var wg sync.WaitGroup
		for i := range members {
			wg.Go(func() {
				// Each advertises nothing new: the gate reads what the registers stored.
				if _, err := n1.node.Apply(ctx, ringstate.Command{Op: ringstate.OpHeartbeat, Member: ringstate.MemberID(fmt.Sprintf("m%02d", i))}); err != nil {
					t.Errorf("heartbeat m%02d: %v", i, err)
				}
			})
		}
		wg.Wait()
		for i := first + 1; i <= n1.node.AppliedIndex(); i++ {
			var l raft.Log
			if err := n1.node.store.GetLog(i, &l); err != nil {
				t.Fatalf("log entry %d: %v", i, err)
			}
			if l.Type != raft.LogCommand {
				continue
			}
			cmd, err := DecodeCommand(l.Data)
			switch {
			case err != nil:
				t.Fatalf("log entry %d: %v", i, err)
			case cmd.Op == ringstate.OpHeartbeatBatch && l.Data[0] == HeartbeatBatchCommandVersion:
				batches++
			case cmd.Op == ringstate.OpHeartbeat && l.Data[0] == StampedCommandVersion:
				singles++
			default:
				t.Fatalf("log entry %d: %s in a version-%d entry", i, cmd.Op, l.Data[0])
			}
		}
		return singles, batches
	}
	register(3)
	if singles, batches := beat(); singles != members || batches != 0 {
		t.Errorf("members of version 3: %d heartbeats took %d single entries and %d batches, want one single each",
			members, singles, batches)
	}
	register(uint32(MaxCommandVersion))
	if singles, batches := beat(); singles != 0 || batches == 0 || batches > members/4 {
		t.Errorf("every member of version %d: %d heartbeats took %d single entries and %d batches, want a few batches",
			MaxCommandVersion, members, singles, batches)
	}

	// A Raft server that is not a ring member yet (added, not registered) applies the log too, and
	// nothing says what it reads: one entry per heartbeat until it registers.
	n2 := c.start("n2", false)
	retry(t, "add n2", func(ctx context.Context) error {
		_, err := n1.node.AddPeer(ctx, "n2", n2.raftAddr, false)
		return err
	})
	if singles, batches := beat(); singles != members || batches != 0 {
		t.Errorf("with an unregistered raft server: %d heartbeats took %d single entries and %d batches, want one single each",
			members, singles, batches)
	}
	if !poll(t, 10*time.Second, func() bool { l, _ := n2.node.Leader(); return l != "" }) {
		t.Fatal("n2 never heard from the leader")
	}
	c.register(n2)
	if singles, batches := beat(); singles != 0 || batches == 0 || batches > members/4 {
		t.Errorf("once n2 registered: %d heartbeats took %d single entries and %d batches, want a few batches",
			members, singles, batches)
	}
	c.checkConsistent()
}

// TestNode_BatchWindowCappedByHeartbeatPeriod: a member waits for its heartbeat's outcome at most one
// -ring.heartbeat-period, so the leader's batches wait at most a quarter of it, whatever
// -ring.heartbeat-batch-window says (the e2e tests run 200ms periods under the 500ms default).
func TestNode_BatchWindowCappedByHeartbeatPeriod(t *testing.T) {
	for _, tc := range []struct{ window, period, want time.Duration }{
		{500 * time.Millisecond, 200 * time.Millisecond, 50 * time.Millisecond},
		{500 * time.Millisecond, 5 * time.Second, 500 * time.Millisecond},
		{500 * time.Millisecond, 0, 500 * time.Millisecond},
	} {
		c := newCluster(t)
		c.cfg.HeartbeatBatchWindow, c.cfg.RingHeartbeatPeriod = tc.window, tc.period
		n := c.bootstrap("n1")
		if n.node.beats == nil || n.node.beats.window != tc.want {
			t.Errorf("window %s, period %s: batcher %+v, want a window of %s", tc.window, tc.period, n.node.beats, tc.want)
		}
		ctx := ctxT(t, 10*time.Second)
		if _, err := n.node.Apply(ctx, ringstate.Command{Op: ringstate.OpHeartbeat, Member: "n1"}); err != nil {
			t.Fatal(err)
		}
		c.stop(n)
	}
	c := newCluster(t)
	c.cfg.HeartbeatBatchWindow = 0
	if n := c.bootstrap("n1"); n.node.beats != nil {
		t.Error("a window of 0 made a batcher")
	}
}
