package handler

import (
	"errors"
	"net/http"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

func ExportAuditHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req types.AuditExportReq
		if err := parse(r, &req); err != nil {
			errcode.Write(r.Context(), w, err)
			return
		}
		out := &exportWriter{w: w, contentType: "application/json", filename: "audit.json"}
		if req.Format == logic.ExportCSV {
			out.contentType, out.filename = "text/csv; charset=utf-8", "audit.csv"
		}
		err := logic.NewExportAuditLogic(r.Context(), svcCtx, out).ExportAudit(&req)
		switch {
		case err == nil:
		case errors.Is(err, logic.ErrExportCut):
			// Part of the body is out with a 200: closing the connection without the end of the chunked body
			// makes the client see an error instead of a complete-looking, short export.
			if conn, _, herr := http.NewResponseController(w).Hijack(); herr == nil {
				_ = conn.Close()
			} else {
				logx.WithContext(r.Context()).Errorf("audit export cut short and the connection cannot be closed: %v", herr)
			}
		default:
			errcode.Write(r.Context(), w, err)
		}
	}
}

// exportWriter sets the export's headers on its first write, so a failure before any row is answered as an
// ordinary error.
type exportWriter struct {
	w           http.ResponseWriter
	contentType string
	filename    string
	started     bool
}

func (e *exportWriter) Write(p []byte) (int, error) {
	if !e.started {
		e.started = true
		h := e.w.Header()
		h.Set("Content-Type", e.contentType)
		h.Set("Content-Disposition", `attachment; filename="`+e.filename+`"`)
		h.Set("Cache-Control", "no-store")
		e.w.WriteHeader(http.StatusOK)
	}
	return e.w.Write(p)
}

// Flush sends what was written so far.
func (e *exportWriter) Flush() {
	_ = http.NewResponseController(e.w).Flush()
}
