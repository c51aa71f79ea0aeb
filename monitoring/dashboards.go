package monitoring

import (
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// The dashboards are code (grafana-foundation-sdk) and committed as JSON under dashboards/ for
// Grafana to import or provision: `go generate ./monitoring/` rewrites them, and a test fails
// when the JSON and the code disagree, when a query does not parse as PromQL, or when it names a
// metric the code does not export.
//
//go:generate go run ./gen

// panel is one time-series panel: a title, a unit and its queries (expression, legend).
type panel struct {
	title, unit, desc string
	queries           [][2]string
}

// board is one dashboard: rows of panels.
type board struct {
	file, uid, title, desc string
	rows                   []row
}

type row struct {
	title  string
	panels []panel
}

// sel is the selector every query filters on: the dashboard's job variable.
const sel = `job=~"$job"`

// boards are the cluster's dashboards, one per concern an operator looks at.
var boards = []board{
	{file: "raftingest-ring.json", uid: "raftingest-ring", title: "raftingest / Ring",
		desc: "Members and their states, ownership, heartbeats and ring commands, as each member sees the ring.",
		rows: []row{
			{"Members", []panel{
				{"Members by state (max over members)", "short", "cortex_ring_members, as the most pessimistic member sees it; Unhealthy counts members with a stale heartbeat.",
					[][2]string{{`max by (state) (cortex_ring_members{` + sel + `})`, "{{state}}"}}},
				{"Ownership by member", "percentunit", "The fraction of the hash space each member owns.",
					[][2]string{{`max by (member) (cortex_ring_member_ownership_percent{` + sel + `})`, "{{member}}"}}},
				{"Lifecycle state of each member", "short", "1 for the state each member is in, as it sees itself.",
					[][2]string{{`max by (instance, state) (raftingest_lifecycle_state{` + sel + `}) > 0`, "{{instance}} {{state}}"}}},
			}},
			{"Ring commands", []panel{
				{"Heartbeats by outcome", "ops", "",
					[][2]string{{`sum by (outcome) (rate(raftingest_lifecycle_heartbeats_total{` + sel + `}[$__rate_interval]))`, "{{outcome}}"}}},
				{"Ring commands by op and outcome", "ops", "",
					[][2]string{{`sum by (op, outcome) (rate(raftingest_lifecycle_ring_commands_total{` + sel + `}[$__rate_interval]))`, "{{op}} {{outcome}}"}}},
				{"Tokens owned by member", "short", "",
					[][2]string{{`max by (member) (cortex_ring_tokens_owned{` + sel + `})`, "{{member}}"}}},
			}},
		}},
	{file: "raftingest-writes.json", uid: "raftingest-writes", title: "raftingest / Writes",
		desc: "The write path: samples received and stored, refusals, latency and load per member.",
		rows: []row{
			{"Samples", []panel{
				{"Samples received by the distributors", "short", "Samples per second received on /api/v1/push, before replication.",
					[][2]string{{`sum(rate(cortex_distributor_received_samples_total{` + sel + `}[$__rate_interval]))`, "received"}}},
				{"Samples stored by the ingesters", "short", "Per replica: about the received rate times the replication factor.",
					[][2]string{{`sum by (instance) (rate(cortex_ingester_ingested_samples_total{` + sel + `}[$__rate_interval]))`, "{{instance}}"}}},
				{"Discarded samples by reason", "short", "Refused by validation, a limit, or a quorum of ingesters.",
					[][2]string{{`sum by (reason) (rate(cortex_discarded_samples_total{` + sel + `}[$__rate_interval]))`, "{{reason}}"}}},
				{"Requests by protocol", "reqps", "Remote-write 1.0, 2.0 and OTLP requests per second, whatever their outcome.",
					[][2]string{{`sum by (version) (rate(raftingest_distributor_remote_write_requests_total{` + sel + `}[$__rate_interval]))`, "{{version}}"}}},
			}},
			{"Write fencing", []panel{
				{"Pushes fenced by ingesters", "reqps", "Pushes placed on a ring older than the ingester's last ownership change, refused so that the distributor places them again: a few at each join, leave or hand-over; a steady rate means a distributor's ring lags.",
					[][2]string{{`sum by (instance) (rate(raftingest_ingester_push_fenced_total{` + sel + `}[$__rate_interval]))`, "fenced {{instance}}"},
						{`sum by (instance) (rate(raftingest_ingester_push_unstamped_total{` + sel + `}[$__rate_interval]))`, "unstamped {{instance}}"}}},
				{"Distributor retries after a fence", "reqps", "",
					[][2]string{{`sum by (outcome) (rate(raftingest_distributor_fenced_retries_total{` + sel + `}[$__rate_interval]))`, "{{outcome}}"}}},
			}},
			{"Latency and load", []panel{
				{"Push latency p99 by status", "s", "",
					[][2]string{{`histogram_quantile(0.99, sum by (le, status_code) (rate(cortex_distributor_push_duration_seconds_bucket{` + sel + `}[$__rate_interval])))`, "{{status_code}}"}}},
				{"In-flight push requests", "short", "",
					[][2]string{{`sum by (instance) (cortex_distributor_inflight_push_requests{` + sel + `})`, "{{instance}}"}}},
				{"Requests refused by instance limits", "reqps", "",
					[][2]string{{`sum by (instance, reason) (rate(cortex_distributor_instance_rejected_requests_total{` + sel + `}[$__rate_interval]))`, "{{instance}} {{reason}}"}}},
				{"Replica write failures", "ops", "Writes to one replica that failed (the push succeeds at quorum).",
					[][2]string{{`sum by (ingester, type) (rate(cortex_distributor_ingester_append_failures_total{` + sel + `}[$__rate_interval]))`, "{{ingester}} {{type}}"}}},
				{"Series in memory", "short", "",
					[][2]string{{`sum by (instance) (cortex_ingester_memory_series{` + sel + `})`, "{{instance}}"}}},
			}},
		}},
	{file: "raftingest-reads.json", uid: "raftingest-reads", title: "raftingest / Reads",
		desc: "The read path: query rate and latency, the fan-out to members' memory and blocks, refusals.",
		rows: []row{
			{"Queries", []panel{
				{"Requests by route and status", "reqps", "",
					[][2]string{{`sum by (route, status_code) (rate(cortex_querier_request_duration_seconds_count{` + sel + `}[$__rate_interval]))`, "{{route}} {{status_code}}"}}},
				{"Latency p99 by route", "s", "",
					[][2]string{{`histogram_quantile(0.99, sum by (le, route) (rate(cortex_querier_request_duration_seconds_bucket{` + sel + `}[$__rate_interval])))`, "{{route}}"}}},
				{"Queries refused by reason", "reqps", "",
					[][2]string{{`sum by (reason) (rate(cortex_querier_queries_rejected_total{` + sel + `}[$__rate_interval]))`, "{{reason}}"}}},
			}},
			{"Fan-out", []panel{
				{"Fan-out requests by source and status", "reqps", "Requests to members' memory (ingesters) and blocks.",
					[][2]string{{`sum by (source, status) (rate(cortex_querier_fanout_requests_total{` + sel + `}[$__rate_interval]))`, "{{source}} {{status}}"}}},
				{"Queries that lost their quorum", "reqps", "More members failed than the failure budget allows.",
					[][2]string{{`sum by (source) (rate(cortex_querier_fanout_quorum_failures_total{` + sel + `}[$__rate_interval]))`, "{{source}}"}}},
				{"In-flight queries", "short", "",
					[][2]string{{`sum by (instance) (cortex_querier_inflight_requests{` + sel + `})`, "{{instance}}"}}},
			}},
		}},
	{file: "raftingest-handover.json", uid: "raftingest-handover", title: "raftingest / Hand-over",
		desc: "Leaving members handing their series and blocks to joiners, or flushing them.",
		rows: []row{
			{"Attempts", []panel{
				{"Hand-over attempts by outcome", "short", "ok, no_joiner (no PENDING member), claim_refused, failed.",
					[][2]string{{`sum by (instance, outcome) (increase(raftingest_transfer_attempts_total{` + sel + `}[$__rate_interval]))`, "{{instance}} {{outcome}}"}}},
				{"Members leaving", "short", "",
					[][2]string{{`max by (instance) (raftingest_lifecycle_state{` + sel + `, state="LEAVING"}) > 0`, "{{instance}}"}}},
			}},
			{"Throughput", []panel{
				{"Series sent and received", "short", "Per second, leaver side and joiner side.",
					[][2]string{{`sum by (instance) (rate(raftingest_transfer_sent_series_total{` + sel + `}[$__rate_interval]))`, "sent {{instance}}"},
						{`sum by (instance) (rate(raftingest_transfer_received_series_total{` + sel + `}[$__rate_interval]))`, "received {{instance}}"}}},
				{"Bytes sent and received", "Bps", "",
					[][2]string{{`sum by (instance) (rate(raftingest_transfer_sent_bytes_total{` + sel + `}[$__rate_interval]))`, "sent {{instance}}"},
						{`sum by (instance) (rate(raftingest_transfer_received_bytes_total{` + sel + `}[$__rate_interval]))`, "received {{instance}}"}}},
				{"Chunks sent and received (last hand-over)", "short", "",
					[][2]string{{`max by (instance) (cortex_ingester_sent_chunks{` + sel + `})`, "sent {{instance}}"},
						{`max by (instance) (cortex_ingester_received_chunks{` + sel + `})`, "received {{instance}}"}}},
				{"Blocks moved by reason", "short", "",
					[][2]string{{`sum by (why) (increase(raftingest_blocks_moved_total{` + sel + `}[$__rate_interval]))`, "{{why}}"}}},
			}},
		}},
	{file: "raftingest-wal.json", uid: "raftingest-wal", title: "raftingest / WAL and storage",
		desc: "The write-ahead log, flushes to the bucket, uploads and the compactor.",
		rows: []row{
			{"WAL", []panel{
				{"Group commit latency p99", "s", "One commit is one bbolt transaction and one fsync.",
					[][2]string{{`histogram_quantile(0.99, sum by (le, instance) (rate(cortex_ingester_wal_commit_duration_seconds_bucket{` + sel + `}[$__rate_interval])))`, "{{instance}}"}}},
				{"Bytes logged", "Bps", "",
					[][2]string{{`sum by (instance) (rate(cortex_ingester_wal_logged_bytes_total{` + sel + `}[$__rate_interval]))`, "{{instance}}"}}},
				{"WAL file size", "bytes", "The bbolt file's size in use; it shrinks as flushes truncate it.",
					[][2]string{{`max by (instance) (raftingest_wal_file_bytes{` + sel + `})`, "{{instance}}"}}},
				{"Commit failures and failing state", "short", "",
					[][2]string{{`sum by (instance) (increase(cortex_ingester_wal_commit_failures_total{` + sel + `}[$__rate_interval]))`, "failures {{instance}}"},
						{`max by (instance) (raftingest_wal_failing{` + sel + `})`, "failing {{instance}}"}}},
				{"Replay on start", "percentunit", "How far a starting member's WAL replay has come (100% once done); /ready shows the ETA.",
					[][2]string{{`max by (instance) (raftingest_wal_replay_progress_ratio{` + sel + `})`, "{{instance}}"}}},
				{"Last replay duration", "s", "",
					[][2]string{{`max by (instance) (cortex_ingester_wal_replay_duration_seconds{` + sel + `})`, "{{instance}}"}}},
			}},
			{"Flush and blocks", []panel{
				{"Flush duration p99", "s", "",
					[][2]string{{`histogram_quantile(0.99, sum by (le, instance) (rate(cortex_ingester_flush_duration_seconds_bucket{` + sel + `}[$__rate_interval])))`, "{{instance}}"}}},
				{"Flush and upload failures", "short", "",
					[][2]string{{`sum by (instance) (increase(cortex_ingester_flush_failures_total{` + sel + `}[$__rate_interval]))`, "flush {{instance}}"},
						{`sum by (instance) (increase(cortex_ingester_shipper_upload_failures_total{` + sel + `}[$__rate_interval]))`, "upload {{instance}}"}}},
				{"Blocks uploaded", "short", "",
					[][2]string{{`sum by (instance) (increase(cortex_ingester_shipper_uploads_total{` + sel + `}[$__rate_interval]))`, "{{instance}}"}}},
				{"Compaction runs", "short", "",
					[][2]string{{`sum(increase(cortex_compactor_runs_completed_total{` + sel + `}[$__rate_interval]))`, "completed"},
						{`sum(increase(cortex_compactor_runs_failed_total{` + sel + `}[$__rate_interval]))`, "failed"}}},
			}},
		}},
	{file: "raftingest-raft.json", uid: "raftingest-raft", title: "raftingest / Raft",
		desc: "The Raft group that holds the ring: leadership, terms, indexes and apply latency.",
		rows: []row{
			{"Leadership", []panel{
				{"Leader", "short", "1 on the member that leads.",
					[][2]string{{`max by (instance) (raftingest_raft_leader{` + sel + `})`, "{{instance}}"}}},
				{"Term", "short", "A rising term means elections.",
					[][2]string{{`max by (instance) (raftingest_raft_term{` + sel + `})`, "{{instance}}"}}},
				{"Servers by suffrage", "short", "",
					[][2]string{{`max by (suffrage) (raftingest_raft_peers{` + sel + `})`, "{{suffrage}}"}}},
			}},
			{"Log", []panel{
				{"Commit index minus applied index", "short", "How far each member's ring lags what is committed.",
					[][2]string{{`max by (instance) (raftingest_raft_commit_index{` + sel + `} - raftingest_raft_applied_index{` + sel + `})`, "{{instance}}"}}},
				{"Entries applied by op and outcome", "ops", "",
					[][2]string{{`sum by (op, code) (rate(raftingest_raft_fsm_apply_total{` + sel + `}[$__rate_interval]))`, "{{op}} {{code}}"}}},
				{"Apply latency p99", "s", "From propose to applied, on the leader.",
					[][2]string{{`histogram_quantile(0.99, sum by (le, instance) (rate(raftingest_raft_apply_duration_seconds_bucket{` + sel + `}[$__rate_interval])))`, "{{instance}}"}}},
			}},
		}},
}

// build makes one dashboard with the SDK: a Prometheus data-source variable, a job variable, and
// the rows of panels, each 8 units wide. It uses the SDK's classic dashboard model on purpose: its
// JSON imports into every Grafana in use, where the v2 schema needs Grafana 12 and a feature flag.
//
//lint:ignore SA1019 the classic dashboard JSON is what Grafana imports everywhere (see above)
func (b board) build() (dashboard.Dashboard, error) {
	ds := common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${datasource}")}
	query := "label_values(cortex_ring_members, job)"
	//lint:ignore SA1019 the classic model, see build's comment
	d := dashboard.NewDashboardBuilder(b.title).
		Uid(b.uid).
		Description(b.desc).
		Tags([]string{"raftingest"}).
		Editable().
		Refresh("30s").
		Time("now-1h", "now").
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder("job").Label("Job").
			Datasource(ds).
			Query(dashboard.StringOrMap{String: &query}).
			Definition(query).
			Refresh(dashboard.VariableRefreshOnDashboardLoad).
			IncludeAll(true).AllValue(".+").Multi(true))
	id := uint32(0) // panel ids, unique within the dashboard, in order (links use them)
	for _, r := range b.rows {
		id++
		d = d.WithRow(dashboard.NewRowBuilder(r.title).Id(id))
		for _, p := range r.panels {
			id++
			pb := timeseries.NewPanelBuilder().Id(id).Title(p.title).Unit(p.unit).Datasource(ds).Height(8).Span(8)
			if p.desc != "" {
				pb = pb.Description(p.desc)
			}
			for _, q := range p.queries {
				pb = pb.WithTarget(prometheus.NewDataqueryBuilder().Expr(q[0]).LegendFormat(q[1]).Range())
			}
			d = d.WithPanel(pb)
		}
	}
	return d.Build()
}

func ptr[T any](v T) *T { return &v }

// Dashboards returns every dashboard as the JSON committed under dashboards/, by file name.
func Dashboards() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, b := range boards {
		d, err := b.build()
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.uid, err)
		}
		j, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.uid, err)
		}
		out[b.file] = append(j, '\n')
	}
	return out, nil
}
