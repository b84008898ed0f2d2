package main

import (
	"testing"

	"github.com/epro-intake/common/topic"
)

func TestTopicsAreReplicatedLikeProductionOnACluster(t *testing.T) {
	for _, c := range []struct {
		brokers       []string
		rf, minInSync int
	}{
		{[]string{"127.0.0.1:9092"}, 1, 0},
		{[]string{"127.0.0.1:19092", "127.0.0.1:19094"}, 1, 0},
		{[]string{"127.0.0.1:19092", "127.0.0.1:19094", "127.0.0.1:19096"}, 3, 2},
	} {
		s := replicated(c.brokers, topic.Spec{Name: "t", Partitions: 12})
		if s.Replication != c.rf || s.MinInSync != c.minInSync || s.Name != "t" || s.Partitions != 12 {
			t.Errorf("%d brokers: got %+v, want replication %d, min in sync %d", len(c.brokers), s, c.rf, c.minInSync)
		}
	}
}
