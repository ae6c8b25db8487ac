package gateway

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tfgate/tfgate/gateway/hosts"
	"github.com/tfgate/tfgate/gateway/route"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// Defaults of the status page's query parameters.
const (
	// defaultPageRefresh is how often the page reloads itself (?refresh=N
	// seconds; 0 turns it off).
	defaultPageRefresh = 5
	// defaultPageModels is how many models one page shows (?limit=N); at tens of
	// thousands of models the rest are a filter (?q=, ?show=) or a page away.
	defaultPageModels = 50
	maxPageModels     = 1000
	// pageVersionHosts is how many hosts a version's row names before "+N more".
	pageVersionHosts = 8
)

//go:embed statuspage.html
var statusPageHTML string

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"pct":  func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" },
	"join": strings.Join,
	"ago":  ago,
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).Parse(statusPageHTML))

// statusPage is the admin server's human view of the gateway (GET /): models
// with their routes, labels and experiment arms (configured weight, effective
// share, the split observed since start), versions with routable or why not and
// the hosts holding them, pools and hosts with health and ejection state, the
// last config reload and its error, readiness; and GET /routes, ListRoutes as
// JSON. Everything shown is HTML-escaped by html/template (model, label and arm
// names and error texts come from outside). It only reads: the routing
// snapshot now serving, the hosts manager's view and the counters. A render
// walks every model for the summary and describes one page of them: about
// 20 ms at 50,000 models (BenchmarkStatusPage50k), every refresh per viewer.
type statusPage struct {
	server  func() *Server // nil until the gateway serves
	ready   func() error   // /readyz's answer
	started time.Time
	now     func() time.Time
	log     *slog.Logger
	hosts   atomic.Pointer[hosts.Manager]
}

func newStatusPage(server func() *Server, ready func() error, now func() time.Time, log *slog.Logger) *statusPage {
	return &statusPage{server: server, ready: ready, started: now(), now: now, log: log}
}

// setHosts gives the page the hosts manager to describe (nil: no hosts section).
func (p *statusPage) setHosts(m *hosts.Manager) { p.hosts.Store(m) }

// routes are the page's admin routes.
func (p *statusPage) routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /{$}":    http.HandlerFunc(p.serveHTML),
		"GET /routes": http.HandlerFunc(p.serveRoutes),
	}
}

// serveRoutes answers ListRoutes as JSON (protojson, the shape grpcurl prints);
// ?model=NAME for one model.
func (p *statusPage) serveRoutes(w http.ResponseWriter, r *http.Request) {
	srv := p.server()
	if srv == nil {
		http.Error(w, errStarting.Error(), http.StatusServiceUnavailable)
		return
	}
	resp, err := srv.ListRoutes(r.Context(), &tfgatev1.ListRoutesRequest{Model: r.URL.Query().Get("model")})
	if err != nil {
		code := http.StatusInternalServerError
		if status.Code(err) == codes.NotFound {
			code = http.StatusNotFound
		}
		http.Error(w, status.Convert(err).Message(), code)
		return
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

func (p *statusPage) serveHTML(w http.ResponseWriter, r *http.Request) {
	data := p.data(r.Context(), r.URL.Query())
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, data); err != nil {
		p.log.Error("gateway: status page", "err", err)
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// Nothing on the page loads from elsewhere or runs a script.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(buf.Bytes())
}

// pageData is what the template renders.
type pageData struct {
	Now      time.Time
	Started  time.Time
	Refresh  int
	Starting bool
	ReadyErr string // "" when ready
	Settled  bool
	Unsettle string

	Config configView
	Stats  Stats
	OK     uint64 // Predict calls answered OK
	Failed uint64 // Predict calls answered with an error

	Summary summaryView
	Filter  filterView
	Models  []modelView
	Pools   []poolView
	NoHosts bool // no hosts manager to describe
}

type configView struct {
	File       string
	Generation uint64
	LoadedAt   time.Time // zero: never
	Failures   uint64
	FailedAt   time.Time // zero: never
	LastError  string    // "" when the last reload succeeded
}

type summaryView struct {
	Models, Routable, Experiments, Problems, Matched int
}

type filterView struct {
	Q, Show              string
	Limit, Offset        int
	Prev, Next           string // links; "" when none
	First, Last, Matched int    // 1-based range shown
}

type modelView struct {
	Name          string
	Default       string
	DefaultReason string
	Pools         []string
	Labels        []labelView
	Experiment    *experimentView
	Versions      []versionView
	Problem       bool
}

type labelView struct {
	Name     string
	Version  int64
	Routable bool
}

type experimentView struct {
	Name     string
	Warning  string // the split is not what the weights say (ListRoutes' warning)
	Assigned uint64 // requests assigned an arm since start, all arms
	Arms     []armView
}

type armView struct {
	Name           string
	Version        int64
	Weight         float64
	Configured     float64 // weight / sum of weights
	EffectiveShare float64
	Assigned       uint64
	Observed       float64 // Assigned / the experiment's Assigned; 0 when none
	Routable       bool
	Reason         string
}

type versionView struct {
	Version  int64
	Routable bool
	Reason   string
	HasSpec  bool
	Hosts    []string // the first pageVersionHosts of them
	More     int      // hosts not named
}

type poolView struct {
	Name       string
	Discovered bool
	Hosts      []hostView
	Up         int
}

type hostView struct {
	hosts.HostStatus
	EjectedFor string // remaining ejection, "" when not ejected
}

// data gathers one page's view. It reads the snapshot once.
func (p *statusPage) data(ctx context.Context, q url.Values) pageData {
	now := p.now()
	d := pageData{Now: now, Started: p.started, Refresh: intParam(q, "refresh", defaultPageRefresh, 0, 3600)}
	if err := p.ready(); err != nil {
		d.ReadyErr = err.Error()
	}
	d.Filter = filterView{Q: q.Get("q"), Show: q.Get("show"), Limit: intParam(q, "limit", defaultPageModels, 1, maxPageModels), Offset: intParam(q, "offset", 0, 0, math.MaxInt32)}
	switch d.Filter.Show {
	case "experiments", "problems":
	default:
		d.Filter.Show = "all"
	}
	if m := p.hosts.Load(); m != nil {
		for _, ps := range m.Pools() {
			pv := poolView{Name: ps.Name, Discovered: ps.Discovered}
			for _, h := range ps.Hosts {
				hv := hostView{HostStatus: h}
				if h.Health == hosts.HealthEjected {
					hv.EjectedFor = h.EjectedUntil.Sub(now).Round(100 * time.Millisecond).String()
				}
				if h.Health == hosts.HealthUp {
					pv.Up++
				}
				pv.Hosts = append(pv.Hosts, hv)
			}
			d.Pools = append(d.Pools, pv)
		}
	} else {
		d.NoHosts = true
	}
	srv := p.server()
	if srv == nil {
		d.Starting = true
		return d
	}
	d.Settled, d.Unsettle = srv.Settled()
	d.Stats = srv.Stats()
	for c, n := range d.Stats.Requests {
		if c == codes.OK {
			d.OK += n
		} else {
			d.Failed += n
		}
	}
	b := srv.builder
	snap := b.current()
	d.Config = configView{
		File: srv.opts.ConfigPath, Generation: snap.routes.Generation,
		LoadedAt: unixTime(b.loadedAt.Load()), FailedAt: unixTime(b.failedAt.Load()),
		Failures: d.Stats.ReloadFailures, LastError: b.lastReloadError(),
	}

	all := snap.routes.Models()
	needle := strings.ToLower(d.Filter.Q)
	var matched []*route.ModelRoutes
	for _, m := range all {
		routable, problem := modelHealth(snap, m)
		d.Summary.Models++
		if routable {
			d.Summary.Routable++
		}
		if m.ExpName != "" {
			d.Summary.Experiments++
		}
		if problem {
			d.Summary.Problems++
		}
		if needle != "" && !strings.Contains(strings.ToLower(m.Name), needle) {
			continue
		}
		if (d.Filter.Show == "experiments" && m.ExpName == "") || (d.Filter.Show == "problems" && !problem) {
			continue
		}
		matched = append(matched, m)
	}
	d.Summary.Matched = len(matched)
	f := &d.Filter
	f.Offset = min(f.Offset, max(0, len(matched)-1))
	end := min(len(matched), f.Offset+f.Limit)
	f.Matched, f.First, f.Last = len(matched), f.Offset+1, end
	if f.Offset > 0 {
		f.Prev = pageLink(q, max(0, f.Offset-f.Limit))
	}
	if end < len(matched) {
		f.Next = pageLink(q, end)
	}
	for _, m := range matched[f.Offset:end] {
		_, problem := modelHealth(snap, m)
		d.Models = append(d.Models, modelViewOf(snap, m, problem))
	}
	return d
}

// modelHealth says whether the model's default route resolves (routable) and
// whether something the config names is not routable now (problem): the
// default, a label, or an arm with weight.
func modelHealth(snap *snapshot, m *route.ModelRoutes) (routable, problem bool) {
	_, _, err := snap.routes.Resolve(m.Name, route.Target{}, "introspection")
	routable = err == nil
	// A model with neither a default nor an experiment is pinned-only by design.
	problem = !routable && (m.Default != "" || m.ExpName != "")
	for _, v := range m.Labels {
		if !versionRoutable(m, v) {
			problem = true
		}
	}
	for _, a := range m.Arms() {
		if a.Weight > 0 && !a.Routable {
			problem = true
		}
	}
	return routable, problem
}

func versionRoutable(m *route.ModelRoutes, v int64) bool {
	for _, vs := range m.Versions {
		if vs.Version == v {
			return vs.Routable
		}
	}
	return false
}

func modelViewOf(snap *snapshot, m *route.ModelRoutes, problem bool) modelView {
	lr := describe(snap, m)
	mv := modelView{Name: m.Name, Default: lr.GetDefaultRoute(), DefaultReason: lr.GetDefaultReason(), Pools: m.Pools, Problem: problem}
	for _, l := range slices.Sorted(maps.Keys(m.Labels)) {
		mv.Labels = append(mv.Labels, labelView{Name: l, Version: m.Labels[l], Routable: versionRoutable(m, m.Labels[l])})
	}
	if x := lr.GetExperiment(); x != nil {
		xv := &experimentView{Name: x.GetName(), Warning: x.GetWarning()}
		var weights float64
		for _, a := range x.GetArms() {
			weights += max(0, a.GetWeight())
		}
		for _, a := range x.GetArms() {
			av := armView{Name: a.GetName(), Version: a.GetVersion(), Weight: a.GetWeight(), EffectiveShare: a.GetEffectiveShare(),
				Assigned: snap.armCount(m.Name, x.GetName(), a.GetName()), Routable: a.GetRoutable(), Reason: a.GetReason()}
			if weights > 0 {
				av.Configured = max(0, a.GetWeight()) / weights
			}
			xv.Assigned += av.Assigned
			xv.Arms = append(xv.Arms, av)
		}
		for i := range xv.Arms {
			if xv.Assigned > 0 {
				xv.Arms[i].Observed = float64(xv.Arms[i].Assigned) / float64(xv.Assigned)
			}
		}
		mv.Experiment = xv
	}
	for _, v := range lr.GetVersions() {
		vv := versionView{Version: v.GetVersion(), Routable: v.GetRoutable(), Reason: v.GetReason(), HasSpec: v.GetHasPreprocessing(), Hosts: v.GetHosts()}
		if len(vv.Hosts) > pageVersionHosts {
			vv.Hosts, vv.More = vv.Hosts[:pageVersionHosts], len(vv.Hosts)-pageVersionHosts
		}
		mv.Versions = append(mv.Versions, vv)
	}
	return mv
}

func intParam(q url.Values, name string, def, lo, hi int) int {
	s := q.Get(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return min(max(n, lo), hi)
}

// pageLink is the page's URL with q's parameters and offset set.
func pageLink(q url.Values, offset int) string {
	v := url.Values{}
	for k, vs := range q {
		v[k] = vs
	}
	v.Set("offset", strconv.Itoa(offset))
	return "?" + v.Encode()
}

func unixTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// ago says how long before now t was, briefly ("3s", "2m10s", "5h3m").
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds ago", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
