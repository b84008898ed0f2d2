package handler_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/types"
)

func TestReportStatus(t *testing.T) {
	// The reports table as epro-mq's migrations create it.
	db, dsn := reportdbtest.Open(t)
	a := newAPI(t, apiOptions{mysqlDSN: dsn})

	stored := uuid.NewString()
	receivedAt := time.Date(2026, 3, 1, 19, 5, 0, 123456000, time.UTC)
	storedAt := receivedAt.Add(1500 * time.Millisecond)
	reportdbtest.Insert(t, db, reportdbtest.Row{RequestID: stored, ReceivedAt: receivedAt, StoredAt: storedAt})
	// Redis still says accepted: MySQL, the truth for stored reports, wins.
	a.accept(stored, anyPatient, status.Accepted)

	accepted := uuid.NewString()
	a.accept(accepted, anyPatient, status.Accepted)
	dead := uuid.NewString()
	a.accept(dead, anyPatient, status.DeadLettered)
	// Stored with the bytes the app sent, and later another report under its id was set aside: conflict,
	// with the stored report's times and hash, so an app can tell whose report is stored.
	sent := newSpelled(anyPatient)
	reportdbtest.Insert(t, db, reportdbtest.Row{Original: sent.body(), ReceivedAt: receivedAt, StoredAt: storedAt})
	a.rdb.Set(t.Context(), status.Key(sent.id), status.Conflict, time.Minute)
	// Redis says stored but the row is missing (the database was restored from an older backup, or the read
	// lags the write): never stored without a row, and no storedAt.
	lostRow := uuid.NewString()
	a.accept(lostRow, anyPatient, status.Stored)
	// A conflict whose stored report is not (yet) readable in MySQL.
	conflicted := uuid.NewString()
	a.accept(conflicted, anyPatient, status.Conflict)

	cases := []struct {
		name, id, status, storedAt, receivedAt string
		code                                   int
		submissionSHA256                       string
	}{
		{"stored", stored, "stored", "2026-03-01T19:05:01.623456Z", "2026-03-01T19:05:00.123456Z", 200, ""},
		{"stored, id in upper case", toUpper(stored), "stored", "2026-03-01T19:05:01.623456Z", "2026-03-01T19:05:00.123456Z", 200, ""},
		{"accepted", accepted, "accepted", "", "", 200, ""},
		{"dead lettered", dead, "dead_lettered", "", "", 200, ""},
		{"stored, then a conflict", sent.id, "conflict", "2026-03-01T19:05:01.623456Z", "2026-03-01T19:05:00.123456Z", 200, sha(sent.body())},
		{"conflict", conflicted, "conflict", "", "", 200, ""},
		{"stored in redis, no row", lostRow, "accepted", "", "", 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := a.get("/v1/reports/" + tc.id)
			if resp.status != tc.code {
				t.Fatalf("status %d body %s", resp.status, resp.body)
			}
			var got types.ReportStatusResp
			if err := json.Unmarshal(resp.body, &got); err != nil {
				t.Fatal(err)
			}
			want := types.ReportStatusResp{RequestID: toLower(tc.id), Status: tc.status, StoredAt: tc.storedAt,
				ReceivedAt: tc.receivedAt, SubmissionSHA256: tc.submissionSHA256}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}

	t.Run("unknown", func(t *testing.T) {
		resp := a.get("/v1/reports/" + uuid.NewString())
		if resp.status != http.StatusNotFound || resp.errorBody(t).Code != errcode.NotFound {
			t.Fatalf("status %d body %s", resp.status, resp.body)
		}
	})
	for _, bad := range []string{"abc", "1b4e28ba2fa141d2883f0016d3cca427", "00000000-0000-0000-0000-000000000000", "1b4e28ba-2fa1-41d2-883f-0016d3cca42g"} {
		t.Run("invalid "+bad, func(t *testing.T) {
			resp := a.get("/v1/reports/" + bad)
			if resp.status != http.StatusBadRequest || resp.errorBody(t).Code != errcode.InvalidRequestID {
				t.Fatalf("status %d body %s", resp.status, resp.body)
			}
		})
	}
}

// Before epro-mq created its table, nothing is stored; the API still answers from Redis.
func TestReportStatusWithoutReportsTable(t *testing.T) {
	a := newAPI(t, apiOptions{}) // fresh, empty database
	accepted := uuid.NewString()
	a.accept(accepted, anyPatient, status.Accepted)
	if resp := a.get("/v1/reports/" + accepted); resp.status != http.StatusOK {
		t.Fatalf("accepted: status %d body %s", resp.status, resp.body)
	}
	if resp := a.get("/v1/reports/" + uuid.NewString()); resp.status != http.StatusNotFound {
		t.Fatalf("unknown: status %d body %s", resp.status, resp.body)
	}
}

func TestReportStatusStoreDownIs503(t *testing.T) {
	t.Run("mysql", func(t *testing.T) {
		a := newAPI(t, apiOptions{mysqlDSN: "u:p@tcp(" + closedAddr(t) + ")/epro"})
		accepted := uuid.NewString()
		a.accept(accepted, anyPatient, status.Accepted)
		for _, id := range []string{accepted, uuid.NewString()} {
			resp := a.get("/v1/reports/" + id)
			if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
				t.Fatalf("status %d body %s", resp.status, resp.body)
			}
			if e := resp.errorBody(t); e.Code != errcode.IngestUnavailable {
				t.Errorf("code %s", e.Code)
			}
		}
	})
	t.Run("redis", func(t *testing.T) {
		a := newAPI(t, apiOptions{redisAddr: closedAddr(t)})
		resp := a.get("/v1/reports/" + uuid.NewString())
		if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
			t.Fatalf("status %d body %s", resp.status, resp.body)
		}
	})
}

// Redis down does not cost a report its 202: Kafka has it.
func TestSubmitReportRedisDownStillAccepts(t *testing.T) {
	a := newAPI(t, apiOptions{redisAddr: closedAddr(t)})
	resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport("PAT-1")))
	if resp.status != http.StatusAccepted {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	a.readMessages(0, 1, 5*time.Second)
}

// A database restored from an older backup has lost the row, while Redis still says stored: the answer
// follows the row, stored while it exists and accepted while it does not, never stored from Redis alone.
func TestReportStatusNeverStoredWithoutARow(t *testing.T) {
	db, dsn := reportdbtest.Open(t)
	a := newAPI(t, apiOptions{mysqlDSN: dsn})
	id := uuid.NewString()
	reportdbtest.Insert(t, db, reportdbtest.Row{RequestID: id, PatientID: anyPatient})
	a.accept(id, anyPatient, status.Stored)
	read := func() types.ReportStatusResp {
		t.Helper()
		resp := a.get("/v1/reports/" + id)
		if resp.status != http.StatusOK {
			t.Fatalf("status %d body %s", resp.status, resp.body)
		}
		var got types.ReportStatusResp
		if err := json.Unmarshal(resp.body, &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := read(); got.Status != status.Stored || got.StoredAt == "" {
		t.Fatalf("with its row: %+v; want stored with storedAt", got)
	}
	if _, err := db.Exec("DELETE FROM reports WHERE request_id = ?", id); err != nil {
		t.Fatal(err)
	}
	if v := a.rdb.Get(t.Context(), status.Key(id)).Val(); v != status.Stored {
		t.Fatalf("redis status %q; the test needs it still stored", v)
	}
	if got := read(); got.Status != status.Accepted || got.StoredAt != "" {
		t.Fatalf("without its row: %+v; want accepted, no storedAt", got)
	}
	reportdbtest.Insert(t, db, reportdbtest.Row{RequestID: id, PatientID: anyPatient})
	if got := read(); got.Status != status.Stored {
		t.Fatalf("row stored again: %+v; want stored", got)
	}
}
