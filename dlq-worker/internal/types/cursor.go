package types

import (
	"encoding/base64"
	"strconv"
)

// Cursors are opaque to clients: the id of the last item of a page, base64url-encoded so nobody builds one
// by hand and relies on it being an id.

// Cursor returns the cursor that continues after id.
func Cursor(id uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("dl:" + strconv.FormatUint(id, 10)))
}

// ParseCursor returns the id a cursor continues after.
func ParseCursor(c string) (uint64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 4 || string(b[:3]) != "dl:" {
		return 0, false
	}
	id, err := strconv.ParseUint(string(b[3:]), 10, 64)
	return id, err == nil && id > 0
}
