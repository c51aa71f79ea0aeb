package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/raftingest/raftingest/ringstate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testConfig(id string) Config {
	c := DefaultConfig()
	c.ID = ringstate.MemberID(id)
	c.RaftAddr = id + ":9001"
	c.GRPCAddr = id + ":9095"
	c.HTTPAddr = id + ":8080"
	return c
}

// member is one running Lifecycle under test.
type member struct {
	t      *testing.T
	l      *Lifecycle
	cancel context.CancelFunc
	done   chan error
	logs   *logBuffer
	ended  bool
	err    error
}

func startMember(t *testing.T, f *fakeRing, cfg Config, seed uint64, setup ...func(*Lifecycle)) *member {
	t.Helper()
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := New(cfg, f.node(cfg.ID), logger, rand.New(rand.NewPCG(seed, seed)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, s := range setup {
		s(l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{t: t, l: l, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { m.done <- l.Run(ctx) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of %s:\n%s", cfg.ID, logs)
		}
	})
	return m
}

// crash cancels Run (an abrupt stop) and returns its result.
func (m *member) crash() error {
	m.cancel()
	return m.wait()
}

// wait returns Run's result, blocking until it returns.
func (m *member) wait() error {
	if !m.ended {
		m.err = <-m.done
		m.ended = true
		m.cancel()
	}
	return m.err
}

// result returns Run's result if it has returned; it must be called after synctest.Wait.
func (m *member) result() (error, bool) {
	if m.ended {
		return m.err, true
	}
	select {
	case err := <-m.done:
		m.err, m.ended = err, true
		m.cancel()
		return err, true
	default:
		return nil, false
	}
}

func (m *member) running() bool {
	_, ended := m.result()
	return !ended
}

// ops lists the committed non-heartbeat commands and LeaveCluster calls of id, in order.
func ops(f *fakeRing, id ringstate.MemberID) []string {
	var out []string
	for _, e := range f.eventList() {
		if fs := strings.Fields(e); len(fs) > 1 && (fs[1] == string(id) || len(fs) > 2 && fs[2] == string(id)) {
			out = append(out, e)
		}
	}
	return out
}

func wantOps(t *testing.T, f *fakeRing, id ringstate.MemberID, want ...string) {
	t.Helper()
	if got := ops(f, id); !slices.Equal(got, want) {
		t.Fatalf("ops of %s:\n got  %q\n want %q", id, got, want)
	}
}

// setupActive commits, as another actor, a member that is ACTIVE with n random tokens.
func setupActive(t *testing.T, f *fakeRing, id string, n int, seed uint64) ringstate.Tokens {
	t.Helper()
	mid := ringstate.MemberID(id)
	f.commit(t, ringstate.Command{Op: ringstate.OpRegister, Member: mid, RaftAddr: id + ":9001"})
	ts, err := f.Ring().FreeTokens(n, rand.New(rand.NewPCG(seed, 1)))
	if err != nil {
		t.Fatal(err)
	}
	f.commit(t, ringstate.Command{Op: ringstate.OpClaimTokens, Member: mid, Tokens: ts})
	f.commit(t, ringstate.Command{Op: ringstate.OpActivate, Member: mid})
	return ts
}

func TestLifecycle_JoinsExactlyAtJoinAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		cfg := testConfig("a")
		cfg.JoinAfter = 10 * time.Second
		m := startMember(t, f, cfg, 1)
		defer m.crash()

		synctest.Wait()
		if got := f.member(t, "a"); got.State != ringstate.PENDING || len(got.Tokens) != 0 {
			t.Fatalf("right after start: %s with %d tokens, want PENDING with none", got.State, len(got.Tokens))
		}
		time.Sleep(cfg.JoinAfter - time.Millisecond)
		synctest.Wait()
		if s := m.l.State(); s != ringstate.PENDING || m.l.Ready() {
			t.Fatalf("1ms before join-after: %s ready=%v, want PENDING and not ready", s, m.l.Ready())
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		got := f.member(t, "a")
		if got.State != ringstate.ACTIVE || len(got.Tokens) != cfg.NumTokens || !m.l.Ready() {
			t.Fatalf("at join-after: %s with %d tokens ready=%v, want ACTIVE with %d and ready",
				got.State, len(got.Tokens), m.l.Ready(), cfg.NumTokens)
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a")
		// Each step carried its own request id.
		ids := map[string]bool{}
		for _, op := range []ringstate.Op{ringstate.OpRegister, ringstate.OpClaimTokens, ringstate.OpActivate} {
			for _, c := range f.callsOf("a", op) {
				if c.RequestID == "" || ids[c.RequestID] {
					t.Fatalf("%s: request id %q empty or reused", op, c.RequestID)
				}
				ids[c.RequestID] = true
			}
		}
		f.checkInvariants(t)
	})
}

func TestLifecycle_JoinAfterZeroClaimsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		m := startMember(t, f, testConfig("a"), 1)
		defer m.crash()
		synctest.Wait()
		if !m.l.Ready() {
			t.Fatalf("with -ingester.join-after=0 the member should be ACTIVE at once, is %s", m.l.State())
		}
	})
}

func TestLifecycle_HeartbeatsAtPeriodInEveryState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		cfg := testConfig("a")
		cfg.JoinAfter = 2 * time.Minute // heartbeats while PENDING too
		start := time.Now()
		m := startMember(t, f, cfg, 1)
		defer m.crash()

		time.Sleep(time.Minute + time.Millisecond)
		synctest.Wait()
		if n, s := len(f.committedOf("a", ringstate.OpHeartbeat)), m.l.State(); n != 12 || s != ringstate.PENDING {
			t.Fatalf("after 1m: %d heartbeats in %s, want 12 in PENDING", n, s)
		}
		time.Sleep(9 * time.Minute)
		synctest.Wait()
		beats := f.committedOf("a", ringstate.OpHeartbeat)
		if len(beats) != 120 {
			t.Fatalf("after 10m at %s: %d heartbeats, want 120", cfg.HeartbeatPeriod, len(beats))
		}
		for _, b := range beats {
			if b.err != nil || b.cmd.RequestID != "" {
				t.Fatalf("heartbeat %+v: want committed without a request id", b)
			}
		}
		if got, want := f.member(t, "a").HeartbeatMs, start.Add(10*time.Minute).UnixMilli(); got != want {
			t.Fatalf("last heartbeat at %d, want %d", got, want)
		}
	})
}

func TestLifecycle_RestartOfActiveMemberResumesWithItsTokens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		cfg := testConfig("a")
		m := startMember(t, f, cfg, 1)
		synctest.Wait()
		tokens := f.member(t, "a").Tokens
		if err := m.crash(); !errors.Is(err, context.Canceled) {
			t.Fatalf("crash: Run returned %v, want context.Canceled", err)
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a") // no leave on crash

		cfg.JoinAfter = time.Hour // a resumed member must not wait
		m2 := startMember(t, f, cfg, 2)
		defer m2.crash()
		synctest.Wait()
		got := f.member(t, "a")
		if got.State != ringstate.ACTIVE || !slices.Equal(got.Tokens, tokens) || !m2.l.Ready() {
			t.Fatalf("after restart: %s, same tokens %v, ready %v; want ACTIVE with the same tokens, ready",
				got.State, slices.Equal(got.Tokens, tokens), m2.l.Ready())
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a", "register a")
	})
}

func TestLifecycle_RestartFixUps(t *testing.T) {
	for _, tc := range []struct {
		name  string
		why   string
		setup func(t *testing.T, f *fakeRing) ringstate.Tokens
		want  []string // ops after the setup
	}{{
		name: "joining with own tokens activates",
		why:  "it crashed between its claim and its activate",
		setup: func(t *testing.T, f *fakeRing) ringstate.Tokens {
			f.commit(t, ringstate.Command{Op: ringstate.OpRegister, Member: "a", RaftAddr: "a:9001"})
			ts, _ := f.Ring().FreeTokens(128, rand.New(rand.NewPCG(7, 7)))
			f.commit(t, ringstate.Command{Op: ringstate.OpClaimTokens, Member: "a", Tokens: ts})
			return ts
		},
		want: []string{"register a", "activate a"},
	}, {
		name: "leaving resumes active",
		why:  "it crashed while leaving and still has its tokens and WAL (cortex#1921)",
		setup: func(t *testing.T, f *fakeRing) ringstate.Tokens {
			ts := setupActive(t, f, "a", 128, 7)
			f.commit(t, ringstate.Command{Op: ringstate.OpLeave, Member: "a"})
			return ts
		},
		want: []string{"register a"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeRing()
				ts := tc.setup(t, f)
				before := len(ops(f, "a"))
				cfg := testConfig("a")
				cfg.JoinAfter = time.Hour
				m := startMember(t, f, cfg, 1)
				defer m.crash()
				synctest.Wait()
				got := f.member(t, "a")
				if got.State != ringstate.ACTIVE || !slices.Equal(got.Tokens, ts) {
					t.Fatalf("%s: %s, same tokens %v; want ACTIVE with its tokens", tc.why, got.State, slices.Equal(got.Tokens, ts))
				}
				if after := ops(f, "a")[before:]; !slices.Equal(after, tc.want) {
					t.Fatalf("ops after restart %q, want %q", after, tc.want)
				}
			})
		})
	}
}

func TestLifecycle_RestartWithOtherNumTokensKeepsOldTokens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		setupActive(t, f, "other", 128, 3)
		cfg := testConfig("a")
		m := startMember(t, f, cfg, 1)
		synctest.Wait()
		orig := f.member(t, "a").Tokens
		m.crash()

		// Top up (mimir#3801): every old token kept, new ones added, still ACTIVE.
		cfg.NumTokens = 200
		m = startMember(t, f, cfg, 2)
		synctest.Wait()
		up := f.member(t, "a")
		if up.State != ringstate.ACTIVE || len(up.Tokens) != 200 {
			t.Fatalf("top up: %s with %d tokens, want ACTIVE with 200", up.State, len(up.Tokens))
		}
		for _, tok := range orig {
			if !slices.Contains(up.Tokens, tok) {
				t.Fatalf("top up dropped token %d", tok)
			}
		}
		m.crash()

		// Trim: a subset of what it had.
		cfg.NumTokens = 64
		m = startMember(t, f, cfg, 3)
		defer m.crash()
		synctest.Wait()
		down := f.member(t, "a")
		if down.State != ringstate.ACTIVE || len(down.Tokens) != 64 {
			t.Fatalf("trim: %s with %d tokens, want ACTIVE with 64", down.State, len(down.Tokens))
		}
		for _, tok := range down.Tokens {
			if !slices.Contains(up.Tokens, tok) {
				t.Fatalf("trim added token %d", tok)
			}
		}
		if n := len(f.committedOf("a", ringstate.OpActivate)); n != 1 {
			t.Fatalf("%d activates, want 1: a resumed ACTIVE member never leaves ACTIVE", n)
		}
		f.checkInvariants(t)
	})
}

func TestLifecycle_TokensFile(t *testing.T) {
	t.Run("written back after a random claim", func(t *testing.T) {
		dir := t.TempDir()
		synctest.Test(t, func(t *testing.T) {
			f := newFakeRing()
			cfg := testConfig("a")
			cfg.TokensFilePath = filepath.Join(dir, "tokens.json")
			m := startMember(t, f, cfg, 1)
			defer m.crash()
			synctest.Wait()
			ts, found, err := readTokensFile(cfg.TokensFilePath)
			if err != nil || !found {
				t.Fatalf("tokens file: found %v, %v", found, err)
			}
			if got := f.member(t, "a"); !slices.Equal(ts, got.Tokens) || got.State != ringstate.ACTIVE {
				t.Fatalf("file holds other tokens than the ring")
			}
		})
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("want only the tokens file in %s (no temp files left), got %d entries", dir, len(ents))
		}
	})
	t.Run("used on a fresh join", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "tokens.json")
		want, _ := ringstate.GenerateTokens(128, nil, rand.New(rand.NewPCG(9, 9)))
		if err := os.WriteFile(path, ringstate.FormatTokensFile(want), 0o644); err != nil {
			t.Fatal(err)
		}
		synctest.Test(t, func(t *testing.T) {
			f := newFakeRing()
			cfg := testConfig("a")
			cfg.TokensFilePath = path
			m := startMember(t, f, cfg, 1)
			defer m.crash()
			synctest.Wait()
			if got := f.member(t, "a"); !slices.Equal(got.Tokens, want) || got.State != ringstate.ACTIVE {
				t.Fatalf("member %s did not claim the tokens of the file", got.State)
			}
		})
	})
	t.Run("collision is logged and retried, never replaced", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "tokens.json")
		want, _ := ringstate.GenerateTokens(128, nil, rand.New(rand.NewPCG(9, 9)))
		if err := os.WriteFile(path, ringstate.FormatTokensFile(want), 0o644); err != nil {
			t.Fatal(err)
		}
		synctest.Test(t, func(t *testing.T) {
			f := newFakeRing()
			// "owner" holds one token of the file.
			f.commit(t, ringstate.Command{Op: ringstate.OpRegister, Member: "owner", RaftAddr: "owner:9001"})
			f.commit(t, ringstate.Command{Op: ringstate.OpClaimTokens, Member: "owner", Tokens: ringstate.Tokens{want[5]}})
			cfg := testConfig("a")
			cfg.TokensFilePath = path
			m := startMember(t, f, cfg, 1)
			defer m.crash()

			time.Sleep(time.Minute)
			synctest.Wait()
			if s := m.l.State(); s != ringstate.PENDING {
				t.Fatalf("with a colliding tokens file: %s, want PENDING", s)
			}
			claims := f.callsOf("a", ringstate.OpClaimTokens)
			if len(claims) < 5 || len(claims) > 30 {
				t.Fatalf("%d claims in a minute: want retries with capped backoff", len(claims))
			}
			for _, c := range claims {
				if !slices.Equal(c.Tokens, want) {
					t.Fatalf("a claim used tokens other than the file's")
				}
			}
			tok := want[5]
			if n := m.logs.count("level=ERROR", "file="+path, "owner=owner", "token="+strconv.FormatUint(uint64(tok), 10)); n < 5 {
				t.Fatalf("want errors naming file, token and owner; got %d:\n%s", n, m.logs)
			}

			// The owner leaves: the next retry claims the file's tokens.
			f.commit(t, ringstate.Command{Op: ringstate.OpRemove, Member: "owner"})
			time.Sleep(maxBackoff)
			synctest.Wait()
			if got := f.member(t, "a"); got.State != ringstate.ACTIVE || !slices.Equal(got.Tokens, want) {
				t.Fatalf("after the owner left: %s; want ACTIVE with the file's tokens", got.State)
			}
		})
	})
}

// setupLeaver commits a LEAVING member "L" with tokens, as a leaving peer would.
func setupLeaver(t *testing.T, f *fakeRing) ringstate.Tokens {
	ts := setupActive(t, f, "L", 128, 11)
	f.commit(t, ringstate.Command{Op: ringstate.OpLeave, Member: "L"})
	return ts
}

func TestLifecycle_ClaimedByLeaver_CompleteHandover(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		leaverTokens := setupLeaver(t, f)
		cfg := testConfig("a")
		cfg.JoinAfter = 30 * time.Second
		cfg.TokensFilePath = filepath.Join(dir, "tokens.json")
		m := startMember(t, f, cfg, 1)
		defer m.crash()

		time.Sleep(10 * time.Second)
		f.commit(t, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "L", Peer: "a"})
		time.Sleep(time.Minute) // well past join-after
		synctest.Wait()
		if got := f.member(t, "a"); got.State != ringstate.JOINING || got.HandoverPeer != "L" || m.l.Ready() {
			t.Fatalf("claimed: %s peer %q; want JOINING receiving from L, not ready", got.State, got.HandoverPeer)
		}
		f.commit(t, ringstate.Command{Op: ringstate.OpCompleteHandover, Member: "L", Peer: "a"})
		synctest.Wait()
		got := f.member(t, "a")
		if got.State != ringstate.ACTIVE || !slices.Equal(got.Tokens, leaverTokens) || !m.l.Ready() {
			t.Fatalf("after hand-over: %s; want ACTIVE with the leaver's tokens", got.State)
		}
		wantOps(t, f, "a", "register a", "claim-joiner L a", "complete-handover L a") // no claim of its own
		if ts, _, _ := readTokensFile(cfg.TokensFilePath); !slices.Equal(ts, leaverTokens) {
			t.Fatalf("tokens file does not hold the received tokens")
		}
	})
}

func TestLifecycle_ClaimedByLeaver_AbortRestartsJoinAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		setupLeaver(t, f)
		cfg := testConfig("a")
		cfg.JoinAfter = 30 * time.Second
		m := startMember(t, f, cfg, 1)
		defer m.crash()

		time.Sleep(10 * time.Second)
		f.commit(t, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "L", Peer: "a"})
		time.Sleep(10 * time.Second)
		f.commit(t, ringstate.Command{Op: ringstate.OpAbortHandover, Member: "L", Peer: "a"})
		// Aborted at 20s: the join-after wait starts again, so the claim comes at 50s, not 30s.
		time.Sleep(cfg.JoinAfter - time.Millisecond)
		synctest.Wait()
		if s := m.l.State(); s != ringstate.PENDING {
			t.Fatalf("1ms before the restarted join-after: %s, want PENDING", s)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := f.member(t, "a"); got.State != ringstate.ACTIVE || len(got.Tokens) != cfg.NumTokens {
			t.Fatalf("at the restarted join-after: %s, want ACTIVE", got.State)
		}
		wantOps(t, f, "a", "register a", "claim-joiner L a", "abort-handover L a", "claim-tokens a", "activate a")
	})
}

func TestLifecycle_LeaveFromActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		setupActive(t, f, "other", 16, 5)
		m := startMember(t, f, testConfig("a"), 1, func(l *Lifecycle) {
			l.OnLeaving = func(ctx context.Context) error {
				if s := l.State(); s != ringstate.LEAVING {
					t.Errorf("OnLeaving called in %s, want LEAVING", s)
				}
				f.mark("on-leaving a")
				time.Sleep(time.Minute) // a long hand-over: heartbeats must go on meanwhile
				return nil
			}
		})
		synctest.Wait()
		beats := len(f.committedOf("a", ringstate.OpHeartbeat))
		go m.l.Leave()
		m.l.Leave() // idempotent, from any goroutine
		if err := m.wait(); err != nil {
			t.Fatalf("Run after Leave: %v, want nil", err)
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a",
			"leave a", "on-leaving a", "remove a", "leave-cluster a")
		if _, ok := f.Ring().Member("a"); ok {
			t.Fatal("a is still in the ring")
		}
		if n := len(f.committedOf("a", ringstate.OpHeartbeat)) - beats; n < 11 {
			t.Fatalf("%d heartbeats during a one-minute OnLeaving, want about 12", n)
		}
		if m.l.Ready() {
			t.Fatal("ready after leaving")
		}
	})
}

func TestLifecycle_OnLeavingErrorIsRetriedBeforeRemoval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		calls := 0
		m := startMember(t, f, testConfig("a"), 1, func(l *Lifecycle) {
			l.OnLeaving = func(ctx context.Context) error {
				calls++
				if calls < 3 {
					return errors.New("storage unavailable")
				}
				return nil
			}
		})
		synctest.Wait()
		m.l.Leave()
		if err := m.wait(); err != nil {
			t.Fatal(err)
		}
		if calls != 3 {
			t.Fatalf("OnLeaving called %d times, want 3", calls)
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a", "leave a", "remove a", "leave-cluster a")
	})
}

func TestLifecycle_LeaveFromPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		cfg := testConfig("a")
		cfg.JoinAfter = time.Hour
		m := startMember(t, f, cfg, 1, func(l *Lifecycle) {
			l.OnLeaving = func(context.Context) error { t.Error("OnLeaving called for a PENDING member"); return nil }
		})
		synctest.Wait()
		m.l.Leave()
		if err := m.wait(); err != nil {
			t.Fatal(err)
		}
		wantOps(t, f, "a", "register a", "remove a", "leave-cluster a")
	})
}

func TestLifecycle_LeaveBeforeRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		cfg := testConfig("a")
		cfg.JoinAfter = time.Hour
		m := startMember(t, f, cfg, 1, func(l *Lifecycle) { l.Leave() })
		if err := m.wait(); err != nil {
			t.Fatal(err)
		}
		wantOps(t, f, "a", "register a", "remove a", "leave-cluster a")
	})
}

func TestLifecycle_LeaveWhileReceiving(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		setupLeaver(t, f)
		cfg := testConfig("a")
		cfg.JoinAfter = time.Hour
		m := startMember(t, f, cfg, 1)
		synctest.Wait()
		f.commit(t, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "L", Peer: "a"})
		synctest.Wait()
		m.l.Leave()
		if err := m.wait(); err != nil {
			t.Fatal(err)
		}
		wantOps(t, f, "a", "register a", "claim-joiner L a", "abort-handover L a", "remove a", "leave-cluster a")
		if l := f.member(t, "L"); l.State != ringstate.LEAVING || l.HandoverPeer != "" {
			t.Fatalf("leaver: %s peer %q; want LEAVING and free to find another joiner", l.State, l.HandoverPeer)
		}
	})
}

func TestLifecycle_RemovedByOperator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		cfg := testConfig("a")
		m := startMember(t, f, cfg, 1)
		synctest.Wait()
		f.commit(t, ringstate.Command{Op: ringstate.OpRemove, Member: "a"})
		time.Sleep(cfg.HeartbeatPeriod)
		synctest.Wait()
		err, ended := m.result()
		if !ended || !errors.Is(err, ErrRemoved) {
			t.Fatalf("after ringctl remove and one heartbeat period: ended %v, err %v; want ErrRemoved", ended, err)
		}
		if !strings.Contains(err.Error(), "wipe") {
			t.Fatalf("ErrRemoved should tell the operator to wipe the raft state: %q", err)
		}
		if _, ok := f.Ring().Member("a"); ok {
			t.Fatal("a registered again on its own")
		}
		if n := len(f.callsOf("a", ringstate.OpRegister)); n != 1 {
			t.Fatalf("%d registers, want 1", n)
		}
	})
}

func TestLifecycle_RegisterRefusedWhenIDTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		f.commit(t, ringstate.Command{Op: ringstate.OpRegister, Member: "a", RaftAddr: "elsewhere:9001"})
		m := startMember(t, f, testConfig("a"), 1)
		err := m.wait()
		if !errors.Is(err, ringstate.ErrMemberExists) || !strings.Contains(err.Error(), "ringctl remove a") {
			t.Fatalf("Run: %v; want ErrMemberExists telling how to fix it", err)
		}
	})
}

func TestLifecycle_CancelStopsWithoutLeaving(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		m := startMember(t, f, testConfig("a"), 1, func(l *Lifecycle) {
			l.OnLeaving = func(context.Context) error { t.Error("OnLeaving on cancel"); return nil }
		})
		synctest.Wait()
		if err := m.crash(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v, want context.Canceled", err)
		}
		if got := f.member(t, "a"); got.State != ringstate.ACTIVE {
			t.Fatalf("after cancel: %s, want still ACTIVE", got.State)
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a")
	})
}

func TestLifecycle_TransientErrorsRetriedWithSameRequestID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		f.inject(ringstate.OpRegister, faultTransient, faultTransient, faultTransient)
		f.inject(ringstate.OpActivate, faultTransient)
		m := startMember(t, f, testConfig("a"), 1)
		defer m.crash()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !m.l.Ready() {
			t.Fatalf("not ACTIVE after transient errors: %s", m.l.State())
		}
		for op, n := range map[ringstate.Op]int{ringstate.OpRegister: 4, ringstate.OpActivate: 2} {
			calls := f.callsOf("a", op)
			if len(calls) != n {
				t.Fatalf("%s: %d calls, want %d", op, len(calls), n)
			}
			for _, c := range calls {
				if c.RequestID != calls[0].RequestID {
					t.Fatalf("%s retried with another request id", op)
				}
			}
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a")
	})
}

func TestLifecycle_UnknownOutcomeDoesNotApplyTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		// The claim is applied but its outcome is lost; the retry must not claim again (a fresh claim
		// with new tokens would replace the set), and the lost leave must not leave twice.
		f.inject(ringstate.OpClaimTokens, faultLost, faultLost)
		f.inject(ringstate.OpLeave, faultLost)
		f.inject(ringstate.OpRemove, faultLost)
		m := startMember(t, f, testConfig("a"), 1)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		claims := f.callsOf("a", ringstate.OpClaimTokens)
		if len(claims) != 3 {
			t.Fatalf("%d claim calls, want 3 (two lost outcomes, then the remembered answer)", len(claims))
		}
		for _, c := range claims[1:] {
			if c.RequestID != claims[0].RequestID || !slices.Equal(c.Tokens, claims[0].Tokens) {
				t.Fatal("claim retried as another command")
			}
		}
		if got := f.member(t, "a"); got.State != ringstate.ACTIVE || !slices.Equal(got.Tokens, claims[0].Tokens) {
			t.Fatalf("%s; want ACTIVE with the first claim's tokens", got.State)
		}
		m.l.Leave()
		if err := m.wait(); err != nil {
			t.Fatal(err)
		}
		// The ring applied each command once; the retries got the remembered outcome.
		wantOps(t, f, "a", "register a", "claim-tokens a", "claim-tokens a", "claim-tokens a", "activate a",
			"leave a", "leave a", "remove a", "remove a", "leave-cluster a")
		for _, op := range []ringstate.Op{ringstate.OpClaimTokens, ringstate.OpLeave, ringstate.OpRemove} {
			for _, c := range f.committedOf("a", op) {
				if c.err != nil {
					t.Fatalf("%s retry answered %v, want the remembered success", op, c.err)
				}
			}
		}
	})
}

func TestLifecycle_NoQuorumLeaveWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		m := startMember(t, f, testConfig("a"), 1)
		synctest.Wait()
		f.setNoQuorum(true)
		m.l.Leave()
		time.Sleep(time.Minute)
		synctest.Wait()
		if !m.running() {
			t.Fatal("Run returned while the cluster has no quorum")
		}
		if got := f.member(t, "a"); got.State != ringstate.ACTIVE {
			t.Fatalf("ring changed without quorum: %s", got.State)
		}
		if n := m.logs.count("not committed", "op=leave"); n < 5 || n > 12 {
			t.Fatalf("%d log lines about the stuck leave in a minute, want one every few seconds", n)
		}
		f.setNoQuorum(false)
		time.Sleep(time.Minute)
		synctest.Wait()
		err, ended := m.result()
		if !ended || err != nil {
			t.Fatalf("after quorum returned: ended %v err %v; want Run to return nil", ended, err)
		}
		wantOps(t, f, "a", "register a", "claim-tokens a", "activate a", "leave a", "remove a", "leave-cluster a")
	})
}

func TestLifecycle_ConcurrentClaimsNeverShareTokens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		// Same seed for every member: they all draw the same tokens first, so every claim but one
		// collides and must draw again.
		f.gate(ringstate.OpClaimTokens, 5)
		var ms []*member
		for _, id := range []string{"a", "b", "c", "d", "e"} {
			cfg := testConfig(id)
			cfg.NumTokens = 64
			cfg.JoinAfter = time.Second
			ms = append(ms, startMember(t, f, cfg, 42))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		collisions := 0
		for _, m := range ms {
			if !m.l.Ready() {
				t.Errorf("%s: %s, want ACTIVE", m.l.cfg.ID, m.l.State())
			}
			collisions += m.logs.count("drawn token claimed concurrently")
		}
		if collisions < 4 {
			t.Fatalf("%d collisions, want at least 4: the test did not force any", collisions)
		}
		if got := f.Ring().NumTokens(); got != 5*64 {
			t.Fatalf("ring has %d tokens, want %d", got, 5*64)
		}
		f.checkInvariants(t)
		for _, m := range ms {
			m.crash()
		}
	})
}

func TestLifecycle_RunTwiceRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		m := startMember(t, f, testConfig("a"), 1)
		defer m.crash()
		synctest.Wait()
		if err := m.l.Run(context.Background()); err == nil {
			t.Fatal("second Run accepted")
		}
	})
}

func TestLifecycle_ClaimLosesRaceWithLeaver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		leaverTokens := setupLeaver(t, f)
		claimed := false
		f.before = func(cmd ringstate.Command) {
			// The leaver claims "a" after a decided to claim tokens, before a's claim commits: the
			// compare-and-set in the FSM must refuse a's claim and a must follow the hand-over.
			if cmd.Op == ringstate.OpClaimTokens && cmd.Member == "a" && !claimed {
				claimed = true
				f.commit(t, ringstate.Command{Op: ringstate.OpClaimJoiner, Member: "L", Peer: "a"})
			}
		}
		m := startMember(t, f, testConfig("a"), 1)
		defer m.crash()
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := f.member(t, "a"); got.State != ringstate.JOINING || got.HandoverPeer != "L" {
			t.Fatalf("%s peer %q; want JOINING receiving from L", got.State, got.HandoverPeer)
		}
		f.commit(t, ringstate.Command{Op: ringstate.OpCompleteHandover, Member: "L", Peer: "a"})
		synctest.Wait()
		if got := f.member(t, "a"); got.State != ringstate.ACTIVE || !slices.Equal(got.Tokens, leaverTokens) {
			t.Fatalf("%s; want ACTIVE with the leaver's tokens", got.State)
		}
		wantOps(t, f, "a", "register a", "claim-joiner L a", "claim-tokens a refused", "complete-handover L a")
	})
}

func TestLifecycle_Metrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeRing()
		reg := prometheus.NewPedanticRegistry()
		m := startMember(t, f, testConfig("a"), 1, func(l *Lifecycle) {
			if err := l.RegisterMetrics(reg); err != nil {
				t.Fatal(err)
			}
		})
		defer m.crash()
		time.Sleep(time.Minute + time.Millisecond)
		synctest.Wait()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, mt := range mf.GetMetric() {
				key := mf.GetName()
				for _, lp := range mt.GetLabel() {
					key += "," + lp.GetName() + "=" + lp.GetValue()
				}
				got[key] = mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
			}
		}
		for key, want := range map[string]float64{
			"raftingest_lifecycle_heartbeats_total,outcome=ok":                12,
			"raftingest_lifecycle_state,state=ACTIVE":                         1,
			"raftingest_lifecycle_state,state=PENDING":                        0,
			"raftingest_lifecycle_ring_commands_total,op=register,outcome=ok": 1,
		} {
			if got[key] != want {
				t.Errorf("%s = %v, want %v", key, got[key], want)
			}
		}
	})
}

// Members joining one after the other with the default strategy claim the balanced tokens of the
// ring they join (ringstate.BalancedTokens: the same ring gives the same tokens), and ownership
// ends even; with -ring.token-generation-strategy=random they do not.
func TestLifecycle_BalancedTokensByDefault(t *testing.T) {
	for _, strategy := range []string{"", TokensBalanced, TokensRandom} {
		t.Run("strategy="+strategy, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeRing()
				var ms []*member
				for i, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
					before := f.Ring()
					cfg := testConfig(id)
					cfg.TokenGeneration = strategy
					ms = append(ms, startMember(t, f, cfg, uint64(i)))
					synctest.Wait()
					m, ok := f.Ring().Member(ringstate.MemberID(id))
					if !ok || m.State != ringstate.ACTIVE {
						t.Fatalf("%s did not join: %+v", id, m)
					}
					want, err := before.BalancedTokens(cfg.NumTokens)
					if err != nil {
						t.Fatal(err)
					}
					if balanced := slices.Equal(m.Tokens, want); balanced != (strategy != TokensRandom) {
						t.Fatalf("%s claimed the balanced tokens of the ring it joined: %v (strategy %q)", id, balanced, strategy)
					}
				}
				spread := f.Ring().OwnershipSpread()
				if strategy != TokensRandom && spread > 1.1 {
					t.Errorf("ownership spread %.3f over 8 members, want at most 1.1", spread)
				}
				t.Logf("strategy %q: spread %.3f", strategy, spread)
				for _, m := range ms {
					m.crash()
				}
			})
		})
	}
}
