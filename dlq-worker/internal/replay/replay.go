// Package replay resolves dead letters: it re-produces them to their source topic, one at a time or as
// rate-limited bulk jobs, or discards them with a reason; both are audited.
//
// Guarantees: a replay writes the original key, value and headers (minus the dead-letter headers epro-mq
// added) plus x-replay-of, with acks=all, to an allowed topic only. The dead letter's status becomes
// replayed, and its audit row is written, in the same transaction that holds the row lock during the produce,
// so two concurrent replays of one dead letter produce once. If the process dies after the produce and before
// the commit, the dead letter stays new and a second single replay sends it again: epro-mq dedupes by request
// id, so that costs a duplicate record, never a duplicate report. A bulk job does better (bulk.go): it never
// sends an item twice, because it looks on the topic for a replay whose outcome it did not record. A dead
// letter of error class conflict is never replayed (ErrConflictNotReplayable): the stored report under its
// request id stays as it is. A degraded dead letter is replayed from its raw record, byte for byte (its
// columns hold only what fitted), under the same rules; one whose bytes were not archived is refused
// (ErrBytesNotKept). Every audit row names the token's subject and issuer, the client's address, and the dead
// letter's status before and after.
package replay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"
	"go.opentelemetry.io/otel/codes"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// Errors a replay or discard ends with, besides store.ErrNotFound.
var (
	// ErrAlreadyReplayed: the dead letter was replayed before; nothing was produced.
	ErrAlreadyReplayed = errors.New("already replayed")
	// ErrDiscarded: the dead letter was discarded; it is not replayed.
	ErrDiscarded = errors.New("dead letter was discarded")
	// ErrResolved: a discard of a dead letter that is no longer new.
	ErrResolved = errors.New("dead letter is already resolved")
	// ErrConflictNotReplayable: the dead letter is a request-id conflict (error class conflict): its request id
	// is stored with other content, so a replay could only come back as the same dead letter, and must never
	// replace the stored report. Nothing is produced; the patient's app sends the report under a new request
	// id, and the dead letter is discarded once that is settled.
	ErrConflictNotReplayable = errors.New("a request-id conflict is not replayed")
	// ErrBytesNotKept: the dead letter is degraded and even its raw bytes could not be archived (only their
	// SHA-256 was), so there is nothing to replay.
	ErrBytesNotKept = errors.New("the dead letter's bytes were not archived")
	// ErrTopicNotAllowed: the original-topic header is missing or names a topic outside Replay.AllowedTopics.
	ErrTopicNotAllowed = errors.New("original topic is missing or not allowed for replay")
	// ErrProduce: Kafka did not acknowledge the replay; the dead letter stays new.
	ErrProduce = errors.New("replay not acknowledged by kafka")
)

// Sender writes records with acks=all; *producer.Producer implements it.
type Sender interface {
	Send(ctx context.Context, msgs ...kafka.Message) error
}

// Report states, as seen in epro-mq's reports table.
const (
	ReportStored    = "stored"
	ReportNotStored = "not_stored"
	// ReportUnknown: no request id could be read from the dead letter, or the reports table is missing.
	ReportUnknown = "unknown"
)

// Conf configures a Resolver.
type Conf struct {
	AllowedTopics []string
	// Timeout bounds one produce.
	Timeout time.Duration
	Bulk    BulkConf
}

// BulkConf: see config.BulkConf.
type BulkConf struct {
	RatePerSecond            float64
	MaxRatePerSecond         float64
	MaxItems                 int
	PauseAfterFailures       int
	PauseAfterRedeadLettered int
	CheckInterval            time.Duration
	LeaseTTL                 time.Duration
	PollInterval             time.Duration
	MaxConcurrentJobs        int
}

// Resolver resolves dead letters, the only two ways there are: it replays them (one by one or in bulk jobs)
// or discards them. Start and Stop make it a service.Service whose Stop ends running jobs.
type Resolver struct {
	conf    Conf
	allowed map[string]bool
	dls     *store.DeadLetters
	reports *store.Reports
	audit   *store.Audit
	jobs    *store.Jobs
	sender  Sender
	topic   Topic

	bulk bulkState
}

// New returns a Resolver.
// topic is where bulk jobs look for replays whose outcome they did not record. New refuses zero durations in
// c.Bulk.
func New(c Conf, dls *store.DeadLetters, reports *store.Reports, audit *store.Audit, jobs *store.Jobs, sender Sender,
	topic Topic) (*Resolver, error) {
	b := c.Bulk
	if c.Timeout <= 0 || b.LeaseTTL <= c.Timeout || b.PollInterval <= 0 || b.CheckInterval <= 0 ||
		b.CheckInterval >= b.LeaseTTL || b.MaxConcurrentJobs <= 0 {
		return nil, errors.New("replay: need Timeout > 0, Bulk.LeaseTTL > Timeout, Bulk.PollInterval > 0, " +
			"0 < Bulk.CheckInterval < Bulk.LeaseTTL and Bulk.MaxConcurrentJobs > 0")
	}
	r := &Resolver{conf: c, allowed: map[string]bool{}, dls: dls, reports: reports, audit: audit, jobs: jobs,
		sender: sender, topic: topic}
	for _, t := range c.AllowedTopics {
		r.allowed[t] = true
	}
	r.bulk.init()
	return r, nil
}

// ReportState tells whether dl's request id is stored in reports.
func (r *Resolver) ReportState(ctx context.Context, dl store.DeadLetter) (string, error) {
	if dl.RequestID == "" {
		return ReportUnknown, nil
	}
	stored, known, err := r.reports.Stored(ctx, []string{dl.RequestID})
	switch {
	case err != nil:
		return "", err
	case !known:
		return ReportUnknown, nil
	case stored[dl.RequestID]:
		return ReportStored, nil
	default:
		return ReportNotStored, nil
	}
}

// Message returns the record a replay of dl writes. For a degraded dead letter that is its raw record, byte
// for byte, since its columns hold only what fitted; the topic is the raw record's original-topic header.
func (r *Resolver) Message(dl store.DeadLetter) (kafka.Message, error) {
	if dl.Degraded {
		if dl.Raw == nil {
			return kafka.Message{}, ErrBytesNotKept
		}
		raw, err := store.UnmarshalRawRecord(dl.Raw)
		if err != nil {
			return kafka.Message{}, fmt.Errorf("raw record of dead letter %d: %w", dl.ID, err)
		}
		dl.Key, dl.Value, dl.Headers = raw.Key, raw.Value, nil
		headers := make([]kafka.Header, 0, len(raw.Headers)+1)
		for _, h := range raw.Headers {
			if string(h.Key) != report.HeaderReplayOf {
				headers = append(headers, kafka.Header{Key: string(h.Key), Value: h.Value})
			}
		}
		f, _ := deadletter.Parse(headers) // a damaged original-topic header leaves it empty: not allowed
		dl.OriginalTopic = f.OriginalTopic
		if !r.allowed[dl.OriginalTopic] {
			return kafka.Message{}, ErrTopicNotAllowed
		}
		return r.message(dl, headers), nil
	}
	if !r.allowed[dl.OriginalTopic] {
		return kafka.Message{}, ErrTopicNotAllowed
	}
	headers := make([]kafka.Header, 0, len(dl.Headers)+1)
	for _, h := range dl.Headers {
		// An earlier replay's x-replay-of gives way to this replay's.
		if h.Key == report.HeaderReplayOf {
			continue
		}
		v, err := h.Bytes()
		if err != nil {
			return kafka.Message{}, fmt.Errorf("header %q of dead letter %d: %w", h.Key, dl.ID, err)
		}
		headers = append(headers, kafka.Header{Key: h.Key, Value: v})
	}
	return r.message(dl, headers), nil
}

// message is the replay of dl with headers, its original headers less any earlier x-replay-of.
func (r *Resolver) message(dl store.DeadLetter, headers []kafka.Header) kafka.Message {
	// The record goes out as it first was: with the dead-letter headers kept, a second failure would stack a
	// second set of them on it.
	headers = deadletter.Strip(headers)
	headers = append(headers, kafka.Header{Key: report.HeaderReplayOf, Value: []byte(strconv.FormatUint(dl.ID, 10))})
	return kafka.Message{Topic: dl.OriginalTopic, Key: dl.Key, Value: dl.Value, Headers: headers}
}

// Replay re-produces dead letter id for p, on its own (not for a bulk job). It returns the dead letter as it
// was before the replay.
func (r *Resolver) Replay(ctx context.Context, p auth.Principal, id uint64) (store.DeadLetter, error) {
	return r.replay(ctx, p, id, nil)
}

// jobStep is the bulk job item a replay is for.
type jobStep struct {
	item store.Item
	// beforeSend runs with the dead letter locked, right before the produce; an error sends nothing.
	// store.ErrNotOwner from it means the job was paused or cancelled (or lost its lease) meanwhile.
	beforeSend func(ctx context.Context, msg kafka.Message) error
}

// errJobStopped: the job's item was not replayed because the job is no longer running under this
// replica's lease. Nothing was sent or audited.
var errJobStopped = errors.New("job stopped before the replay")

func (r *Resolver) replay(ctx context.Context, p auth.Principal, id uint64, step *jobStep) (store.DeadLetter, error) {
	res, err := r.dls.Lock(ctx, id)
	if err != nil {
		return store.DeadLetter{}, err
	}
	defer res.Rollback()
	dl := res.DeadLetter
	entry := p.Audit(store.ActionReplay)
	entry.DeadLetterID, entry.StateBefore, entry.StateAfter = id, dl.Status, dl.Status
	if step != nil {
		entry.JobID = step.item.JobID
	}

	var refusal error
	switch dl.Status {
	case store.StatusReplayed:
		entry.Outcome, refusal = store.OutcomeAlreadyReplayed, ErrAlreadyReplayed
	case store.StatusDiscarded:
		entry.Outcome, refusal = store.OutcomeConflict, ErrDiscarded
	default:
		if dl.ErrorClass == report.ErrorClassConflict {
			entry.Outcome, refusal = store.OutcomeConflict, ErrConflictNotReplayable
		} else if dl.Degraded && dl.Raw == nil {
			entry.Outcome, refusal = store.OutcomeConflict, ErrBytesNotKept
		}
	}
	if refusal != nil {
		if err := res.Audit(ctx, entry); err != nil {
			return dl, err
		}
		if step != nil {
			if err := res.SetJobItem(ctx, step.item, store.ItemSkipped); err != nil {
				return dl, err
			}
		}
		if err := res.Commit(); err != nil {
			return dl, err
		}
		return dl, refusal
	}

	msg, err := r.Message(dl)
	if err != nil {
		res.Rollback()
		entry.Outcome, entry.Reason = store.OutcomeFailed, err.Error()
		return dl, errors.Join(err, r.audit.Append(ctx, entry))
	}
	span := sendSpan(ctx, &msg)
	defer span.End()
	if step != nil {
		if err := step.beforeSend(ctx, msg); err != nil {
			res.Rollback()
			if errors.Is(err, store.ErrNotOwner) {
				return dl, errJobStopped
			}
			logx.WithContext(ctx).Errorf("replay of dead letter %d (job %d) not started: %v", id, entry.JobID, err)
			entry.Outcome, entry.Reason = store.OutcomeFailed, "kafka or the database did not answer before the replay"
			return dl, errors.Join(fmt.Errorf("%w: %w", ErrProduce, err), r.audit.Append(ctx, entry))
		}
	}
	pctx, cancel := context.WithTimeout(ctx, r.conf.Timeout)
	err = r.sender.Send(pctx, msg)
	cancel()
	if err != nil {
		span.SetStatus(codes.Error, "kafka did not acknowledge the replay")
		res.Rollback()
		logx.WithContext(ctx).Errorf("replay of dead letter %d to %s failed: %v", id, msg.Topic, err)
		entry.Outcome, entry.Reason = store.OutcomeFailed, "kafka did not acknowledge the replay"
		return dl, errors.Join(fmt.Errorf("%w: %w", ErrProduce, err), r.audit.Append(ctx, entry))
	}
	entry.Outcome, entry.StateAfter = store.OutcomeOK, store.StatusReplayed
	if err := res.MarkReplayed(ctx, p.Actor); err != nil {
		return dl, r.afterProduce(id, err)
	}
	if err := res.Audit(ctx, entry); err != nil {
		return dl, r.afterProduce(id, err)
	}
	if step != nil {
		if err := res.SetJobItem(ctx, step.item, store.ItemReplayed); err != nil {
			return dl, r.afterProduce(id, err)
		}
	}
	if err := res.Commit(); err != nil {
		return dl, r.afterProduce(id, err)
	}
	logx.WithContext(ctx).Infof("replayed dead letter %d to %s (job %d)", id, msg.Topic, entry.JobID)
	return dl, nil
}

// afterProduce reports a failure to record a replay that Kafka already acknowledged.
func (r *Resolver) afterProduce(id uint64, err error) error {
	logx.Errorf("dead letter %d was replayed but its status could not be saved; it stays new and a second "+
		"replay is deduplicated by epro-mq: %v", id, err)
	return fmt.Errorf("record replay of dead letter %d: %w", id, err)
}

// Discard marks dead letter id discarded with a reason code and note, audited as p.
func (r *Resolver) Discard(ctx context.Context, p auth.Principal, id uint64, reasonCode, note string) error {
	res, err := r.dls.Lock(ctx, id)
	if err != nil {
		return err
	}
	defer res.Rollback()
	entry := p.Audit(store.ActionDiscard)
	entry.DeadLetterID, entry.ReasonCode, entry.Reason = id, reasonCode, note
	entry.StateBefore, entry.StateAfter = res.DeadLetter.Status, res.DeadLetter.Status
	if res.DeadLetter.Status != store.StatusNew {
		entry.Outcome = store.OutcomeConflict
		if err := res.Audit(ctx, entry); err != nil {
			return err
		}
		if err := res.Commit(); err != nil {
			return err
		}
		return ErrResolved
	}
	entry.Outcome, entry.StateAfter = store.OutcomeOK, store.StatusDiscarded
	if err := res.MarkDiscarded(ctx, p.Actor, reasonCode); err != nil {
		return err
	}
	if err := res.Audit(ctx, entry); err != nil {
		return err
	}
	return res.Commit()
}
