package reconcile

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
)

// Formats of an exception list.
const (
	FormatCSV  = "csv"
	FormatJSON = "json"
)

// ExceptionWriter writes exceptions as they come, in CSV (a header line, then request_id, partition, offset,
// class, detail) or JSON (one array, streamed). Close ends the document.
type ExceptionWriter struct {
	w     io.Writer
	csv   *csv.Writer
	count int
}

// NewExceptionWriter starts a list in format on w.
func NewExceptionWriter(w io.Writer, format string) (*ExceptionWriter, error) {
	switch format {
	case FormatCSV:
		cw := csv.NewWriter(w)
		if err := cw.Write([]string{"request_id", "partition", "offset", "class", "detail"}); err != nil {
			return nil, err
		}
		return &ExceptionWriter{w: w, csv: cw}, nil
	case FormatJSON:
		if _, err := io.WriteString(w, "["); err != nil {
			return nil, err
		}
		return &ExceptionWriter{w: w}, nil
	}
	return nil, fmt.Errorf("format %q: want %s or %s", format, FormatCSV, FormatJSON)
}

// Write adds x.
func (e *ExceptionWriter) Write(x Exception) error {
	e.count++
	if e.csv != nil {
		return e.csv.Write([]string{x.RequestID, strconv.Itoa(x.Partition), strconv.FormatInt(x.Offset, 10), string(x.Class), x.Detail})
	}
	b, err := json.Marshal(x)
	if err != nil {
		return err
	}
	sep := ",\n"
	if e.count == 1 {
		sep = "\n"
	}
	_, err = io.WriteString(e.w, sep+string(b))
	return err
}

// Close ends the list and flushes it.
func (e *ExceptionWriter) Close() error {
	if e.csv != nil {
		e.csv.Flush()
		return e.csv.Error()
	}
	_, err := io.WriteString(e.w, "\n]\n")
	return err
}
