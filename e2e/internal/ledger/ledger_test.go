package ledger_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/e2e/internal/ledger"
)

// The reader runs against the reports table's real migrations, so a renamed column breaks this test.
func TestRowsAndCountOnEproMQSchema(t *testing.T) {
	ctx := context.Background()
	db, _ := reportdbtest.Open(t)
	received := time.Now().UTC().Truncate(time.Microsecond)
	for i, r := range []struct{ id, patient string }{{"id-b", "P1"}, {"id-a", "P2"}, {"id-c", "P1"}} {
		_, err := db.ExecContext(ctx, `INSERT INTO reports (request_id, patient_id, trial_id, questionnaire_id,
			questionnaire_version, submitted_at, submitted_offset_minutes, received_at, stored_at, payload,
			payload_sha256, kafka_topic, kafka_partition, kafka_offset)
			VALUES (?, ?, 'T', 'Q', '1', ?, 60, ?, ?, '{}', REPEAT('x', 32), 'reports', 2, ?)`,
			r.id, r.patient, received, received, received.Add(time.Duration(i)*time.Millisecond), 10+i)
		if err != nil {
			t.Fatalf("insert %s: %v", r.id, err)
		}
	}

	rows, err := ledger.Rows(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.RequestID)
	}
	if !slices.Equal(ids, []string{"id-b", "id-a", "id-c"}) {
		t.Errorf("rows in id order: %v, want [id-b id-a id-c]", ids)
	}
	if r := rows[2]; r.PatientID != "P1" || r.Topic != "reports" || r.Partition != 2 || r.Offset != 12 ||
		!r.ReceivedAt.Equal(received) || !r.StoredAt.Equal(received.Add(2*time.Millisecond)) {
		t.Errorf("row read back as %+v", r)
	}
	some, err := ledger.Rows(ctx, db, "id-c", "id-b", "never-stored")
	if err != nil {
		t.Fatal(err)
	}
	if len(some) != 2 || some[0].RequestID != "id-b" || some[1].RequestID != "id-c" {
		t.Errorf("rows of id-c and id-b: %+v", some)
	}
	for since, want := range map[time.Time]int{{}: 3, received: 3, received.Add(time.Hour): 0} {
		if n, err := ledger.Count(ctx, db, since); err != nil || n != want {
			t.Errorf("Count since %v = %d, %v; want %d", since, n, err, want)
		}
	}
}

func TestCheckFindsEveryKindOfBreach(t *testing.T) {
	a := ledger.NewAnswers()
	a.Record("p1-a", "P1", true)
	a.Record("p1-b", "P1", true)
	a.Record("p1-b", "P1", true) // a resend: its first 202 sets the order
	a.Record("p2-a", "P2", true)
	a.Record("p2-b", "P2", true)
	a.Record("p3-a", "P3", true)
	a.Record("p3-b", "P3", false) // P3's order is unknown, and p3-b may still be stored
	a.Record("p4-a", "P4", true)
	a.Record("p4-b", "P4", false) // refused and never stored

	row := func(id uint64, req, patient, topic string) ledger.Row {
		return ledger.Row{ID: id, RequestID: req, PatientID: patient, Topic: topic}
	}
	rows := []ledger.Row{
		row(1, "p1-a", "P1", "t"),
		row(2, "p1-b", "P1", "t"),
		row(3, "p2-b", "P2", "t"), // P2 out of order
		row(4, "p2-a", "P2", "t"),
		row(5, "p3-b", "P3", "t"), // refused but stored
		row(6, "p3-a", "P3", "t"),
		row(7, "p1-a", "P1", "t"),  // duplicated
		row(8, "x-1", "P9", "t"),   // never sent
		row(9, "p4-a", "P5", "t"),  // another patient
		row(10, "p4-a", "P4", "u"), // another topic, and a second row
	}
	f := ledger.Check(rows, a, ledger.Options{Topic: "t", Order: true})
	if f.Accepted != 6 || f.Stored != 10 {
		t.Errorf("accepted %d, stored %d; want 6 and 10", f.Accepted, f.Stored)
	}
	for name, got := range map[string][]string{
		"lost": f.Lost, "duplicated": f.Duplicated, "refused": f.UnexpectedRefused,
		"foreign": f.UnexpectedForeign, "altered": f.Altered, "order": f.OutOfOrder,
	} {
		want := map[string]int{"lost": 0, "duplicated": 2, "refused": 1, "foreign": 1, "altered": 2, "order": 2}[name]
		if len(got) != want {
			t.Errorf("%s: %d findings %v, want %d", name, len(got), got, want)
		}
	}
	// P1 and P2 are out of order (P1's duplicate row lists p1-a again); P3 and P4 had a refused send, so
	// their order is not known.
	if f.OrderChecked != 2 {
		t.Errorf("order checked for %d patients, want 2 (P1, P2)", f.OrderChecked)
	}
	if got := len(f.Problems(true)); got != 5 {
		t.Errorf("strict problems: %d %v, want 5", got, f.Problems(true))
	}
	if got := len(f.Problems(false)); got != 4 {
		t.Errorf("problems: %d %v, want 4", got, f.Problems(false))
	}

	f = ledger.Check(rows[:2], a, ledger.Options{Topic: "t", Order: true})
	if len(f.Lost) != 4 || f.Lost[0] != "p2-a (patient P2)" {
		t.Errorf("lost: %v, want p2-a, p2-b, p3-a, p4-a", f.Lost)
	}
	clean := ledger.NewAnswers()
	clean.Record("p1-a", "P1", true)
	clean.Record("p1-b", "P1", true)
	if p := ledger.Check(rows[:2], clean, ledger.Options{Topic: "t", Order: true}).Problems(true); len(p) != 0 {
		t.Errorf("a matching table has problems: %v", p)
	}
}

func TestCountsAndStalls(t *testing.T) {
	a := ledger.NewAnswers()
	a.Record("r1", "P1", true)
	a.Record("r2", "P1", true)
	a.Record("r3", "P2", true) // lost
	a.Record("r4", "P2", false)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	rows := []ledger.Row{
		{ID: 1, RequestID: "r2", PatientID: "P1", Topic: "t", Partition: 0, Offset: 0, ReceivedAt: at(0), StoredAt: at(10)},
		{ID: 2, RequestID: "r1", PatientID: "P1", Topic: "t", Partition: 0, Offset: 1, ReceivedAt: at(5), StoredAt: at(10)},
		{ID: 3, RequestID: "r1", PatientID: "P9", Topic: "t", Partition: 0, Offset: 2, ReceivedAt: at(20), StoredAt: at(3020)},
		{ID: 4, RequestID: "r4", PatientID: "P2", Topic: "t", Partition: 1, Offset: 7, ReceivedAt: at(0), StoredAt: at(1)},
		{ID: 5, RequestID: "x", PatientID: "P3", Topic: "t", Partition: 1, Offset: 8, ReceivedAt: at(500), StoredAt: at(600)},
	}
	got := ledger.Check(rows, a, ledger.Options{Order: true}).Counts()
	want := ledger.Counts{Lost: 1, Duplicated: 1, Unexpected: 2, Altered: 1, OutOfOrder: 1}
	if got != want || got.Zero() {
		t.Errorf("counts %v, want %v", got, want)
	}
	if s := got.String(); s != "lost=1 duplicated=1 unexpected=2 altered=1 out-of-order=1" {
		t.Errorf("String() = %q", s)
	}

	stalls := ledger.Stalls(rows, "t")
	// Partition 0: offset 1 was stored in offset 0's batch (no stall); offset 2 waited from its receipt at
	// 20 ms to 3020 ms. Partition 1: offset 8 waited from 500 ms to 600 ms.
	if len(stalls[0]) != 1 || stalls[0][0].From != at(20) || stalls[0][0].To != at(3020) {
		t.Errorf("partition 0 stalls %v", stalls[0])
	}
	if len(stalls[1]) != 1 || stalls[1][0].To.Sub(stalls[1][0].From) != 100*time.Millisecond {
		t.Errorf("partition 1 stalls %v", stalls[1])
	}
	if d := ledger.Longest(stalls[0], at(1020), at(5000)); d != 2*time.Second {
		t.Errorf("longest stall of partition 0 after 1020 ms: %s, want 2s", d)
	}
	if d := ledger.Longest(stalls[1], at(700), at(800)); d != 0 {
		t.Errorf("longest stall of partition 1 in a window without one: %s, want 0", d)
	}
}
