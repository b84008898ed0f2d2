// Package embedded runs in-process stand-ins for the suite's infrastructure:
// Kafka (franz-go's kfake), Redis (miniredis) and MySQL (dolthub's
// go-mysql-server with an in-memory catalog).
//
// They let the whole suite run with one command on a machine that has none of
// the real servers, and they back the infratest package when no real
// services are configured. They are not production stores: everything lives in
// memory and is lost on stop. The infratest package documents where each one
// differs from the real server.
package embedded

import (
	"github.com/dolthub/vitess/go/mysql"
	"github.com/dolthub/vitess/go/sqltypes"
	querypb "github.com/dolthub/vitess/go/vt/proto/query"

	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	sqle "github.com/dolthub/go-mysql-server"
	"github.com/dolthub/go-mysql-server/memory"
	"github.com/dolthub/go-mysql-server/server"
	gmssql "github.com/dolthub/go-mysql-server/sql"
	"github.com/sirupsen/logrus"
	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultKafkaAddr, DefaultRedisAddr and DefaultMySQLAddr are the addresses the
// real services use, so that a configuration written for them also works
// against the embedded ones.
const (
	DefaultKafkaAddr = "127.0.0.1:9092"
	DefaultRedisAddr = "127.0.0.1:6379"
	DefaultMySQLAddr = "127.0.0.1:3306"
)

// MySQLParams are the go-sql-driver DSN parameters every DSN built here carries:
// times as UTC time.Time, microsecond truncation to match DATETIME(6) (the
// driver would otherwise send nanoseconds), and multi-statement scripts for
// schema files.
const MySQLParams = "parseTime=true&loc=UTC&timeTruncate=1us&multiStatements=true&charset=utf8mb4"

// StartKafka starts a single-broker in-memory Kafka cluster (kfake).
//
// addr is the host:port to listen on; "" or a port of 0 picks a free port on
// 127.0.0.1. brokers holds the one bootstrap address to give clients. Topics
// are not auto-created, as on the real broker, so callers create them
// explicitly. The cluster supports consumer groups (JoinGroup, SyncGroup,
// Heartbeat, OffsetCommit, OffsetFetch, LeaveGroup), which kafka-go's Reader
// and ConsumerGroup need, with the same 6 s..5 min session timeout bounds as
// a real broker. stop shuts the cluster down; it also stops when ctx is done.
func StartKafka(ctx context.Context, addr string) (brokers []string, stop func(), err error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, nil, fmt.Errorf("embedded kafka: bad address %q: %w", addr, err)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.ClusterID("epro-embedded"),
		kfake.DefaultNumPartitions(1),
		// kfake always asks for 127.0.0.1:<port>; listening on the caller's
		// address instead lets a fixed host:port be honoured as given.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, addr)
		}),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded kafka: %w", err)
	}
	stop = onceWithContext(ctx, c.Close)
	return c.ListenAddrs(), stop, nil
}

// StartRedis starts an in-memory Redis (miniredis) on addr, DefaultRedisAddr
// if addr is "". Use RunRedis to listen on a random port and learn it.
func StartRedis(addr string) (stop func(), err error) {
	if addr == "" {
		addr = DefaultRedisAddr
	}
	_, stop, err = RunRedis(addr)
	return stop, err
}

// RunRedis starts an in-memory Redis (miniredis) on addr ("" or port 0 picks a
// free port on 127.0.0.1) and returns the address it listens on.
//
// miniredis keeps its clock still unless told otherwise; RunRedis advances it
// in real time so that keys given a TTL (SET NX EX) really expire.
func RunRedis(addr string) (boundAddr string, stop func(), err error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return "", nil, fmt.Errorf("embedded redis: %w", err)
	}
	done := make(chan struct{})
	go func() {
		const tick = 100 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				m.FastForward(tick)
			}
		}
	}()
	stop = onceWithContext(context.Background(), func() {
		close(done)
		m.Close()
	})
	return m.Addr(), stop, nil
}

var quietGMSLogs sync.Once

// StartMySQL starts a MySQL-protocol server (go-mysql-server) backed by an
// in-memory catalog that accepts CREATE DATABASE and DROP DATABASE.
//
// addr is the host:port to listen on; "" or a port of 0 picks a free port on
// 127.0.0.1. If dbName is not empty that database is created. The returned
// go-sql-driver DSN logs in as root without a password (the server checks no
// credentials), selects dbName, and carries MySQLParams. stop closes the
// server; it also stops when ctx is done.
func StartMySQL(ctx context.Context, addr, dbName string) (dsn string, stop func(), err error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	// go-mysql-server logs every connection at info level through the global
	// logrus logger, which buries test and service output.
	quietGMSLogs.Do(func() { logrus.SetLevel(logrus.WarnLevel) })

	pro := memory.NewDBProvider()
	engine := sqle.NewDefault(pro)
	sctx := gmssql.NewContext(ctx, gmssql.WithSession(memory.NewSession(gmssql.NewBaseSession(), pro)))
	// An empty secure_file_priv lets LOAD DATA and LOAD_FILE read any file the
	// process can, and makes the server warn about it on every start; nothing
	// here needs file access, so point it at a directory that does not exist.
	// It is a startup-only variable, hence AssignValues rather than SetGlobal.
	if err := gmssql.SystemVariables.AssignValues(map[string]any{
		"secure_file_priv": "/nonexistent/epro-embedded-mysql",
	}); err != nil {
		return "", nil, fmt.Errorf("embedded mysql: %w", err)
	}
	if dbName != "" {
		if err := pro.CreateDatabase(sctx, dbName); err != nil {
			return "", nil, fmt.Errorf("embedded mysql: create database %s: %w", dbName, err)
		}
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("embedded mysql: %w", err)
	}
	cfg := server.Config{Protocol: "tcp", Address: ln.Addr().String(), Listener: ln}
	srv, err := server.NewServerWithHandler(cfg, engine, gmssql.NewContext, memory.NewSessionBuilder(pro), nil, serialize)
	if err != nil {
		ln.Close()
		return "", nil, fmt.Errorf("embedded mysql: %w", err)
	}
	go func() { _ = srv.Start() }()

	stop = onceWithContext(ctx, func() { _ = srv.Close() })
	return MySQLDSN(ln.Addr().String(), dbName), stop, nil
}

// MySQLDSN builds the go-sql-driver DSN for an embedded MySQL server at addr,
// selecting dbName ("" for none).
func MySQLDSN(addr, dbName string) string {
	return "root@tcp(" + addr + ")/" + url.PathEscape(dbName) + "?" + MySQLParams
}

// onceWithContext makes stop idempotent and also runs it when ctx is done,
// because callers tend to both defer stop and cancel their context.
func onceWithContext(ctx context.Context, fn func()) func() {
	var once sync.Once
	stop := func() { once.Do(fn) }
	if ctx != nil && ctx.Done() != nil {
		unregister := context.AfterFunc(ctx, stop)
		return func() {
			unregister()
			stop()
		}
	}
	return stop
}

// serialize makes the server run one command at a time. go-mysql-server's in-memory tables are not safe for
// concurrent writers: with several connections inserting at once the race detector fires inside it and rows
// are lost, which would make every concurrency test of ours meaningless. One lock costs little at the scale
// of a development run.
func serialize(h mysql.Handler) (mysql.Handler, error) {
	return &serialHandler{Handler: h}, nil
}

type serialHandler struct {
	mysql.Handler
	mu sync.Mutex
}

func (h *serialHandler) ComInitDB(c *mysql.Conn, schemaName string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Handler.ComInitDB(c, schemaName)
}

func (h *serialHandler) ComQuery(ctx context.Context, c *mysql.Conn, query string, callback mysql.ResultSpoolFn) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Handler.ComQuery(ctx, c, query, callback)
}

func (h *serialHandler) ComMultiQuery(ctx context.Context, c *mysql.Conn, query string, callback mysql.ResultSpoolFn) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Handler.ComMultiQuery(ctx, c, query, callback)
}

func (h *serialHandler) ComPrepare(ctx context.Context, c *mysql.Conn, query string, prepare *mysql.PrepareData) ([]*querypb.Field, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Handler.ComPrepare(ctx, c, query, prepare)
}

func (h *serialHandler) ComStmtExecute(ctx context.Context, c *mysql.Conn, prepare *mysql.PrepareData, callback func(*sqltypes.Result) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Handler.ComStmtExecute(ctx, c, prepare, callback)
}

func (h *serialHandler) ComResetConnection(c *mysql.Conn) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.Handler.ComResetConnection(c)
}

func (h *serialHandler) ConnectionClosed(c *mysql.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.Handler.ConnectionClosed(c)
}
