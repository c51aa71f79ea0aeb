package ingester

// This file is the admin listener (-admin.http-addr): the endpoints that change or expose the
// process rather than serve tenants — leave the ring, flush, profile — kept off the public
// listener so that whoever may push and query may not also stop the member or read its command
// line. It also keeps the registry of flags that hold secrets, and masks them wherever flags are
// printed.

import (
	"flag"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/storage"
)

// adminHandler serves the admin endpoints. Actions (shutdown, flush) are POST-only: any other
// method answers 405 with Allow: POST, so a link or an image on a web page cannot trigger them.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ingester/shutdown", s.shutdown)
	if s.storage.flusher != nil {
		mux.Handle("/ingester/flush", refuseFlushWhileLeaving(s.cfg.Storage.Bucket.Shared(), s.lc.State, s.storage.flusher)) // POST-only itself
	}
	// Cortex's page, here on the admin listener: it lists every tenant's HA clusters, which a tenant
	// on the main listener (-auth.multitenancy-enabled) must not see of the others.
	mux.Handle("/distributor/ha_tracker", distributor.HATrackerHandler(s.node))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// refuseFlushWhileLeaving answers POST /ingester/flush with 409 while this member is LEAVING with a
// node-local bucket: its blocks are being handed to the members that remain, listed once at the
// start, so a block an operator's flush wrote after that listing would stay on this member's disk
// only, and leave with it. The leave flushes what it must by itself. With a shared bucket a flush
// at any time is safe.
func refuseFlushWhileLeaving(sharedBucket bool, state func() ringstate.State, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && !sharedBucket && state() == ringstate.LEAVING {
			http.Error(w, "this member is LEAVING: its data and blocks are being handed to the members that remain, and a flush now could strand a block on its node-local disk; the leave flushes what it must by itself", http.StatusConflict)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cmdline is /debug/pprof/cmdline as net/http/pprof serves it (the arguments, NUL-separated),
// with the values of secret flags masked.
func cmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	args := append([]string{os.Args[0]}, MaskArgs(os.Args[1:])...)
	_, _ = w.Write([]byte(strings.Join(args, "\x00")))
}

// SecretMask replaces a secret flag's value wherever flags are printed.
const SecretMask = storage.SecretMask

// secretValue is implemented by the flag.Value of every flag that holds a secret (storage's S3
// secret access key, for one). Declaring a new secret flag takes nothing more than registering it
// with such a Value: the registry below finds it, and every place that prints flags masks it. The
// Value's String must itself never return the secret (it is what -help prints as the default).
type secretValue interface{ Secret() bool }

// SecretFlagNames returns the names of fs's flags that hold secrets.
func SecretFlagNames(fs *flag.FlagSet) map[string]bool {
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if sv, ok := f.Value.(secretValue); ok && sv.Secret() {
			names[f.Name] = true
		}
	})
	return names
}

// secretFlags is the registry of the ingester's secret flags: those of Config.RegisterFlags.
var secretFlags = sync.OnceValue(func() map[string]bool {
	fs := flag.NewFlagSet("secrets", flag.ContinueOnError)
	var c Config
	c.RegisterFlags(fs)
	return SecretFlagNames(fs)
})

// IsSecretFlag reports whether the ingester flag name (without dashes) holds a secret.
func IsSecretFlag(name string) bool { return secretFlags()[name] }

// MaskArgs returns a copy of command-line arguments with the value of every secret flag replaced
// by SecretMask, in both the "-flag value" and the "-flag=value" forms (with one or two dashes).
// Anything else is kept as is.
func MaskArgs(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		value, hasValue := "", false
		if eq := strings.IndexByte(name, '='); eq >= 0 {
			name, value, hasValue = name[:eq], name[eq+1:], true
		}
		if !IsSecretFlag(name) {
			continue
		}
		switch {
		case hasValue && value != "":
			out[i] = a[:len(a)-len(value)] + SecretMask
		case !hasValue && i+1 < len(out):
			i++
			out[i] = SecretMask
		}
	}
	return out
}
