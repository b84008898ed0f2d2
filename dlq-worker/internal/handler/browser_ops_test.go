package handler_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// focused is a JavaScript expression naming the focused element: its id, else its aria-label.
const focused = `(document.activeElement && (document.activeElement.id || document.activeElement.getAttribute("aria-label"))) || ""`

// tabUntil presses Tab until the focused element is want (see focused), as a keyboard user would.
func (p *page) tabUntil(want string) {
	p.t.Helper()
	for i := 0; i < 150; i++ {
		p.run("press Tab", chromedp.KeyEvent(kb.Tab))
		var got string
		p.run("read the focus", chromedp.Evaluate(focused, &got))
		if got == want {
			return
		}
	}
	shot(p.t, p.ctx, "tab to "+want)
	p.t.Fatalf("%q is not reachable with Tab", want)
}

func (p *page) key(what, keys string) {
	p.t.Helper()
	p.run(what, chromedp.KeyEvent(keys))
}

// filter sets the filter's fields (by id) and applies it.
func (p *page) filter(values map[string]string) {
	p.t.Helper()
	for id, v := range values {
		var ok bool
		p.run("set "+id, chromedp.Evaluate(fmt.Sprintf(`(() => { const el = document.getElementById(%q); el.value = %q; return el.value === %q; })()`, id, v, v), &ok))
		if !ok {
			p.t.Fatalf("%s cannot be set to %q", id, v)
		}
	}
	p.run("apply the filter", chromedp.Click("#apply", chromedp.ByID))
}

func (p *page) focusIs(want string) {
	p.t.Helper()
	var got string
	p.run("read the focus", chromedp.Evaluate(focused, &got))
	if got != want {
		p.t.Fatalf("focus is on %q, want %q", got, want)
	}
}

// TestWebPageOpsInBrowser drives the rest of the ops API from the page in headless Chromium, by keyboard
// only where a person could: every control is reachable with Tab and shows its focus; a reconciliation
// started from the page lists the one report whose row was deleted behind the suite's back as missing, and
// its re-drive (offered to operators only, refused once with Escape) produces that record again with
// x-redrive-of and shows its counts; a bulk replay is dry-run, refused once with Escape, started, paused,
// resumed and followed to done; the audit history of one of its dead letters is shown and downloaded, and
// so is its patient's; degraded dead letters are filtered and badged; and in a phone-size window nothing
// scrolls sideways and the key controls are on screen.
func TestWebPageOpsInBrowser(t *testing.T) {
	chromium(t) // without a browser, skip before starting anything
	w := newWorker(t, workerOptions{})
	w.createReports()
	operator := w.token("otto", auth.RoleOperator)

	// Two reports on the report topic, both stored; then one row is lost, as after a restore.
	wr := &kafka.Writer{Addr: kafka.TCP(w.brokers...), Topic: w.source, Balancer: &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}}
	defer wr.Close()
	ridOf := map[string]string{}
	for _, name := range []string{"KEEP", "LOST"} {
		patient := "P-RC-" + name + "-" + uuid.NewString()[:8]
		rid, value := envelope(patient, "T-RC", "1")
		ridOf[patient] = rid
		if err := wr.WriteMessages(context.Background(), kafka.Message{Key: []byte(patient), Value: value}); err != nil {
			t.Fatal(err)
		}
	}
	var lost kafka.Message
	for _, m := range w.sourceRecords(2, 10*time.Second) {
		rid := ridOf[string(m.Key)]
		reportdbtest.Insert(t, w.db, reportdbtest.Row{RequestID: rid, Topic: w.source, Partition: m.Partition, Offset: m.Offset})
		if strings.Contains(string(m.Key), "-LOST-") {
			lost = m
		}
	}
	lostRID := ridOf[string(lost.Key)]
	if _, err := w.db.Exec("DELETE FROM reports WHERE request_id = ?", lostRID); err != nil {
		t.Fatal(err)
	}

	// Dead letters: five to replay (one of them stored meanwhile), a conflict the job skips, a degraded one.
	dls := w.seed(5, "T-BULK", report.ErrorClassPermanent)
	conflict := w.seed(1, "T-BULK", report.ErrorClassConflict)[0]
	reportdbtest.Insert(t, w.db, reportdbtest.Row{RequestID: dls[0].requestID})
	degRID, degVal := envelope("P-LONG", "T-DEG", "9")
	w.publish(w.deadLetter(strings.Repeat("k", 2000), degVal, degRID, report.ErrorClassPoison))
	degraded := w.waitArchived(degRID)

	pg := openBrowser(t, 1280, 900)
	downloads, err := os.MkdirTemp("", "dlq-downloads-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(downloads) })
	var notFocused bool
	pg.run("open the page", chromedp.Navigate(w.url+"/"), chromedp.WaitVisible("#token", chromedp.ByID),
		browser.SetDownloadBehavior(browser.SetDownloadBehaviorBehaviorAllow).WithDownloadPath(downloads),
		chromedp.Evaluate(`document.activeElement.blur(), true`, &notFocused))

	// Keyboard only from here to the end of the bulk replay (a reviewer's token is pasted in between).
	pg.tabUntil("token")
	pg.key("type the token", operator)
	pg.key("submit it", kb.Enter)
	pg.waitJS("the list", `document.querySelectorAll("#list tbody tr").length === 7`)

	// One round of Tab reaches every control, each with a visible focus ring.
	want := []string{"token", "remember", "save-token", "forget-token", "f-status", "f-class", "f-degraded", "f-trial",
		"f-patient", "f-from", "f-to", "apply", "bulk-rate", "bulk-dry-run", "job-id", "job-show",
		"Open dead letter " + strconv.FormatUint(conflict.id, 10), "Open dead letter " + strconv.FormatUint(degraded, 10),
		"rc-from-offset", "rc-from-time", "rc-to-end", "rc-start", "pa-patient", "pa-csv", "pa-json"}
	seen := map[string]bool{}
	for i := 0; i < 60; i++ {
		pg.key("press Tab", kb.Tab)
		var f struct {
			Name    string `json:"name"`
			Outline string `json:"outline"`
			Width   string `json:"width"`
		}
		pg.run("read the focus", chromedp.Evaluate(`({name: `+focused+`,
			outline: getComputedStyle(document.activeElement).outlineStyle,
			width: getComputedStyle(document.activeElement).outlineWidth})`, &f))
		if f.Name == "" {
			continue
		}
		seen[f.Name] = true
		if f.Outline == "none" || f.Width == "0px" {
			t.Errorf("%s has focus but no visible outline (%s %s)", f.Name, f.Outline, f.Width)
		}
	}
	for _, name := range want {
		if !seen[name] {
			t.Errorf("%q is not reachable with Tab (reached: %v)", name, seen)
		}
	}

	// The reconciliation, to the end of the topic: exactly the deleted row is missing.
	pg.tabUntil("rc-to-end")
	pg.key("tick to the end", " ")
	pg.waitJS("to end ticked", `document.getElementById("rc-to-end").checked`)
	pg.tabUntil("rc-start")
	pg.key("start the reconciliation", kb.Enter)
	pg.waitJS("the reconciliation done", `document.getElementById("rc-run").dataset.state === "done"`)
	if v := pg.text("#rc-verdict"); !strings.Contains(v, "1 record is MISSING") || !strings.Contains(v, "exit 1") {
		t.Errorf("verdict = %q", v)
	}
	var counts map[string]string
	pg.run("read the summary", chromedp.Evaluate(`Object.fromEntries([...document.querySelectorAll("#rc-counts tbody tr")]
		.map((tr) => [tr.dataset.class + (tr.classList.contains("alarm") ? "!" : ""), tr.children[1].textContent]))`, &counts))
	if counts["missing!"] != "1" || counts["stored"] != "1" || counts["dead_lettered"] != "0" || counts["conflict"] != "0" ||
		counts["stored_from_redrive"] != "0" {
		t.Errorf("summary by class = %v (\"!\": highlighted)", counts)
	}
	var exc [][]string
	pg.run("read the exceptions", chromedp.Evaluate(`[...document.querySelectorAll("#rc-exceptions tbody tr")]
		.map((tr) => [tr.className, ...[...tr.children].map((td) => td.textContent)])`, &exc))
	if len(exc) != 1 || exc[0][0] != "alarm" || exc[0][1] != lostRID || exc[0][2] != strconv.Itoa(lost.Partition) ||
		exc[0][3] != strconv.FormatInt(lost.Offset, 10) || exc[0][4] != "missing" {
		t.Errorf("exceptions = %v, want only %s at %d@%d, missing and highlighted", exc, lostRID, lost.Partition, lost.Offset)
	}

	// The re-drive is offered to the operator, for the one missing record.
	if b := pg.text("#rc-redrive"); b != "Re-drive 1 missing…" {
		t.Errorf("re-drive button = %q", b)
	}
	// A reviewer, shown the same run, is not offered it.
	useToken := func(token, who string) {
		t.Helper()
		var before string
		pg.run("read when the run was shown", chromedp.Evaluate(`document.getElementById("rc-run").dataset.loaded`, &before))
		pg.run("paste a token", chromedp.SetValue("#token", token, chromedp.ByID))
		pg.tabUntil("token")
		pg.key("submit it", kb.Enter)
		pg.waitJS("the page for "+who, fmt.Sprintf(`document.getElementById("whoami").textContent === %q &&
			document.getElementById("rc-run").dataset.loaded !== %q && document.getElementById("rc-run").dataset.state === "done"`, who, before))
	}
	useToken(w.token("rita", auth.RoleReviewer), "rita (reviewer)")
	var offered bool
	pg.run("look for the re-drive", chromedp.Evaluate(`document.getElementById("rc-redrive").getClientRects().length > 0`, &offered))
	if offered {
		t.Errorf("a reviewer is offered the re-drive")
	}
	if v := pg.text("#rc-verdict"); !strings.Contains(v, "1 record is MISSING") {
		t.Errorf("the reviewer's verdict = %q", v)
	}
	useToken(operator, "otto (operator)")

	// Re-drive: Escape first, then confirmed from the keyboard.
	redriveAudit := func() int {
		var n int
		if err := w.db.QueryRow("SELECT COUNT(*) FROM dead_letter_audit WHERE action = ?", store.ActionRedrive).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	pg.tabUntil("rc-redrive")
	pg.key("re-drive", kb.Enter)
	pg.waitJS("the re-drive confirmation", `document.getElementById("confirm").open`)
	pg.focusIs("confirm-cancel")
	if c := pg.text("#confirm-text"); !strings.Contains(c, "1 record that run") || !strings.Contains(c, "x-redrive-of") {
		t.Errorf("re-drive confirmation = %q", c)
	}
	pg.key("escape", kb.Escape)
	pg.waitJS("the re-drive confirmation closed", `!document.getElementById("confirm").open`)
	pg.focusIs("rc-redrive")
	if n := redriveAudit(); n != 0 || len(w.sourceRecordsNow()) != 2 {
		t.Fatalf("after Escape: %d re-drive audit rows, %d records on the topic", n, len(w.sourceRecordsNow()))
	}
	pg.key("re-drive again", kb.Enter)
	pg.waitJS("the re-drive confirmation again", `document.getElementById("confirm").open`)
	pg.key("to the confirm button", kb.Tab)
	pg.focusIs("confirm-ok")
	pg.key("confirm with Enter", kb.Enter)
	pg.waitJS("the re-drive done", `document.getElementById("rc-run").dataset.redrive === "done"`)
	pg.focusIs("rc-redrive-title")
	// Nobody stores it here (no epro-mq in these tests): it is redriven, and the run is to be repeated.
	if s := pg.text("#rc-redrive-text"); !strings.Contains(s, "1 of 1 missing handled") || !strings.Contains(s, "redriven 1 ·") ||
		!strings.Contains(s, "resolved 0") || !strings.Contains(s, "refused 0") || !strings.Contains(s, "failed 0") ||
		!strings.Contains(s, "not tried 0") {
		t.Errorf("re-drive counts = %q", s)
	}
	if h := pg.text("#rc-redrive-hint"); !strings.Contains(h, "exit 4") || !strings.Contains(h, "run the reconciliation again") {
		t.Errorf("re-drive hint = %q", h)
	}
	pg.run("look for the re-drive", chromedp.Evaluate(`document.getElementById("rc-redrive").getClientRects().length > 0`, &offered))
	if offered {
		t.Errorf("the re-drive is still offered once done")
	}
	var redriven []kafka.Message
	for _, m := range w.sourceRecords(3, 10*time.Second) {
		if _, ok := header(m, report.HeaderRedriveOf); ok {
			redriven = append(redriven, m)
		}
	}
	wantOf := w.source + "/" + strconv.Itoa(lost.Partition) + "/" + strconv.FormatInt(lost.Offset, 10)
	if len(redriven) != 1 {
		t.Fatalf("%d re-driven records on the topic, want 1", len(redriven))
	}
	if of, _ := header(redriven[0], report.HeaderRedriveOf); of != wantOf || string(redriven[0].Key) != string(lost.Key) ||
		string(redriven[0].Value) != string(lost.Value) {
		t.Errorf("re-driven record: key %q, x-redrive-of %q (want %q), same value %v", redriven[0].Key, of, wantOf,
			string(redriven[0].Value) == string(lost.Value))
	}
	if n := redriveAudit(); n != 2 {
		t.Errorf("%d re-drive audit rows, want started and ok", n)
	}

	// Bulk replay of trial T-BULK at 1 per second: the dry run first.
	pg.tabUntil("f-trial")
	pg.key("type the trial", "T-BULK")
	pg.key("apply the filter", kb.Enter)
	pg.waitJS("the trial's list", `document.querySelectorAll("#list tbody tr").length === 6`)
	pg.tabUntil("bulk-rate")
	pg.key("type the rate", "1")
	pg.tabUntil("bulk-dry-run")
	pg.key("dry run", kb.Enter)
	pg.waitJS("the dry run", `document.getElementById("bulk-dry").dataset.count === "6"`)
	dry := pg.text("#bulk-dry")
	for _, s := range []string{"trial T-BULK", "6 dead letters would be taken", "1 would be skipped: class conflict", "1 already stored", "Rate asked: 1 per second"} {
		if !strings.Contains(dry, s) {
			t.Errorf("dry run says %q, missing %q", dry, s)
		}
	}
	if n := len(w.sourceRecordsNow()); n != 3 {
		t.Fatalf("the dry run produced: %d records on the topic, want the 2 written and the re-drive", n)
	}

	// An opening of the confirmation whose close event comes after the next opening (an Escape's, say) is
	// answered "no" and never takes the next opening's "ok" as its own, which once started a job twice.
	var answers []string
	pg.run("a stale close event", chromedp.Evaluate(`(async () => {
		const answer = (p) => Promise.race([p.then(String), new Promise((r) => setTimeout(() => r("none"), 1000))]);
		const dlg = document.getElementById("confirm");
		const first = confirmDialog("first", "", "OK");
		dlg.close(); // its close event is queued, and runs after the second opening
		const second = confirmDialog("second", "", "OK");
		const a = await answer(first);
		dlg.close("ok");
		return [a, await answer(second)];
	})()`, &answers, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if strings.Join(answers, ",") != "false,true" {
		t.Fatalf("answers of a stale and a confirmed opening = %v, want [false true]", answers)
	}

	// Start: the confirmation opens with Cancel focused, and Escape closes it without starting anything.
	pg.tabUntil("bulk-start")
	pg.key("start", kb.Enter)
	pg.waitJS("the confirmation", `document.getElementById("confirm").open`)
	pg.focusIs("confirm-cancel")
	if c := pg.text("#confirm-text"); !strings.Contains(c, "6 dead letters") || !strings.Contains(c, "1 per second") {
		t.Errorf("confirmation = %q", c)
	}
	pg.key("escape", kb.Escape)
	pg.waitJS("the confirmation closed", `!document.getElementById("confirm").open`)
	pg.focusIs("bulk-start")
	var jobs int
	if err := w.db.QueryRow("SELECT COUNT(*) FROM replay_jobs").Scan(&jobs); err != nil || jobs != 0 {
		t.Fatalf("after Escape: %d jobs (%v)", jobs, err)
	}
	pg.key("start again", kb.Enter)
	pg.waitJS("the confirmation again", `document.getElementById("confirm").open`)
	pg.key("to the confirm button", kb.Tab)
	pg.focusIs("confirm-ok")
	pg.key("confirm with Space", " ")
	pg.waitJS("the job running", `document.getElementById("job").dataset.state === "running"`)
	// One job: the Escape's close event, which may arrive after the second opening, must not count as that
	// opening's confirmation and start a second job over the same dead letters.
	var jobID uint64
	if err := w.db.QueryRow("SELECT COUNT(*), MIN(id) FROM replay_jobs").Scan(&jobs, &jobID); err != nil || jobs != 1 {
		t.Fatalf("after one confirmation: %d jobs (%v)", jobs, err)
	}

	// Pause: no progress while paused.
	pg.tabUntil("job-pause")
	pg.key("pause", kb.Enter)
	pg.waitJS("the job paused", `document.getElementById("job").dataset.state === "paused"`)
	handled := func() int {
		var n int
		if err := w.db.QueryRow("SELECT COUNT(*) FROM replay_job_items WHERE job_id = ? AND state <> 'pending'", jobID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	atPause := handled()
	// An item that passed its lease check just before the pause still goes (store.Jobs.MarkSending); at
	// most that one.
	time.Sleep(500 * time.Millisecond)
	settled := handled()
	if settled > atPause+1 || settled >= 6 {
		t.Fatalf("%d items handled after the pause, %d when it answered: more than the one in flight", settled, atPause)
	}
	time.Sleep(2500 * time.Millisecond) // at 1 per second, two more would have gone
	if n := handled(); n != settled {
		t.Fatalf("a paused job went on: %d items handled, %d once paused", n, settled)
	}
	pg.waitJS("the paused progress bar", fmt.Sprintf(`document.getElementById("job-progress").value === %d &&
		document.getElementById("job-progress").max === 6 && document.getElementById("job").dataset.state === "paused"`, settled))
	var progress string

	// Resume, and follow it to the end.
	pg.tabUntil("job-resume")
	pg.key("resume", kb.Enter)
	pg.waitJS("the job done", `document.getElementById("job").dataset.state === "done"`)
	pg.run("read the progress", chromedp.Evaluate(`document.getElementById("job-progress").value + "/" + document.getElementById("job-progress").max`, &progress))
	if progress != "6/6" {
		t.Errorf("final progress bar = %s", progress)
	}
	if s := pg.text("#job-text"); !strings.Contains(s, "6 of 6 handled") || !strings.Contains(s, "skipped 1") || !strings.Contains(s, "failed 0") {
		t.Errorf("job text = %q", s)
	}
	for _, d := range dls {
		if s := w.status(d.id); s != "replayed" {
			t.Errorf("dead letter %d is %s after the job", d.id, s)
		}
	}
	if s := w.status(conflict.id); s != "new" {
		t.Errorf("the conflict is %s; a job must skip it", s)
	}
	if n := len(w.sourceRecords(8, 10*time.Second)); n != 8 {
		t.Errorf("the topic has %d records, want the 2 written, the re-drive and 5 replays", n)
	}
	var actions []string
	rows, err := w.db.Query("SELECT action FROM dead_letter_audit WHERE job_id = ? AND dead_letter_id IS NULL ORDER BY id", jobID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		actions = append(actions, a)
	}
	rows.Close()
	if strings.Join(actions, ",") != "bulk_replay,job_pause,job_resume" {
		t.Errorf("job audit = %v", actions)
	}

	// The audit history of a replayed one, opened from the keyboard, and its CSV download.
	pg.filter(map[string]string{"f-status": "replayed"})
	pg.waitJS("the replayed list", `document.querySelectorAll("#list tbody tr").length === 5`)
	target := dls[1].id
	pg.tabUntil("Open dead letter " + strconv.FormatUint(target, 10))
	pg.key("open it", kb.Enter)
	pg.waitJS("its detail", `document.getElementById("d-id").textContent === "`+strconv.FormatUint(target, 10)+`"`)
	pg.focusIs("d-title")
	// Revealing the payload (audited) adds a row from this browser's address.
	pg.tabUntil("btn-reveal")
	pg.key("reveal", kb.Enter)
	pg.waitJS("the payload", `!document.getElementById("payload").hidden && document.querySelectorAll("#d-history tbody tr").length === 2`)
	var hist [][]string
	pg.run("read the history", chromedp.Evaluate(`[...document.querySelectorAll("#d-history tbody tr")]
		.map((tr) => [...tr.children].map((td) => td.textContent))`, &hist))
	// Columns: when, who, from, action, outcome, state, why.
	if len(hist) != 2 || hist[0][0] == "" || hist[0][1] != "otto (operator)" || hist[0][2] != "" ||
		hist[0][3] != "replay (job "+strconv.FormatUint(jobID, 10)+")" || hist[0][4] != "ok" || hist[0][5] != "new → replayed" ||
		hist[1][1] != "otto (operator)" || !strings.HasPrefix(hist[1][2], "127.0.0.1") || hist[1][3] != "reveal" || hist[1][4] != "ok" {
		t.Errorf("history = %q", hist)
	}
	pg.tabUntil("audit-csv")
	pg.key("download the CSV", kb.Enter)
	csvPath := filepath.Join(downloads, "dead-letter-"+strconv.FormatUint(target, 10)+"-audit.csv")
	waitFor(t, 10*time.Second, "the CSV download", func() bool {
		b, err := os.ReadFile(csvPath)
		return err == nil && strings.Count(string(b), "\n") >= 3
	})
	auditCSV, _ := os.ReadFile(csvPath)
	lines := strings.Split(strings.TrimSpace(string(auditCSV)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "id,at,actor,actorIssuer,role,clientAddr,action,outcome") ||
		!strings.Contains(lines[1], ",otto,") || !strings.Contains(lines[1], ",replay,ok,") || !strings.Contains(lines[2], ",reveal,ok,") {
		t.Errorf("downloaded CSV = %q", auditCSV)
	}
	if strings.Contains(string(auditCSV), privateNote) {
		t.Errorf("the audit CSV holds report content")
	}

	// The audit history of its patient, typed into the form: the same two rows, and no other dead letter's.
	patient := dls[1].patient
	pg.tabUntil("pa-patient")
	pg.key("type the patient", patient)
	pg.key("download the patient's CSV", kb.Enter)
	patientCSV := filepath.Join(downloads, "patient-"+patient+"-audit.csv")
	waitFor(t, 10*time.Second, "the patient's CSV download", func() bool {
		b, err := os.ReadFile(patientCSV)
		return err == nil && strings.Count(string(b), "\n") >= 3
	})
	b, _ := os.ReadFile(patientCSV)
	recs, err := csv.NewReader(strings.NewReader(string(b))).ReadAll()
	if err != nil {
		t.Fatalf("patient CSV %q: %v", b, err)
	}
	wantHead := "id,at,actor,actorIssuer,role,clientAddr,action,outcome,deadLetterId,jobId,stateBefore,stateAfter,reasonCode,reason"
	if len(recs) != 3 || strings.Join(recs[0], ",") != wantHead {
		t.Fatalf("patient CSV = %q", b)
	}
	for i, want := range []struct{ action, jobID string }{{"replay", strconv.FormatUint(jobID, 10)}, {"reveal", ""}} {
		r := recs[i+1]
		if r[2] != "otto" || r[4] != "operator" || r[6] != want.action || r[7] != "ok" || r[8] != strconv.FormatUint(target, 10) || r[9] != want.jobID {
			t.Errorf("patient CSV row %d = %q, want %s of dead letter %d", i+1, r, want.action, target)
		}
	}
	if strings.Contains(string(b), privateNote) {
		t.Errorf("the patient's audit CSV holds report content")
	}
	if m := pg.text("#message"); m != "Audit history of patient "+patient+" downloaded as CSV." {
		t.Errorf("message after the patient's CSV = %q", m)
	}
	pg.tabUntil("pa-json")
	pg.key("download the patient's JSON", kb.Enter)
	var entries []struct {
		Action       string `json:"action"`
		DeadLetterID uint64 `json:"deadLetterId"`
	}
	waitFor(t, 10*time.Second, "the patient's JSON download", func() bool {
		b, err := os.ReadFile(filepath.Join(downloads, "patient-"+patient+"-audit.json"))
		return err == nil && json.Unmarshal(b, &entries) == nil
	})
	if len(entries) != 2 || entries[0].Action != "replay" || entries[1].Action != "reveal" ||
		entries[0].DeadLetterID != target || entries[1].DeadLetterID != target {
		t.Errorf("patient JSON = %+v", entries)
	}
	if c := pg.consoleHolds(patient); len(c) > 0 {
		t.Errorf("the page wrote the patient id to the console: %q", c)
	}

	// Degraded: filtered and badged.
	pg.filter(map[string]string{"f-status": "", "f-trial": "", "f-degraded": "true"})
	pg.waitJS("the degraded list", `document.querySelectorAll("#list tbody tr").length === 1 &&
		document.querySelector('#list tbody tr[data-id="`+strconv.FormatUint(degraded, 10)+`"] .badge.degraded') !== null`)
	pg.filter(map[string]string{"f-degraded": ""})
	pg.waitJS("the whole list", `document.querySelectorAll("#list tbody tr").length === 7`)

	shot(t, pg.ctx, "wide")

	// A phone-size window: nothing scrolls sideways, and the key controls are on screen.
	pg.run("narrow the window", chromedp.EmulateViewport(375, 812))
	pg.waitJS("the narrow layout", `document.documentElement.clientWidth <= 375 &&
		getComputedStyle(document.querySelector("#list thead")).position === "absolute"`)
	shot(t, pg.ctx, "narrow")
	var overflow []string
	pg.run("measure", chromedp.Evaluate(`(() => {
		const out = [];
		const de = document.documentElement;
		if (de.scrollWidth > de.clientWidth) out.push("page " + de.scrollWidth + " > " + de.clientWidth);
		for (const sel of ["#token", "#save-token", "#f-trial", "#apply", "#bulk-dry-run", "#bulk-start", "#job-pause",
			"#job-resume", "#job-cancel", "#job-progress", "#list button.open", "#d-title", "#audit-csv", "#rc-start",
			"#rc-exceptions tbody tr", "#rc-redrive-progress", "#rc-redrive-text", "#pa-patient", "#pa-csv", "#pa-json"]) {
			const el = document.querySelector(sel);
			const r = el && el.getBoundingClientRect();
			if (!r || r.width === 0 || r.height === 0) out.push(sel + " not shown");
			else if (r.left < 0 || r.right > de.clientWidth) out.push(sel + " outside [" + r.left + ", " + r.right + "]");
		}
		return out;
	})()`, &overflow))
	if len(overflow) > 0 {
		t.Errorf("at 375px: %v", overflow)
	}

	// A reviewer sees the job and the reconciliation, but no control only operators may use.
	pg.run("use a reviewer token", chromedp.SetValue("#token", w.token("rita", auth.RoleReviewer), chromedp.ByID),
		chromedp.Click("#save-token", chromedp.ByID))
	pg.waitJS("the reviewer", `document.getElementById("whoami").textContent === "rita (reviewer)"`)
	var shown []string
	pg.run("read what is shown", chromedp.Evaluate(`["bulk-dry-run", "bulk-start", "bulk-rate", "job-pause", "job-resume",
		"job-cancel", "btn-reveal", "btn-replay", "btn-discard", "job-show", "rc-start", "job-progress", "rc-redrive", "pa-csv"]
		.filter((id) => document.getElementById(id).getClientRects().length > 0)`, &shown))
	if strings.Join(shown, ",") != "job-show,rc-start,job-progress,pa-csv" {
		t.Errorf("a reviewer is shown %v, want only job-show, rc-start, job-progress and pa-csv", shown)
	}
	pg.checkNoJSErrors()
}
