package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/epro-intake/common/embedded"
	"github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"
)

// Environment variables the services read through their etc/*.yaml.
const (
	envKafkaBrokers = "EPRO_KAFKA_BROKERS"
	envMySQLDSN     = "EPRO_MYSQL_DSN"
	envRedisAddr    = "EPRO_REDIS_ADDR"
)

// Defaults of -real: the addresses deploy/scripts/services.sh serves.
const (
	defaultKafkaBrokers = "127.0.0.1:9092"
	defaultMySQLDSN     = "epro:epro@tcp(127.0.0.1:3306)/epro?parseTime=true&loc=UTC&timeTruncate=1us&charset=utf8mb4"
	defaultRedisAddr    = "127.0.0.1:6379"
)

// dbName is the database the embedded MySQL holds.
const dbName = "epro"

// infra is what the services connect to.
type infra struct {
	Brokers   []string
	DSN       string
	RedisAddr string
	stops     []func() // in start order; run in reverse
}

// Env is the environment given to every service.
func (i *infra) Env() []string {
	return []string{
		envKafkaBrokers + "=" + strings.Join(i.Brokers, ","),
		envMySQLDSN + "=" + i.DSN,
		envRedisAddr + "=" + i.RedisAddr,
	}
}

// Stop stops whatever the suite started itself; real servers are left alone.
func (i *infra) Stop(con *console) {
	if len(i.stops) == 0 {
		return
	}
	for k := len(i.stops) - 1; k >= 0; k-- {
		i.stops[k]()
	}
	i.stops = nil
	con.Printf("embedded Kafka, MySQL and Redis stopped")
}

// embeddedInfra starts the in-process stand-ins. Each first tries the address the real server uses, so that
// tools pointed at the usual ports (kcat, mysql, redis-cli) reach it, and falls back to a free port when that
// one is taken, typically by the real server.
//
// They run on a background context: they must outlive the signal that stops the suite until the services
// that use them have stopped.
func embeddedInfra(con *console) (*infra, error) {
	inf := &infra{}
	ok := false
	defer func() {
		if !ok {
			inf.Stop(con)
		}
	}()
	bg := context.Background()

	brokers, stop, err := embedded.StartKafka(bg, embedded.DefaultKafkaAddr)
	if err != nil {
		con.Printf("Kafka: %s unavailable (%v); using a free port", embedded.DefaultKafkaAddr, err)
		brokers, stop, err = embedded.StartKafka(bg, "")
	}
	if err != nil {
		return nil, err
	}
	inf.stops = append(inf.stops, stop)
	inf.Brokers = brokers

	dsn, stop, err := embedded.StartMySQL(bg, embedded.DefaultMySQLAddr, dbName)
	if err != nil {
		con.Printf("MySQL: %s unavailable (%v); using a free port", embedded.DefaultMySQLAddr, err)
		dsn, stop, err = embedded.StartMySQL(bg, "", dbName)
	}
	if err != nil {
		return nil, err
	}
	inf.stops = append(inf.stops, stop)
	inf.DSN = dsn

	addr, stop, err := embedded.RunRedis(embedded.DefaultRedisAddr)
	if err != nil {
		con.Printf("Redis: %s unavailable (%v); using a free port", embedded.DefaultRedisAddr, err)
		addr, stop, err = embedded.RunRedis("")
	}
	if err != nil {
		return nil, err
	}
	inf.stops = append(inf.stops, stop)
	inf.RedisAddr = addr

	con.Printf("embedded Kafka (kfake) at %s", strings.Join(inf.Brokers, ","))
	con.Printf("embedded MySQL (go-mysql-server, database %s) at %s", dbName, mysqlAddr(inf.DSN))
	con.Printf("embedded Redis (miniredis) at %s", inf.RedisAddr)
	ok = true
	return inf, nil
}

// realInfra checks the servers named by the environment (or the defaults) and creates the database the DSN
// names, because epro-mq's migrations create tables but not the database itself.
func realInfra(ctx context.Context, con *console) (*infra, error) {
	inf := &infra{
		Brokers:   splitBrokers(envOr(envKafkaBrokers, defaultKafkaBrokers)),
		DSN:       envOr(envMySQLDSN, defaultMySQLDSN),
		RedisAddr: envOr(envRedisAddr, defaultRedisAddr),
	}
	if len(inf.Brokers) == 0 {
		return nil, fmt.Errorf("%s names no broker", envKafkaBrokers)
	}
	hint := " (start the servers first: deploy/scripts/services.sh up)"
	if err := ensureDatabase(ctx, inf.DSN); err != nil {
		return nil, fmt.Errorf("MySQL: %w%s", err, hint)
	}
	if err := pingRedis(ctx, inf.RedisAddr); err != nil {
		return nil, fmt.Errorf("Redis at %s: %w%s", inf.RedisAddr, err, hint)
	}
	con.Printf("Kafka at %s", strings.Join(inf.Brokers, ","))
	con.Printf("MySQL at %s", mysqlAddr(inf.DSN))
	con.Printf("Redis at %s", inf.RedisAddr)
	return inf, nil
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

func splitBrokers(v string) []string {
	var out []string
	for _, b := range strings.Split(v, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// mysqlAddr is the address part of a DSN, for messages that must not show its password.
func mysqlAddr(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return cfg.Addr + "/" + cfg.DBName
}

func ensureDatabase(ctx context.Context, dsn string) error {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		// The parse error can quote the DSN, password included.
		return fmt.Errorf("%s is not a valid go-sql-driver DSN", envMySQLDSN)
	}
	if cfg.DBName == "" {
		return fmt.Errorf("%s names no database; the services need one, e.g. .../epro?parseTime=true", envMySQLDSN)
	}
	server := cfg.Clone()
	server.DBName = ""
	if server.Timeout == 0 {
		server.Timeout = 5 * time.Second
	}
	connector, err := mysql.NewConnector(server)
	if err != nil {
		return fmt.Errorf("connector: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	stmt := "CREATE DATABASE IF NOT EXISTS " + quoteIdent(cfg.DBName) +
		" CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("create database %s at %s: %w", cfg.DBName, cfg.Addr, err)
	}
	return nil
}

func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(s, "`", "``") + "`"
}

// pingRedis speaks just enough RESP to tell a reachable Redis from a closed port or another protocol.
func pingRedis(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no reply to PING: %w", err)
	}
	reply = strings.TrimSpace(reply)
	if reply != "+PONG" {
		// -NOAUTH and the like: the services would fail the same way, so say so now.
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}

// warnPartitions points out topics that already existed with another partition count: topic.Ensure leaves
// an existing topic as it is, so -partitions silently does nothing for it.
func warnPartitions(ctx context.Context, con *console, brokers []string, want map[string]int) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		con.Printf("could not read topic metadata: %v", err)
		return
	}
	for _, t := range md.Topics {
		if n, ok := want[t.Name]; ok && t.Error == nil && len(t.Partitions) != n {
			con.Printf("note: %s already existed with %d partitions (asked for %d); it was left as it is",
				t.Name, len(t.Partitions), n)
		}
	}
}
