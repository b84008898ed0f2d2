package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/e2e/internal/stack"
)

// sampleReport is a valid submission for trying the API by hand.
type sampleReport struct {
	RequestID string
	PatientID string
	Body      []byte
}

// newSample builds the sample from the shared contract type and validates it with the API's own rules, so a
// change to the contract stops the suite at start rather than handing out a curl line that gets a 400.
func newSample(now time.Time) (sampleReport, error) {
	id := stack.NewUUID()
	sub := report.Submission{
		RequestID:            id,
		PatientID:            "PAT-0001",
		TrialID:              "TRIAL-EPRO-01",
		QuestionnaireID:      "EQ-5D-5L",
		QuestionnaireVersion: "2.1",
		// A non-UTC offset on purpose: the device's offset must survive the whole pipeline.
		SubmittedAt: now.In(time.FixedZone("", 60*60)).Truncate(time.Second).Format(time.RFC3339),
		Answers:     json.RawMessage(`{"mobility":2,"selfCare":1,"usualActivities":2,"painDiscomfort":3,"anxietyDepression":1,"vas":72}`),
		DeviceID:    "demo-device-1",
		AppVersion:  "1.4.2",
		Locale:      "en-GB",
	}
	check := sub
	if err := check.Validate(now, report.Limits{MaxAge: 24 * time.Hour, MaxSkew: time.Minute}); err != nil {
		return sampleReport{}, fmt.Errorf("sample report is invalid under common/report: %w", err)
	}
	body, err := json.Marshal(sub)
	if err != nil {
		return sampleReport{}, fmt.Errorf("encode sample report: %w", err)
	}
	return sampleReport{RequestID: id, PatientID: sub.PatientID, Body: body}, nil
}

// authHeader is the curl option sending the patient token printed above the curl lines as TOKEN.
const authHeader = `-H "Authorization: Bearer $TOKEN"`

func postCurl(base string, s sampleReport) string {
	// The shell's single quotes end at the first ' in the body; the sample's fixed values contain none.
	return "curl -sS -i " + base + "/v1/reports " + authHeader + " -H 'Content-Type: application/json' --data '" + string(s.Body) + "'"
}

func getCurl(base string, s sampleReport) string {
	return "curl -sS -i " + authHeader + " " + base + "/v1/reports/" + s.RequestID
}

func printBanner(ctx context.Context, con *console, st *stack.Stack, base string, s sampleReport, dlqPort int, vars *childVars) {
	con.Printf("epro-api is ready at %s (Ctrl-C stops the suite)", base)
	var b strings.Builder
	writeTokenSection(ctx, &b, st, s.PatientID, vars)
	b.WriteString("\n# Submit a sample report (expect 202):\n")
	b.WriteString(postCurl(base, s) + "\n")
	b.WriteString("\n# Read its status (expect \"stored\" a moment later):\n")
	b.WriteString(getCurl(base, s) + "\n")
	if dlqPort != 0 {
		writeDLQSection(ctx, &b, st, dlqPort, vars)
	}
	if st.Infra.Embedded {
		// Lets a service be run by hand (in a debugger, say) against the same embedded servers.
		b.WriteString("\n# The embedded servers, for running a service or a tool by hand:\n")
		for _, kv := range st.Infra.Env() {
			name, value, _ := strings.Cut(kv, "=")
			b.WriteString("export " + name + "='" + value + "'\n")
		}
	}
	b.WriteString("\n")
	con.Raw(b.String())
}

// writeTokenSection mints the sample patient's token with epro-api's own token command and prints it as
// TOKEN, which the curl lines send, whether the signing key came from the environment or was generated for
// this run.
func writeTokenSection(ctx context.Context, b *strings.Builder, st *stack.Stack, patient string, vars *childVars) {
	config := stack.ConfigPath("epro-api")
	fmt.Fprintf(b, "\n# Patient %s's bearer token (valid 8h); the curl lines below send it:\n", patient)
	cmd := st.Command(ctx, "epro-api", "token", "-f", config, "-patient", patient, "-ttl", "8h")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(b, "# (could not mint a token: %v: %s)\n", err, strings.TrimSpace(errOut.String()))
		return
	}
	fmt.Fprintf(b, "TOKEN='%s'\n", strings.TrimSpace(out.String()))
	prefix := ""
	if key, _ := vars.Lookup(stack.EnvAPIJWTKey); os.Getenv(stack.EnvAPIJWTKey) == "" {
		prefix = stack.EnvAPIJWTKey + "='" + key + "' " // this run's generated key
	}
	fmt.Fprintf(b, "# Tokens for other patients:\n# %s%s token -f %s -patient PAT-0002 -ttl 8h\n", prefix, cmd.Path, config)
}

// writeDLQSection mints an operator token with dlq-worker's own token command, so the ops API can be tried
// at once whether the signing key came from the environment or was generated for this run.
func writeDLQSection(ctx context.Context, b *strings.Builder, st *stack.Stack, port int, vars *childVars) {
	base := localURL(port, "")
	config := stack.ConfigPath("dlq-worker")
	fmt.Fprintf(b, "\n# dlq-worker's ops page is %s/ ; list dead letters (operator token, valid 8h):\n", base)
	cmd := st.Command(ctx, "dlq-worker", "token", "-f", config, "-sub", "dev", "-role", "operator", "-ttl", "8h")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(b, "# (could not mint a token: %v: %s)\n", err, strings.TrimSpace(errOut.String()))
		return
	}
	fmt.Fprintf(b, "curl -sS -H 'Authorization: Bearer %s' %s/v1/dead-letters\n", strings.TrimSpace(out.String()), base)
	if key, _ := vars.Lookup(jwtKeyVar); os.Getenv(jwtKeyVar) == "" {
		fmt.Fprintf(b, "# More tokens, with this run's generated key:\n# %s='%s' %s token -f %s -sub alice -role reviewer\n",
			jwtKeyVar, key, cmd.Path, config)
	}
}

// smoke submits the sample and waits until epro-mq has stored it: the whole path from HTTP through Kafka to
// MySQL, checked through the API's own status endpoint.
func smoke(ctx context.Context, con *console, st *stack.Stack, base string, s sampleReport) error {
	client := &http.Client{Timeout: 5 * time.Second}
	authz, err := st.Tokens.Authorization(s.PatientID)
	if err != nil {
		return fmt.Errorf("smoke: %w", err)
	}
	code, answer, err := stack.Call(ctx, client, http.MethodPost, base+"/v1/reports", s.Body, "Authorization", authz)
	if err != nil {
		return fmt.Errorf("smoke: submit: %w", err)
	}
	if code != http.StatusAccepted {
		return fmt.Errorf("smoke: submit answered %d, want 202: %s", code, answer)
	}
	con.Printf("smoke: report %s accepted (202)", s.RequestID)

	start := time.Now()
	var deadLettered bool
	err = st.Wait(ctx, 30*time.Second, "report "+s.RequestID+" stored", func() (bool, string) {
		var answer struct {
			Status string `json:"status"`
		}
		url := base + "/v1/reports/" + s.RequestID
		code, body, err := stack.Call(ctx, client, http.MethodGet, url, nil, "Authorization", authz)
		if err == nil && code == http.StatusOK {
			if derr := json.Unmarshal(body, &answer); derr != nil {
				err = fmt.Errorf("decode %s: %w", url, derr)
			}
		}
		switch {
		case err != nil:
			return false, err.Error()
		case code != http.StatusOK:
			return false, fmt.Sprintf("HTTP %d", code)
		}
		// A dead letter is final: stop waiting and fail below.
		deadLettered = answer.Status == status.DeadLettered
		return answer.Status == status.Stored || deadLettered, "status " + answer.Status
	})
	switch {
	case err != nil:
		return fmt.Errorf("smoke: %w", err)
	case deadLettered:
		return fmt.Errorf("smoke: report %s was dead-lettered", s.RequestID)
	}
	con.Printf("smoke: report %s stored after %s", s.RequestID, time.Since(start).Round(time.Millisecond))
	return nil
}
