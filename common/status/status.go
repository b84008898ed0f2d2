// Package status names a report's pipeline status and the Redis key that caches it. epro-api writes
// Accepted after Kafka acknowledged a report, epro-mq writes Stored after the MySQL commit (it doubles as the
// dedupe fast path), DeadLettered after the dead-letter write and Conflict after dead-lettering a record whose
// request id is stored with other content. Redis is only a cache of these facts: the
// reports table is the truth for Stored, and a cached Stored never stands for a row on its own (a database
// restored from a backup keeps the markers of rows it lost). epro-mq skips a record marked Stored only after
// reading its row, and epro-api answers stored only from a row; a Stored without a row reads as Accepted.
package status

import "time"

// Values stored under Key.
const (
	Accepted     = "accepted"
	Stored       = "stored"
	DeadLettered = "dead_lettered"
	// Conflict: a record under this request id carried content other than the stored report's (two
	// different reports raced under one id, or the API could not check); it was dead-lettered for review and
	// the stored row, if any, is unchanged.
	Conflict = "conflict"
)

// TTL is how long a status stays cached. It outlives any realistic client retry window.
const TTL = 30 * 24 * time.Hour

// Key returns the Redis key holding the status of the report with the given (canonical) request id.
func Key(requestID string) string {
	return "epro:report:{" + requestID + "}:status"
}
