package ringview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/raftingest/raftingest/ringstate"
)

// Handler serves GET /ring: an HTML table for people, or the View as JSON when the request has
// `Accept: application/json` or `?format=json`. `?tokens=true` adds every member's token list to the
// HTML page. source is called once per request and may return nil while the node has no ring yet
// (503). Methods other than GET and HEAD get 405.
//
// The page is rendered with html/template, so every value (a zone is free text) is escaped. Rows
// carry stable hooks for scripts and browser tests: `<tr class="member" data-id="ID">` with one cell
// per column, each with a class name (see the template), and numeric cells carry the raw value in a
// data-value attribute.
//
// With WithRaftSource the page and the JSON also show each member's Raft role and the Raft
// servers that are not ring members.
func Handler(source func() *ringstate.Ring, heartbeatTimeoutMs int64, opts ...HandlerOption) http.Handler {
	var o handlerOptions
	for _, opt := range opts {
		opt(&o)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, fmt.Sprintf("method %s not allowed on /ring: use GET", req.Method), http.StatusMethodNotAllowed)
			return
		}
		r := source()
		if r == nil {
			http.Error(w, "the ring is not available yet: this node has not loaded it", http.StatusServiceUnavailable)
			return
		}
		v := Build(r, heartbeatTimeoutMs)
		if o.raft != nil {
			leader, servers, ok := o.raft()
			if ok {
				v.WithRaft(leader, servers)
			}
		}
		if o.handover != nil {
			if p, ok := o.handover(); ok {
				v.HandoverProgress = &p
			}
		}
		// The ring changes under the viewer; a cached page would show a stale state.
		w.Header().Set("Cache-Control", "no-store")
		if wantsJSON(req) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(v) // a client that went away is not an error worth more than the lost write
			return
		}
		// Render into a buffer so that a template failure becomes a clean 500, not half a page.
		var buf bytes.Buffer
		if err := pageTemplate.Execute(&buf, page{View: v, ShowTokens: req.URL.Query().Get("tokens") == "true"}); err != nil {
			http.Error(w, "rendering the ring page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(buf.Bytes())
	})
}

// HandlerOption configures Handler.
type HandlerOption func(*handlerOptions)

type handlerOptions struct {
	raft     func() (leader string, servers []RaftServer, ok bool)
	handover func() (HandoverProgress, bool)
}

// WithHandoverSource makes the page show this node's hand-over stream in flight, when it is a
// leaver streaming (source reports ok).
func WithHandoverSource(source func() (HandoverProgress, bool)) HandlerOption {
	return func(o *handlerOptions) { o.handover = source }
}

// WithRaftSource makes the page show Raft roles: raft returns the leader's id and the Raft
// configuration as this node knows them, ok false when it cannot tell (then no role is shown).
func WithRaftSource(raft func() (leader string, servers []RaftServer, ok bool)) HandlerOption {
	return func(o *handlerOptions) { o.raft = raft }
}

// wantsJSON reports whether the client asked for JSON by query parameter or by Accept header.
func wantsJSON(req *http.Request) bool {
	if f := req.URL.Query().Get("format"); f != "" {
		return f == "json"
	}
	for _, part := range strings.Split(req.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

// page is the template's data.
type page struct {
	View
	ShowTokens bool
}

// RaftKnown reports whether the view carries Raft roles (WithRaft was applied).
func (p page) RaftKnown() bool { return p.RaftOnly != nil }

var pageTemplate = template.Must(template.New("ring").Funcs(template.FuncMap{
	"percent":  func(f float64) string { return strconv.FormatFloat(f*100, 'f', 2, 64) + "%" },
	"float":    func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) },
	"rfc3339":  func(t time.Time) string { return t.Format(time.RFC3339Nano) },
	"duration": func(s float64) string { return time.Duration(s * float64(time.Second)).String() },
	"tokens": func(ts []uint32) string {
		parts := make([]string, len(ts))
		for i, t := range ts {
			parts[i] = strconv.FormatUint(uint64(t), 10)
		}
		return strings.Join(parts, " ")
	},
}).Parse(pageHTML))

// pageHTML is deliberately plain: no scripts and no external resources, so it works from a terminal
// browser, behind a proxy and in a headless browser test. Class names are a contract with
// ringviewtest.ParseRows; change them together.
const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>raftingest ring</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.tokens, td.ownership, td.heartbeat-age { text-align: right; }
tr.unhealthy td { background: #fdd; }
tr.unhealthy td.state { color: #a00; font-weight: bold; }
td.token-list { font-family: monospace; font-size: 0.85em; max-width: 40em; }
</style>
</head>
<body>
<h1>Ring</h1>
<p id="summary">Ring time <time id="ring-time" datetime="{{rfc3339 .Time}}">{{rfc3339 .Time}}</time>,
<span id="member-count">{{len .Members}}</span> member(s),
heartbeat timeout <span id="heartbeat-timeout">{{duration .HeartbeatTimeoutSeconds}}</span>.
Health is judged at ring time, not by this page's clock.</p>
{{- with .HandoverProgress}}
<p id="handover-progress" data-joiner="{{.Joiner}}" data-series="{{.Series}}" data-series-total="{{.SeriesTotal}}">Hand-over in progress: {{.Describe}}</p>
{{- end}}
<p id="compactor" data-holder="{{.Compactor.Holder}}" data-epoch="{{.Compactor.Epoch}}" data-held="{{.Compactor.Held}}">Compactor: {{.Compactor.Describe}}</p>
<table id="members">
<thead>
<tr><th>ID</th><th>State</th><th>Ring state</th><th>gRPC address</th><th>Raft address</th><th>HTTP address</th><th>Zone</th><th>Tokens</th><th>Ownership</th><th>Heartbeat age</th><th>Registered</th><th>Hand-over</th>{{if .RaftKnown}}<th>Raft</th>{{end}}{{if .ShowTokens}}<th>Token list</th>{{end}}</tr>
</thead>
<tbody>
{{- range .Members}}
<tr class="member{{if not .Healthy}} unhealthy{{end}}" id="member-{{.ID}}" data-id="{{.ID}}" data-state="{{.State}}">
<td class="id">{{.ID}}</td>
<td class="state">{{.State}}</td>
<td class="ring-state">{{.RingState}}</td>
<td class="grpc-addr">{{.GRPCAddr}}</td>
<td class="raft-addr">{{.RaftAddr}}</td>
<td class="http-addr">{{if .HTTPAddr}}<a href="http://{{.HTTPAddr}}/ring">{{.HTTPAddr}}</a>{{end}}</td>
<td class="zone">{{.Zone}}</td>
<td class="tokens" data-value="{{.NumTokens}}">{{.NumTokens}}</td>
<td class="ownership" data-value="{{float .Ownership}}">{{percent .Ownership}}</td>
<td class="heartbeat-age" data-value="{{float .HeartbeatAgeSeconds}}">{{duration .HeartbeatAgeSeconds}}</td>
<td class="registered">{{.RegisteredAt}}</td>
<td class="handover" data-peer="{{.HandoverPeer}}">{{.Handover}}</td>
{{- if $.RaftKnown}}
<td class="raft-role">{{.RaftRole}}</td>
{{- end}}
{{- if $.ShowTokens}}
<td class="token-list">{{tokens .Tokens}}</td>
{{- end}}
</tr>
{{- end}}
</tbody>
</table>
{{- if not .Members}}
<p id="empty">The ring has no members.</p>
{{- end}}
{{- if .RaftOnly}}
<p id="raft-only">Raft servers that are not ring members: {{range $i, $s := .RaftOnly}}{{if $i}}, {{end}}<span class="raft-server" data-id="{{$s.ID}}">{{$s.ID}} ({{$s.Role}})</span>{{end}}.</p>
{{- end}}
{{- if not .ShowTokens}}
<p><a href="?tokens=true">Show tokens</a> · <a href="?format=json">JSON</a></p>
{{- else}}
<p><a href="?">Hide tokens</a> · <a href="?format=json">JSON</a></p>
{{- end}}
</body>
</html>
`
