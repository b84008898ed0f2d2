// Package reconcile proves, record by record, that every report on the report topic is accounted for in
// MySQL: stored in epro-mq's reports table, dead-lettered in dlq-worker's archive, or a known duplicate of a
// stored report; and lists what is neither (missing).
//
// Guarantees: a run only reads; only a re-drive (redrive.go), asked for separately, writes, and only records
// the same run found missing, produced again to the report topic for epro-mq to store. A run reads the topic
// partition by partition without a consumer group, so it never moves any group's offsets, and by default
// stops at epro-mq's committed offsets, where every earlier record
// is finished. Memory is bounded by one batch (Conf.BatchSize records, their ids and hashes; the values are
// dropped once judged), whatever the number of records. Exceptions are handed to a callback as they are
// found, never collected here, and carry ids and positions only, never report content.
package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// Class is what a reconciliation found for one record.
type Class string

// Classes, in the order a summary lists them.
const (
	// Stored: the reports row was written from this very record (its kafka position) with the same content.
	Stored Class = "stored"
	// StoredFromReplay: as Stored, and the record is a replay of a dead letter (header x-replay-of).
	StoredFromReplay Class = "stored_from_replay"
	// StoredFromRedrive: as Stored, and the record is a re-drive of a record a reconciliation found missing
	// (header x-redrive-of, naming it; that record now counts as a duplicate of this one).
	StoredFromRedrive Class = "stored_from_redrive"
	// Duplicate: the request id is stored with the same content from another record (a retry).
	Duplicate Class = "duplicate"
	// DeadLettered: the record has a dead letter in the archive (any status, any class but conflict).
	DeadLettered Class = "dead_lettered"
	// Conflict: the request id is stored with other content (the record's conflict dead letter, if any, is
	// named in the detail).
	Conflict Class = "conflict"
	// Missing: none of the above. Something accepted is neither stored nor dead-lettered.
	Missing Class = "missing"
)

// Classes lists every class in summary order.
var Classes = []Class{Stored, StoredFromReplay, StoredFromRedrive, Duplicate, DeadLettered, Conflict, Missing}

// Exceptional reports whether records of class c are listed as exceptions: all but plainly stored ones and
// duplicates.
func (c Class) Exceptional() bool { return c != Stored && c != Duplicate }

// Exception is one record listed for review. Detail names rows and dead letters, never report content.
type Exception struct {
	RequestID string `json:"requestId"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Class     Class  `json:"class"`
	Detail    string `json:"detail"`
}

// Conf configures the engine. Every field is required; the defaults live in config.ReconcileConf's tags.
type Conf struct {
	Brokers []string
	// Topic is the report topic, Group the consumer group whose committed offsets end a default run.
	Topic string
	Group string
	// BatchSize records are looked up together (one IN list per table), and bound the memory of a run.
	BatchSize int
	// MaxWait bounds one fetch from a partition (kafka-go's default 10s would only slow the last batch).
	MaxWait time.Duration
	// QueryTimeout bounds each MySQL query and each Kafka metadata request.
	QueryTimeout time.Duration
}

func (c Conf) validate() error {
	if len(c.Brokers) == 0 || c.Topic == "" || c.Group == "" || c.BatchSize <= 0 || c.MaxWait <= 0 || c.QueryTimeout <= 0 {
		return errors.New("reconcile: Brokers, Topic, Group, BatchSize, MaxWait and QueryTimeout are required")
	}
	return nil
}

// Range says which records of every partition a run reads.
type Range struct {
	// FromOffset, when set, starts every partition there (or at its first retained record, if later).
	FromOffset *int64
	// FromTime, when not zero, starts every partition at its first record with a timestamp at or after it.
	// With neither, a run starts at each partition's first retained record.
	FromTime time.Time
	// ToEnd reads to each partition's end (high watermark) instead of the group's committed offsets. Records
	// after the committed offset may still be in flight in epro-mq, so missing ones there prove nothing yet.
	ToEnd bool
}

// PartitionProgress is where a run stands on one partition: reading [From, End), at Position.
type PartitionProgress struct {
	Partition int   `json:"partition"`
	From      int64 `json:"from"`
	Position  int64 `json:"position"`
	End       int64 `json:"end"`
}

// Progress is reported while a run reads.
type Progress struct {
	Records       int64               `json:"records"`
	Elapsed       time.Duration       `json:"elapsed"`
	RatePerSecond float64             `json:"ratePerSecond"`
	Partitions    []PartitionProgress `json:"partitions"`
}

// Summary is a run's result.
type Summary struct {
	Topic      string              `json:"topic"`
	Group      string              `json:"group"`
	ToEnd      bool                `json:"toEnd"`
	Partitions []PartitionProgress `json:"partitions"`
	Records    int64               `json:"records"`
	Counts     map[Class]int64     `json:"counts"`
	Exceptions int64               `json:"exceptions"`
	Elapsed    time.Duration       `json:"elapsed"`
}

// Missing is the number of records found missing.
func (s Summary) Missing() int64 { return s.Counts[Missing] }

// Text is the summary in one line, for logs and the audit trail.
func (s Summary) Text() string {
	out := fmt.Sprintf("topic %s to %s: %d records in %s:", s.Topic, s.endName(), s.Records, s.Elapsed.Round(time.Millisecond))
	for _, c := range Classes {
		out += fmt.Sprintf(" %s=%d", c, s.Counts[c])
	}
	return out
}

func (s Summary) endName() string {
	if s.ToEnd {
		return "the end"
	}
	return "group " + s.Group + "'s committed offsets"
}

// Engine runs reconciliations. It is safe for concurrent use, but runs are heavy: callers run one at a time.
type Engine struct {
	conf        Conf
	client      *kafka.Client
	db          *sql.DB
	deadLetters *store.DeadLetters
}

// New returns an engine reading c.Topic and db's reports and dead_letters tables.
func New(c Conf, db *sql.DB) (*Engine, error) {
	c.Brokers = producer.SplitBrokers(c.Brokers) // "k1:9092,k2:9092" from one environment variable
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &Engine{
		conf: c,
		// Its own transport: kafka-go's shared default caches topic metadata for the whole process.
		client:      &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: c.QueryTimeout, Transport: &kafka.Transport{}},
		db:          db,
		deadLetters: store.NewDeadLetters(db),
	}, nil
}

// Run reads r of every partition and classifies each record. onException gets every exceptional record as it
// is found (an error from it ends the run); onProgress, if not nil, gets the progress about once a second and
// once at the end. The summary is returned with an error too, counting what was read until then.
func (e *Engine) Run(ctx context.Context, r Range, onException func(Exception) error, onProgress func(Progress)) (Summary, error) {
	start := time.Now()
	sum := Summary{Topic: e.conf.Topic, Group: e.conf.Group, ToEnd: r.ToEnd, Counts: map[Class]int64{}}
	parts, err := e.bounds(ctx, r)
	if err != nil {
		return sum, err
	}
	sum.Partitions = parts
	p := &progress{parts: parts, start: start, report: onProgress}
	for i := range parts {
		if err := e.readPartition(ctx, &parts[i], &sum, onException, p); err != nil {
			sum.Elapsed = time.Since(start)
			return sum, err
		}
	}
	p.emit(true)
	sum.Elapsed = time.Since(start)
	return sum, nil
}

type progress struct {
	parts   []PartitionProgress
	records int64
	start   time.Time
	last    time.Time
	report  func(Progress)
}

func (p *progress) emit(force bool) {
	if p.report == nil || (!force && time.Since(p.last) < time.Second) {
		return
	}
	p.last = time.Now()
	el := time.Since(p.start)
	rate := 0.0
	if el > 0 {
		rate = float64(p.records) / el.Seconds()
	}
	p.report(Progress{Records: p.records, Elapsed: el, RatePerSecond: rate, Partitions: slices.Clone(p.parts)})
}

// bounds resolves r into [From, End) per partition.
func (e *Engine) bounds(ctx context.Context, r Range) ([]PartitionProgress, error) {
	ctx, cancel := context.WithTimeout(ctx, e.conf.QueryTimeout)
	defer cancel()
	meta, err := e.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{e.conf.Topic}})
	if err != nil {
		return nil, fmt.Errorf("reconcile: metadata of %s: %w", e.conf.Topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil || len(meta.Topics[0].Partitions) == 0 {
		var terr error
		if len(meta.Topics) == 1 {
			terr = meta.Topics[0].Error
		}
		return nil, fmt.Errorf("reconcile: topic %s not found: %v", e.conf.Topic, terr)
	}
	var ids []int
	for _, p := range meta.Topics[0].Partitions {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	var reqs []kafka.OffsetRequest
	for _, id := range ids {
		reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
		if !r.FromTime.IsZero() {
			reqs = append(reqs, kafka.TimeOffsetOf(id, r.FromTime))
		}
	}
	offs, err := e.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{e.conf.Topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("reconcile: offsets of %s: %w", e.conf.Topic, err)
	}
	byID := map[int]kafka.PartitionOffsets{}
	for _, po := range offs.Topics[e.conf.Topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("reconcile: offsets of %s/%d: %w", e.conf.Topic, po.Partition, po.Error)
		}
		byID[po.Partition] = po
	}
	var committed map[int]int64
	if !r.ToEnd {
		if committed, err = e.committed(ctx, ids); err != nil {
			return nil, err
		}
	}
	out := make([]PartitionProgress, 0, len(ids))
	for _, id := range ids {
		po, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("reconcile: no offsets for %s/%d", e.conf.Topic, id)
		}
		from, end := po.FirstOffset, po.LastOffset
		switch {
		case r.FromOffset != nil:
			from = max(from, *r.FromOffset)
		case !r.FromTime.IsZero():
			// The broker answers -1 when no record is that recent: nothing to read.
			from = end
			for o := range po.Offsets {
				if o >= 0 {
					from = max(po.FirstOffset, o)
				}
			}
		}
		if !r.ToEnd {
			// A partition the group never committed has nothing finished to check.
			end = min(end, max(committed[id], po.FirstOffset))
		}
		from = min(from, end)
		out = append(out, PartitionProgress{Partition: id, From: from, Position: from, End: end})
	}
	return out, nil
}

// committed returns the group's committed offset per partition; a partition without one is absent.
func (e *Engine) committed(ctx context.Context, ids []int) (map[int]int64, error) {
	resp, err := e.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: e.conf.Group, Topics: map[string][]int{e.conf.Topic: ids}})
	if err == nil {
		err = resp.Error
	}
	out := map[int]int64{}
	if errors.Is(err, kafka.GroupIdNotFound) {
		// kfake's answer for a group that never committed; Kafka answers offset -1 per partition instead.
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reconcile: committed offsets of group %s: %w", e.conf.Group, err)
	}
	for _, p := range resp.Topics[e.conf.Topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("reconcile: committed offset of group %s on %s/%d: %w", e.conf.Group, e.conf.Topic, p.Partition, p.Error)
		}
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// readPartition reads [pp.From, pp.End) of one partition in batches.
func (e *Engine) readPartition(ctx context.Context, pp *PartitionProgress, sum *Summary, onException func(Exception) error, p *progress) error {
	if pp.From >= pp.End {
		return nil
	}
	rd := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   e.conf.Brokers,
		Topic:     e.conf.Topic,
		Partition: pp.Partition,
		// No GroupID: a plain partition reader commits nothing, so no group's offsets can move.
		MinBytes: 1,
		MaxBytes: 10 << 20,
		MaxWait:  e.conf.MaxWait,
		// The prefetch queue holds raw records: bounded by one batch, as epro-mq's readers are.
		QueueCapacity: e.conf.BatchSize,
	})
	defer rd.Close()
	if err := rd.SetOffset(pp.From); err != nil {
		return fmt.Errorf("reconcile: seek %s/%d to %d: %w", e.conf.Topic, pp.Partition, pp.From, err)
	}
	batch := make([]record, 0, e.conf.BatchSize)
	for pp.Position < pp.End {
		m, err := rd.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("reconcile: read %s/%d at %d: %w", e.conf.Topic, pp.Partition, pp.Position, err)
		}
		if m.Offset >= pp.End {
			break
		}
		batch = append(batch, judge(m))
		pp.Position = m.Offset + 1
		if len(batch) == e.conf.BatchSize || pp.Position >= pp.End {
			if err := e.classify(ctx, pp.Partition, batch, sum, onException); err != nil {
				return err
			}
			p.records += int64(len(batch))
			batch = batch[:0]
			p.emit(false)
		}
	}
	pp.Position = pp.End
	if len(batch) > 0 {
		if err := e.classify(ctx, pp.Partition, batch, sum, onException); err != nil {
			return err
		}
		p.records += int64(len(batch))
	}
	return nil
}

// classify looks a batch of one partition up in reports and dead_letters and counts every record.
func (e *Engine) classify(ctx context.Context, partition int, batch []record, sum *Summary, onException func(Exception) error) error {
	topic := e.conf.Topic
	ids := make([]string, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	for _, r := range batch {
		if r.requestID != "" && !seen[r.requestID] {
			seen[r.requestID] = true
			ids = append(ids, r.requestID)
		}
	}
	qctx, cancel := context.WithTimeout(ctx, e.conf.QueryTimeout)
	rows, err := reportdb.Lookup(qctx, e.db, ids)
	cancel()
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	here := func(s reportdb.Stored, r record) bool {
		return s.Topic == topic && s.Partition == partition && s.Offset == r.offset
	}

	// Dead letters are looked up only for the records whose row was not written from them: in a healthy
	// topic, almost none.
	var byID []string
	var byPosition []int64
	for _, r := range batch {
		s, ok := rows[r.requestID]
		switch {
		case ok && here(s, r):
		case r.requestID != "" && r.poison == "":
			byID = append(byID, r.requestID)
		default:
			byPosition = append(byPosition, r.offset)
		}
	}
	letters := map[int64]store.Origin{}
	add := func(origins []store.Origin) {
		for _, o := range origins {
			if _, dup := letters[o.Offset]; !dup && o.Known && o.Topic == topic && o.Partition == partition {
				letters[o.Offset] = o // the oldest dead letter of a record, if epro-mq ever wrote two
			}
		}
	}
	if len(byID) > 0 {
		qctx, cancel := context.WithTimeout(ctx, e.conf.QueryTimeout)
		origins, err := e.deadLetters.OriginsByRequestID(qctx, byID)
		cancel()
		if err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		// A decodable record's id is what dlq-worker reads from its dead letter's payload, so the request_id
		// index finds it; records without a usable id are found by their position below.
		add(origins)
	}
	if len(byPosition) > 0 {
		qctx, cancel := context.WithTimeout(ctx, e.conf.QueryTimeout)
		origins, err := e.deadLetters.OriginsAt(qctx, topic, partition, byPosition)
		cancel()
		if err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		add(origins)
	}

	for _, r := range batch {
		s, stored := rows[r.requestID]
		class, detail := verdict(r, s, stored, stored && here(s, r), letters)
		sum.Records++
		sum.Counts[class]++
		if class.Exceptional() {
			sum.Exceptions++
			if err := onException(Exception{RequestID: r.requestID, Partition: partition, Offset: r.offset, Class: class, Detail: detail}); err != nil {
				return fmt.Errorf("reconcile: write exception: %w", err)
			}
		}
	}
	return nil
}

// verdict classifies one record: its own dead letter first (what happened to this record), then the row.
func verdict(r record, s reportdb.Stored, stored, here bool, letters map[int64]store.Origin) (Class, string) {
	if dl, ok := letters[r.offset]; ok {
		detail := "dead letter " + strconv.FormatUint(dl.ID, 10) + " (" + dl.ErrorClass + ", " + dl.Status + ")"
		if dl.ReplayOf != 0 {
			detail += ", a failed replay of dead letter " + strconv.FormatUint(dl.ReplayOf, 10)
		}
		if stored {
			detail += "; the request id is stored from " + position(s)
		}
		if dl.ErrorClass == report.ErrorClassConflict {
			return Conflict, detail
		}
		return DeadLettered, detail
	}
	sameContent := s.ContentKnown && r.poison == "" && s.ContentSHA256 == r.content
	switch {
	case here && r.poison == "" && s.ContentKnown && !sameContent:
		return Conflict, "the row written from this record holds other content"
	case here && r.redriveOf != "":
		return StoredFromRedrive, "re-drive of " + r.redriveOf
	case here && r.replayOf != "":
		return StoredFromReplay, "replay of dead letter " + r.replayOf
	case here:
		return Stored, ""
	case r.poison != "":
		return Missing, "undecodable (" + r.poison + ") and no dead letter"
	case stored && sameContent:
		return Duplicate, "stored from " + position(s)
	case stored && !s.ContentKnown:
		return Conflict, "stored from " + position(s) + " with content that cannot be compared; no dead letter"
	case stored:
		return Conflict, "stored with other content from " + position(s) + "; no conflict dead letter"
	}
	return Missing, "no row and no dead letter"
}

func position(s reportdb.Stored) string {
	return fmt.Sprintf("%s/%d@%d", s.Topic, s.Partition, s.Offset)
}
