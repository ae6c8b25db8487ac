package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/testwait"
	tfgatev1 "github.com/tfgate/tfgate/proto/tfgate/v1"
)

// oddModel is a model name an HTML page must escape (names are outside input:
// the routing config allows anything but spaces and slashes).
const oddModel = `<i>odd&"name'`

// statusRoutes: reviews with labels (canary names version 3, which has its
// spec but no host), an experiment 70/30, churn by default version, and
// oddModel with nothing but pools.
const statusRoutes = `  reviews:
    default: stable
    labels: {stable: 1, canary: 3}
    experiment:
      name: ranker-ab
      arms:
        - {name: control, version: 1, weight: 70}
        - {name: treatment, version: 2, weight: 30}
  churn:
    default: "1"
  '<i>odd&"name''': {pools: [main]}
`

// statusStack is a stack serving statusRoutes with its admin server on
// loopback; it returns the stack and the admin server's base URL.
func statusStack(t *testing.T) (*stack, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := startStack(t, stackOpts{versions: []int64{1, 2, 3}, servedVersions: []int64{1, 2}, routes: statusRoutes,
		run: func(_ *RunConfig, d *Deps) { d.AdminListener = ln }})
	s.waitRoutable("reviews", 2)
	return s, "http://" + ln.Addr().String()
}

// predictArms sends n keyed requests to reviews' experiment and counts the
// arms the responses name.
func predictArms(t *testing.T, s *stack, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		resp, err := s.client.Predict(context.Background(), &tfgatev1.PredictRequest{Model: "reviews", RoutingKey: fmt.Sprint("customer-", i), Instances: text("fine")})
		if err != nil {
			t.Fatal(err)
		}
		got[resp.GetArm()]++
	}
	return got
}

func getPage(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

var armRow = regexp.MustCompile(`<tr data-arm="([^"]*)" data-assigned="(\d+)">`)

// pageArms reads the arms' observed counts off the page.
func pageArms(body string) map[string]int {
	out := map[string]int{}
	for _, m := range armRow.FindAllStringSubmatch(body, -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] = n
	}
	return out
}

var modelCard = regexp.MustCompile(`<div class="card[^"]*" data-model="([^"]*)">`)

func pageModels(body string) []string {
	var out []string
	for _, m := range modelCard.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestStatusPageAgainstStack(t *testing.T) {
	s, base := statusStack(t)
	arms := predictArms(t, s, 200)

	code, h, body := getPage(t, base+"/")
	if code != http.StatusOK || h.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %d %q, want 200 text/html; body:\n%s", code, h.Get("Content-Type"), body)
	}
	for _, want := range []string{
		`<meta name="viewport" content="width=device-width, initial-scale=1">`,
		`<meta http-equiv="refresh" content="5">`,
		`href="/metrics"`, `href="/readyz"`, `href="/routes"`,
		`<span class="pill ok">ready</span>`,
		`data-model="reviews"`, `data-model="churn"`,
		`experiment <b>ranker-ab</b>: 200 requests assigned`,
		`stable &rarr; 1`, `canary &rarr; 3`,
		`no host in pools [main] reports it AVAILABLE`, // version 3's why-not
		s.simAddr,    // the host holding versions 1 and 2, and the hosts table
		`>up</span>`, // its health
		`pool main`,
		`generation 1`,                    // the config
		`<span class="pill ok">ok</span>`, // the last reload
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET / lacks %q; body:\n%s", want, body)
		}
	}
	if got := pageArms(body); got["control"] != arms["control"] || got["treatment"] != arms["treatment"] || got["control"]+got["treatment"] != 200 {
		t.Errorf("page's observed split = %v, want the responses' %v", got, arms)
	}
	for _, want := range []string{`>70.0%<`, `>30.0%<`} { // configured = effective here
		if strings.Count(body, want) < 2 {
			t.Errorf("GET / shows %q fewer than twice (configured and effective)", want)
		}
	}

	t.Run("escapes names", func(t *testing.T) {
		if strings.Contains(body, "<i>odd") {
			t.Errorf("the model name %q reached the page unescaped", oddModel)
		}
		if !strings.Contains(body, `<h3>&lt;i&gt;odd&amp;&#34;name&#39;</h3>`) {
			t.Errorf("the model name %q is not shown escaped", oddModel)
		}
	})

	t.Run("routes JSON is ListRoutes", func(t *testing.T) {
		code, h, body := getPage(t, base+"/routes")
		if code != http.StatusOK || h.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /routes = %d %q: %s", code, h.Get("Content-Type"), body)
		}
		var got tfgatev1.ListRoutesResponse
		if err := protojson.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("GET /routes: %v\n%s", err, body)
		}
		want, err := s.client.ListRoutes(context.Background(), &tfgatev1.ListRoutesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, want) {
			t.Errorf("GET /routes = %v\nwant ListRoutes' %v", &got, want)
		}
		code, _, body = getPage(t, base+"/routes?model=reviews")
		var one tfgatev1.ListRoutesResponse
		if err := protojson.Unmarshal([]byte(body), &one); code != http.StatusOK || err != nil || len(one.GetModels()) != 1 || one.GetModels()[0].GetModel() != "reviews" {
			t.Errorf("GET /routes?model=reviews = %d (%v), want reviews alone:\n%s", code, err, body)
		}
		if code, _, body := getPage(t, base+"/routes?model=nope"); code != http.StatusNotFound || !strings.Contains(body, `"nope"`) {
			t.Errorf("GET /routes?model=nope = %d %q, want 404 naming the model", code, body)
		}
	})

	t.Run("filters and pages", func(t *testing.T) {
		for _, tc := range []struct {
			name, query string
			want        []string
			next        bool
		}{
			{name: "all", query: "", want: []string{`&lt;i&gt;odd&amp;&#34;name&#39;`, "churn", "reviews"}},
			{name: "by name", query: "?q=REV", want: []string{"reviews"}},
			{name: "experiments", query: "?show=experiments", want: []string{"reviews"}},
			{name: "problems", query: "?show=problems", want: []string{"reviews"}}, // canary -> 3 is not routable
			{name: "first page", query: "?limit=2", want: []string{`&lt;i&gt;odd&amp;&#34;name&#39;`, "churn"}, next: true},
			{name: "second page", query: "?limit=2&offset=2", want: []string{"reviews"}},
			{name: "no refresh", query: "?q=churn&refresh=0", want: []string{"churn"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, body := getPage(t, base+"/"+tc.query)
				if got := pageModels(body); strings.Join(got, " ") != strings.Join(tc.want, " ") {
					t.Errorf("GET /%s shows models %q, want %q", tc.query, got, tc.want)
				}
				if got := strings.Contains(body, "next &rarr;"); got != tc.next {
					t.Errorf("GET /%s: next link shown %v, want %v", tc.query, got, tc.next)
				}
				if got, want := strings.Contains(body, `http-equiv="refresh"`), !strings.Contains(tc.query, "refresh=0"); got != want {
					t.Errorf("GET /%s: refreshes %v, want %v", tc.query, got, want)
				}
			})
		}
	})

	t.Run("failed reload", func(t *testing.T) {
		before := s.srv.Stats().ReloadFailures
		s.writeRoutes(statusRoutes + "  '<b>bad&model': {pools: [nowhere]}\n")
		testwait.Until(t, "the broken config's reload to fail", func() bool { return s.srv.Stats().ReloadFailures > before })
		_, _, body := getPage(t, base+"/")
		for _, want := range []string{`<span class="pill bad">failed</span>`, `id="reload-error"`, `&lt;b&gt;bad&amp;model`, `pool &#34;nowhere&#34; is not defined`} {
			if !strings.Contains(body, want) {
				t.Errorf("after a failed reload, GET / lacks %q; body:\n%s", want, body)
			}
		}
		if strings.Contains(body, "<b>bad") {
			t.Error("the reload error reached the page unescaped")
		}
		if !strings.Contains(body, `data-model="reviews"`) {
			t.Error("after a failed reload the last good config's models should still be shown")
		}
	})
}

// TestStatusPageCountsSurviveReload: a reload that keeps an arm keeps its
// count; the observed split is since start, not since the last reload.
func TestStatusPageCountsSurviveReload(t *testing.T) {
	s, base := statusStack(t)
	arms := predictArms(t, s, 50)
	s.writeRoutes(strings.Replace(statusRoutes, "weight: 70", "weight: 60", 1))
	s.waitGeneration(2)
	code, _, body := getPage(t, base+"/?q=reviews")
	if code != http.StatusOK {
		t.Fatalf("GET / = %d", code)
	}
	if got := pageArms(body); got["control"] != arms["control"] || got["treatment"] != arms["treatment"] {
		t.Errorf("after a reload keeping the arms, observed = %v, want %v", got, arms)
	}
	if !strings.Contains(body, `>66.7%<`) { // 60 / (60 + 30)
		t.Errorf("the new configured share (66.7%%) is not shown:\n%s", body)
	}
}

// TestStatusPageStarting: before the gateway serves, the page says it is
// starting (and what /readyz says); /routes answers 503.
func TestStatusPageStarting(t *testing.T) {
	p := newStatusPage(func() *Server { return nil }, func() error { return errStarting }, time.Now, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	for pattern, h := range p.routes() {
		mux.Handle(pattern, h)
	}
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/", http.StatusOK, `<span class="pill warn">starting</span>`},
		{"/", http.StatusOK, `/readyz: ` + errStarting.Error()},
		{"/routes", http.StatusServiceUnavailable, errStarting.Error()},
		{"/nothing-here", http.StatusNotFound, ""},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("GET %s = %d, want %d with %q; body:\n%s", tc.path, rec.Code, tc.code, tc.want, rec.Body)
		}
	}
}

// TestStatusPageTemplateEscapes renders every outside-input field of the
// page with markup in it: none may come out as markup.
func TestStatusPageTemplateEscapes(t *testing.T) {
	const evil = `<script>alert(1)</script>"'&`
	now := time.Now()
	d := pageData{
		Now: now, Started: now, Refresh: 5, ReadyErr: evil, Unsettle: evil,
		Config:  configView{File: evil, Generation: 3, LoadedAt: now, FailedAt: now, Failures: 1, LastError: evil},
		Summary: summaryView{Models: 1, Matched: 1},
		Filter:  filterView{Q: evil, Show: "all", Limit: 50, Prev: "?q=" + evil, Next: "javascript:alert(1)", First: 1, Last: 1, Matched: 1},
		Models: []modelView{{
			Name: evil, Default: evil, DefaultReason: evil, Pools: []string{evil}, Problem: true,
			Labels:     []labelView{{Name: evil, Version: 1}},
			Experiment: &experimentView{Name: evil, Warning: evil, Assigned: 1, Arms: []armView{{Name: evil, Version: 1, Weight: 1, Configured: 1, EffectiveShare: 1, Observed: 1, Assigned: 1, Reason: evil}}},
			Versions:   []versionView{{Version: 1, Reason: evil, Hosts: []string{evil}}},
		}},
		Pools: []poolView{{Name: evil, Discovered: true, Hosts: []hostView{{}}}},
	}
	d.Pools[0].Hosts[0].Addr, d.Pools[0].Hosts[0].Conn, d.Pools[0].Hosts[0].Health = evil, evil, "up"
	var b strings.Builder
	if err := statusTemplate.Execute(&b, d); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "<script") {
		t.Errorf("markup from a field reached the page:\n%s", out)
	}
	if strings.Contains(out, `href="javascript:`) {
		t.Errorf("a javascript: link reached the page:\n%s", out)
	}
	if n := strings.Count(out, "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 15 {
		t.Errorf("the field text is shown escaped %d times, want every field (15+):\n%s", n, out)
	}
}

// BenchmarkStatusPage50k renders the page of a gateway routing 50,000 models
// (the first page of 50 and the summary over all).
func BenchmarkStatusPage50k(b *testing.B) {
	var cfg strings.Builder
	for i := range 50000 {
		fmt.Fprintf(&cfg, "  customer-%06d: {pools: [p]}\n", i)
	}
	path := filepath.Join(b.TempDir(), "routes.yaml")
	writeModels(b, path, cfg.String())
	srv, err := New(Options{ConfigPath: path, Backends: newFakeBackends(b.TempDir()), Specs: StoreSpecs{scannedStore(b, b.TempDir())}, WatchInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close(context.Background())
	p := newStatusPage(func() *Server { return srv }, func() error { return nil }, time.Now, slog.New(slog.DiscardHandler))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	for b.Loop() {
		rec := httptest.NewRecorder()
		p.serveHTML(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
