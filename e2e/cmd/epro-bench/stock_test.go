package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
)

// What the stock phase counts: records added since a start, and acknowledged request ids found under their
// patient's key, each once, whatever else the topic holds.
func TestStockArrivalsCountRecordsAndAcknowledgedReports(t *testing.T) {
	brokers := infratest.Kafka(t)
	topic := infratest.UniqueName(t, "stock")
	infratest.CreateTopic(t, brokers, topic, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kc := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: &kafka.Transport{}}
	defer w.Close()
	rec := func(key, id string) kafka.Message {
		return kafka.Message{Key: []byte(key), Value: fmt.Appendf(nil, `{"requestId":%q,"patientId":%q}`, id, key)}
	}

	// Before the phase: a record that is not counted as added.
	if err := w.WriteMessages(ctx, rec("PAT-9", "warm")); err != nil {
		t.Fatal(err)
	}
	start, err := topicRecords(ctx, kc, topic, 3)
	if err != nil || start != 1 {
		t.Fatalf("records before: %d, %v; want 1", start, err)
	}
	sent := map[string]string{"a": "PAT-1", "b": "PAT-2", "c": "PAT-3", "d": "PAT-4", "lost": "PAT-5"}
	err = w.WriteMessages(ctx, rec("PAT-1", "a"), rec("PAT-2", "b"), rec("PAT-1", "a"), // a twice
		rec("PAT-3", "c"), rec("PAT-9", "d"), // d under another key
		rec("PAT-6", "never-acknowledged"), kafka.Message{Key: []byte("PAT-7"), Value: []byte("not json")})
	if err != nil {
		t.Fatal(err)
	}

	a := watchArrivals(ctx, kc, topic, 3, start, 5, 7, nil)
	if a.err != nil || a.records != 7 || a.atEnd != 7 {
		t.Fatalf("watchArrivals: %+v; want 7 records added", a)
	}
	found, wrongKey, err := findReports(ctx, brokers, topic, 3, sent)
	if err != nil {
		t.Fatal(err)
	}
	if found != 3 || wrongKey != 1 {
		t.Errorf("found %d under their key and %d under another; want a, b, c and d", found, wrongKey)
	}

	// Fewer than wanted and nothing more coming: the watch ends after the quiet period only if enough
	// arrived, else at its limit; here enough has, so it ends 3 s after the last growth.
	began := time.Now()
	a = watchArrivals(ctx, kc, topic, 3, start, 7, 100, nil)
	if a.err != nil || a.records != 7 || time.Since(began) < 3*time.Second || time.Since(began) > 10*time.Second {
		t.Errorf("watchArrivals with every wanted record there: %+v after %s", a, time.Since(began))
	}
}
