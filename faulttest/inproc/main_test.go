package inproc

import (
	"testing"

	"go.uber.org/goleak"
)

// Every scenario stops its servers, proxies and clients: nothing may outlive the tests — except
// one goroutine of toxiproxy's own: NoopToxic.Pipe sends a chunk to the next stage without
// watching its interrupt channel (toxiproxy v2.5.0 toxics/noop.go), so a link stopped while a
// chunk is in flight leaves it blocked on that send for good. It holds no socket of ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"))
}
