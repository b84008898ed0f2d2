package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/report"
)

// go-zero's core/proc installs SIGINT and SIGTERM handlers at init that log and, 5.5 s later, re-raise the
// signal on the process. A supervisor must own its signals, so nothing it links may pull that package in.
func TestSuiteDoesNotLinkGoZeroSignalHandlers(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/zeromicro/go-zero/core/proc" {
			t.Fatal("epro-suite links go-zero's core/proc; find the import that brings it in (go list -deps)")
		}
	}
}

// The sample goes through the API's strict parser and validator, so the printed curl line gets a 202.
func TestSampleIsAValidSubmission(t *testing.T) {
	now := time.Now()
	s, err := newSample(now)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := report.ParseSubmission(s.Body)
	if err != nil {
		t.Fatalf("ParseSubmission: %v", err)
	}
	if err := sub.Validate(now, report.Limits{MaxAge: time.Hour, MaxSkew: time.Minute}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if sub.RequestID != s.RequestID {
		t.Errorf("request id %q became %q", s.RequestID, sub.RequestID)
	}
	if sub.DeviceID == "" || sub.AppVersion == "" || sub.Locale == "" {
		t.Error("the sample should show the optional fields too")
	}
	other, _ := newSample(now)
	if other.RequestID == s.RequestID {
		t.Error("two samples share a request id")
	}
}

func TestCurlLinesQuoteTheBodyOnce(t *testing.T) {
	s, err := newSample(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	post := postCurl("http://127.0.0.1:8888", s)
	if strings.Count(post, "'") != 4 || !strings.Contains(post, "'"+string(s.Body)+"'") {
		t.Errorf("POST line does not quote the body as one shell word: %s", post)
	}
	get := getCurl("http://127.0.0.1:8888", s)
	if !strings.HasSuffix(get, "/v1/reports/"+s.RequestID) {
		t.Errorf("GET line %q", get)
	}
	// Both send the patient token printed above them as TOKEN.
	for _, line := range []string{post, get} {
		if !strings.Contains(line, `-H "Authorization: Bearer $TOKEN"`) {
			t.Errorf("curl line without the patient token: %s", line)
		}
	}
}

func TestPrefixWriterEmitsWholeLines(t *testing.T) {
	var out bytes.Buffer
	con := newConsole(&out, &out)
	w := con.Stdout("epro-mq")
	for _, chunk := range []string{"first li", "ne\r\nsecond\nthi", "rd"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	want := "epro-mq    | first line\nepro-mq    | second\nepro-mq    | third\n"
	if out.String() != want {
		t.Errorf("got\n%q\nwant\n%q", out.String(), want)
	}
}

func TestChildVarsPrecedence(t *testing.T) {
	t.Setenv("EPRO_API_PORT", "9999")
	vars, err := newChildVars()
	if err != nil {
		t.Fatal(err)
	}
	vars.extra = []string{"EPRO_REDIS_ADDR=x:1", "EPRO_REDIS_ADDR=y:2"}
	if v, _ := vars.Lookup("EPRO_API_PORT"); v != "9999" {
		t.Errorf("the environment must win over the defaults, got %q", v)
	}
	if v, _ := vars.Lookup("EPRO_REDIS_ADDR"); v != "y:2" {
		t.Errorf("the last of extra must win, as in exec's Env, got %q", v)
	}
	if v, _ := vars.Lookup(jwtKeyVar); len(v) < 32 {
		t.Errorf("generated %s is %d bytes; dlq-worker wants at least 32", jwtKeyVar, len(v))
	}
	other, _ := newChildVars()
	if a, _ := vars.Lookup(jwtKeyVar); a == other.defaults[jwtKeyVar] {
		t.Error("two runs generated the same signing key")
	}
	env := strings.Join(vars.Environ(), "\n")
	if strings.Contains(env, "EPRO_API_PORT=8888") || !strings.Contains(env, "EPRO_API_PORT=9999") {
		t.Error("Environ must not override a variable the environment sets")
	}
}
