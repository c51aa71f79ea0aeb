package ingester

import (
	"context"
	"errors"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftingest/raftingest/ringstate"
)

// membersWithoutZone returns the token owners of r registered without a zone: with
// -ingester.ring.zone-awareness-enabled on, each is a sign that the flags differ between members
// (zone awareness and -ingester.ring.instance-zone must be set on every member): the members
// without a zone count as one zone of their own, "", and the one-copy-per-zone guarantee holds only
// if that is where they really are.
func membersWithoutZone(r *ringstate.Ring) []ringstate.MemberID {
	var out []ringstate.MemberID
	if r == nil {
		return nil
	}
	for i := range r.Len() {
		if m := r.MemberAt(i); len(m.Tokens) > 0 && m.Zone == "" {
			out = append(out, m.ID)
		}
	}
	return out
}

// registerZoneMetric exposes raftingest_ring_members_without_zone: 0 without zone awareness (a ring
// without zones is then normal), so that an alert on it needs no other condition.
func (s *Server) registerZoneMetric() error {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "raftingest_ring_members_without_zone",
		Help: "With -ingester.ring.zone-awareness-enabled on this member: ring members owning tokens that registered no zone (-ingester.ring.instance-zone). Anything but 0 means the zone flags differ between members: those members count as one zone of their own. Always 0 without zone awareness.",
	}, func() float64 {
		if !s.cfg.Lifecycle.ZoneAwarenessEnabled {
			return 0
		}
		return float64(len(membersWithoutZone(s.node.Ring())))
	})
	if err := s.reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
	}
	return nil
}

// watchZones logs, with zone awareness on, each time the set of token owners without a zone
// changes and is not empty, until ctx ends.
func (s *Server) watchZones(ctx context.Context) {
	if !s.cfg.Lifecycle.ZoneAwarenessEnabled {
		return
	}
	var last []ringstate.MemberID
	for {
		ch := s.node.Changed()
		if ids := membersWithoutZone(s.node.Ring()); !slices.Equal(ids, last) {
			last = ids
			if len(ids) > 0 {
				s.log.Warn("zone awareness is on but ring members registered no zone: they count as one zone of their own; set -ingester.ring.zone-awareness-enabled and -ingester.ring.instance-zone on every member",
					"members", ids)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}
