package distributor

import (
	"errors"
	"flag"
	"fmt"
)

// InstanceLimits are Mimir's distributor instance limits: they protect this process, whatever the
// tenant, and a push over them is answered 503 (the sender retries; another distributor, or this
// one a moment later, takes it).
type InstanceLimits struct {
	// MaxInflightPushRequests is -distributor.instance-limits.max-inflight-push-requests: pushes
	// being handled at once, counted from the moment their headers are read (before the body), so
	// that slow senders hold a slot too. 0: unlimited.
	MaxInflightPushRequests int
	// MaxInflightPushRequestsBytes is -distributor.instance-limits.max-inflight-push-requests-bytes:
	// the bytes the pushes being handled hold, reserved before they are allocated — the body as it
	// arrives, its decompressed copy, the decoded series, labels and samples, and the copies
	// forwarded to the replicas (counted as replication factor times the decompressed size, or for
	// remote-write 2.0 and OTLP, times the size of the series re-encoded as 1.0). A push
	// that would pass it is answered 503, unless it is the only one holding bytes (so that a limit
	// below one large request delays it instead of refusing it for ever). 0: unlimited.
	MaxInflightPushRequestsBytes int
}

// Flag names of the instance limits (Mimir's).
const (
	maxInflightPushRequestsFlag      = "distributor.instance-limits.max-inflight-push-requests"
	maxInflightPushRequestsBytesFlag = "distributor.instance-limits.max-inflight-push-requests-bytes"
)

// DefaultMaxInflightPushRequestsBytes is the default of
// -distributor.instance-limits.max-inflight-push-requests-bytes. Mimir's default is 0 (no limit);
// ours is finite because every node here is also an ingester and a querier sharing one memory: 1
// GiB holds thousands of ordinary pushes (tens of KB each) and, admitted alone, the largest one
// -distributor.max-recv-msg-size allows.
const DefaultMaxInflightPushRequestsBytes = 1 << 30

// RegisterFlags registers the instance limits' flags with their defaults.
func (l *InstanceLimits) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&l.MaxInflightPushRequests, maxInflightPushRequestsFlag, 2000,
		"Max inflight push requests that this distributor can handle, counted from the moment their headers are read. This limit is per-distributor, not per-tenant. Additional requests are refused with 503. 0 = unlimited.")
	f.IntVar(&l.MaxInflightPushRequestsBytes, maxInflightPushRequestsBytesFlag, DefaultMaxInflightPushRequestsBytes,
		"The sum of the bytes that inflight push requests hold in this distributor: bodies as they arrive, their decompressed copies, decoded series and the copies forwarded to the replicas. This limit is per-distributor, not per-tenant. Additional requests are refused with 503, except one that is alone in flight. 0 = unlimited.")
}

// Validate checks the limits, naming the flags.
func (l *InstanceLimits) Validate() error {
	var errs []error
	if l.MaxInflightPushRequests < 0 {
		errs = append(errs, fmt.Errorf("-%s=%d: want zero (unlimited) or more", maxInflightPushRequestsFlag, l.MaxInflightPushRequests))
	}
	if l.MaxInflightPushRequestsBytes < 0 {
		errs = append(errs, fmt.Errorf("-%s=%d: want zero (unlimited) or more", maxInflightPushRequestsBytesFlag, l.MaxInflightPushRequestsBytes))
	}
	return errors.Join(errs...)
}

// Messages of the instance limits: Mimir's wording. Like Mimir's they do not show the values, which
// are the operator's business, not the sender's.
var (
	errMaxInflightRequests = errors.New("the write request has been rejected because the distributor exceeded the allowed number of inflight push requests (err-raftingest-distributor-max-inflight-push-requests). To adjust the related per-instance limit, configure -" +
		maxInflightPushRequestsFlag + ", or contact your service administrator")
	errMaxInflightBytes = errors.New("the write request has been rejected because the distributor exceeded the allowed total size in bytes of inflight push requests (err-raftingest-distributor-max-inflight-push-requests-bytes). To adjust the related per-instance limit, configure -" +
		maxInflightPushRequestsBytesFlag + ", or contact your service administrator")
)

// Reasons of cortex_distributor_instance_rejected_requests_total (Mimir's).
const (
	reasonMaxInflightRequests = "distributor_max_inflight_push_requests"
	reasonMaxInflightBytes    = "distributor_max_inflight_push_requests_bytes"
)

// startRequest counts a push in flight, or refuses it over the limit. A started request must be
// finished with finishRequest.
func (d *Distributor) startRequest() error {
	n := d.inflightRequests.Add(1)
	if max := d.cfg.InstanceLimits.MaxInflightPushRequests; max > 0 && n > int64(max) {
		d.inflightRequests.Add(-1)
		d.m.rejectedRequests.WithLabelValues(reasonMaxInflightRequests).Inc()
		return errMaxInflightRequests
	}
	return nil
}

func (d *Distributor) finishRequest() { d.inflightRequests.Add(-1) }

// reservation is the bytes one push holds against
// -distributor.instance-limits.max-inflight-push-requests-bytes. Not safe for concurrent use (one
// per request); release it when the request is done.
type reservation struct {
	d *Distributor
	n int64
}

// add reserves n more bytes, or refuses with errMaxInflightBytes when that would pass the limit
// while other requests hold bytes too. n may be negative (bytes given back early).
func (r *reservation) add(n int) error {
	if n == 0 {
		return nil
	}
	total := r.d.inflightBytes.Add(int64(n))
	max := int64(r.d.cfg.InstanceLimits.MaxInflightPushRequestsBytes)
	if n > 0 && max > 0 && total > max && total != r.n+int64(n) {
		r.d.inflightBytes.Add(-int64(n))
		r.d.m.rejectedRequests.WithLabelValues(reasonMaxInflightBytes).Inc()
		return errMaxInflightBytes
	}
	r.n += int64(n)
	return nil
}

// release gives back every byte reserved.
func (r *reservation) release() {
	r.d.inflightBytes.Add(-r.n)
	r.n = 0
}
