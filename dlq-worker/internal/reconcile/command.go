package reconcile

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"syscall"
	"time"

	"github.com/zeromicro/go-zero/core/conf"

	"github.com/epro-intake/common/mysqldb"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// Exit codes of the command.
const (
	ExitClean   = 0 // every record is stored, a duplicate, dead-lettered or a conflict
	ExitMissing = 1 // at least one record is missing
	ExitUsage   = 2 // bad flags or config
	ExitFailed  = 3 // the run could not finish (Kafka, MySQL, the output); its counts are partial
)

// RoleCommand is the role the audit trail records for a run of the command: whoever holds the service's
// configuration and database credentials, not a token's role.
const RoleCommand = "command"

// commandConfig is the part of the service config the command needs, so it runs where the API's port and
// token key are not set.
type commandConfig struct {
	DeadLetters struct {
		Brokers []string
	}
	MySQL     config.MySQLConf
	Reconcile config.ReconcileConf
}

// Command implements `dlq-worker reconcile -f etc/dlq-worker.yaml [-from-offset N | -from-time T] [-to-end]
// [-format csv|json] [-out file]`: it writes the exceptions to -out (standard output by default), the
// progress and the summary to stderr, and returns the exit code.
func Command(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("f", "etc/dlq-worker.yaml", "the config file")
	fromOffset := fs.Int64("from-offset", -1, "start every partition at this offset (default: the first retained record)")
	fromTime := fs.String("from-time", "", "start every partition at its first record at or after this RFC 3339 time")
	toEnd := fs.Bool("to-end", false, "read to the end of every partition instead of epro-mq's committed offsets")
	format := fs.String("format", FormatCSV, "exceptions as csv or json")
	out := fs.String("out", "", "write the exceptions to this file instead of standard output")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	if *format != FormatCSV && *format != FormatJSON {
		fmt.Fprintf(stderr, "reconcile: -format %q: want %s or %s\n", *format, FormatCSV, FormatJSON)
		return ExitUsage
	}
	var r Range
	r.ToEnd = *toEnd
	if *fromOffset >= 0 {
		r.FromOffset = fromOffset
	}
	if *fromTime != "" {
		t, err := time.Parse(time.RFC3339, *fromTime)
		if err != nil || r.FromOffset != nil {
			fmt.Fprintln(stderr, "reconcile: -from-time takes an RFC 3339 time, and not with -from-offset")
			return ExitUsage
		}
		r.FromTime = t
	}
	var c commandConfig
	if err := conf.Load(*configFile, &c, conf.UseEnv()); err != nil {
		fmt.Fprintf(stderr, "reconcile: load %s: %v\n", *configFile, err)
		return ExitUsage
	}
	if err := c.Reconcile.Validate(); err != nil {
		fmt.Fprintf(stderr, "reconcile: %v\n", err)
		return ExitUsage
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintf(stderr, "reconcile: %v\n", err)
			return ExitUsage
		}
		defer f.Close()
		w = f
	}
	exceptions, err := NewExceptionWriter(w, *format)
	if err != nil {
		fmt.Fprintf(stderr, "reconcile: %v\n", err)
		return ExitUsage
	}
	db, err := mysqldb.Open(c.MySQL.DSN, mysqldb.Pool{MaxOpenConns: 2, MaxIdleConns: 2, ConnMaxLifetime: 30 * time.Minute})
	if err != nil {
		fmt.Fprintf(stderr, "reconcile: %v\n", err)
		return ExitUsage
	}
	defer db.Close()
	rc := c.Reconcile
	engine, err := New(Conf{Brokers: c.DeadLetters.Brokers, Topic: rc.Topic, Group: rc.Group, BatchSize: rc.BatchSize,
		MaxWait: rc.MaxWait, QueryTimeout: rc.QueryTimeout}, db)
	if err != nil {
		fmt.Fprintf(stderr, "reconcile: %v\n", err)
		return ExitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, engine, store.NewAudit(db), r, exceptions, stderr)
}

// run is the command after its set-up: the run, the summary on stderr, the exit code.
func run(ctx context.Context, engine *Engine, audit *store.Audit, r Range, exceptions *ExceptionWriter, stderr io.Writer) int {
	fmt.Fprintf(stderr, "reconcile: %s\n", r)
	sum, err := engine.Audited(ctx, audit, Actor{Name: commandActor(), Role: RoleCommand}, r, exceptions.Write, func(p Progress) {
		fmt.Fprintf(stderr, "reconcile: %d records, %.0f/s", p.Records, p.RatePerSecond)
		for _, pp := range p.Partitions {
			fmt.Fprintf(stderr, " p%d %d/%d", pp.Partition, pp.Position, pp.End)
		}
		fmt.Fprintln(stderr)
	})
	err = errors.Join(err, exceptions.Close())
	fmt.Fprintf(stderr, "reconcile: %s\n", sum.Text())
	if err != nil {
		fmt.Fprintf(stderr, "reconcile: incomplete: %v\n", err)
		return ExitFailed
	}
	if sum.Missing() > 0 {
		fmt.Fprintf(stderr, "reconcile: missing: %d records\n", sum.Missing())
		return ExitMissing
	}
	return ExitClean
}

// commandActor names the operating-system user who ran the command.
func commandActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "os:" + u.Username
	}
	return "os:uid-" + fmt.Sprint(os.Getuid())
}
