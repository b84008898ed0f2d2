package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/report"
)

// clockSkew widens the dead-letter scan for clocks that disagree between the host that produced a record and
// the host that dead-lettered it.
const clockSkew = 10 * time.Minute

// recoverTimeout bounds one Recover call: the scan of the dead-letter topic since the first uncommitted
// record.
const recoverTimeout = time.Minute

// Recover learns which records of the given partitions of topic a previous owner already dead-lettered
// after their committed offsets (from; negative means no commit yet), so they are not dead-lettered twice.
//
// A dead letter is acknowledged before its offset is committed, so a crash between the two makes the next
// owner read the record again. Rows dedupe by request id; dead letters have no such key, and Kafka
// transactions are not available in kafka-go. The dead-letter topic itself is the record of what was written:
// everything dead-lettered after offset C of a partition was written after the record at C was produced, so
// scanning the dead-letter topic from that record's timestamp (less clockSkew) finds all of it.
func (in *Ingester) Recover(ctx context.Context, topic string, from map[int]int64) error {
	if len(in.conf.Brokers) == 0 || len(from) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	defer cancel()
	since, pending, err := in.oldestUncommitted(ctx, topic, from)
	if err != nil || !pending {
		return err
	}
	found, err := in.scanDeadLetters(ctx, topic, from, since.Add(-clockSkew))
	if err != nil {
		return err
	}
	in.deadMu.Lock()
	for k := range found {
		in.dead[k] = true
	}
	in.deadMu.Unlock()
	if len(found) > 0 {
		logx.Infof("recovered %d records of %s dead-lettered after the last commit; they will not be dead-lettered again", len(found), topic)
	}
	return nil
}

type topicPartitionOffset struct {
	topic     string
	partition int
	offset    int64
}

// oldestUncommitted returns the earliest timestamp among the records at the committed offsets of from, and
// whether any partition has records past its committed offset at all.
func (in *Ingester) oldestUncommitted(ctx context.Context, topic string, from map[int]int64) (time.Time, bool, error) {
	var oldest time.Time
	pending := false
	for p, committed := range from {
		conn, err := in.dialLeader(ctx, topic, p)
		if err != nil {
			return time.Time{}, false, err
		}
		first, last, err := conn.ReadOffsets()
		if err == nil && committed < first {
			committed = first
		}
		if err != nil || committed >= last {
			_ = conn.Close()
			if err != nil {
				return time.Time{}, false, fmt.Errorf("offsets of %s/%d: %w", topic, p, err)
			}
			continue
		}
		ts, err := readTimestamp(ctx, conn, committed)
		_ = conn.Close()
		if err != nil {
			return time.Time{}, false, fmt.Errorf("read %s/%d@%d: %w", topic, p, committed, err)
		}
		if !pending || ts.Before(oldest) {
			oldest = ts
		}
		pending = true
	}
	return oldest, pending, nil
}

func readTimestamp(ctx context.Context, conn *kafka.Conn, offset int64) (time.Time, error) {
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(deadline)
	}
	if _, err := conn.Seek(offset, kafka.SeekAbsolute); err != nil {
		return time.Time{}, err
	}
	batch := conn.ReadBatch(1, 10<<20)
	m, err := batch.ReadMessage()
	_ = batch.Close()
	if err != nil {
		return time.Time{}, err
	}
	return m.Time, nil
}

// scanDeadLetters reads every dead letter written since since and returns those that this group wrote for
// records of topic at or after the committed offsets in from.
func (in *Ingester) scanDeadLetters(ctx context.Context, topic string, from map[int]int64, since time.Time) (map[topicPartitionOffset]bool, error) {
	conn, err := in.dialAny(ctx)
	if err != nil {
		return nil, err
	}
	parts, err := conn.ReadPartitions(in.conf.DLQTopic)
	_ = conn.Close()
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", in.conf.DLQTopic, err)
	}
	found := map[topicPartitionOffset]bool{}
	for _, dp := range parts {
		if err := in.scanDeadLetterPartition(ctx, dp.ID, topic, from, since, found); err != nil {
			return nil, err
		}
	}
	return found, nil
}

func (in *Ingester) scanDeadLetterPartition(ctx context.Context, partition int, topic string, from map[int]int64, since time.Time, found map[topicPartitionOffset]bool) error {
	conn, err := in.dialLeader(ctx, in.conf.DLQTopic, partition)
	if err != nil {
		return err
	}
	defer conn.Close()
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return fmt.Errorf("offsets of %s/%d: %w", in.conf.DLQTopic, partition, err)
	}
	start, err := conn.ReadOffset(since)
	switch {
	case err != nil:
		start = first // the broker cannot say: scan it all rather than miss one
	case start < 0 || start >= last:
		return nil // nothing written since
	case start < first:
		start = first
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(deadline)
	}
	for offset := start; offset < last; {
		if _, err := conn.Seek(offset, kafka.SeekAbsolute); err != nil {
			return err
		}
		batch := conn.ReadBatch(1, 10<<20)
		for {
			m, err := batch.ReadMessage()
			if err != nil {
				break
			}
			offset = m.Offset + 1
			if k, ok := in.ownDeadLetter(m, topic, from); ok {
				found[k] = true
			}
		}
		if err := batch.Close(); err != nil && !errors.Is(err, kafka.OffsetOutOfRange) {
			return fmt.Errorf("scan %s/%d: %w", in.conf.DLQTopic, partition, err)
		}
	}
	return nil
}

func (in *Ingester) ownDeadLetter(m kafka.Message, topic string, from map[int]int64) (topicPartitionOffset, bool) {
	// Only where the record came from matters here; a dead letter whose other headers are damaged is still
	// this group's.
	f, err := deadletter.Parse(m.Headers)
	for _, key := range []string{report.HeaderDLTOriginalTopic, report.HeaderDLTOriginalConsumerGroup,
		report.HeaderDLTOriginalPartition, report.HeaderDLTOriginalOffset} {
		if deadletter.Failed(err, key) {
			return topicPartitionOffset{}, false
		}
	}
	if f.OriginalTopic != topic || f.ConsumerGroup != in.conf.Group {
		return topicPartitionOffset{}, false
	}
	committed, assigned := from[f.OriginalPartition]
	if !assigned || f.OriginalOffset < committed {
		return topicPartitionOffset{}, false
	}
	return topicPartitionOffset{topic, f.OriginalPartition, f.OriginalOffset}, true
}

func (in *Ingester) dialLeader(ctx context.Context, topic string, partition int) (*kafka.Conn, error) {
	var err error
	for _, b := range in.conf.Brokers {
		var conn *kafka.Conn
		if conn, err = kafka.DialLeader(ctx, "tcp", b, topic, partition); err == nil {
			return conn, nil
		}
	}
	return nil, fmt.Errorf("dial leader of %s/%d: %w", topic, partition, err)
}

func (in *Ingester) dialAny(ctx context.Context) (*kafka.Conn, error) {
	var err error
	for _, b := range in.conf.Brokers {
		var conn *kafka.Conn
		if conn, err = (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", b); err == nil {
			return conn, nil
		}
	}
	return nil, fmt.Errorf("dial kafka: %w", err)
}

// deadLetteredBefore reports, and forgets, whether Recover found m already dead-lettered.
func (in *Ingester) deadLetteredBefore(m kafka.Message) bool {
	k := topicPartitionOffset{m.Topic, m.Partition, m.Offset}
	in.deadMu.Lock()
	defer in.deadMu.Unlock()
	if in.dead[k] {
		delete(in.dead, k)
		return true
	}
	return false
}
