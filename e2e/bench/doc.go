// Package bench holds `go test -bench` benchmarks of the suite's hot paths, with the raw library doing the
// same work measured in the same benchmark, so each reports a ratio that survives a noisy machine:
//
//	cd e2e && go test -run '^$' -bench . -benchtime 3s ./bench
//
// The Kafka benchmark uses the broker named by EPRO_TEST_KAFKA_BROKERS and otherwise an in-memory kfake,
// whose figures say nothing about a real broker. The whole suite under load is measured by cmd/epro-bench.
package bench
