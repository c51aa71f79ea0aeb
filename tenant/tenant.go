// Package tenant carries the tenant (Cortex's "org id") of a read through a context.Context, from
// the HTTP layer that authenticated it to whatever storage answers it: the querier's ingester
// fan-out and the long-term store's Queryable. Prometheus' storage.Queryable API has no tenant
// argument, and Querier(mint, maxt) has no context, so a storage implementation must read the tenant
// in Select, LabelNames and LabelValues, from the context those receive, with FromContext.
//
// Validate holds the rules a tenant id must follow (those of X-Scope-OrgID), for every boundary
// where one enters a node: the HTTP header, ingester RPCs, hand-over frames.
//
// The package imports nothing of ours, so that every storage package can use it without cycles.
package tenant

import (
	"context"
	"errors"
)

// ErrNoTenant is returned by FromContext when the context carries no tenant. A storage that gets it
// must fail the read: answering for "no tenant" could leak another tenant's data.
var ErrNoTenant = errors.New("tenant: no tenant in the request context")

type ctxKey struct{}

// With returns a copy of ctx that carries id as the tenant of the request. An empty id is stored as
// is and read back as ErrNoTenant.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the tenant With attached to ctx (or to a parent of ctx), or ErrNoTenant.
func FromContext(ctx context.Context) (string, error) {
	id, _ := ctx.Value(ctxKey{}).(string)
	if id == "" {
		return "", ErrNoTenant
	}
	return id, nil
}
