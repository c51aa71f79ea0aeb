package raftfsm

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogAdapter_KeysLevelsAndFormat(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "raft")
	l.Named("transport").With("peer", "n2").Info("sent", "index", 7, "servers", hclog.Fmt("%d servers", 3))
	l.Debug("hidden")
	out := buf.String()
	for _, want := range []string{`msg=sent`, `logger=raft.transport`, `peer=n2`, `index=7`, `servers="3 servers"`} {
		if !strings.Contains(out, want) {
			t.Errorf("%q lacks %q", out, want)
		}
	}
	if strings.Count(out, "logger=") != 1 || strings.Contains(out, "hidden") {
		t.Errorf("unexpected output %q", out)
	}
	if l.IsDebug() || !l.IsInfo() {
		t.Error("levels not taken from the slog handler")
	}
}
