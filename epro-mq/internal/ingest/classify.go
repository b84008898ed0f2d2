package ingest

import (
	"errors"
	"strconv"

	"github.com/go-sql-driver/mysql"
)

// PermanentError marks a failure that retrying the same record will not cure by itself (bad data, an unknown
// questionnaire). Such a record gets MaxAttempts tries and is then dead-lettered. Every other error is treated
// as transient: retried without limit and never dead-lettered, so an outage cannot flood the dead-letter topic.
type PermanentError struct {
	// Message is safe to log and to put in a header: it never contains report content.
	Message string
	Err     error
}

func (e *PermanentError) Error() string { return e.Message }
func (e *PermanentError) Unwrap() error { return e.Err }

// MySQL errors about the row itself. Everything else from MySQL (deadlock 1213, lock wait timeout 1205, too
// many connections 1040, a missing table during a deploy, a lost connection) is about the server.
var permanentMySQL = map[uint16]bool{
	1048: true, // column cannot be null
	1264: true, // out of range value
	1292: true, // incorrect datetime value
	1366: true, // incorrect string value
	1406: true, // data too long
	1452: true, // foreign key fails
}

// classify returns a *PermanentError for errors about the record, or nil for transient ones.
func classify(err error) *PermanentError {
	var pe *PermanentError
	if errors.As(err, &pe) {
		return pe
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) && permanentMySQL[me.Number] {
		// The server's message can quote the offending value, which is patient data: keep only the number.
		return &PermanentError{Message: "mysql rejected the row: error " + strconv.Itoa(int(me.Number)), Err: err}
	}
	return nil
}
