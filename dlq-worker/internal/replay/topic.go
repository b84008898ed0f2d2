package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
)

// Topic is what a bulk job needs from Kafka to know whether a replay it may have sent is there: where a
// topic's partitions end before the produce, and whether a record carrying x-replay-of for a dead letter was
// written after those offsets. KafkaTopic implements it.
type Topic interface {
	EndOffsets(ctx context.Context, topic string) (map[int]int64, error)
	FindReplay(ctx context.Context, topic string, from map[int]int64, deadLetterID uint64) (found bool, err error)
}

// KafkaTopic reads partition ends and records with a kafka-go Client.
type KafkaTopic struct {
	client *kafka.Client
}

// NewKafkaTopic returns a KafkaTopic on brokers.
func NewKafkaTopic(brokers []string) (*KafkaTopic, error) {
	if len(brokers) == 0 {
		return nil, errors.New("kafka topic reader: no brokers")
	}
	return &KafkaTopic{client: &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second,
		// kafka-go's shared default transport caches metadata for 6s; a topic made a moment ago must be seen.
		Transport: &kafka.Transport{DialTimeout: 3 * time.Second, MetadataTTL: 5 * time.Second}}}, nil
}

// EndOffsets returns the offset the next record of each partition of topic will get.
func (k *KafkaTopic) EndOffsets(ctx context.Context, topic string) (map[int]int64, error) {
	md, err := k.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) == 0 {
		return nil, fmt.Errorf("metadata of %s: topic not found", topic)
	}
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p.ID))
	}
	resp, err := k.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("end offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	if len(out) != len(reqs) {
		return nil, fmt.Errorf("end offsets of %s: %d of %d partitions answered", topic, len(out), len(reqs))
	}
	return out, nil
}

// FindReplay reads each partition of topic from its offset in from up to its end now, looking for a record
// whose x-replay-of header names deadLetterID.
func (k *KafkaTopic) FindReplay(ctx context.Context, topic string, from map[int]int64, deadLetterID uint64) (bool, error) {
	if len(from) == 0 {
		return false, errors.New("no probe offsets to look from")
	}
	end, err := k.EndOffsets(ctx, topic)
	if err != nil {
		return false, err
	}
	want := strconv.FormatUint(deadLetterID, 10)
	for p, off := range from {
		for off < end[p] {
			resp, err := k.client.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: p, Offset: off,
				MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 500 * time.Millisecond})
			if err != nil {
				return false, fmt.Errorf("read %s/%d at %d: %w", topic, p, off, err)
			}
			if resp.Error != nil {
				return false, fmt.Errorf("read %s/%d at %d: %w", topic, p, off, resp.Error)
			}
			next, found, err := scanRecords(resp.Records, off, want)
			if err != nil || found {
				return found, err
			}
			if next == off {
				return false, fmt.Errorf("read %s/%d at %d: no progress below end offset %d", topic, p, off, end[p])
			}
			off = next
		}
	}
	return false, nil
}

// scanRecords reads a fetched record set from offset off and returns the offset after the last record read
// and whether one carried x-replay-of = want.
func scanRecords(rr kafka.RecordReader, off int64, want string) (next int64, found bool, err error) {
	next = off
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return next, false, nil
		}
		if err != nil {
			return next, false, fmt.Errorf("decode record: %w", err)
		}
		if rec.Offset < off {
			continue // a batch may start before the requested offset
		}
		next = rec.Offset + 1
		for _, h := range rec.Headers {
			if h.Key == report.HeaderReplayOf && string(h.Value) == want {
				return next, true, nil
			}
		}
	}
}
