package memstore

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		// Child of TestCrash_AckedSamplesSurviveKill: killed by the parent, no leak check.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
