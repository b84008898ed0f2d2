package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/status"
)

// skipStored finishes the entries whose report is stored already, checking Redis first and MySQL second.
// Redis proposes: an entry is a candidate when its status is stored and the receipt beside it, which epro-mq
// writes with that status (markStored), holds the entry's content hash. MySQL decides: the candidates' rows
// are read in one query, and only an entry whose row exists with the entry's own content hash is finished.
// Everything else goes to the insert, whose unique key stores it, dedupes it or finds the conflict.
//
// Redis alone never skips a record, because a marker can outlive its row: a database restored from a backup
// has lost the rows stored since, while Redis still says stored. Re-reading the topic (group offsets reset)
// then stores them again, whatever the age of the backup, with nothing in Redis to flush
// and no mode to switch. The check costs one
// query per batch, and only for batches with candidates: new reports carry the API's accepted status, so in
// steady state there are none; a re-read (a restart's tail, a reset) trades an insert of every payload plus
// its read-back for that one read. When Redis or the read fails, every entry goes to the insert.
func (in *Ingester) skipStored(ctx context.Context, entries []*entry) {
	if in.redis == nil || len(entries) == 0 {
		return
	}
	candidates := in.markedStored(ctx, entries)
	if len(candidates) == 0 {
		return
	}
	ids := make([]string, 0, len(candidates))
	for _, e := range candidates {
		ids = append(ids, e.row.RequestID)
	}
	stored, err := in.rows.Lookup(ctx, ids)
	if err != nil {
		in.logEvery("fastpath-mysql", "check %d reports redis knows as stored, inserting them instead: %v", len(ids), err)
		return
	}
	for _, e := range candidates {
		if s, ok := stored[e.row.RequestID]; ok && s.ContentKnown && s.ContentSHA256 == e.row.ContentSHA256 {
			e.done = true
			e.outcome(outcomeDuplicate)
			in.skipped.Add(1)
		}
	}
	if missing := len(candidates) - countDone(candidates); missing > 0 {
		in.staleMarkers.Add(int64(missing))
		in.logEvery("fastpath-missing", "%d reports redis knows as stored have no row with their content (a restored database?); inserting them", missing)
	}
}

// markedStored returns the entries whose Redis status is stored with a receipt holding the entry's content
// hash: one MGET of the statuses, and a second of the receipts of those stored, if any. New reports carry
// the API's accepted status, so in steady state the receipts are never read. markStored writes the receipt
// before the status, so a stored status always finds its receipt.
func (in *Ingester) markedStored(ctx context.Context, entries []*entry) []*entry {
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		keys = append(keys, status.Key(e.row.RequestID))
	}
	rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
	defer cancel()
	vals, err := in.redis.MGet(rctx, keys...).Result()
	if err != nil {
		in.logEvery("redis", "dedupe fast path unavailable, relying on MySQL: %v", err)
		return nil
	}
	var stored []*entry
	keys = keys[:0]
	for i, e := range entries {
		if s, ok := vals[i].(string); ok && s == status.Stored {
			stored = append(stored, e)
			keys = append(keys, status.ReceiptKey(e.row.RequestID))
		}
	}
	if len(stored) == 0 {
		return nil
	}
	if vals, err = in.redis.MGet(rctx, keys...).Result(); err != nil {
		in.logEvery("redis", "dedupe fast path unavailable, relying on MySQL: %v", err)
		return nil
	}
	var out []*entry
	for i, e := range stored {
		v, ok := vals[i].(string)
		if !ok {
			continue
		}
		r, err := status.ParseReceipt(v)
		if err != nil || r.ContentSHA256 != hex.EncodeToString(e.row.ContentSHA256[:]) {
			continue
		}
		out = append(out, e)
	}
	return out
}

func countDone(entries []*entry) int {
	n := 0
	for _, e := range entries {
		if e.done {
			n++
		}
	}
	return n
}

// markStored records in Redis that the entries' rows are committed to MySQL, each written by that entry's
// record: first the receipt of the stored report (overwriting the API's, which may describe another
// content that lost a race), then the status. It runs only after the commit, so Redis never claims a report
// is stored when it is not, and a stored status always has the stored content's receipt before it.
func (in *Ingester) markStored(ctx context.Context, batch []*entry) {
	if in.redis == nil || len(batch) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
	defer cancel()
	pipe := in.redis.Pipeline()
	for _, e := range batch {
		r := status.Receipt{PatientID: e.row.PatientID, ContentSHA256: hex.EncodeToString(e.row.ContentSHA256[:]),
			ReceivedAt: e.row.ReceivedAt}
		if e.row.PayloadFormat == reportdb.FormatSubmission {
			r.SubmissionSHA256 = sha256Hex(e.row.Payload)
		}
		pipe.Set(rctx, status.ReceiptKey(e.row.RequestID), r.Marshal(), status.TTL)
		pipe.Set(rctx, status.Key(e.row.RequestID), status.Stored, status.TTL)
	}
	if _, err := pipe.Exec(rctx); err != nil {
		in.logEvery("redis", "mark %d reports stored in redis: %v", len(batch), err)
	}
}

// markDeadLettered records in Redis that requestID was dead-lettered, after the dead letter was acknowledged.
// An empty id (a poison record, whose id cannot be trusted) is not recorded.
func (in *Ingester) markDeadLettered(ctx context.Context, requestID string) {
	in.markStatus(ctx, requestID, status.DeadLettered)
}

// markConflict records in Redis that a record under requestID was dead-lettered as a conflict. The receipt
// is left alone: it describes the stored report.
func (in *Ingester) markConflict(ctx context.Context, requestID string) {
	in.markStatus(ctx, requestID, status.Conflict)
}

func (in *Ingester) markStatus(ctx context.Context, requestID, value string) {
	if in.redis == nil || requestID == "" {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
	defer cancel()
	if err := in.redis.Set(rctx, status.Key(requestID), value, status.TTL).Err(); err != nil {
		in.logEvery("redis", "mark report %s in redis: %v", value, err)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
