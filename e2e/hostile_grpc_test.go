package e2e

// Issue 12, the ingester's gRPC boundary and the hand-over, tried as a hostile client would on a
// plain (no TLS) cluster of real processes: every bad request ends in a clear status, nothing is
// imported or written outside the bucket, and the nodes' memory and goroutines stay bounded.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/raftingest/raftingest/ingesterpb"
	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/ringpb"
	"github.com/raftingest/raftingest/transferpb"
)

// hostileGRPCFlags: a small Push limit, hand-over frames up to 2 MiB (so gRPC's server-wide limit is the
// 4 MiB of the other methods), a short hand-over timeout, and two Raft voters at most, so that the
// fake leaver the slow-drip case adds to Raft is a non-voter that cannot cost the quorum.
var hostileGRPCFlags = []string{"-distributor.max-recv-msg-size", "65536", "-ingester.transfer-frame-bytes", "4096",
	"-ingester.transfer-max-recv-msg-size", "2097152", "-ingester.transfer-timeout", "3s", "-raft.max-voters", "2"}

func TestProcess_HostileGRPC(t *testing.T) {
	skipShort(t)
	c := pc.New(t, append(slicesClone(fastFlags), hostileGRPCFlags...)...)
	bucket := filepath.Join(c.Dir, "deep", "bucket")
	a := c.Start("a", "-bootstrap", "-blocks-storage.filesystem.dir", bucket)
	waitActive(t, c, a.GRPCAddr, "a")
	d := c.Start("d", "-join", a.GRPCAddr, "-ingester.join-after", "1h")
	waitState(t, c, a.GRPCAddr, "d", "PENDING")
	connA, connD := dialPlain(t, a.GRPCAddr), dialPlain(t, d.GRPCAddr)
	baseA, baseD := processStats(t, a), processStats(t, d)
	t.Logf("before: a %s, d %s", baseA, baseD)
	ctx := t.Context()

	t.Run("label value not UTF-8", func(t *testing.T) {
		var b []byte
		b = rawSeries(b, time.Now().UnixMilli(), "__name__", "hostile_utf8", "job", "\xff\xfe")
		b = rawSeries(b, time.Now().UnixMilli(), "__name__", "hostile_ok", "job", "x")
		resp, err := pushRawTo(ctx, connA, "t", b)
		if err != nil {
			t.Fatal(err)
		}
		if es := resp.GetErrors(); len(es) != 1 || es[0].GetIndex() != 0 || es[0].GetCode() != ingesterpb.ErrorCode_INVALID ||
			!strings.Contains(es[0].GetMessage(), "UTF-8") {
			t.Fatalf("per-series errors %v, want series 0 INVALID for its UTF-8", es)
		}
		// Every query that would select the series still works (before, each one failed: a proto3
		// string must be UTF-8).
		got, err := queryIngester(ctx, a.GRPCAddr, "t", "hostile_ok")
		if err != nil || len(got) != 1 {
			t.Fatalf("QueryStream after the refused series: %v %v", got, err)
		}
		if n, err := countSeries(ctx, connA, "t", "hostile_.*"); err != nil || n != 1 {
			t.Fatalf("QueryStream {__name__=~\"hostile_.*\"}: %d series, %v; want the good one", n, err)
		}
	})

	t.Run("tenant out of the bucket", func(t *testing.T) {
		b := rawSeries(nil, time.Now().UnixMilli(), "__name__", "hostile_escape")
		// Every one stays inside c.Dir should it escape the bucket: the test never writes elsewhere.
		for _, tenant := range []string{"../../outside", "../../outside/../outside", "..", "a/b"} {
			_, err := pushRawTo(ctx, connA, tenant, b)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "tenant id") {
				t.Errorf("Push as %q: %v, want InvalidArgument naming the tenant id", tenant, err)
			}
			if _, err := countSeries(ctx, connA, tenant, ".+"); status.Code(err) != codes.InvalidArgument {
				t.Errorf("QueryStream as %q: %v, want InvalidArgument", tenant, err)
			}
		}
		// Flush whatever the node holds: nothing may land outside the bucket.
		code, _, body := adminDo(t, "POST", a.AdminAddr, "/ingester/flush")
		if code != 200 {
			t.Fatalf("flush: %d %s", code, body)
		}
		checkNothingOutside(t, c.Dir, bucket, a.DataDir, d.DataDir)
	})

	t.Run("oversized Push", func(t *testing.T) {
		_, err := pushRawTo(ctx, connA, "t", pushOfSize(200<<10))
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "-distributor.max-recv-msg-size") {
			t.Fatalf("Push of 200 KiB: %v, want ResourceExhausted naming -distributor.max-recv-msg-size", err)
		}
		_, err = pushRawTo(ctx, connA, "t", pushOfSize(5<<20))
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("Push of 5 MiB: %v, want ResourceExhausted (gRPC's own, above every method's limit)", err)
		}
		// Many at once, each just under gRPC's server-wide limit: refused by the per-method one
		// before it is decoded (decoding would cost ~16× its size).
		big := pushOfSize(4<<20 - 64<<10)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for range 16 {
			wg.Go(func() {
				for range 4 {
					if _, err := pushRawTo(ctx, connA, "t", big); status.Code(err) != codes.ResourceExhausted {
						errs <- fmt.Errorf("Push of 4 MiB: %v", err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n, err := countSeries(ctx, connA, "t", "hostile_big"); err != nil || n != 0 {
			t.Fatalf("oversized pushes stored %d series (%v)", n, err)
		}
	})

	t.Run("garbage hand-over frames to a PENDING node", func(t *testing.T) {
		applied := appliedIndex(t, c, d)
		cases := []struct {
			name  string
			frame *transferpb.Frame
			code  codes.Code
			text  string
		}{
			{"random bytes, no checksum", &transferpb.Frame{Version: 2, Leaver: "x", Epoch: applied, Kind: transferpb.FrameKind_FRAME_KIND_SERIES,
				Payload: []byte("\x00\x01garbage\xff")}, codes.InvalidArgument, "corrupt frame"},
			{"unknown version", sealed(&transferpb.Frame{Version: 99, Leaver: "x", Epoch: applied, Kind: transferpb.FrameKind_FRAME_KIND_SERIES,
				Payload: []byte{1}}), codes.InvalidArgument, "unknown frame version"},
			{"sealed garbage from an unpaired leaver", sealed(&transferpb.Frame{Version: 2, Leaver: "a", Epoch: applied,
				Kind: transferpb.FrameKind_FRAME_KIND_SERIES, Payload: []byte("\x05garbage")}), codes.FailedPrecondition, "refusing hand-over"},
		}
		for _, tc := range cases {
			_, err := sendTransfer(ctx, connD, tc.frame)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("%s: %v, want %s containing %q", tc.name, err, tc.code, tc.text)
			}
		}
		// Streams that claim an epoch the ring never reaches wait for it (up to the timeout)
		// without the hand-over slot: several at once all get the same answer, none "busy".
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				_, err := sendTransfer(ctx, connD, sealed(&transferpb.Frame{Version: 2, Leaver: "a", Epoch: applied + 1<<40,
					Kind: transferpb.FrameKind_FRAME_KIND_SERIES, Payload: []byte{0}}))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "did not reach the claim's index") {
				t.Errorf("far-future epoch: %v, want Unavailable: the ring did not reach the index", err)
			}
		}
		if m := waitState(t, c, a.GRPCAddr, "d", "PENDING"); m.HandoverPeer != "" {
			t.Fatalf("d is paired with %q after garbage", m.HandoverPeer)
		}
		if _, err := os.Stat(filepath.Join(d.DataDir, "handover-receiving.json")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("garbage made d write its hand-over marker: %v", err)
		}
		if n, err := countSeries(ctx, connD, "t", ".+"); err != nil || n != 0 {
			t.Fatalf("d holds %d series after garbage (%v)", n, err)
		}
	})

	t.Run("slow-drip hand-over", func(t *testing.T) {
		// A leaver the ring really pairs with d (added through the Ring service, which a plain
		// cluster leaves open) sends one valid frame every timeout−0.5s: never silent for a whole
		// timeout. Before, the stream held d's hand-over slot — and d in JOINING — for as long as the
		// leaver cared; now its budget (one timeout, plus one per -ingester.transfer-frame-bytes
		// received) ends it after about one timeout.
		epoch := claimFakeLeaver(t, c, a, "x", "d")
		st, err := transferpb.NewTransferClient(connD).TransferChunks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var took time.Duration
	drip:
		for seq := uint64(0); ; seq++ {
			if time.Since(start) > 30*time.Second {
				t.Fatalf("the drip went on for %s: d never ended the stream", time.Since(start))
			}
			payload := seriesPayload("t", time.Now().UnixMilli(), "__name__", "drip", "seq", fmt.Sprint(seq))
			if err := st.Send(sealed(&transferpb.Frame{Version: 2, Leaver: "x", Epoch: epoch, Seq: seq,
				Kind: transferpb.FrameKind_FRAME_KIND_SERIES, Payload: payload})); err != nil {
				took = time.Since(start)
				break
			}
			select {
			case <-st.Context().Done(): // d ended the call
				took = time.Since(start)
				break drip
			case <-time.After(2500 * time.Millisecond):
			}
		}
		_, err = st.CloseAndRecv()
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "slower than") {
			t.Fatalf("drip ended with %v, want DeadlineExceeded saying the leaver is too slow", err)
		}
		if took > 2*3*time.Second {
			t.Fatalf("the drip held d's stream for %s, want about one timeout (3s)", took)
		}
		t.Logf("the dripping client saw its stream ended %s after it began: %v", took.Round(100*time.Millisecond), err)
		waitState(t, c, a.GRPCAddr, "d", "PENDING")
		pc.Eventually(t, 20*time.Second, "d discards the dripped data", func() (bool, string) {
			n, err := countSeries(ctx, connD, "t", "drip")
			return err == nil && n == 0, fmt.Sprintf("%d series, %v", n, err)
		})
	})

	// Memory and goroutines come back: nothing above kept a goroutine, a buffer or a stream.
	for _, n := range []struct {
		node *pc.Node
		base procStats
	}{{a, baseA}, {d, baseD}} {
		var last procStats
		pc.Eventually(t, 20*time.Second, n.node.ID+" back to its goroutines", func() (bool, string) {
			last = processStats(t, n.node)
			return last.goroutines <= n.base.goroutines+25, fmt.Sprintf("%s, was %s", last, n.base)
		})
		if last.rss > n.base.rss+256<<20 {
			t.Errorf("%s: RSS grew from %d MiB to %d MiB", n.node.ID, n.base.rss>>20, last.rss>>20)
		}
		t.Logf("after: %s %s", n.node.ID, last)
	}
	checkNothingOutside(t, c.Dir, bucket, a.DataDir, d.DataDir)
}

func dialPlain(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, insecureCreds, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type procStats struct {
	rss        int64
	goroutines int
}

func (s procStats) String() string {
	return fmt.Sprintf("rss=%dMiB goroutines=%d", s.rss>>20, s.goroutines)
}

func processStats(t *testing.T, n *pc.Node) procStats {
	t.Helper()
	_, body, err := pc.HTTPGet(n.HTTPAddr, "/metrics", "")
	if err != nil {
		t.Fatalf("metrics of %s: %v", n.ID, err)
	}
	return procStats{rss: int64(metricValue(body, "process_resident_memory_bytes")), goroutines: int(metricValue(body, "go_goroutines"))}
}

// rawSeries appends one TimeSeries with one sample to a raw PushRequest, encoded by hand: the
// generated code would refuse to marshal a label value that is not UTF-8.
func rawSeries(b []byte, ts int64, kv ...string) []byte {
	var s []byte
	for i := 0; i+1 < len(kv); i += 2 {
		var l []byte
		l = protowire.AppendTag(l, 1, protowire.BytesType)
		l = protowire.AppendString(l, kv[i])
		l = protowire.AppendTag(l, 2, protowire.BytesType)
		l = protowire.AppendString(l, kv[i+1])
		s = protowire.AppendTag(s, 1, protowire.BytesType)
		s = protowire.AppendBytes(s, l)
	}
	var smp []byte
	smp = protowire.AppendTag(smp, 1, protowire.Fixed64Type)
	smp = protowire.AppendFixed64(smp, math.Float64bits(1))
	smp = protowire.AppendTag(smp, 2, protowire.VarintType)
	smp = protowire.AppendVarint(smp, uint64(ts))
	s = protowire.AppendTag(s, 2, protowire.BytesType)
	s = protowire.AppendBytes(s, smp)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, s)
}

// pushOfSize is a valid raw PushRequest of about size bytes.
func pushOfSize(size int) []byte {
	var b []byte
	now := time.Now().UnixMilli()
	pad := strings.Repeat("p", 200)
	for i := 0; len(b) < size; i++ {
		b = rawSeries(b, now, "__name__", "hostile_big", "i", fmt.Sprint(i), "pad", pad)
	}
	return b
}

func pushRawTo(ctx context.Context, conn *grpc.ClientConn, tenant string, b []byte) (*ingesterpb.PushResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return ingesterpb.PushRaw(ingesterpb.WithTenant(ctx, tenant), conn, &ingesterpb.RawPushRequest{Data: &b})
}

// countSeries counts the series QueryStream returns for {__name__=~nameRE}.
func countSeries(ctx context.Context, conn *grpc.ClientConn, tenant, nameRE string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	st, err := ingesterpb.NewIngesterClient(conn).QueryStream(ingesterpb.WithTenant(ctx, tenant), &ingesterpb.QueryRequest{
		StartTimestampMs: math.MinInt64, EndTimestampMs: math.MaxInt64,
		Matchers: []*ingesterpb.LabelMatcher{{Type: ingesterpb.MatchType_REGEX_MATCH, Name: "__name__", Value: nameRE}}})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += len(resp.GetSeries())
	}
}

// checkNothingOutside walks dir and fails for any file or directory that is not in one of keep (or
// on the way to one): the flush may write into the bucket and the data directories only.
func checkNothingOutside(t *testing.T, dir string, keep ...string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		for _, k := range keep {
			if p == k || strings.HasPrefix(p, k+string(filepath.Separator)) || strings.HasPrefix(k, p+string(filepath.Separator)) {
				return nil
			}
		}
		if strings.HasSuffix(p, ".log") && filepath.Dir(p) == dir {
			return nil // the nodes' logs
		}
		t.Errorf("%s was written outside the bucket and the data directories", p)
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, "outside")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s/outside exists: %v", dir, err)
	}
}

// sealed sets f's checksum as transfer/frame.go defines it: crc32c (Castagnoli) of u32be version ·
// uvarint len(leaver) · leaver · u64be epoch · u64be seq · u8 kind · payload.
func sealed(f *transferpb.Frame) *transferpb.Frame {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, f.Version)
	b = binary.AppendUvarint(b, uint64(len(f.Leaver)))
	b = append(b, f.Leaver...)
	b = binary.BigEndian.AppendUint64(b, f.Epoch)
	b = binary.BigEndian.AppendUint64(b, f.Seq)
	b = append(b, byte(f.Kind))
	b = append(b, f.Payload...)
	f.Crc32C = crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
	return f
}

// seriesPayload is a version 2 SERIES payload (transfer/frame.go) of one valid series with one
// chunk of one sample at ts.
func seriesPayload(tenant string, ts int64, kv ...string) []byte {
	str := func(b []byte, s string) []byte { return append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	chk := chunkenc.NewXORChunk()
	app, _ := chk.Appender()
	app.Append(ts, 1)
	b := binary.AppendUvarint(nil, 1)
	b = str(b, tenant)
	b = binary.AppendUvarint(b, uint64(len(kv)/2))
	for i := 0; i+1 < len(kv); i += 2 {
		b = str(str(b, kv[i]), kv[i+1])
	}
	b = binary.AppendUvarint(b, 1)
	b = binary.AppendVarint(b, ts)
	b = binary.AppendVarint(b, ts)
	b = append(b, byte(chunkenc.EncXOR))
	b = str(b, string(chk.Bytes()))
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(1))
}

func sendTransfer(ctx context.Context, conn *grpc.ClientConn, frames ...*transferpb.Frame) (*transferpb.TransferResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := transferpb.NewTransferClient(conn).TransferChunks(ctx)
	if err != nil {
		return nil, err
	}
	for _, f := range frames {
		if err := st.Send(f); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	return st.CloseAndRecv()
}

func appliedIndex(t *testing.T, c *pc.Cluster, n *pc.Node) uint64 {
	t.Helper()
	s, err := c.Status(n.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	return s.AppliedIndex
}

// claimFakeLeaver adds a member id that no process runs to the cluster through the Ring service of
// leader (a non-voter with a dead Raft address), takes it through the lifecycle to LEAVING and has it
// claim joiner, and returns the claim's index: the epoch of a hand-over stream from it.
func claimFakeLeaver(t *testing.T, c *pc.Cluster, leader *pc.Node, id, joiner string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rc := ringpb.NewRingClient(dialPlain(t, leader.GRPCAddr))
	dead := fmt.Sprintf("127.0.0.1:%d", pc.FreePorts(t, 1)[0])
	if _, err := rc.Join(ctx, &ringpb.JoinRequest{Id: id, RaftAddr: dead}); err != nil {
		t.Fatalf("join %s: %v", id, err)
	}
	apply := func(cmd *ringpb.Command) uint64 {
		t.Helper()
		cmd.RequestId = fmt.Sprintf("hostile-%s-%d", id, rand.Uint64())
		resp, err := rc.Apply(ctx, &ringpb.ApplyRequest{Command: cmd})
		if err != nil || resp.GetCode() != 0 {
			t.Fatalf("apply %s for %s: %v %s", cmd.GetOp(), id, err, resp.GetMessage())
		}
		return resp.GetIndex()
	}
	apply(&ringpb.Command{Op: ringpb.Op_OP_REGISTER, Member: id, RaftAddr: dead, GrpcAddr: dead, HttpAddr: dead})
	tokens := make([]uint32, 4)
	for i := range tokens {
		tokens[i] = rand.Uint32()
	}
	slices.Sort(tokens)
	apply(&ringpb.Command{Op: ringpb.Op_OP_CLAIM_TOKENS, Member: id, Tokens: tokens})
	apply(&ringpb.Command{Op: ringpb.Op_OP_ACTIVATE, Member: id})
	apply(&ringpb.Command{Op: ringpb.Op_OP_LEAVE, Member: id})
	epoch := apply(&ringpb.Command{Op: ringpb.Op_OP_CLAIM_JOINER, Member: id, Peer: joiner})
	waitState(t, c, leader.GRPCAddr, joiner, "JOINING")
	return epoch
}
