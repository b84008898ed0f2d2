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
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// Exit codes of the command.
const (
	ExitClean   = 0 // every record is stored, a duplicate, dead-lettered or a conflict
	ExitMissing = 1 // at least one record is missing
	ExitUsage   = 2 // bad flags or config
	ExitFailed  = 3 // the run could not finish (Kafka, MySQL, the output); its counts are partial
	// ExitRedriven: with -redrive, records were missing and every one was re-driven (or came back
	// meanwhile). A second run, once epro-mq has read the re-drives, confirms the repair with exit 0.
	ExitRedriven = 4
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
	// Replay.Producer writes re-drives; only -redrive needs it.
	Replay struct {
		Producer producer.Conf
	} `json:",optional"`
}

// Command implements `dlq-worker reconcile -f etc/dlq-worker.yaml [-from-offset N | -from-time T] [-to-end]
// [-format csv|json] [-out file] [-redrive]`: it writes the exceptions to -out (standard output by default), the
// progress and the summary to stderr, and returns the exit code. With -redrive it then re-drives the missing
// records (up to Reconcile.MaxRedrive), without asking, printing each on stderr.
func Command(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("f", "etc/dlq-worker.yaml", "the config file")
	fromOffset := fs.Int64("from-offset", -1, "start every partition at this offset (default: the first retained record)")
	fromTime := fs.String("from-time", "", "start every partition at its first record at or after this RFC 3339 time")
	toEnd := fs.Bool("to-end", false, "read to the end of every partition instead of epro-mq's committed offsets")
	format := fs.String("format", FormatCSV, "exceptions as csv or json")
	out := fs.String("out", "", "write the exceptions to this file instead of standard output")
	redrive := fs.Bool("redrive", false, "then produce every missing record again to the report topic (audited; no confirmation asked)")
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
	audit := store.NewAudit(db)
	var redriver *Redriver
	if *redrive {
		p, err := producer.New(c.Replay.Producer)
		if err != nil {
			fmt.Fprintf(stderr, "reconcile: -redrive needs Replay.Producer: %v\n", err)
			return ExitUsage
		}
		defer p.Close()
		if redriver, err = NewRedriver(engine, p, audit, RedriveConf{RatePerSecond: rc.RedriveRatePerSecond, Timeout: rc.RedriveTimeout}); err != nil {
			fmt.Fprintf(stderr, "reconcile: %v\n", err)
			return ExitUsage
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, engine, audit, r, exceptions, redriver, rc.MaxRedrive, stderr)
}

// run is the command after its set-up: the run, the summary on stderr, the re-drive if redriver is not nil,
// the exit code.
func run(ctx context.Context, engine *Engine, audit *store.Audit, r Range, exceptions *ExceptionWriter, redriver *Redriver,
	maxRedrive int, stderr io.Writer) int {
	fmt.Fprintf(stderr, "reconcile: %s\n", r)
	who := Actor{Name: commandActor(), Role: RoleCommand}
	var missing []Exception
	var notKept int64
	write := func(x Exception) error {
		if x.Class == Missing {
			if len(missing) < maxRedrive {
				missing = append(missing, x)
			} else {
				notKept++
			}
		}
		return exceptions.Write(x)
	}
	sum, err := engine.Audited(ctx, audit, who, r, write, func(p Progress) {
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
	if sum.Missing() == 0 {
		return ExitClean
	}
	fmt.Fprintf(stderr, "reconcile: missing: %d records\n", sum.Missing())
	if redriver == nil {
		return ExitMissing
	}
	fmt.Fprintf(stderr, "reconcile: re-driving %d missing records to %s, at most %g a second\n", len(missing), engine.conf.Topic,
		redriver.conf.RatePerSecond)
	rs, err := redriver.Redrive(ctx, who, missing, notKept, func(x Exception, o RedriveOutcome, detail string) {
		fmt.Fprintf(stderr, "reconcile: re-drive %s/%d/%d request id %s: %s (%s)\n", engine.conf.Topic, x.Partition, x.Offset,
			x.RequestID, o, detail)
	})
	fmt.Fprintf(stderr, "reconcile: %s\n", rs.Text())
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "reconcile: re-drive stopped: %v\n", err)
		return ExitFailed
	case rs.Remaining() > 0:
		return ExitMissing
	case rs.Redriven == 0:
		return ExitClean // every one came back meanwhile
	}
	fmt.Fprintln(stderr, "reconcile: run again once epro-mq has read the re-drives, to confirm them")
	return ExitRedriven
}

// commandActor names the operating-system user who ran the command.
func commandActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "os:" + u.Username
	}
	return "os:uid-" + fmt.Sprint(os.Getuid())
}
