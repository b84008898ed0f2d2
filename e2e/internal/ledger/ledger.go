// Package ledger holds the reports table to the API's answers: every request id answered 2xx has exactly one
// row, carrying the patient it was sent for, and a patient's rows follow the order of its 2xx answers. The
// load tests, the fault tests and epro-bench all judge a run with it.
package ledger

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Row is one row of the reports table, as far as a check needs it.
type Row struct {
	ID         uint64
	RequestID  string
	PatientID  string
	Topic      string
	Partition  int
	Offset     int64
	StoredAt   time.Time
	ReceivedAt time.Time
}

const columns = "SELECT id, request_id, patient_id, kafka_topic, kafka_partition, kafka_offset, stored_at, received_at FROM reports"

// Rows reads every row in id order. With ids given, it reads only their rows, for a table others write to
// as well.
func Rows(ctx context.Context, db *sql.DB, ids ...string) ([]Row, error) {
	if len(ids) == 0 {
		return query(ctx, db, columns+" ORDER BY id")
	}
	var out []Row
	const chunk = 1000
	for lo := 0; lo < len(ids); lo += chunk {
		part := ids[lo:min(lo+chunk, len(ids))]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		rows, err := query(ctx, db, columns+" WHERE request_id IN (?"+strings.Repeat(",?", len(part)-1)+") ORDER BY id", args...)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	slices.SortFunc(out, func(a, b Row) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func query(ctx context.Context, db *sql.DB, q string, args ...any) ([]Row, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read reports: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var r Row
		if err := rows.Scan(&r.ID, &r.RequestID, &r.PatientID, &r.Topic, &r.Partition, &r.Offset, &r.StoredAt, &r.ReceivedAt); err != nil {
			return nil, fmt.Errorf("read reports: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Count counts the rows, only those received at or after since when it is set. It is a poll, so it gives
// up after 10 s.
func Count(ctx context.Context, db *sql.DB, since time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	q, args := "SELECT COUNT(*) FROM reports", []any(nil)
	if !since.IsZero() {
		q, args = q+" WHERE received_at >= ?", []any{since.UTC()}
	}
	var n int
	err := db.QueryRowContext(ctx, q, args...).Scan(&n)
	return n, err
}

// ByRequestID groups rows by request id.
func ByRequestID(rows []Row) map[string][]Row {
	out := make(map[string][]Row, len(rows))
	for _, r := range rows {
		out[r.RequestID] = append(out[r.RequestID], r)
	}
	return out
}

// Answers is what the client knows: every request id it sent, for which patient, and which were answered
// 2xx, in the order the first 2xx came back. It is safe for concurrent use.
type Answers struct {
	mu       sync.Mutex
	patient  map[string]string   // request id -> patient, of every send
	accepted map[string]bool     // answered 2xx at least once
	order    map[string][]string // patient -> request ids in the order of their first 2xx
	refused  map[string]bool     // answered otherwise at least once
	unclean  map[string]bool     // patients with any send not answered 2xx
}

// NewAnswers returns an empty record.
func NewAnswers() *Answers {
	return &Answers{patient: map[string]string{}, accepted: map[string]bool{}, order: map[string][]string{},
		refused: map[string]bool{}, unclean: map[string]bool{}}
}

// Record notes one answer to a send of requestID for patientID ("" when the caller does not know it).
func (a *Answers) Record(requestID, patientID string, accepted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.patient[requestID] = patientID
	if !accepted {
		a.refused[requestID] = true
		a.unclean[patientID] = true
		return
	}
	if !a.accepted[requestID] {
		a.accepted[requestID] = true
		a.order[patientID] = append(a.order[patientID], requestID)
	}
}

// Accepted returns the request ids answered 2xx, sorted.
func (a *Answers) Accepted() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.accepted))
}

// Sent returns every request id sent, sorted.
func (a *Answers) Sent() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.patient))
}

// NeverAccepted counts request ids sent but never answered 2xx.
func (a *Answers) NeverAccepted() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for id := range a.refused {
		if !a.accepted[id] {
			n++
		}
	}
	return n
}

// Options says what else a check holds the rows to.
type Options struct {
	// Topic, when set, is the topic every row must name.
	Topic string
	// Order checks that each patient's rows, in id order, list its accepted ids in the order their first 2xx
	// came back. Only a client that sends a patient's reports one after the other knows that order. Patients
	// with a send not answered 2xx are left out: that send may still reach Kafka later.
	Order bool
}

// Findings is what a check found; each list holds one line per finding, sorted.
type Findings struct {
	Accepted int // distinct request ids answered 2xx
	Stored   int // rows looked at
	// Lost: accepted request ids without a row.
	Lost []string
	// Duplicated: request ids with more than one row.
	Duplicated []string
	// UnexpectedRefused: rows of ids sent but never answered 2xx. Not a bug by itself: the API may time out
	// after Kafka took the report, and the client's retry dedupes.
	UnexpectedRefused []string
	// UnexpectedForeign: rows of ids never sent.
	UnexpectedForeign []string
	// Altered: rows whose patient differs from the one sent, or that name another topic than Options.Topic.
	Altered []string
	// OutOfOrder: patients whose rows do not follow their order of 2xx answers, of OrderChecked patients.
	OutOfOrder   []string
	OrderChecked int
}

// Check compares rows with the answers.
func Check(rows []Row, a *Answers, opt Options) Findings {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := Findings{Accepted: len(a.accepted), Stored: len(rows)}
	seen := map[string]int{}
	byPatient := map[string][]string{}
	for _, r := range rows {
		seen[r.RequestID]++
		if seen[r.RequestID] == 2 {
			f.Duplicated = append(f.Duplicated, r.RequestID)
		}
		where := fmt.Sprintf("%s (row %d, %s/%d@%d)", r.RequestID, r.ID, r.Topic, r.Partition, r.Offset)
		patient, sent := a.patient[r.RequestID]
		switch {
		case a.accepted[r.RequestID]:
			byPatient[r.PatientID] = append(byPatient[r.PatientID], r.RequestID)
		case sent:
			f.UnexpectedRefused = append(f.UnexpectedRefused, where)
		default:
			f.UnexpectedForeign = append(f.UnexpectedForeign, where)
		}
		if sent && patient != "" && patient != r.PatientID {
			f.Altered = append(f.Altered, fmt.Sprintf("%s: row says patient %s, sent for %s", where, r.PatientID, patient))
		}
		if opt.Topic != "" && r.Topic != opt.Topic {
			f.Altered = append(f.Altered, fmt.Sprintf("%s: topic is not %s", where, opt.Topic))
		}
	}
	for id := range a.accepted {
		if seen[id] == 0 {
			f.Lost = append(f.Lost, id+" (patient "+a.patient[id]+")")
		}
	}
	if opt.Order {
		for patient, want := range a.order {
			if a.unclean[patient] {
				continue
			}
			f.OrderChecked++
			if got := byPatient[patient]; !slices.Equal(got, want) {
				f.OutOfOrder = append(f.OutOfOrder, fmt.Sprintf("%s: first difference at position %d of %d (rows %d)",
					patient, firstDiff(got, want), len(want), len(got)))
			}
		}
	}
	for _, s := range [][]string{f.Lost, f.Duplicated, f.UnexpectedRefused, f.UnexpectedForeign, f.Altered, f.OutOfOrder} {
		sort.Strings(s)
	}
	return f
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Problems lists every kind of finding that breaks the promise, one line each with the first few
// instances; none means the rows match the answers. With strict, rows of ids that were refused count too.
func (f Findings) Problems(strict bool) []string {
	var out []string
	add := func(what string, s []string) {
		if len(s) > 0 {
			out = append(out, fmt.Sprintf("%s: %d; first: %v", what, len(s), FirstFew(s)))
		}
	}
	add("LOST (accepted, no row)", f.Lost)
	add("DUPLICATED (more than one row)", f.Duplicated)
	add("UNEXPECTED (rows of ids never sent)", f.UnexpectedForeign)
	if strict {
		add("UNEXPECTED (rows of ids sent but never accepted)", f.UnexpectedRefused)
	}
	add("ALTERED (rows that differ from what was sent)", f.Altered)
	if len(f.OutOfOrder) > 0 {
		out = append(out, fmt.Sprintf("OUT OF ORDER: %d of %d patients have rows that do not follow their submission order; first: %v",
			len(f.OutOfOrder), f.OrderChecked, FirstFew(f.OutOfOrder)))
	}
	return out
}

// FirstFew is the head of a long list of findings, for a message.
func FirstFew[T any](s []T) []T {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

// Counts are the five numbers a fault test prints and holds to zero.
type Counts struct {
	Lost       int // accepted request ids without a row
	Duplicated int // request ids with more than one row
	// Unexpected: rows of ids never sent, and rows of ids sent but never answered 2xx. A client that retries
	// each report until it is accepted leaves none of the second kind.
	Unexpected int
	Altered    int // rows that differ from what was sent
	OutOfOrder int // patients whose rows do not follow their order of 2xx answers
}

// Counts sums the findings up.
func (f Findings) Counts() Counts {
	return Counts{
		Lost:       len(f.Lost),
		Duplicated: len(f.Duplicated),
		Unexpected: len(f.UnexpectedForeign) + len(f.UnexpectedRefused),
		Altered:    len(f.Altered),
		OutOfOrder: len(f.OutOfOrder),
	}
}

// Zero reports whether the rows kept the promise.
func (c Counts) Zero() bool { return c == Counts{} }

func (c Counts) String() string {
	return fmt.Sprintf("lost=%d duplicated=%d unexpected=%d altered=%d out-of-order=%d",
		c.Lost, c.Duplicated, c.Unexpected, c.Altered, c.OutOfOrder)
}

// Stall is a time in which a partition stored nothing although its next record was already waiting.
type Stall struct {
	Partition int
	From, To  time.Time
}

// Stalls returns, per partition of topic, every time its consumers made no progress while there was work:
// for each stored row after the partition's first, from the later of the previous row's storing and this
// row's receipt by the API, to this row's storing. Rows stored in one batch stall for no time and are left
// out. It measures a consumer group's pauses (a rebalance, a restart) from the reports table alone.
func Stalls(rows []Row, topic string) map[int][]Stall {
	by := map[int][]Row{}
	for _, r := range rows {
		if r.Topic == topic {
			by[r.Partition] = append(by[r.Partition], r)
		}
	}
	out := map[int][]Stall{}
	for p, rs := range by {
		slices.SortFunc(rs, func(a, b Row) int { return cmp.Compare(a.Offset, b.Offset) })
		out[p] = nil
		for i := 1; i < len(rs); i++ {
			from := rs[i].ReceivedAt
			if rs[i-1].StoredAt.After(from) {
				from = rs[i-1].StoredAt
			}
			if rs[i].StoredAt.After(from) {
				out[p] = append(out[p], Stall{Partition: p, From: from, To: rs[i].StoredAt})
			}
		}
	}
	return out
}

// Longest returns the longest part of stalls that falls between from and to.
func Longest(stalls []Stall, from, to time.Time) time.Duration {
	var longest time.Duration
	for _, s := range stalls {
		a, b := s.From, s.To
		if a.Before(from) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		longest = max(longest, b.Sub(a))
	}
	return longest
}
