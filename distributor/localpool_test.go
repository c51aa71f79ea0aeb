package distributor

import (
	"context"
	"testing"

	"github.com/raftingest/raftingest/ingesterpb"
)

type namedClient string

func (namedClient) Push(context.Context, string, *ingesterpb.RawPushRequest) (*ingesterpb.PushResponse, error) {
	return &ingesterpb.PushResponse{}, nil
}

type namedPool struct{}

func (namedPool) GetClientFor(addr string) (IngesterClient, error) {
	return namedClient("remote " + addr), nil
}

func TestWithLocalClient(t *testing.T) {
	p := WithLocalClient(namedPool{}, "10.0.0.1:9095", namedClient("local"))
	for addr, want := range map[string]namedClient{
		"10.0.0.1:9095": "local",
		"10.0.0.2:9095": "remote 10.0.0.2:9095",
		"10.0.0.1:9096": "remote 10.0.0.1:9096",
	} {
		c, err := p.GetClientFor(addr)
		if err != nil || c != want {
			t.Errorf("GetClientFor(%s) = %v, %v; want %v", addr, c, err, want)
		}
	}
}
