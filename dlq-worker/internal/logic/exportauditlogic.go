package logic

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// Export formats.
const (
	ExportCSV  = "csv"
	ExportJSON = "json"
)

// ErrExportCut is returned when an export failed after part of it was written: the response cannot say so
// any more, and the handler must cut the connection so the client does not take the part for the whole.
var ErrExportCut = errors.New("audit export cut short")

// exportFlushRows is how many rows go out between flushes, which also bounds what go-zero's timeout
// handler buffers.
const exportFlushRows = 100

// auditCSVHeader names the CSV columns, in the order of auditCSVRecord.
var auditCSVHeader = []string{"id", "at", "actor", "actorIssuer", "role", "clientAddr", "action", "outcome",
	"deadLetterId", "jobId", "stateBefore", "stateAfter", "reasonCode", "reason"}

// ExportAuditLogic streams audit rows to w.
type ExportAuditLogic struct {
	base
	w io.Writer
}

// NewExportAuditLogic returns the logic writing to w. If w is an http.Flusher, it is flushed every
// exportFlushRows rows and at the end.
func NewExportAuditLogic(ctx context.Context, svcCtx *svc.ServiceContext, w io.Writer) *ExportAuditLogic {
	return &ExportAuditLogic{base: newBase(ctx, svcCtx), w: w}
}

// ExportAudit writes the audit history req selects, oldest first, in req.Format. Nothing is written before
// the first row is read, so an error before that is answered normally; an error after it is ErrExportCut.
// Only audit columns are written: no report content.
func (l *ExportAuditLogic) ExportAudit(req *types.AuditExportReq) error {
	sel := store.AuditSelection{DeadLetterID: req.DeadLetterID, PatientID: req.PatientID}
	var enc exportEncoder
	if req.Format == ExportCSV {
		enc = &csvExport{w: csv.NewWriter(l.w)}
	} else {
		enc = &jsonExport{w: l.w}
	}
	rows := 0
	// The request's own deadline (go-zero's Timeout) bounds the export, not MySQL.QueryTimeout: it reads
	// every row of a history.
	err := l.svcCtx.Audit.Export(l.ctx, sel, func(e store.AuditEntry) error {
		if rows == 0 {
			if err := enc.begin(); err != nil {
				return err
			}
		}
		rows++
		if err := enc.row(auditEntries([]store.AuditEntry{e})[0]); err != nil {
			return err
		}
		if rows%exportFlushRows == 0 {
			return l.flush(enc)
		}
		return nil
	})
	if err != nil {
		if rows > 0 {
			l.Errorf("audit export cut after %d rows: %v", rows, err)
			return fmt.Errorf("%w: %w", ErrExportCut, err)
		}
		return apiError(l.ctx, "audit export", err)
	}
	if rows == 0 {
		if err := enc.begin(); err != nil {
			return fmt.Errorf("%w: %w", ErrExportCut, err)
		}
	}
	if err := enc.end(); err != nil {
		return fmt.Errorf("%w: %w", ErrExportCut, err)
	}
	if err := l.flush(enc); err != nil {
		return fmt.Errorf("%w: %w", ErrExportCut, err)
	}
	return nil
}

func (l *ExportAuditLogic) flush(enc exportEncoder) error {
	if err := enc.flush(); err != nil {
		return err
	}
	if f, ok := l.w.(interface{ Flush() }); ok {
		f.Flush()
	}
	return nil
}

type exportEncoder interface {
	begin() error
	row(types.AuditEntry) error
	end() error
	flush() error
}

// jsonExport writes a JSON array of AuditEntry, one element per line.
type jsonExport struct {
	w     io.Writer
	count int
}

func (j *jsonExport) begin() error { _, err := io.WriteString(j.w, "["); return err }

func (j *jsonExport) row(e types.AuditEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	sep := ",\n"
	if j.count == 0 {
		sep = "\n"
	}
	j.count++
	if _, err := io.WriteString(j.w, sep); err != nil {
		return err
	}
	_, err = j.w.Write(b)
	return err
}

func (j *jsonExport) end() error   { _, err := io.WriteString(j.w, "\n]\n"); return err }
func (j *jsonExport) flush() error { return nil }

// csvExport writes RFC 4180 CSV with a header line. Cells are the audit values as stored, not escaped for
// spreadsheets.
type csvExport struct{ w *csv.Writer }

func (c *csvExport) begin() error { return c.w.Write(auditCSVHeader) }

func (c *csvExport) row(e types.AuditEntry) error {
	id := func(v uint64) string {
		if v == 0 {
			return ""
		}
		return strconv.FormatUint(v, 10)
	}
	return c.w.Write([]string{strconv.FormatUint(e.ID, 10), e.At, e.Actor, e.ActorIssuer, e.Role, e.ClientAddr,
		e.Action, e.Outcome, id(e.DeadLetterID), id(e.JobID), e.StateBefore, e.StateAfter, e.ReasonCode, e.Reason})
}

func (c *csvExport) end() error { return nil }

func (c *csvExport) flush() error {
	c.w.Flush()
	return c.w.Error()
}
