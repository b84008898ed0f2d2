package ingest_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-mq/internal/ingest"
)

func readAll(t *testing.T, brokers []string, topic string, partitions int) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	for p := 0; p < partitions; p++ {
		conn, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		first, last, err := conn.ReadOffsets()
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for off := first; off < last; {
			if _, err := conn.Seek(off, kafka.SeekAbsolute); err != nil {
				t.Fatal(err)
			}
			batch := conn.ReadBatch(1, 10<<20)
			for {
				m, err := batch.ReadMessage()
				if err != nil {
					break
				}
				off = m.Offset + 1
				out = append(out, m)
			}
			_ = batch.Close()
		}
		_ = conn.Close()
	}
	return out
}

// A crash between a dead letter's acknowledgement and its offset commit makes the next owner read the record
// again; Recover must keep it from being dead-lettered twice.
func TestRecoverPreventsASecondDeadLetterAfterACrash(t *testing.T) {
	brokers := infratest.Kafka(t)
	src, dlq := infratest.UniqueName(t, "src"), infratest.UniqueName(t, "dlq")
	infratest.CreateTopic(t, brokers, src, 2)
	infratest.CreateTopic(t, brokers, dlq, 3)
	pc, err := producer.DefaultConf(brokers)
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	var poison []kafka.Message
	for i := 0; i < 6; i++ {
		poison = append(poison, kafka.Message{Topic: src, Key: []byte{byte('a' + i)}, Value: []byte("not a report")})
	}
	if err := p.Send(ctx, poison...); err != nil {
		t.Fatal(err)
	}
	records := readAll(t, brokers, src, 2)
	if len(records) != 6 {
		t.Fatalf("read %d records", len(records))
	}
	conf := ingest.Conf{Group: "epro-mq", DLQTopic: dlq, Brokers: brokers}

	// The first owner dead-letters everything and dies before committing.
	first := newIngester(t, conf, &flakyInserter{}, p, nil)
	if err := first.HandleBatch(ctx, records); err != nil {
		t.Fatal(err)
	}
	if n := len(readAll(t, brokers, dlq, 3)); n != 6 {
		t.Fatalf("%d dead letters after the first owner; want 6", n)
	}

	// A dead letter another group wrote for the same offsets must not count.
	other := newIngester(t, ingest.Conf{Group: "someone-else", DLQTopic: dlq}, &flakyInserter{}, p, nil)
	if err := other.HandleBatch(ctx, records[:1]); err != nil {
		t.Fatal(err)
	}

	// The next owner starts at the committed offsets (nothing committed on partition 0, offset 1 on
	// partition 1) and reads the records again.
	next := newIngester(t, conf, &flakyInserter{}, p, nil)
	if err := next.Recover(ctx, src, map[int]int64{0: -2, 1: 1}); err != nil {
		t.Fatal(err)
	}
	if err := next.HandleBatch(ctx, records); err != nil {
		t.Fatal(err)
	}
	var ours, again int
	for _, m := range readAll(t, brokers, dlq, 3) {
		if header(m, report.HeaderDLTOriginalConsumerGroup) != "epro-mq" {
			continue
		}
		ours++
		if header(m, report.HeaderDLTOriginalPartition) == "1" && header(m, report.HeaderDLTOriginalOffset) == "0" {
			again++
		}
	}
	// Partition 1's offset 0 lies before its committed offset, so Recover did not look for it, and a
	// (hypothetical) re-read of it is dead-lettered again: 6 + 1 = 7. Everything else is written once.
	if ours != 7 || again != 2 {
		t.Fatalf("%d dead letters of this group (%d for 1@0); want 7 (2)", ours, again)
	}
}
