package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Origin is where a dead letter's record was read on its source topic, and what became of it: what a
// reconciliation of the source topic needs to know about a dead letter, and nothing of its content.
type Origin struct {
	ID         uint64
	RequestID  string
	Status     string
	ErrorClass string
	ReplayOf   uint64 // 0: not a replay
	// Topic, Partition and Offset are the original record's; Known is false when its headers did not say.
	Topic     string
	Partition int
	Offset    int64
	Known     bool
}

// OriginsByRequestID returns the dead letters of ids (request ids), oldest first, through the request_id
// index. Len(ids) is bounded by the caller (one IN list).
func (s *DeadLetters) OriginsByRequestID(ctx context.Context, ids []string) ([]Origin, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return s.origins(ctx, "request_id IN (?"+strings.Repeat(",?", len(ids)-1)+")", args)
}

// OriginsAt returns the dead letters of the records at offsets of topic's partition, oldest first. There is
// no index on the original position, so this scans dead_letters: callers ask only for records that carry no
// usable request id, which are rare.
func (s *DeadLetters) OriginsAt(ctx context.Context, topic string, partition int, offsets []int64) ([]Origin, error) {
	if len(offsets) == 0 {
		return nil, nil
	}
	args := []any{topic, partition}
	for _, o := range offsets {
		args = append(args, o)
	}
	return s.origins(ctx, "original_topic = ? AND original_partition = ? AND original_offset IN (?"+
		strings.Repeat(",?", len(offsets)-1)+")", args)
}

func (s *DeadLetters) origins(ctx context.Context, where string, args []any) ([]Origin, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, request_id, status, error_class, replay_of, original_topic,
		original_partition, original_offset FROM dead_letters WHERE `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("read dead-letter origins: %w", err)
	}
	defer rows.Close()
	var out []Origin
	for rows.Next() {
		var (
			o         Origin
			requestID sql.NullString
			replayOf  sql.NullInt64
			topic     sql.NullString
			partition sql.NullInt64
			offset    sql.NullInt64
		)
		if err := rows.Scan(&o.ID, &requestID, &o.Status, &o.ErrorClass, &replayOf, &topic, &partition, &offset); err != nil {
			return nil, fmt.Errorf("read dead-letter origins: %w", err)
		}
		o.RequestID, o.ReplayOf = requestID.String, uint64(replayOf.Int64)
		o.Topic, o.Partition, o.Offset = topic.String, int(partition.Int64), offset.Int64
		o.Known = topic.Valid && partition.Valid && offset.Valid
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read dead-letter origins: %w", err)
	}
	return out, nil
}
