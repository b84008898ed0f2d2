// Package apierr writes errors to clients in the errcode shape, with one extra guard: the field name is
// dropped unless it looks like a field name. common/report names the offending key for unknown and
// duplicate keys, and a key is client input that may be free text (or 60 KiB long); it must not be echoed.
package apierr

import (
	"context"
	"errors"
	"net/http"

	"github.com/epro-intake/common/errcode"

	"github.com/epro-intake/epro-api/internal/types"
)

// maxField is longer than any field path of a report ("answers.<item id>" with ids of up to 64 characters).
const maxField = 100

// Write writes err as an errcode JSON error, Retry-After included.
func Write(ctx context.Context, w http.ResponseWriter, err error) {
	errcode.Write(ctx, w, Sanitize(err))
}

// Item returns err as a batch item's error.
func Item(err error) *types.ItemError {
	_, e := errcode.Response(Sanitize(err))
	return &types.ItemError{Code: e.Code, Message: e.Message, Field: e.Field}
}

// Sanitize returns err with an unsafe Field removed. Errors that are not *errcode.Error pass unchanged.
func Sanitize(err error) error {
	var e *errcode.Error
	if !errors.As(err, &e) || SafeField(e.Field) {
		return err
	}
	c := *e
	c.Field = ""
	return &c
}

// SafeField reports whether f may be sent back: short, and made of letters, digits and . _ : - [ ].
func SafeField(f string) bool {
	if len(f) > maxField {
		return false
	}
	for i := 0; i < len(f); i++ {
		c := f[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}
