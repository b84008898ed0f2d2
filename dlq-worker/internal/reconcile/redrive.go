package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// Re-drive: a record a run found missing is produced again to the report topic, its value and headers byte
// for byte plus x-redrive-of naming its position, so that epro-mq stores it. dlq-worker never writes reports
// itself: epro-mq owns the table and its checks (envelope, content hash, the request-id unique key), and a
// re-drive goes through all of them. epro-mq's fast path only treats a Redis stored marker as a candidate and
// confirms it against MySQL, so a marker left behind by a lost row does not make it skip the re-drive; and if
// the row came back meanwhile, the unique key makes the re-drive a silent duplicate.

// Sender writes records with acks=all; *producer.Producer implements it.
type Sender interface {
	Send(ctx context.Context, msgs ...kafka.Message) error
}

// RedriveOutcome is what became of one missing record.
type RedriveOutcome string

// Outcomes of a re-drive.
const (
	// Redriven: Kafka acknowledged the record's re-drive. It is stored once epro-mq reads it: a second run
	// confirms it (the record then counts as a duplicate, its re-drive as stored_from_redrive).
	Redriven RedriveOutcome = "redriven"
	// Resolved: not sent, because the record is no longer missing: its request id is stored or has a dead
	// letter (epro-mq got there first).
	Resolved RedriveOutcome = "resolved"
	// Refused: not sent, and the record stays missing: it was not classified missing, it is undecodable
	// (epro-mq would only dead-letter it again, under the re-drive's position), or its position now holds
	// another record.
	Refused RedriveOutcome = "refused"
	// Failed: it could not be read back from Kafka or Kafka did not acknowledge its re-drive.
	Failed RedriveOutcome = "failed"
)

// RedriveConf configures re-drives. Every field is required; the defaults live in config.ReconcileConf.
type RedriveConf struct {
	// RatePerSecond caps re-drives, so a long missing list cannot flood epro-mq.
	RatePerSecond float64
	// Timeout bounds reading one record back and producing its re-drive.
	Timeout time.Duration
}

// RedriveSummary counts what a re-drive did.
type RedriveSummary struct {
	Missing  int64 `json:"missing"`
	Redriven int64 `json:"redriven"`
	Resolved int64 `json:"resolved"`
	Refused  int64 `json:"refused"`
	Failed   int64 `json:"failed"`
	// NotTried counts the missing records a run found beyond the list it kept (MaxRedrive).
	NotTried int64 `json:"notTried"`
}

// Remaining is how many records are still missing and were not re-driven.
func (s RedriveSummary) Remaining() int64 { return s.Refused + s.Failed + s.NotTried }

// Add counts one outcome.
func (s *RedriveSummary) Add(o RedriveOutcome) {
	switch o {
	case Redriven:
		s.Redriven++
	case Resolved:
		s.Resolved++
	case Refused:
		s.Refused++
	case Failed:
		s.Failed++
	}
}

// Text is the summary in one line.
func (s RedriveSummary) Text() string {
	return fmt.Sprintf("re-drive of %d missing records: redriven=%d resolved=%d refused=%d failed=%d not_tried=%d",
		s.Missing, s.Redriven, s.Resolved, s.Refused, s.Failed, s.NotTried)
}

// Redriver re-drives missing records through sender, auditing each.
type Redriver struct {
	engine *Engine
	sender Sender
	audit  *store.Audit
	conf   RedriveConf
}

// NewRedriver returns a Redriver for the records of engine's runs.
func NewRedriver(engine *Engine, sender Sender, audit *store.Audit, c RedriveConf) (*Redriver, error) {
	if engine == nil || sender == nil || audit == nil || c.RatePerSecond <= 0 || c.Timeout <= 0 {
		return nil, errors.New("reconcile: a redriver needs an engine, a sender, the audit trail, RatePerSecond and Timeout")
	}
	return &Redriver{engine: engine, sender: sender, audit: audit, conf: c}, nil
}

// Redrive re-drives missing, the missing records of one run, in order and at most RatePerSecond, and
// calls onItem (if not nil) with each outcome and its detail. Each record gets one audit row (action redrive)
// before it is produced, outcome started, and one after, ok or failed; one that is not produced gets one row,
// outcome skipped. A record is produced only if it was classified missing, and, checked right before, its
// request id still has no row and no dead letter. notTried is the number of missing records the run found
// but did not keep. An error (the audit trail could not be written, or ctx ended) stops the re-drive.
func (d *Redriver) Redrive(ctx context.Context, who Actor, missing []Exception, notTried int64,
	onItem func(Exception, RedriveOutcome, string)) (sum RedriveSummary, err error) {
	sum = RedriveSummary{Missing: int64(len(missing)) + notTried}
	defer func() { sum.NotTried = sum.Missing - sum.Redriven - sum.Resolved - sum.Refused - sum.Failed }()
	interval := time.Duration(float64(time.Second) / d.conf.RatePerSecond)
	var next time.Time
	for _, x := range missing {
		if err := wait(ctx, next); err != nil {
			return sum, err
		}
		outcome, detail, sent, err := d.one(ctx, who, x)
		if sent {
			next = time.Now().Add(interval)
		}
		sum.Add(outcome)
		if onItem != nil {
			onItem(x, outcome, detail)
		}
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

func wait(ctx context.Context, until time.Time) error {
	if d := time.Until(until); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return ctx.Err()
}

// one re-drives x. sent says whether a produce was tried; err is only for what must stop the re-drive.
func (d *Redriver) one(ctx context.Context, who Actor, x Exception) (RedriveOutcome, string, bool, error) {
	e := d.engine
	target := fmt.Sprintf("%s/%d/%d", e.conf.Topic, x.Partition, x.Offset)
	entry := func(outcome string, detail string) store.AuditEntry {
		a := who.entry(outcome, target+" request id "+x.RequestID+": "+detail)
		a.Action = store.ActionRedrive
		return a
	}
	skip := func(o RedriveOutcome, detail string) (RedriveOutcome, string, bool, error) {
		return o, detail, false, d.append(ctx, entry(store.OutcomeSkipped, string(o)+", "+detail))
	}
	if x.Class != Missing {
		return skip(Refused, "classified "+string(x.Class)+", not missing")
	}
	m, err := e.fetch(ctx, x.Partition, x.Offset, d.conf.Timeout)
	if err != nil {
		return Failed, err.Error(), false, d.append(ctx, entry(store.OutcomeFailed, "not read back: "+err.Error()))
	}
	r := judge(m)
	switch {
	case r.poison != "":
		return skip(Refused, "undecodable ("+r.poison+"): epro-mq would dead-letter it under the re-drive's position")
	case r.requestID != x.RequestID:
		return skip(Refused, "the position holds another request id than the run found")
	}
	if detail, err := e.resolvedMeanwhile(ctx, x); err != nil || detail != "" {
		if err != nil {
			return Failed, err.Error(), false, d.append(ctx, entry(store.OutcomeFailed, "not re-checked: "+err.Error()))
		}
		return skip(Resolved, detail)
	}

	if err := d.append(ctx, entry(store.OutcomeStarted, "re-driving")); err != nil {
		return Failed, err.Error(), false, err
	}
	sctx, cancel := context.WithTimeout(ctx, d.conf.Timeout)
	err = d.sender.Send(sctx, redriveMessage(m, e.conf.Topic, target))
	cancel()
	if err != nil {
		return Failed, "not acknowledged: " + err.Error(), true, d.append(ctx, entry(store.OutcomeFailed, "not acknowledged by kafka"))
	}
	return Redriven, "acknowledged", true, d.append(ctx, entry(store.OutcomeOK, "re-driven"))
}

// append writes an audit row even when ctx has just ended, so a started re-drive is always closed.
func (d *Redriver) append(ctx context.Context, a store.AuditEntry) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.engine.conf.QueryTimeout)
	defer cancel()
	return d.audit.Append(actx, a)
}

// resolvedMeanwhile says (non-empty) why x is no longer missing: its request id is stored, or has a dead
// letter under any position (a dead-lettered earlier re-drive, say: sending it again would only repeat that).
func (e *Engine) resolvedMeanwhile(ctx context.Context, x Exception) (string, error) {
	qctx, cancel := context.WithTimeout(ctx, e.conf.QueryTimeout)
	defer cancel()
	rows, err := reportdb.Lookup(qctx, e.db, []string{x.RequestID})
	if err != nil {
		return "", fmt.Errorf("re-check: %w", err)
	}
	if s, ok := rows[x.RequestID]; ok {
		return "stored meanwhile from " + position(s), nil
	}
	origins, err := e.deadLetters.OriginsByRequestID(qctx, []string{x.RequestID})
	if err != nil {
		return "", fmt.Errorf("re-check: %w", err)
	}
	at, err := e.deadLetters.OriginsAt(qctx, e.conf.Topic, x.Partition, []int64{x.Offset})
	if err != nil {
		return "", fmt.Errorf("re-check: %w", err)
	}
	if origins = append(origins, at...); len(origins) > 0 {
		return fmt.Sprintf("dead letter %d exists", origins[0].ID), nil
	}
	return "", nil
}

// fetch reads the one record at partition/offset of the report topic.
func (e *Engine) fetch(ctx context.Context, partition int, offset int64, timeout time.Duration) (kafka.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers: e.conf.Brokers, Topic: e.conf.Topic, Partition: partition,
		// No GroupID: nothing is committed. One record is wanted; MaxBytes bounds the fetch.
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: e.conf.MaxWait, QueueCapacity: 1,
	})
	defer rd.Close()
	if err := rd.SetOffset(offset); err != nil {
		return kafka.Message{}, fmt.Errorf("seek %s/%d to %d: %w", e.conf.Topic, partition, offset, err)
	}
	m, err := rd.FetchMessage(ctx)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("read %s/%d at %d: %w", e.conf.Topic, partition, offset, err)
	}
	if m.Offset != offset {
		// Retention deleted it, or a compaction: the reader moved on to the next record.
		return kafka.Message{}, fmt.Errorf("read %s/%d at %d: the record is gone (next is %d)", e.conf.Topic, partition, offset, m.Offset)
	}
	return m, nil
}

// redriveMessage is m again, key, value and headers as they were (request id, schema version, trace
// context, an x-replay-of), plus x-redrive-of naming m's position (an earlier one gives way).
func redriveMessage(m kafka.Message, topic, target string) kafka.Message {
	headers := make([]kafka.Header, 0, len(m.Headers)+1)
	for _, h := range m.Headers {
		if h.Key != report.HeaderRedriveOf {
			headers = append(headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
	}
	headers = append(headers, kafka.Header{Key: report.HeaderRedriveOf, Value: []byte(target)})
	return kafka.Message{Topic: topic, Key: m.Key, Value: m.Value, Headers: headers}
}
