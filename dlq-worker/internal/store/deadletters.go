// Package store is dlq-worker's MySQL archive: the dead_letters table (every dead letter ever read, never
// deleted), the append-only dead_letter_audit table, replay_jobs, and a read-only look at epro-mq's reports.
//
// Guarantees: Insert is idempotent on the dead-letter record's own topic, partition and offset; a dead letter
// changes status only inside a transaction that holds its row lock and appends the audit row with it; nothing
// here updates or deletes an audit row.
package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/common/mysqldb"
	"github.com/epro-intake/dlq-worker/migrations"
)

// Statuses of a dead letter. New is the only unresolved one.
const (
	StatusNew       = "new"
	StatusReplayed  = "replayed"
	StatusDiscarded = "discarded"
)

// ErrNotFound is returned for an id that is not in dead_letters or replay_jobs.
var ErrNotFound = errors.New("not found")

// MySQL error numbers the store reacts to.
const (
	mysqlDuplicateKey = 1062
	mysqlNoSuchTable  = 1146
)

// Column limits of dead_letters that a record's bytes can exceed. A record beyond them is archived degraded
// (see DeadLetter.Degraded) rather than refused.
const (
	// MaxKeyBytes is record_key's width, VARBINARY(1024).
	MaxKeyBytes = 1024
	// MaxValueBytes is record_value's, a MEDIUMBLOB.
	MaxValueBytes = 1<<24 - 1
	// MaxHeadersBytes bounds the headers JSON. The column (JSON, LONGTEXT on MariaDB) holds more, but a
	// header set this large is no dead-letter header set, and the row must stay well inside max_allowed_packet.
	MaxHeadersBytes = 1 << 20
)

// Header is one Kafka record header. Value is the text when the bytes are valid UTF-8, otherwise their
// standard base64 with Base64 set, so any header survives the JSON column byte for byte.
type Header struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Base64 bool   `json:"base64,omitempty"`
}

// NewHeader returns the Header for a raw key and value.
func NewHeader(key string, value []byte) Header {
	if utf8.Valid(value) {
		return Header{Key: key, Value: string(value)}
	}
	return Header{Key: key, Value: base64.StdEncoding.EncodeToString(value), Base64: true}
}

// Bytes returns the header's raw value.
func (h Header) Bytes() ([]byte, error) {
	if !h.Base64 {
		return []byte(h.Value), nil
	}
	return base64.StdEncoding.DecodeString(h.Value)
}

// DeadLetter is one row of dead_letters. Optional columns are zero (or nil) when the record did not carry
// them.
type DeadLetter struct {
	ID             uint64
	DLQTopic       string
	DLQPartition   int
	DLQOffset      int64
	DeadLetteredAt time.Time

	Key     []byte // nil: the record had no key
	Value   []byte // the original report bytes; empty in List results
	Headers []Header

	OriginalTopic     string
	OriginalPartition *int
	OriginalOffset    *int64
	OriginalTimestamp *time.Time
	OriginalGroup     string

	ErrorClass   string
	ErrorMessage string
	Attempts     int
	FirstFailure *time.Time
	LastFailure  *time.Time

	RequestID string
	PatientID string
	TrialID   string
	ReplayOf  *uint64

	Status        string
	IngestedAt    time.Time
	ResolvedAt    *time.Time
	ResolvedBy    string
	DiscardReason string

	// Degraded marks a dead letter the archive could not store as it is; DegradedReason says what was
	// wrong (never report content). Raw is then the whole record as read (RawRecord's framing; nil in List
	// results, and when even the framed bytes could not be stored) and RawSHA256 its SHA-256. The other
	// columns hold what fitted: a key too long for record_key is nil there, headers too large are empty.
	Degraded       bool
	DegradedReason string
	Raw            []byte
	RawSHA256      []byte
}

// Filter selects dead letters. Zero fields do not filter. From and To bound DeadLetteredAt: From inclusive,
// To exclusive.
type Filter struct {
	Status     string    `json:"status,omitempty"`
	ErrorClass string    `json:"errorClass,omitempty"`
	TrialID    string    `json:"trialId,omitempty"`
	PatientID  string    `json:"patientId,omitempty"`
	From       time.Time `json:"from,omitzero"`
	To         time.Time `json:"to,omitzero"`
	// Degraded, when set, keeps only degraded (true) or only whole (false) dead letters.
	Degraded *bool `json:"degraded,omitempty"`
}

func (f Filter) where() (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, arg any) {
		conds = append(conds, cond)
		args = append(args, arg)
	}
	if f.Status != "" {
		add("status = ?", f.Status)
	}
	if f.ErrorClass != "" {
		add("error_class = ?", f.ErrorClass)
	}
	if f.TrialID != "" {
		add("trial_id = ?", f.TrialID)
	}
	if f.PatientID != "" {
		add("patient_id = ?", f.PatientID)
	}
	if !f.From.IsZero() {
		add("dead_lettered_at >= ?", dbTime(f.From))
	}
	if !f.To.IsZero() {
		add("dead_lettered_at < ?", dbTime(f.To))
	}
	if f.Degraded != nil {
		add("degraded = ?", *f.Degraded)
	}
	if len(conds) == 0 {
		return "1=1", nil
	}
	return strings.Join(conds, " AND "), args
}

// DeadLetters is the dead_letters table.
type DeadLetters struct {
	db  *sql.DB
	now func() time.Time
}

// NewDeadLetters returns the table on db.
func NewDeadLetters(db *sql.DB) *DeadLetters {
	return &DeadLetters{db: db, now: time.Now}
}

// DB returns the database the table lives in.
func (s *DeadLetters) DB() *sql.DB { return s.db }

// Insert stores dl with status new and returns its id. inserted is false when a row for the same dead-letter
// topic, partition and offset exists already: the consumer read the record again after a crash or a
// rebalance, and the existing row (whatever its status by now) is kept as it is.
func (s *DeadLetters) Insert(ctx context.Context, dl DeadLetter) (id uint64, inserted bool, err error) {
	headers, err := json.Marshal(nonNilHeaders(dl.Headers))
	if err != nil {
		return 0, false, fmt.Errorf("encode headers: %w", err)
	}
	value := dl.Value
	if value == nil {
		value = []byte{}
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO dead_letters (dlq_topic, dlq_partition, dlq_offset,
		dead_lettered_at, record_key, record_value, headers, original_topic, original_partition, original_offset,
		original_timestamp, original_consumer_group, error_class, error_message, attempts, first_failure_at,
		last_failure_at, request_id, patient_id, trial_id, replay_of, status, ingested_at, degraded,
		degraded_reason, raw_record, raw_sha256)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		dl.DLQTopic, dl.DLQPartition, dl.DLQOffset, dbTime(dl.DeadLetteredAt), dl.Key, value, string(headers),
		nullString(dl.OriginalTopic), dl.OriginalPartition, dl.OriginalOffset, nullTime(dl.OriginalTimestamp),
		nullString(dl.OriginalGroup), dl.ErrorClass, dl.ErrorMessage, dl.Attempts, nullTime(dl.FirstFailure),
		nullTime(dl.LastFailure), nullString(dl.RequestID), nullString(dl.PatientID), nullString(dl.TrialID),
		dl.ReplayOf, StatusNew, dbTime(s.now()), dl.Degraded, nullString(truncate(dl.DegradedReason, 1024)),
		nullBytes(dl.Raw), nullBytes(dl.RawSHA256))
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == mysqlDuplicateKey {
		err = s.db.QueryRowContext(ctx,
			"SELECT id FROM dead_letters WHERE dlq_topic = ? AND dlq_partition = ? AND dlq_offset = ?",
			dl.DLQTopic, dl.DLQPartition, dl.DLQOffset).Scan(&id)
		if err != nil {
			return 0, false, fmt.Errorf("find existing dead letter: %w", err)
		}
		return id, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("insert dead letter: %w", err)
	}
	last, err := res.LastInsertId()
	if err != nil {
		return 0, false, fmt.Errorf("insert dead letter: %w", err)
	}
	return uint64(last), true, nil
}

const metaColumns = `id, dlq_topic, dlq_partition, dlq_offset, dead_lettered_at, record_key, headers, original_topic,
	original_partition, original_offset, original_timestamp, original_consumer_group, error_class, error_message,
	attempts, first_failure_at, last_failure_at, request_id, patient_id, trial_id, replay_of, status, ingested_at,
	resolved_at, resolved_by, discard_reason, degraded, degraded_reason, raw_sha256`

type rowScanner interface{ Scan(dest ...any) error }

func scanDeadLetter(r rowScanner, withValue bool) (DeadLetter, error) {
	var (
		dl                                          DeadLetter
		headers                                     []byte
		origTopic, origGroup, reqID, patID, trialID sql.NullString
		resolvedBy, discardReason, degradedReason   sql.NullString
		origPart                                    sql.NullInt64
		origOffset                                  sql.NullInt64
		origTS, first, last, resolved               sql.NullTime
		replayOf                                    sql.NullInt64
		dest                                        []any
	)
	dest = append(dest, &dl.ID, &dl.DLQTopic, &dl.DLQPartition, &dl.DLQOffset, &dl.DeadLetteredAt, &dl.Key,
		&headers, &origTopic, &origPart, &origOffset, &origTS, &origGroup, &dl.ErrorClass, &dl.ErrorMessage,
		&dl.Attempts, &first, &last, &reqID, &patID, &trialID, &replayOf, &dl.Status, &dl.IngestedAt, &resolved,
		&resolvedBy, &discardReason, &dl.Degraded, &degradedReason, &dl.RawSHA256)
	if withValue {
		dest = append(dest, &dl.Value, &dl.Raw)
	}
	if err := r.Scan(dest...); err != nil {
		return DeadLetter{}, err
	}
	if err := json.Unmarshal(headers, &dl.Headers); err != nil {
		return DeadLetter{}, fmt.Errorf("decode headers of dead letter %d: %w", dl.ID, err)
	}
	dl.OriginalTopic, dl.OriginalGroup = origTopic.String, origGroup.String
	dl.RequestID, dl.PatientID, dl.TrialID = reqID.String, patID.String, trialID.String
	dl.ResolvedBy, dl.DiscardReason = resolvedBy.String, discardReason.String
	dl.DegradedReason = degradedReason.String
	if origPart.Valid {
		p := int(origPart.Int64)
		dl.OriginalPartition = &p
	}
	if origOffset.Valid {
		o := origOffset.Int64
		dl.OriginalOffset = &o
	}
	if replayOf.Valid {
		r := uint64(replayOf.Int64)
		dl.ReplayOf = &r
	}
	dl.OriginalTimestamp, dl.FirstFailure, dl.LastFailure, dl.ResolvedAt =
		timePtr(origTS), timePtr(first), timePtr(last), timePtr(resolved)
	dl.DeadLetteredAt, dl.IngestedAt = dl.DeadLetteredAt.UTC(), dl.IngestedAt.UTC()
	return dl, nil
}

// Get returns one dead letter with its value, or ErrNotFound.
func (s *DeadLetters) Get(ctx context.Context, id uint64) (DeadLetter, error) {
	dl, err := scanDeadLetter(s.db.QueryRowContext(ctx,
		"SELECT "+metaColumns+", record_value, raw_record FROM dead_letters WHERE id = ?", id), true)
	if errors.Is(err, sql.ErrNoRows) {
		return DeadLetter{}, ErrNotFound
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("get dead letter %d: %w", id, err)
	}
	return dl, nil
}

// List returns up to limit dead letters matching f, newest first, with ids below before (0: from the
// newest). Values are not read: listing never touches report content.
func (s *DeadLetters) List(ctx context.Context, f Filter, before uint64, limit int) ([]DeadLetter, error) {
	where, args := f.where()
	if before > 0 {
		where += " AND id < ?"
		args = append(args, before)
	}
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx,
		"SELECT "+metaColumns+" FROM dead_letters WHERE "+where+" ORDER BY id DESC LIMIT ?", args...)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		dl, err := scanDeadLetter(rows, false)
		if err != nil {
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		out = append(out, dl)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

// Candidate is a dead letter a bulk replay would act on.
type Candidate struct {
	ID        uint64
	RequestID string
}

// Candidates returns up to limit dead letters matching f with status new, oldest first, so a bulk replay
// re-sends a patient's reports in the order they first failed. A degraded dead letter whose bytes were not
// archived is never one: there is nothing to replay.
func (s *DeadLetters) Candidates(ctx context.Context, f Filter, limit int) ([]Candidate, error) {
	f.Status = StatusNew
	where, args := f.where()
	where += " AND NOT (degraded = 1 AND raw_record IS NULL)"
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx,
		"SELECT id, request_id FROM dead_letters WHERE "+where+" ORDER BY id LIMIT ?", args...)
	if err != nil {
		return nil, fmt.Errorf("select replay candidates: %w", err)
	}
	defer rows.Close()
	var out []Candidate
	for rows.Next() {
		var c Candidate
		var reqID sql.NullString
		if err := rows.Scan(&c.ID, &reqID); err != nil {
			return nil, fmt.Errorf("select replay candidates: %w", err)
		}
		c.RequestID = reqID.String
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("select replay candidates: %w", err)
	}
	return out, nil
}

// Stats are the counts behind GET /v1/stats and the gauges.
type Stats struct {
	ByStatus map[string]int64
	// ByClass counts by error class and then status.
	ByClass map[string]map[string]int64
	// OldestNew is the DeadLetteredAt of the oldest unresolved dead letter; nil when there is none.
	OldestNew *time.Time
}

// Unresolved is the number of dead letters with status new.
func (st Stats) Unresolved() int64 { return st.ByStatus[StatusNew] }

// Stats counts dead letters by status and error class.
func (s *DeadLetters) Stats(ctx context.Context) (Stats, error) {
	st := Stats{ByStatus: map[string]int64{}, ByClass: map[string]map[string]int64{}}
	rows, err := s.db.QueryContext(ctx,
		"SELECT error_class, status, COUNT(*) FROM dead_letters GROUP BY error_class, status")
	if err != nil {
		return Stats{}, fmt.Errorf("count dead letters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var class, status string
		var n int64
		if err := rows.Scan(&class, &status, &n); err != nil {
			return Stats{}, fmt.Errorf("count dead letters: %w", err)
		}
		st.ByStatus[status] += n
		if st.ByClass[class] == nil {
			st.ByClass[class] = map[string]int64{}
		}
		st.ByClass[class][status] += n
	}
	if err := rows.Err(); err != nil {
		return Stats{}, fmt.Errorf("count dead letters: %w", err)
	}
	var oldest sql.NullTime
	if err := s.db.QueryRowContext(ctx, "SELECT MIN(dead_lettered_at) FROM dead_letters WHERE status = ?",
		StatusNew).Scan(&oldest); err != nil {
		return Stats{}, fmt.Errorf("oldest unresolved dead letter: %w", err)
	}
	st.OldestNew = timePtr(oldest)
	return st, nil
}

// Migrate applies every pending migration of dlq-worker, tracked in its own goose table, one replica at a
// time.
func Migrate(ctx context.Context, db *sql.DB) error {
	return mysqldb.Migrate(ctx, db, migrations.FS, migrations.VersionTable)
}

func nonNilHeaders(h []Header) []Header {
	if h == nil {
		return []Header{}
	}
	return h
}

// dbTime is t as stored in a UTC DATETIME(6) column. Truncating here rather than trusting the DSN's
// timeTruncate keeps values equal whatever DSN the operator configured.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func nullTime(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return dbTime(*t)
}

func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func timePtr(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}
