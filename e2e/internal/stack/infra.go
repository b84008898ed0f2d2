package stack

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/epro-intake/common/embedded"
	"github.com/epro-intake/common/mysqldb"
)

// Environment variables the services read through their etc/*.yaml.
const (
	EnvKafkaBrokers = "EPRO_KAFKA_BROKERS"
	EnvMySQLDSN     = "EPRO_MYSQL_DSN"
	EnvRedisAddr    = "EPRO_REDIS_ADDR"
)

// Defaults of Real: the addresses deploy/scripts/services.sh serves.
const (
	DefaultKafkaBrokers = "127.0.0.1:9092"
	DefaultMySQLDSN     = "epro:epro@tcp(127.0.0.1:3306)/epro?parseTime=true&loc=UTC&timeTruncate=1us&charset=utf8mb4"
	DefaultRedisAddr    = "127.0.0.1:6379"
)

// Infra is what the services connect to. Brokers lists every broker of the Kafka cluster.
type Infra struct {
	Brokers   []string
	DSN       string
	RedisAddr string
	// Embedded is true when the servers run inside this process and stop with it.
	Embedded bool
	stops    []func() // in start order; run in reverse
}

// Env is the part of every service's environment that names the infrastructure.
func (i *Infra) Env() []string {
	return []string{
		EnvKafkaBrokers + "=" + strings.Join(i.Brokers, ","),
		EnvMySQLDSN + "=" + i.DSN,
		EnvRedisAddr + "=" + i.RedisAddr,
	}
}

// Stop stops whatever Embedded started; real servers are left alone. It is safe to call twice.
func (i *Infra) Stop() {
	for k := len(i.stops) - 1; k >= 0; k-- {
		i.stops[k]()
	}
	i.stops = nil
}

// EmbeddedOptions says how to start the in-process stand-ins.
type EmbeddedOptions struct {
	// Brokers is the size of the Kafka cluster; 0 means 1.
	Brokers int
	// UsualAddrs makes each server try the address the real one uses first, so that tools pointed at the
	// usual ports (kcat, mysql, redis-cli) reach it, and fall back to a free port when that one is taken.
	// A cluster of more than one broker always listens on free ports.
	UsualAddrs bool
	// Database is the database the embedded MySQL holds and the DSN selects.
	Database string
	// Logf, if set, is told when a usual address was taken.
	Logf func(format string, args ...any)
}

// Embedded starts kfake, go-mysql-server and miniredis in this process. They run until Stop, not until a
// context ends: they must outlive the signal that stops the suite until the services using them are gone.
func Embedded(opt EmbeddedOptions) (inf *Infra, err error) {
	inf = &Infra{Embedded: true}
	defer func() {
		if err != nil {
			inf.Stop()
		}
	}()
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// start tries the usual address first when asked to, then a free port.
	start := func(what, usual string, fn func(addr string) (func(), error)) error {
		if opt.UsualAddrs {
			stop, err := fn(usual)
			if err == nil {
				inf.stops = append(inf.stops, stop)
				return nil
			}
			logf("%s: %s unavailable (%v); using a free port", what, usual, err)
		}
		stop, err := fn("")
		if err != nil {
			return err
		}
		inf.stops = append(inf.stops, stop)
		return nil
	}

	bg := context.Background()
	if opt.Brokers > 1 {
		brokers, stop, err := kafkaCluster(opt.Brokers)
		if err != nil {
			return nil, err
		}
		inf.stops, inf.Brokers = append(inf.stops, stop), brokers
	} else if err := start("Kafka", embedded.DefaultKafkaAddr, func(addr string) (stop func(), err error) {
		inf.Brokers, stop, err = embedded.StartKafka(bg, addr)
		return stop, err
	}); err != nil {
		return nil, err
	}
	if err := start("MySQL", embedded.DefaultMySQLAddr, func(addr string) (stop func(), err error) {
		inf.DSN, stop, err = embedded.StartMySQL(bg, addr, opt.Database)
		return stop, err
	}); err != nil {
		return nil, err
	}
	if err := start("Redis", embedded.DefaultRedisAddr, func(addr string) (stop func(), err error) {
		inf.RedisAddr, stop, err = embedded.RunRedis(addr)
		return stop, err
	}); err != nil {
		return nil, err
	}
	return inf, nil
}

// kafkaCluster starts a kfake cluster of n brokers on free ports, configured like embedded.StartKafka's
// single broker: topics are created explicitly, as on the real cluster.
func kafkaCluster(n int) ([]string, func(), error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(n), kfake.ClusterID("epro-embedded"), kfake.DefaultNumPartitions(1))
	if err != nil {
		return nil, nil, fmt.Errorf("embedded kafka: %w", err)
	}
	return c.ListenAddrs(), c.Close, nil
}

// Real names the servers given by EPRO_KAFKA_BROKERS, EPRO_MYSQL_DSN and EPRO_REDIS_ADDR (or the defaults),
// checks that MySQL and Redis answer, and creates the database the DSN names, because epro-mq's migrations
// create tables but not the database itself.
func Real(ctx context.Context) (*Infra, error) {
	inf := RealAddrs()
	if len(inf.Brokers) == 0 {
		return nil, fmt.Errorf("%s names no broker", EnvKafkaBrokers)
	}
	const hint = " (start the servers first: make services-up)"
	cfg, err := ParseDSN(inf.DSN)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvMySQLDSN, err)
	}
	if cfg.DBName == "" {
		return nil, fmt.Errorf("%s names no database; the services need one, e.g. .../epro?parseTime=true", EnvMySQLDSN)
	}
	if err := CreateDatabase(ctx, cfg, cfg.DBName); err != nil {
		return nil, fmt.Errorf("MySQL: %w%s", err, hint)
	}
	if err := pingRedis(ctx, inf.RedisAddr); err != nil {
		return nil, fmt.Errorf("reach Redis at %s: %w%s", inf.RedisAddr, err, hint)
	}
	return inf, nil
}

// RealAddrs names the servers given by EPRO_KAFKA_BROKERS, EPRO_MYSQL_DSN and EPRO_REDIS_ADDR, or the
// defaults, without checking them.
func RealAddrs() *Infra {
	return &Infra{
		Brokers:   splitList(envOr(EnvKafkaBrokers, DefaultKafkaBrokers)),
		DSN:       envOr(EnvMySQLDSN, DefaultMySQLDSN),
		RedisAddr: envOr(EnvRedisAddr, DefaultRedisAddr),
	}
}

// ParseDSN parses a go-sql-driver DSN without ever quoting it back, because it may hold a password. The time
// options and the dial timeout are OpenMySQL's (mysqldb.Open's) business.
func ParseDSN(dsn string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, errors.New("not a valid go-sql-driver DSN")
	}
	return cfg, nil
}

// OpenMySQL opens database name ("": none) on the server cfg points at, with at most conns connections.
func OpenMySQL(cfg *mysql.Config, name string, conns int) (*sql.DB, error) {
	c := cfg.Clone()
	c.DBName = name
	return mysqldb.Open(c.FormatDSN(), mysqldb.Pool{
		MaxOpenConns: conns, MaxIdleConns: conns, ConnMaxLifetime: 5 * time.Minute, DialTimeout: 5 * time.Second,
	})
}

// CreateDatabase creates the database name on the server cfg points at, if it does not exist yet.
func CreateDatabase(ctx context.Context, cfg *mysql.Config, name string) error {
	return serverExec(ctx, cfg, "create database "+name,
		"CREATE DATABASE IF NOT EXISTS "+QuoteIdent(name)+" CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
}

// DropDatabase drops the database name on the server cfg points at, if it exists.
func DropDatabase(ctx context.Context, cfg *mysql.Config, name string) error {
	return serverExec(ctx, cfg, "drop database "+name, "DROP DATABASE IF EXISTS "+QuoteIdent(name))
}

func serverExec(ctx context.Context, cfg *mysql.Config, what, stmt string) error {
	db, err := OpenMySQL(cfg, "", 1)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("%s at %s: %w", what, cfg.Addr, err)
	}
	return nil
}

// QuoteIdent quotes a MySQL identifier.
func QuoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// MySQLAddr is the address part of a DSN, for messages that must not show its password.
func MySQLAddr(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return cfg.Addr + "/" + cfg.DBName
}

// splitList splits a comma-separated list, dropping blanks. Not producer.SplitBrokers: common/producer links
// go-zero's core/conf and with it core/proc's signal handlers, which epro-suite must not have
// (TestSuiteDoesNotLinkGoZeroSignalHandlers).
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
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
	if reply = strings.TrimSpace(reply); reply != "+PONG" {
		// -NOAUTH and the like: the services would fail the same way, so say so now.
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}
