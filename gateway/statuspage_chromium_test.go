package gateway

import (
	"bytes"
	"context"
	"flag"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tfgate/tfgate/internal/testenv"
)

// statusPNG, when set, receives a copy of the desktop screenshot (README's
// docs/status-page.png is made with
// go test -run StatusPageChromium ./gateway/ -args -statuspage.png=$PWD/docs/status-page.png).
var statusPNG = flag.String("statuspage.png", "", "copy the status page's desktop screenshot to this file")

// realRoutes is statusRoutes without the odd model: what an operator sees.
var realRoutes = strings.Replace(statusRoutes, "  '<i>odd&\"name''': {pools: [main]}\n", "", 1)

// headless runs Debian's chromium headless with the flags this machine needs
// (no sandbox as root, no GPU, nothing fetched in the background on a closed
// network) and a fresh profile, and returns its stdout.
func headless(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-crash-reporter", "--hide-scrollbars", "--user-data-dir=" + filepath.Join(home, "profile"),
	}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home)
	// Its own process group, so a timeout kills the renderers too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errb.Bytes())
	}
	return out.Bytes()
}

// screenshot saves the page at url as a w x h PNG under the test's temp dir,
// checks it decodes at that size and is not blank, and returns its path.
func screenshot(t *testing.T, bin, url string, w, h int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "status-"+strconv.Itoa(w)+".png")
	headless(t, bin, "--window-size="+strconv.Itoa(w)+","+strconv.Itoa(h), "--screenshot="+path, url)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Errorf("screenshot is %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
	if n := colours(img); n < 8 {
		t.Errorf("screenshot %s has %d colours: the page did not render", path, n)
	}
	t.Logf("screenshot: %s", path)
	return path
}

// colours counts the distinct colours of img (up to 1000).
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y && len(seen) < 1000; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}

// TestStatusPageChromium loads the status page in a real browser against a
// running gateway: the DOM it builds shows the models, arms with their observed
// split, versions and hosts; a model name full of markup stays text; and it
// renders on a desktop and a phone-sized window (screenshots under the test's
// temp dir).
func TestStatusPageChromium(t *testing.T) {
	bin := testenv.RequireTool(t, "chromium")
	s, base := statusStack(t)
	s.writeRoutes(realRoutes)
	s.waitGeneration(2)
	arms := predictArms(t, s, 300)
	url := base + "/?refresh=0"

	dom := string(headless(t, bin, "--dump-dom", url))
	got := pageArms(dom)
	if got["control"] != arms["control"] || got["treatment"] != arms["treatment"] {
		t.Errorf("the browser's page shows the split %v, want the responses' %v", got, arms)
	}
	for _, want := range []string{
		`<title>tfgate gateway</title>`,
		`<span class="pill ok">ready</span>`,
		`data-model="reviews"`, `data-model="churn"`,
		`experiment <b>ranker-ab</b>: 300 requests assigned`,
		`canary → 3`,
		`no host in pools [main] reports it AVAILABLE`,
		`data-pool="main"`, `<td class="mono">` + s.simAddr + `</td>`,
		`href="/routes"`, `href="/metrics"`, `href="/readyz"`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the browser's DOM lacks %q:\n%s", want, dom)
		}
	}

	desktop := screenshot(t, bin, url, 1200, 1040)
	screenshot(t, bin, url, 390, 1500) // a phone: the narrow layout
	if *statusPNG != "" {
		b, err := os.ReadFile(desktop)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*statusPNG, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A model named with markup is text in the browser, not an element.
	s.writeRoutes(statusRoutes)
	s.waitGeneration(3)
	dom = string(headless(t, bin, "--dump-dom", url))
	if !strings.Contains(dom, `<h3>&lt;i&gt;odd&amp;"name'</h3>`) {
		t.Errorf("the browser does not show the model %q as text:\n%s", oddModel, dom)
	}
	if strings.Contains(dom, `<i>odd&amp;"name`) {
		t.Errorf("the model name %q became markup in the browser:\n%s", oddModel, dom)
	}
}
