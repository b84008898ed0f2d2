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
	"github.com/redis/go-redis/v9"
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
// A stored report whose cached status is conflict answers conflict, with the stored report's times and
// submissionSha256: another report was sent under its request id and set aside for review. That mark is
// only cached, so when Redis cannot be asked (or was flushed) the answer is stored.
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

	ctx, cancel := context.WithTimeout(l.ctx, l.svcCtx.Config.Redis.Timeout)
	defer cancel()
	v, err := l.svcCtx.Redis.Get(ctx, status.Key(id)).Result()
	if found {
		resp := &types.ReportStatusResp{
			RequestID: id, Status: status.Stored,
			ReceivedAt: formatTime(row.receivedAt), StoredAt: formatTime(row.storedAt), SubmissionSHA256: row.submissionSHA256,
		}
		switch {
		case err == nil && v == status.Conflict:
			resp.Status = status.Conflict
		case err != nil && !errors.Is(err, redis.Nil):
			l.Errorw("read report status", logx.Field("requestId", id), logx.Field("error", err.Error()))
		}
		return resp, nil
	}
	switch {
	case errors.Is(err, redis.Nil):
		return nil, errcode.New(http.StatusNotFound, errcode.NotFound, "no report with this requestId was accepted")
	case err != nil:
		l.Errorw("read report status", logx.Field("requestId", id), logx.Field("error", err.Error()))
		return nil, unavailable(l.svcCtx, "the report status cannot be read right now")
	}
	switch v {
	case status.Accepted, status.DeadLettered, status.Stored, status.Conflict:
		// Stored without a row: the cache is ahead of our MySQL read (replica lag); storedAt is unknown.
		return &types.ReportStatusResp{RequestID: id, Status: v}, nil
	default:
		l.Errorw("unknown report status in cache", logx.Field("requestId", id), logx.Field("status", v))
		return nil, errcode.New(http.StatusInternalServerError, errcode.Internal, "internal error")
	}
}

// storedRow is what the status answer shows of a stored report.
type storedRow struct {
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
		"SELECT received_at, stored_at, CASE WHEN payload_format = ? THEN payload_sha256 END "+
			"FROM reports WHERE request_id = ?", reportdb.FormatSubmission, id).Scan(&row.receivedAt, &row.storedAt, &sum)
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
