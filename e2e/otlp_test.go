package e2e

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// newOTLPProvider is an OpenTelemetry SDK meter provider exporting over OTLP/HTTP (protobuf, the
// exporter's own encoding) to addr's /otlp/v1/metrics, flushed by the test with ForceFlush.
func newOTLPProvider(t *testing.T, addr string, views ...sdkmetric.View) *sdkmetric.MeterProvider {
	t.Helper()
	exp, err := otlpmetrichttp.New(context.Background(), otlpmetrichttp.WithEndpoint(addr), otlpmetrichttp.WithInsecure(),
		otlpmetrichttp.WithURLPath("/otlp/v1/metrics"), otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("e2e-otlp"), semconv.ServiceInstanceID("i-1"), attribute.String("deployment.environment", "test"))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithView(views...),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mp
}

// TestProcess_OTLPFromTheOpenTelemetrySDK pushes counters, a gauge and an explicit-bucket
// histogram with the OpenTelemetry Go SDK's otlpmetrichttp exporter to one member of a 5-member
// cluster and reads them back through PromQL on another, under the names Prometheus 3 gives them.
// An exponential histogram is stored as a native histogram (Prometheus's translator) and read back
// with histogram_count and histogram_sum.
func TestProcess_OTLPFromTheOpenTelemetrySDK(t *testing.T) {
	skipShort(t)
	_, nodes := startCluster5(t)
	a, d := nodes[0], nodes[3]
	ctx := context.Background()

	mp := newOTLPProvider(t, a.HTTPAddr)
	m := mp.Meter("e2e")
	orders, err := m.Int64Counter("shop.orders", metric.WithUnit("{order}"), metric.WithDescription("orders placed"))
	if err != nil {
		t.Fatal(err)
	}
	busy, _ := m.Float64Counter("shop.busy", metric.WithUnit("s"))
	queue, _ := m.Int64Gauge("shop.queue.length")
	latency, _ := m.Float64Histogram("shop.latency", metric.WithUnit("ms"), metric.WithExplicitBucketBoundaries(10, 100))
	for i := range 5 {
		orders.Add(ctx, 2, metric.WithAttributes(attribute.String("region", "eu")))
		busy.Add(ctx, 0.5)
		latency.Record(ctx, float64(5+i*30))
	}
	queue.Record(ctx, 42)
	if err := mp.ForceFlush(ctx); err != nil {
		t.Fatalf("export: %v", err)
	}

	query := func(q string) string {
		_, ans, body := getAPI(t, d.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {q}, "time": {strconv.FormatInt(time.Now().Unix(), 10)}})
		if ans.Status != "success" {
			t.Fatalf("%s: %s", q, body)
		}
		return string(ans.Data.Result)
	}
	for q, want := range map[string]string{
		`shop_orders_total{job="e2e-otlp",instance="i-1",region="eu"}`: `"10"`,
		`shop_busy_seconds_total{job="e2e-otlp"}`:                      `"2.5"`,
		`shop_queue_length{job="e2e-otlp"}`:                            `"42"`,
		`shop_latency_milliseconds_count{job="e2e-otlp"}`:              `"5"`,
		`shop_latency_milliseconds_bucket{job="e2e-otlp",le="100"}`:    `"4"`,
		`shop_latency_milliseconds_sum{job="e2e-otlp"}`:                `"325"`,
		`target_info{job="e2e-otlp",deployment_environment="test"}`:    `"1"`,
	} {
		pc.Eventually(t, 10*time.Second, q, func() (bool, string) {
			got := query(q)
			return strings.Contains(got, ","+want+"]"), got
		})
	}

	// An exponential histogram: stored as a native histogram, read back through PromQL on another
	// member.
	exp := newOTLPProvider(t, a.HTTPAddr, sdkmetric.NewView(sdkmetric.Instrument{Name: "shop.size"},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}}))
	size, _ := exp.Meter("e2e").Float64Histogram("shop.size")
	for _, v := range []float64{3, 5, 7} {
		size.Record(ctx, v)
	}
	if err := exp.ForceFlush(ctx); err != nil {
		t.Fatalf("exporting an exponential histogram: %v", err)
	}
	for q, want := range map[string]string{
		`histogram_count(shop_size{job="e2e-otlp"})`: `"3"`,
		`histogram_sum(shop_size{job="e2e-otlp"})`:   `"15"`,
	} {
		pc.Eventually(t, 10*time.Second, q, func() (bool, string) {
			got := query(q)
			return strings.Contains(got, ","+want+"]"), got
		})
	}
	_, body, _ := pc.HTTPGet(a.HTTPAddr, "/metrics", "")
	if n := metricValue(body, `raftingest_distributor_remote_write_requests_total{version="otlp"}`); n < 2 {
		t.Errorf("%s counted %v OTLP requests", a.ID, n)
	}
}
