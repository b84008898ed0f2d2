package store

import (
	"errors"
	"fmt"

	"github.com/go-sql-driver/mysql"
)

// permanentErrors are the MySQL (and MariaDB) errors that refuse a row for what it holds: the same row
// fails the same way on every try. Everything else (connection loss, deadlock 1213, lock wait timeout 1205,
// too many connections, a missing table during a deploy, go-mysql-server's catch-all 1105) is transient.
var permanentErrors = map[uint16]string{
	1048: "column cannot be null",
	1153: "packet larger than max_allowed_packet",
	1264: "out of range value",
	1265: "data truncated",
	1292: "incorrect value",
	1366: "incorrect string value",
	1367: "illegal value",
	1406: "data too long",
	1690: "value out of range",
	3140: "invalid JSON text",
	4025: "check constraint failed",
}

// Refusal returns, for an error that refuses a row for good, a short description naming the MySQL error
// number and never quoting the row (MySQL's own messages can quote the refused bytes); ok is false for a
// transient error or none. The driver's own refusal of a packet over max_allowed_packet counts too.
func Refusal(err error) (reason string, ok bool) {
	if err == nil {
		return "", false
	}
	if errors.Is(err, mysql.ErrPktTooLarge) {
		return "packet larger than max_allowed_packet (driver)", true
	}
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return "", false
	}
	what, ok := permanentErrors[me.Number]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("mysql error %d (%s)", me.Number, what), true
}
