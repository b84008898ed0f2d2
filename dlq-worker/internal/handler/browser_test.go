package handler_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/auth"
)

// EnvChromium names the browser binary for the page test; otherwise the usual Debian names are looked up.
const EnvChromium = "EPRO_TEST_CHROMIUM"

// chromium returns the browser to drive. Without one the test skips, unless EPRO_TEST_REQUIRE_REAL=1 (CI),
// where a missing browser must fail rather than let the page go untested.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if infratest.RequireReal() {
		t.Fatalf("no chromium found and %s=1: install it (apt-get install -y chromium) or set %s", infratest.EnvRequireReal, EnvChromium)
	}
	t.Skipf("no chromium found (apt-get install -y chromium, or set %s)", EnvChromium)
	return ""
}

// TestWebPageInBrowser drives the page in headless Chromium as an operator would: paste a token, filter,
// open a dead letter and replay it, open another, reveal its payload and discard it; then checks the page
// and MySQL.
func TestWebPageInBrowser(t *testing.T) {
	chromium(t) // without a browser, skip before starting anything
	w := newWorker(t, workerOptions{})
	perm := w.seed(2, "T-UI-A", report.ErrorClassPermanent)
	poison := w.seed(1, "T-UI-B", report.ErrorClassPoison)[0]
	w.createReports() // reports table present, nothing stored: the preview says "not stored yet"
	token := w.token("alice", auth.RoleOperator)

	pg := openBrowser(t, 1400, 1000)
	ctx, run, waitJS, text := pg.ctx, pg.run, pg.waitJS, pg.text
	rowCount := func(n int) string {
		return fmt.Sprintf(`document.querySelectorAll("#list tbody tr").length === %d`, n)
	}
	row := func(id uint64) string { return `#list tbody tr[data-id="` + strconv.FormatUint(id, 10) + `"]` }

	run("open the page", chromedp.Navigate(w.url+"/"), chromedp.WaitVisible("#token", chromedp.ByID))
	if who := text("#whoami"); who != "no token" {
		t.Errorf("before a token the page shows %q", who)
	}
	run("paste the token",
		chromedp.SendKeys("#token", token, chromedp.ByID),
		chromedp.Click("#save-token", chromedp.ByID))
	waitJS("the list", rowCount(3))
	if who := text("#whoami"); who != "alice (operator)" {
		t.Errorf("whoami = %q", who)
	}
	if s := text("#stats"); !strings.Contains(s, "new 3") {
		t.Errorf("stats = %q", s)
	}

	// Filter to one trial.
	run("filter by trial",
		chromedp.SendKeys("#f-trial", "T-UI-A", chromedp.ByID),
		chromedp.Click("#apply", chromedp.ByID))
	waitJS("the filtered list", rowCount(2))
	var listText string
	run("read list", chromedp.Text("#list tbody", &listText, chromedp.ByQuery))
	if strings.Contains(listText, "T-UI-B") || strings.Contains(listText, privateNote) {
		t.Fatalf("filtered list = %q", listText)
	}

	// Replay one: preview first, then confirm.
	target := perm[0]
	run("open a dead letter", chromedp.Click(row(target.id), chromedp.ByQuery))
	waitJS("the detail", `document.getElementById("d-id").textContent === "`+strconv.FormatUint(target.id, 10)+`"`)
	if s := text("#d-meta"); !strings.Contains(s, target.requestID) || !strings.Contains(s, "not_stored") {
		t.Errorf("detail metadata = %q", s)
	}
	if p := text("#payload"); p != "" {
		t.Errorf("payload shown without reveal: %q", p)
	}
	run("preview the replay", chromedp.Click("#btn-replay", chromedp.ByID), chromedp.WaitVisible("#btn-replay-confirm", chromedp.ByID))
	if s := text("#replay-preview"); !strings.Contains(s, "not stored yet") || !strings.Contains(s, target.requestID) {
		t.Errorf("replay preview = %q", s)
	}
	run("confirm the replay", chromedp.Click("#btn-replay-confirm", chromedp.ByID))
	waitJS("the replayed status", `document.getElementById("d-status").textContent === "replayed"`)
	if m := text("#message"); !strings.Contains(m, "replayed") {
		t.Errorf("message after replay = %q", m)
	}
	waitJS("the list without the replayed one", rowCount(1))
	if got := len(w.sourceRecords(1, 10*time.Second)); got != 1 {
		t.Errorf("replay produced %d records", got)
	}

	// Discard another, after revealing its payload.
	run("filter the poison trial",
		chromedp.SetValue("#f-trial", "T-UI-B", chromedp.ByID),
		chromedp.Click("#apply", chromedp.ByID))
	waitJS("the poison row", `document.querySelector('`+row(poison.id)+`') !== null && `+rowCount(1))
	run("open the poison one", chromedp.Click(row(poison.id), chromedp.ByQuery))
	waitJS("its detail", `document.getElementById("d-id").textContent === "`+strconv.FormatUint(poison.id, 10)+`"`)
	run("reveal", chromedp.Click("#btn-reveal", chromedp.ByID), chromedp.WaitVisible("#payload", chromedp.ByID))
	if p := text("#payload"); !strings.Contains(p, privateNote) {
		t.Errorf("revealed payload = %q", p)
	}
	run("discard with a reason",
		chromedp.SetValue("#discard-reason", "test_data", chromedp.ByID),
		chromedp.SendKeys("#discard-note", "sent from the training site", chromedp.ByID),
		chromedp.Click("#btn-discard", chromedp.ByID))
	waitJS("the discarded status", `document.getElementById("d-status").textContent === "discarded"`)
	waitJS("the history", `document.querySelector("#d-history tbody").textContent.includes("discard")`)
	if h := text("#d-history tbody"); !strings.Contains(h, "alice (operator)") || !strings.Contains(h, "reveal") ||
		!strings.Contains(h, "test_data: sent from the training site") {
		t.Errorf("history = %q", h)
	}
	shot(t, ctx, "final")

	// And in MySQL.
	if s := w.status(target.id); s != "replayed" {
		t.Errorf("replayed one is %s in MySQL", s)
	}
	if s := w.status(perm[1].id); s != "new" {
		t.Errorf("untouched one is %s in MySQL", s)
	}
	if s := w.status(poison.id); s != "discarded" {
		t.Errorf("discarded one is %s in MySQL", s)
	}
	a := w.audit(poison.id)
	if len(a) != 2 || a[0].action != "reveal" || a[1].action != "discard" || a[1].actor != "alice" ||
		a[1].reasonCode != "test_data" || a[1].reason != "sent from the training site" {
		t.Errorf("audit of the discarded one = %+v", a)
	}
	if a := w.audit(target.id); len(a) != 1 || a[0].action != "replay" || a[0].actor != "alice" || a[0].outcome != "ok" {
		t.Errorf("audit of the replayed one = %+v", a)
	}
	pg.checkNoJSErrors()
}

// page is a headless Chromium showing the ops page, with helpers that fail the test on errors.
type page struct {
	t   *testing.T
	ctx context.Context

	jsErrMu sync.Mutex
	jsErrs  []string
	console []string // what the page wrote with console.*, each call's arguments as text
}

// openBrowser starts headless Chromium with a window of width×height; it is closed when the test ends.
func openBrowser(t *testing.T, width, height int) *page {
	t.Helper()
	bin := chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(browserProfile(t)),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(width, height),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, 150*time.Second)
	// Close the browser properly before the allocator kills what is left of it.
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx)
		cancel()
		cancelCtx()
		cancelAlloc()
	})
	p := &page{t: t, ctx: ctx}
	chromedp.ListenTarget(ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			p.jsErrMu.Lock()
			p.jsErrs = append(p.jsErrs, e.ExceptionDetails.Error())
			p.jsErrMu.Unlock()
		case *runtime.EventConsoleAPICalled:
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a.Value), a.Description)
			}
			p.jsErrMu.Lock()
			p.console = append(p.console, string(e.Type)+": "+strings.Join(parts, " "))
			p.jsErrMu.Unlock()
		}
	})
	return p
}

func (p *page) run(what string, actions ...chromedp.Action) {
	p.t.Helper()
	if err := chromedp.Run(p.ctx, actions...); err != nil {
		shot(p.t, p.ctx, what)
		p.t.Fatalf("%s: %v", what, err)
	}
}

// waitJS polls a JavaScript condition, as the page updates asynchronously.
func (p *page) waitJS(what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ok bool
		if err := chromedp.Run(p.ctx, chromedp.Evaluate(cond, &ok)); err != nil {
			p.t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var msg string
			_ = chromedp.Run(p.ctx, chromedp.Text("#message", &msg, chromedp.ByID))
			shot(p.t, p.ctx, what)
			p.t.Fatalf("timed out waiting for %s (page message: %q)", what, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// text is the visible text of the first element sel matches.
func (p *page) text(sel string) string {
	p.t.Helper()
	var s string
	p.run("read "+sel, chromedp.Text(sel, &s, chromedp.ByQuery))
	return s
}

// consoleHolds returns the console messages of the page that contain s.
func (p *page) consoleHolds(s string) []string {
	p.jsErrMu.Lock()
	defer p.jsErrMu.Unlock()
	var out []string
	for _, m := range p.console {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	return out
}

func (p *page) checkNoJSErrors() {
	p.t.Helper()
	p.jsErrMu.Lock()
	defer p.jsErrMu.Unlock()
	if len(p.jsErrs) > 0 {
		p.t.Errorf("the page threw: %v", p.jsErrs)
	}
}

// shot saves a screenshot into EPRO_TEST_SCREENSHOT_DIR when it is set, for people looking at a failure.
func shot(t *testing.T, ctx context.Context, name string) {
	dir := os.Getenv("EPRO_TEST_SCREENSHOT_DIR")
	if dir == "" {
		return
	}
	var buf []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&buf, 100)); err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	path := filepath.Join(dir, strings.NewReplacer(" ", "_", "/", "_").Replace(t.Name()+"_"+name)+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Logf("screenshot: %v", err)
	}
}

// browserProfile returns a fresh profile directory for Chromium. Not t.TempDir: Chromium's helper processes
// can still be writing into it for a moment after the browser is gone, and t.TempDir's cleanup then fails
// the test. This cleanup retries for a while and only logs if the directory stays.
func browserProfile(t *testing.T) string {
	dir, err := os.MkdirTemp("", "dlq-browser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := os.RemoveAll(dir)
			if err == nil {
				return
			}
			if i == 50 {
				t.Logf("browser profile %s not removed: %v", dir, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return dir
}
