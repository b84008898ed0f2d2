package logic

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/epro-intake/common/report"

	"github.com/go-sql-driver/mysql"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/middleware"
	"github.com/epro-intake/epro-api/internal/svc"
	"github.com/epro-intake/epro-api/internal/types"
)

// mysqlNoSuchTable is ER_NO_SUCH_TABLE: epro-mq creates the reports table, and until it has, nothing is stored.
const mysqlNoSuchTable = 1146

type ReportStatusLogic struct {
	logx.Logger
	ctx    context.Context
	svcCtx *svc.ServiceContext
}

func NewReportStatusLogic(ctx context.Context, svcCtx *svc.ServiceContext) *ReportStatusLogic {
	return &ReportStatusLogic{
		Logger: logx.WithContext(ctx),
		ctx:    ctx,
		svcCtx: svcCtx,
	}
}

// ReportStatus answers from MySQL, the truth for stored reports, and then from the Redis status cache. A
// store that cannot be asked gives a 503, never a 404 that would make the client think the report was lost.
// Only the report's patient sees its status: its owner is the stored row's patient_id, or else the patient of
// the receipt cached when it was accepted; anyone else, and any id without a known owner, gets the 404 of an
// unknown id.
// A stored report whose cached status is conflict answers conflict, with the stored report's times and
// submissionSha256: another report was sent under its request id and set aside for review. That mark is
// only cached, so when Redis cannot be asked (or was flushed) the answer is stored. Redis alone never makes
// an answer stored: a cached stored status without a row answers accepted.
func (l *ReportStatusLogic) ReportStatus(req *types.ReportStatusReq) (*types.ReportStatusResp, error) {
	id, ok := report.CanonicalRequestID(req.RequestID)
	if !ok {
		return nil, errcode.Field(errcode.InvalidRequestID, "requestId", "must be a UUID such as 1b4e28ba-2fa1-41d2-883f-0016d3cca427")
	}
	middleware.NoteRequestID(l.ctx, id)

	row, found, err := l.stored(id)
	if err != nil {
		l.Errorw("read stored report", logx.Field("requestId", id), logx.Field("error", err.Error()))
		return nil, unavailable(l.svcCtx, "the report status cannot be read right now")
	}
	if found && !ownedBy(l.ctx, row.patientID) {
		return nil, reportNotFound()
	}

	ctx, cancel := context.WithTimeout(l.ctx, l.svcCtx.Config.Redis.Timeout)
	defer cancel()
	// One round trip: both keys share a hash slot.
	vals, err := l.svcCtx.Redis.MGet(ctx, status.Key(id), status.ReceiptKey(id)).Result()
	if found {
		resp := &types.ReportStatusResp{
			RequestID: id, Status: status.Stored,
			ReceivedAt: formatTime(row.receivedAt), StoredAt: formatTime(row.storedAt), SubmissionSHA256: row.submissionSHA256,
		}
		if err != nil {
			l.Errorw("read report status", logx.Field("requestId", id), logx.Field("error", err.Error()))
		} else if v, _ := vals[0].(string); v == status.Conflict {
			resp.Status = status.Conflict
		}
		return resp, nil
	}
	if err != nil {
		l.Errorw("read report status", logx.Field("requestId", id), logx.Field("error", err.Error()))
		return nil, unavailable(l.svcCtx, "the report status cannot be read right now")
	}
	v, _ := vals[0].(string)
	raw, _ := vals[1].(string)
	if v == "" {
		return nil, reportNotFound()
	}
	receipt, err := status.ParseReceipt(raw)
	if err != nil || !ownedBy(l.ctx, receipt.PatientID) {
		// No receipt (lost with a Redis flush, or not written yet): the owner is unknown, so nobody is shown.
		return nil, reportNotFound()
	}
	switch v {
	case status.Accepted, status.DeadLettered, status.Conflict:
		return &types.ReportStatusResp{RequestID: id, Status: v}, nil
	case status.Stored:
		// Redis says stored but the table has no row: the read is behind the write (replica lag), or the
		// database was restored from a backup that predates the row, which re-reading the topic stores again.
		// Either way the report was accepted and is not stored as far as anyone can show: say so.
		return &types.ReportStatusResp{RequestID: id, Status: status.Accepted}, nil
	default:
		l.Errorw("unknown report status in cache", logx.Field("requestId", id), logx.Field("status", v))
		return nil, errcode.New(http.StatusInternalServerError, errcode.Internal, "internal error")
	}
}

// storedRow is what the status answer shows of a stored report.
type storedRow struct {
	patientID            string
	receivedAt, storedAt time.Time
	// submissionSHA256 is the hex SHA-256 of the bytes the app sent, when the row keeps them.
	submissionSHA256 string
}

func (l *ReportStatusLogic) stored(id string) (storedRow, bool, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.svcCtx.Config.MySQL.QueryTimeout)
	defer cancel()
	var row storedRow
	var sum []byte
	err := l.svcCtx.DB.QueryRowContext(ctx,
		"SELECT patient_id, received_at, stored_at, CASE WHEN payload_format = ? THEN payload_sha256 END "+
			"FROM reports WHERE request_id = ?", reportdb.FormatSubmission, id).
		Scan(&row.patientID, &row.receivedAt, &row.storedAt, &sum)
	var me *mysql.MySQLError
	switch {
	case err == nil:
		if sum != nil {
			row.submissionSHA256 = hex.EncodeToString(sum)
		}
		return row, true, nil
	case errors.Is(err, sql.ErrNoRows), errors.As(err, &me) && me.Number == mysqlNoSuchTable:
		return storedRow{}, false, nil
	default:
		return storedRow{}, false, err
	}
}
