package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/topic"
	"github.com/epro-intake/e2e/internal/load"
	"github.com/epro-intake/e2e/internal/stack"
)

// RawKafka is the plain-writer limit.
type RawKafka struct {
	Topic        string  `json:"topic"`
	Goroutines   int     `json:"goroutines"`
	Messages     int     `json:"messages"`
	Errors       int     `json:"errors"`
	Seconds      float64 `json:"seconds"`
	MsgsPerSec   float64 `json:"msgsPerSec"`
	ValueBytes   int     `json:"valueBytes"`
	WriteLatency Latency `json:"writeLatency"`
	CPU          CPUUse  `json:"cpu"`
}

// rawMessages builds records like the API's: the envelope of a generated report as the value, keyed by
// patient, with the request id and schema version headers.
func rawMessages(answers load.AnswerSet, patients, n int) ([]kafka.Message, int, error) {
	gen := load.NewGenerator(answers, patients)
	msgs := make([]kafka.Message, n)
	size := 0
	now := time.Now()
	for i := range msgs {
		s, _ := gen.Next(now)
		sub, err := report.ParseSubmission(s.Body)
		if err != nil {
			return nil, 0, err
		}
		value, err := json.Marshal(sub.Envelope(now))
		if err != nil {
			return nil, 0, err
		}
		msgs[i] = kafka.Message{
			Key:   []byte(sub.PatientID),
			Value: value,
			Headers: []kafka.Header{
				{Key: report.HeaderRequestID, Value: []byte(sub.RequestID)},
				{Key: report.HeaderSchemaVersion, Value: []byte(strconv.Itoa(report.SchemaVersion))},
			},
		}
		size += len(value)
	}
	return msgs, size / n, nil
}

// runRawKafka is the ceiling the API's produce path is held to: goroutines each doing a synchronous
// WriteMessages of one message on one shared Writer, the way concurrent API requests share the producer.
func runRawKafka(ctx context.Context, brokers []string, topic string, goroutines int, d time.Duration, msgs []kafka.Message, valueBytes int) (RawKafka, error) {
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		// kafka-go's 1s default would be the floor of every synchronous write.
		BatchTimeout: time.Millisecond,
		BatchSize:    100,
		BatchBytes:   1 << 20,
		WriteTimeout: 2 * time.Second,
		ReadTimeout:  2 * time.Second,
		MaxAttempts:  5,
		// Its own, like common/producer's: kafka.DefaultTransport is shared and caches metadata, and a Writer on
		// it fails a topic created after the cache was filled with UNKNOWN_TOPIC_OR_PARTITION.
		Transport: &kafka.Transport{},
	}
	defer w.Close()
	// One write first, so that metadata and connections are not part of the timed window.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := w.WriteMessages(wctx, msgs[0])
	cancel()
	if err != nil {
		return RawKafka{}, fmt.Errorf("raw kafka warm-up write: %w", err)
	}

	var next, errs atomic.Int64
	lats := make([][]int64, goroutines)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for g := 0; g < goroutines; g++ {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				m := msgs[next.Add(1)%int64(len(msgs))]
				t := time.Now()
				if err := w.WriteMessages(ctx, m); err != nil {
					errs.Add(1)
					continue
				}
				lats[g] = append(lats[g], int64(time.Since(t)))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []int64
	for _, l := range lats {
		all = append(all, l...)
	}
	return RawKafka{
		Topic: topic, Goroutines: goroutines, Messages: len(all), Errors: int(errs.Load()),
		Seconds: elapsed.Seconds(), MsgsPerSec: perSecond(len(all), elapsed), ValueBytes: valueBytes,
		WriteLatency: summarize(all),
	}, nil
}

// rawRow is one row of the reports table as epro-mq writes it.
type rawRow struct {
	requestID, patientID, trialID, questionnaireID, questionnaireVersion, topic string
	submittedAt, receivedAt                                                     time.Time
	submittedOffset, partition                                                  int
	offset                                                                      int64
	payload                                                                     []byte
}

// readRawRows reads up to limit stored reports back, so the raw inserts write exactly the rows the
// consumer wrote.
func readRawRows(ctx context.Context, db *sql.DB, limit int) ([]rawRow, error) {
	rows, err := db.QueryContext(ctx, "SELECT request_id, patient_id, trial_id, questionnaire_id, questionnaire_version, "+
		"submitted_at, submitted_offset_minutes, received_at, payload, kafka_topic, kafka_partition, kafka_offset "+
		"FROM reports ORDER BY id LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("read rows for the raw insert: %w", err)
	}
	defer rows.Close()
	var out []rawRow
	for rows.Next() {
		var r rawRow
		if err := rows.Scan(&r.requestID, &r.patientID, &r.trialID, &r.questionnaireID, &r.questionnaireVersion,
			&r.submittedAt, &r.submittedOffset, &r.receivedAt, &r.payload, &r.topic, &r.partition, &r.offset); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// RawMySQL is the plain batched-insert limit for one statement size.
type RawMySQL struct {
	RowsPerStatement int     `json:"rowsPerStatement"`
	Connections      int     `json:"connections"`
	Rows             int     `json:"rows"`
	Seconds          float64 `json:"seconds"`
	RowsPerSec       float64 `json:"rowsPerSec"`
	// Deadlocks counts statements MariaDB rolled back (1213) and that were sent again.
	Deadlocks int    `json:"deadlocks"`
	CPU       CPUUse `json:"cpu"`
}

// The statement epro-mq's store uses, so the limit differs from the consumer only in what surrounds it.
const (
	rawInsertPrefix = "INSERT INTO reports (request_id, patient_id, trial_id, questionnaire_id, questionnaire_version, " +
		"submitted_at, submitted_offset_minutes, received_at, stored_at, payload, payload_sha256, " +
		"kafka_topic, kafka_partition, kafka_offset) VALUES "
	rawInsertSuffix = " ON DUPLICATE KEY UPDATE request_id = request_id"
)

// runRawMySQL inserts rows into an empty reports table with conns connections, perStmt rows per statement.
func runRawMySQL(ctx context.Context, db *sql.DB, rows []rawRow, perStmt, conns int) (RawMySQL, error) {
	if _, err := db.ExecContext(ctx, "TRUNCATE TABLE reports"); err != nil {
		return RawMySQL{}, fmt.Errorf("truncate raw table: %w", err)
	}
	// Open the connections before the clock starts.
	var warm sync.WaitGroup
	for i := 0; i < conns; i++ {
		warm.Go(func() { _ = db.PingContext(ctx) })
	}
	warm.Wait()

	var next, deadlocks atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < conns; c++ {
		wg.Go(func() {
			for {
				lo := int(next.Add(int64(perStmt))) - perStmt
				if lo >= len(rows) || ctx.Err() != nil {
					return
				}
				chunk := rows[lo:min(lo+perStmt, len(rows))]
				for {
					err := insertRaw(ctx, db, chunk)
					if err == nil {
						break
					}
					if isDeadlock(err) {
						deadlocks.Add(1)
						continue
					}
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return RawMySQL{}, firstErr
	}
	return RawMySQL{
		RowsPerStatement: perStmt, Connections: conns, Rows: len(rows), Seconds: elapsed.Seconds(),
		RowsPerSec: perSecond(len(rows), elapsed), Deadlocks: int(deadlocks.Load()),
	}, nil
}

func insertRaw(ctx context.Context, db *sql.DB, rows []rawRow) error {
	var sb strings.Builder
	sb.Grow(len(rawInsertPrefix) + len(rows)*32 + len(rawInsertSuffix))
	sb.WriteString(rawInsertPrefix)
	args := make([]any, 0, len(rows)*14)
	storedAt := time.Now().UTC()
	for i, r := range rows {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
		sum := sha256.Sum256(r.payload)
		args = append(args, r.requestID, r.patientID, r.trialID, r.questionnaireID, r.questionnaireVersion,
			r.submittedAt, r.submittedOffset, r.receivedAt, storedAt, r.payload, sum[:], r.topic, r.partition, r.offset)
	}
	sb.WriteString(rawInsertSuffix)
	_, err := db.ExecContext(ctx, sb.String(), args...)
	return err
}

func (b *bench) rawKafka(ctx context.Context, answers load.AnswerSet) error {
	o := b.opt
	name := "epro.bench." + b.res.RunID + ".raw"
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := topic.Ensure(tctx, b.brokers, replicated(b.brokers, topic.Spec{Name: name, Partitions: o.partitions}))
	cancel()
	if err != nil {
		return fmt.Errorf("raw kafka topic: %w", err)
	}
	b.topics = append(b.topics, name)
	msgs, size, err := rawMessages(answers, o.patients, 1024)
	if err != nil {
		return err
	}
	b.progress("raw kafka-go Writer: %d goroutines for %s", o.rawWriters, o.rawDuration)
	before := b.cpu.sample()
	rk, err := runRawKafka(ctx, b.brokers, name, o.rawWriters, o.rawDuration, msgs, size)
	after := b.cpu.sample()
	if err != nil {
		return err
	}
	rk.CPU = cpuUse(before, after)
	b.res.RawKafka = &rk
	b.progress("raw kafka-go Writer: %.0f msgs/s", rk.MsgsPerSec)
	return nil
}

func (b *bench) rawMySQL(ctx context.Context) error {
	o := b.opt
	rows, err := readRawRows(ctx, b.db, o.rawRows)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return errors.New("raw insert: no stored rows to copy")
	}
	// A name of this run's own, also with -api, where the reports database is someone else's.
	dbName := "epro_bench_" + strings.ReplaceAll(b.res.RunID, "-", "_") + "_raw"

	if err := stack.CreateDatabase(ctx, b.server, dbName); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, func() {
		if !b.opt.keep {
			_ = stack.DropDatabase(context.Background(), b.server, dbName)
		}
	})
	db, err := stack.OpenMySQL(b.server, dbName, o.rawConns)
	if err != nil {
		return err
	}
	defer db.Close()
	// The same migrations epro-mq applies, so the raw INSERTs meet the table the pipeline writes.
	if err := reportdb.Migrate(ctx, db); err != nil {
		return fmt.Errorf("migrate raw-insert database: %w", err)
	}
	for _, per := range o.rawBatches {
		b.progress("raw INSERT: %d rows, %d per statement, %d connections", len(rows), per, o.rawConns)
		before := b.cpu.sample()
		rm, err := runRawMySQL(ctx, db, rows, per, o.rawConns)
		after := b.cpu.sample()
		if err != nil {
			return fmt.Errorf("raw insert: %w", err)
		}
		rm.CPU = cpuUse(before, after)
		b.res.RawMySQL = append(b.res.RawMySQL, rm)
		b.progress("raw INSERT: %.0f rows/s", rm.RowsPerSec)
	}
	return nil
}
