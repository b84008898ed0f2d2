package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The monitoring files' PromQL: the alert rules and the dashboard, and the metric names their expressions
// select. TestMonitoringQueriesUseExposedMetrics checks those names against the running services.

const (
	rulesFile     = "deploy/prometheus/epro.rules.yml"
	dashboardFile = "deploy/grafana/epro.json"
)

// promQuery is one PromQL expression and where it is written.
type promQuery struct {
	where, expr string
}

// loadRuleQueries returns every rule's expression in the rule file at path.
func loadRuleQueries(path string) ([]promQuery, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Record, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	var qs []promQuery
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			qs = append(qs, promQuery{where: fmt.Sprintf("%s: rule %s%s", filepath.Base(path), r.Alert, r.Record), expr: r.Expr})
		}
	}
	return qs, nil
}

// loadDashboardQueries returns every target expression of the dashboard at path, rows' panels included.
func loadDashboardQueries(path string) ([]promQuery, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type panel struct {
		Title   string
		Targets []struct{ RefID, Expr string }
		Panels  json.RawMessage
	}
	var walk func(raw json.RawMessage) ([]promQuery, error)
	walk = func(raw json.RawMessage) ([]promQuery, error) {
		if len(raw) == 0 {
			return nil, nil
		}
		var ps []panel
		if err := json.Unmarshal(raw, &ps); err != nil {
			return nil, err
		}
		var qs []promQuery
		for _, p := range ps {
			for _, tg := range p.Targets {
				qs = append(qs, promQuery{where: fmt.Sprintf("%s: panel %q target %s", filepath.Base(path), p.Title, tg.RefID), expr: tg.Expr})
			}
			sub, err := walk(p.Panels)
			if err != nil {
				return nil, err
			}
			qs = append(qs, sub...)
		}
		return qs, nil
	}
	var d struct{ Panels json.RawMessage }
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	qs, err := walk(d.Panels)
	if err != nil {
		return nil, fmt.Errorf("parse %s panels: %w", path, err)
	}
	return qs, nil
}

var (
	promString = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'` + "|`[^`]*`")
	// Label lists of grouping and vector matching: label names, not metric names.
	promLabelList = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdent     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords  = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true,
	}
)

// promMetricNames returns the metric names expr selects. It removes string literals, label matchers ({...}),
// range and subquery brackets ([...]) and grouping/matching label lists, then takes every identifier that is
// not a function or aggregation (followed by "("), a keyword, part of a number or duration, or a Grafana
// variable ($...). A selector by __name__ is refused: its name could not be checked.
func promMetricNames(expr string) ([]string, error) {
	s := promString.ReplaceAllString(expr, `""`)
	if strings.Contains(s, "__name__") {
		return nil, fmt.Errorf("selector by __name__ in %q: name the metric instead", expr)
	}
	s = stripBetween(s, '{', '}')
	s = stripBetween(s, '[', ']')
	for {
		t := promLabelList.ReplaceAllString(s, " ")
		if t == s {
			break
		}
		s = t
	}
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if loc[0] > 0 {
			if prev := s[loc[0]-1]; prev == '$' || prev == '.' || (prev >= '0' && prev <= '9') {
				continue
			}
		}
		if promKeywords[strings.ToLower(id)] {
			continue
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue
		}
		if !slices.Contains(names, id) {
			names = append(names, id)
		}
	}
	return names, nil
}

// stripBetween empties everything between open and close (not nested in PromQL once strings are gone).
func stripBetween(s string, open, close byte) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == open:
			in = true
			b.WriteByte(open)
		case s[i] == close:
			in = false
			b.WriteByte(close)
		case !in:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func TestPromMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job=~"epro-api|epro-mq"} == 0`, []string{"up"}},
		{`sum by (job) (epro_mq_consumer_lag) > 1000 and on (job) deriv(sum by (job) (epro_mq_consumer_lag)[10m:1m]) > 0`,
			[]string{"epro_mq_consumer_lag"}},
		{`histogram_quantile(0.99, sum by (le, outcome) (rate(epro_api_produce_duration_seconds_bucket[$__rate_interval])))`,
			[]string{"epro_api_produce_duration_seconds_bucket"}},
		{`sum(rate(a_total{code=~"5..", route!~"/healthz|{x}"}[5m])) / sum(rate(b_total[5m] offset 1h)) > 1e3`,
			[]string{"a_total", "b_total"}},
		{`max(x) / 3600 or vector(0) unless on(instance) group_left(partition) y`, []string{"x", "y"}},
		{`sum without (instance) (rate(foo:bar_total[5m])) > bool 2`, []string{"foo:bar_total"}},
		{`label_replace(z, "dst", "$1", "src", "(.*)") + Inf`, []string{"z"}},
	} {
		got, err := promMetricNames(tc.expr)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("promMetricNames(%q) = %q, %v; want %q", tc.expr, got, err, tc.want)
		}
	}
	if _, err := promMetricNames(`{__name__=~"epro_.*"}`); err == nil {
		t.Error("a selector by __name__ was accepted")
	}
}
