package producer

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The kgo partitioner places every key where kafka-go's Murmur2Balancer{Consistent: true} placed it before, so
// a patient's reports keep their partition across the change of client: keyed records by Java's murmur2, and a
// record without a key (nil) or with an empty one on the partition of the empty key's hash.
func TestPartitionerMatchesKafkaGoMurmur2Consistent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := [][]byte{nil, {}, {0}, {0xff, 0xff, 0xff, 0xff}}
	for i := range 300 {
		keys = append(keys, fmt.Appendf(nil, "PAT-%06d", i))
	}
	for range 100 { // arbitrary bytes of every length class murmur2 treats apart (len % 4)
		k := make([]byte, rng.IntN(40))
		for j := range k {
			k[j] = byte(rng.UintN(256))
		}
		keys = append(keys, k)
	}
	balancer := &kafka.Murmur2Balancer{Consistent: true}
	spread := map[int]bool{}
	for _, n := range []int{1, 2, 3, 7, 12, 24, 50, 128, 200} {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		tp := javaPartitioner().ForTopic("t")
		for _, k := range keys {
			want := balancer.Balance(kafka.Message{Key: k}, parts...)
			if got := tp.Partition(&kgo.Record{Key: k}, n); got != want {
				t.Errorf("key %q (nil %t), %d partitions: kgo %d, kafka-go %d", k, k == nil, n, got, want)
			}
			if n == 12 {
				spread[want] = true
			}
		}
		// kgo must not move a record of an unavailable partition elsewhere, keyed or not.
		if !tp.RequiresConsistency(&kgo.Record{}) || !tp.RequiresConsistency(&kgo.Record{Key: []byte("k")}) {
			t.Errorf("partitioner does not require consistency for every record")
		}
	}
	if len(spread) != 12 { // the keys reach every one of 12 partitions, so the comparison covers them all
		t.Errorf("keys reached %d of 12 partitions", len(spread))
	}
	// Repeated nil-key records stay on one partition (the sticky partitioner would move them).
	tp := javaPartitioner().ForTopic("t")
	first := tp.Partition(&kgo.Record{}, 12)
	for range 50 {
		if p := tp.Partition(&kgo.Record{}, 12); p != first {
			t.Fatalf("nil key moved from partition %d to %d", first, p)
		}
	}
}
