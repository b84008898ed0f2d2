package ingest

import (
	"context"

	"github.com/epro-intake/common/status"
)

// skipStored marks entries whose request id Redis knows as stored. Redis is only a cache of the reports
// table: when it fails, every entry goes to MySQL, whose unique key dedupes.
func (in *Ingester) skipStored(ctx context.Context, entries []*entry) {
	if in.redis == nil || len(entries) == 0 {
		return
	}
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = status.Key(e.row.RequestID)
	}
	rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
	defer cancel()
	vals, err := in.redis.MGet(rctx, keys...).Result()
	if err != nil {
		in.logEvery("redis", "dedupe fast path unavailable, relying on MySQL: %v", err)
		return
	}
	for i, v := range vals {
		if s, ok := v.(string); ok && s == status.Stored {
			entries[i].done = true
			in.skipped.Add(1)
		}
	}
}

// markStored records in Redis that the entries are committed to MySQL. It runs only after the commit, so
// Redis never claims a report is stored when it is not.
func (in *Ingester) markStored(ctx context.Context, batch []*entry) {
	if in.redis == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
	defer cancel()
	pipe := in.redis.Pipeline()
	for _, e := range batch {
		pipe.Set(rctx, status.Key(e.row.RequestID), status.Stored, status.TTL)
	}
	if _, err := pipe.Exec(rctx); err != nil {
		in.logEvery("redis", "mark %d reports stored in redis: %v", len(batch), err)
	}
}

// markDeadLettered records in Redis that requestID was dead-lettered, after the dead letter was acknowledged.
// An empty id (a poison record, whose id cannot be trusted) is not recorded.
func (in *Ingester) markDeadLettered(ctx context.Context, requestID string) {
	if in.redis == nil || requestID == "" {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
	defer cancel()
	if err := in.redis.Set(rctx, status.Key(requestID), status.DeadLettered, status.TTL).Err(); err != nil {
		in.logEvery("redis", "mark report dead-lettered in redis: %v", err)
	}
}
