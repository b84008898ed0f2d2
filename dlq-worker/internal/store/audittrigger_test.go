package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/dlq-worker/internal/store"
)

// The database itself keeps dead_letter_audit append-only: the triggers of migration 00002 refuse every
// UPDATE and DELETE, here through the very connection (and so the database user) the service writes with.
func TestAuditRowUpdateAndDeleteFailForTheServiceUser(t *testing.T) {
	db := openDB(t)
	ctx := context.Background()
	audit := store.NewAudit(db)
	if err := audit.Append(ctx, store.AuditEntry{Actor: "otto", ActorIssuer: "https://idp.example", Role: "operator",
		ClientAddr: "192.0.2.7:51000", Action: store.ActionDiscard, Outcome: store.OutcomeOK, DeadLetterID: 1,
		StateBefore: store.StatusNew, StateAfter: store.StatusDiscarded, ReasonCode: "test_data", Reason: "n"}); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"UPDATE dead_letter_audit SET actor = 'mallory'",
		"UPDATE dead_letter_audit SET reason = NULL WHERE dead_letter_id = 1",
		"DELETE FROM dead_letter_audit",
		"DELETE FROM dead_letter_audit WHERE dead_letter_id = 1",
	} {
		_, err := db.ExecContext(ctx, stmt)
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1644 || string(me.SQLState[:]) != "45000" {
			t.Errorf("%s: err = %v, want the trigger's SIGNAL (1644, SQLSTATE 45000)", stmt, err)
		}
	}
	// Inside a transaction too, and the row is as written.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM dead_letter_audit WHERE id > 0"); err == nil {
		t.Error("DELETE in a transaction succeeded")
	}
	_ = tx.Rollback()
	got, err := audit.ForDeadLetter(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Actor != "otto" || got[0].ActorIssuer != "https://idp.example" ||
		got[0].ClientAddr != "192.0.2.7:51000" || got[0].StateBefore != store.StatusNew ||
		got[0].StateAfter != store.StatusDiscarded || got[0].Reason != "n" {
		t.Fatalf("audit row after the refused changes = %+v", got)
	}
	// Appending still works.
	if err := audit.Append(ctx, store.AuditEntry{Actor: "otto", Role: "operator", Action: store.ActionReveal,
		Outcome: store.OutcomeOK, DeadLetterID: 1}); err != nil {
		t.Fatalf("append after the refused changes: %v", err)
	}
}

// Refusal tells a row MySQL refuses for good from a failure worth retrying, and never quotes the row.
func TestRefusalClassifiesMySQLErrors(t *testing.T) {
	for _, tc := range []struct {
		err       error
		permanent bool
	}{
		{&mysql.MySQLError{Number: 1406, Message: "Data too long for column 'record_key' at row 1"}, true},
		{&mysql.MySQLError{Number: 1366, Message: "Incorrect string value: '\\xF0\\x9F' for column 'x'"}, true},
		{&mysql.MySQLError{Number: 1264, Message: "Out of range value"}, true},
		{&mysql.MySQLError{Number: 1292, Message: "Incorrect datetime value"}, true},
		{&mysql.MySQLError{Number: 4025, Message: "CONSTRAINT `headers` failed"}, true},
		{mysql.ErrPktTooLarge, true},
		{&mysql.MySQLError{Number: 1213, Message: "Deadlock found"}, false},
		{&mysql.MySQLError{Number: 1205, Message: "Lock wait timeout exceeded"}, false},
		{&mysql.MySQLError{Number: 1146, Message: "Table doesn't exist"}, false},
		{&mysql.MySQLError{Number: 1105, Message: "unknown"}, false},
		{mysql.ErrInvalidConn, false},
		{context.DeadlineExceeded, false},
		{nil, false},
	} {
		why, ok := store.Refusal(tc.err)
		if ok != tc.permanent {
			t.Errorf("Refusal(%v) permanent = %v, want %v", tc.err, ok, tc.permanent)
		}
		var me *mysql.MySQLError
		if ok && errors.As(tc.err, &me) && (why == "" || containsAny(why, "'", "record_key", "\\x")) {
			t.Errorf("Refusal(%v) = %q: must name the error number only", tc.err, why)
		}
	}
}

func containsAny(s string, subs ...string) bool {
	return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(s, sub) })
}
