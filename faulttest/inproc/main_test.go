package inproc

import (
	"testing"

	"go.uber.org/goleak"
)

// Every scenario stops its servers, proxies and clients: nothing may outlive the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
