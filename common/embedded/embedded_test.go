package embedded_test

import (
	"context"
	"database/sql"
	"net"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/embedded"
)

// freeAddr returns a loopback address that was free a moment ago, to exercise
// the fixed-address path that the one-command embedded run uses.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestStartKafkaFixedAddrAndContextStop(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	brokers, stop, err := embedded.StartKafka(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if len(brokers) != 1 || brokers[0] != addr {
		t.Fatalf("brokers = %v, want [%s]", brokers, addr)
	}
	conn, err := kafka.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := conn.Brokers()
	conn.Close()
	if err != nil || len(bs) != 1 {
		t.Fatalf("Brokers() = %v, %v", bs, err)
	}

	// Without auto-creation, producing to an unknown topic must fail, as on
	// the real broker configured by deploy/scripts/kafka.sh.
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: "no_such_topic", MaxAttempts: 1}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = w.WriteMessages(wctx, kafka.Message{Value: []byte("x")})
	wcancel()
	w.Close()
	if err == nil {
		t.Fatal("write to a topic that was never created succeeded")
	}

	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("cluster still accepting connections after its context was cancelled")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop() // idempotent after the context already stopped it
}

func TestStartRedisFixedAddr(t *testing.T) {
	addr := freeAddr(t)
	stop, err := embedded.StartRedis(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestStartMySQLWithDatabase(t *testing.T) {
	dsn, stop, err := embedded.StartMySQL(context.Background(), "", "epro")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var name string
	if err := db.QueryRow("SELECT DATABASE()").Scan(&name); err != nil || name != "epro" {
		t.Fatalf("DATABASE() = %q, %v; want epro", name, err)
	}
	if _, err := db.Exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
}
