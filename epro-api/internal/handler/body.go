package handler

import (
	"compress/gzip"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/epro-intake/common/errcode"
)

// readJSONBody returns the request body once the Content-Type says JSON and the body fits in limit bytes.
//
// The POST handlers read the body themselves instead of calling httpx.Parse: httpx.Parse keeps the last of two
// duplicate keys, ignores data after the JSON value, and its errors quote the body, which would send a
// patient's answers back in a 400 and into logs. report.ParseSubmission and ParseBatch reject all three and
// never quote input.
func readJSONBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	// MaxBytesReader also stops bodies without Content-Length (chunked) at the limit.
	in := http.MaxBytesReader(w, r.Body, limit)
	gzipped := false
	switch strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))) {
	case "", "identity":
	case "gzip":
		// Decoded here rather than by go-zero's Gunzip middleware, which answers a bad gzip header with a bare
		// 400 and no error code. The limit applies to the decoded body too, so a small bomb cannot expand.
		zr, err := gzip.NewReader(in)
		if err != nil {
			if errors.As(err, new(*http.MaxBytesError)) {
				return nil, tooLarge(limit)
			}
			return nil, notGzip()
		}
		gzipped = true
		defer zr.Close()
		in = http.MaxBytesReader(w, zr, limit)
	default:
		return nil, errcode.New(http.StatusUnsupportedMediaType, errcode.UnsupportedMediaType,
			"Content-Encoding must be gzip or identity")
	}
	body, err := io.ReadAll(in)
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, tooLarge(limit)
		}
		if gzipped {
			return nil, notGzip()
		}
		return nil, errcode.New(http.StatusBadRequest, errcode.InvalidJSON, "the request body could not be read")
	}
	return body, nil
}

func notGzip() error {
	return errcode.New(http.StatusBadRequest, errcode.InvalidJSON, "the request body is not valid gzip (Content-Encoding: gzip)")
}

func tooLarge(limit int64) error {
	return errcode.New(http.StatusRequestEntityTooLarge, errcode.PayloadTooLarge,
		"the request body is larger than "+strconv.FormatInt(limit, 10)+" bytes")
}

// checkContentType accepts application/json with no parameter other than charset=utf-8: the parser reads
// UTF-8 only, so a body declared in another charset would be misread.
func checkContentType(v string) error {
	unsupported := errcode.New(http.StatusUnsupportedMediaType, errcode.UnsupportedMediaType,
		"Content-Type must be application/json (charset=utf-8 allowed)")
	if v == "" {
		return unsupported
	}
	mediaType, params, err := mime.ParseMediaType(v)
	if err != nil || mediaType != "application/json" {
		return unsupported
	}
	for k, val := range params {
		if k != "charset" || !strings.EqualFold(val, "utf-8") {
			return unsupported
		}
	}
	return nil
}
