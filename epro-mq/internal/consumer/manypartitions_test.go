package consumer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// produceKeys sends n records spread over many keys, so that every partition of a wide topic gets some.
func (f fixture) produceKeys(t *testing.T, from, n int) {
	t.Helper()
	p := newProducer(t, f.brokers)
	defer p.Close()
	msgs := make([]kafka.Message, 0, n)
	for i := from; i < from+n; i++ {
		msgs = append(msgs, kafka.Message{Topic: f.topic, Key: []byte(fmt.Sprintf("patient-%d", i)), Value: []byte(fmt.Sprint(i))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Send(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

// A wide topic with partitions idle at times: every partition must keep being read, before and after the
// consumer starts, in one generation, and idle fetches must end by the broker's answer rather than by the
// reader's socket deadline. When kafka-go's deadline is the shorter one, each idle partition times out and
// re-dials over and over (on the embedded broker several times a second per partition at a 50ms MaxWait).
func TestTwelvePartitionsAreAllConsumed(t *testing.T) {
	const parts = 12
	f := newFixture(t, parts)
	f.produceKeys(t, 0, 100)
	l := newLedger()
	c := f.consumer(t, l, 5*time.Second)
	defer c.Stop()
	waitFor(t, "the 100 records produced before the start", 20*time.Second, func() bool { return l.distinct() == 100 })
	produced := 100
	for i := 0; i < 6; i++ {
		time.Sleep(time.Second) // idle partitions sit in fetches for a while
		f.produceKeys(t, produced, 50)
		produced += 50
	}
	waitFor(t, fmt.Sprintf("all %d records", produced), 20*time.Second, func() bool { return l.distinct() == produced })
	c.Stop()
	st := c.Stats()
	if st.Generations != 1 {
		t.Errorf("%d generations for one member; want 1 (the group rebalanced)", st.Generations)
	}
	if st.ReaderErrs != 0 {
		t.Errorf("partition readers logged %d errors, each a reconnect; want none on a healthy broker", st.ReaderErrs)
	}
	committed, ends := f.committed(t, parts), f.ends(t, parts)
	for p, end := range ends {
		if committed[p] != end {
			t.Errorf("partition %d: committed %d; want %d", p, committed[p], end)
		}
	}
}
