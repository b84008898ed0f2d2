package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/epro-intake/common/errcode"
)

// maxDepth bounds nesting inside answers; questionnaires are shallow, and a deep document is an attack.
const maxDepth = 32

var submissionFields = map[string]bool{
	"requestId": true, "patientId": true, "trialId": true, "questionnaireId": true,
	"questionnaireVersion": true, "submittedAt": true, "answers": true,
	"deviceId": true, "appVersion": true, "locale": true,
}

var envelopeFields = func() map[string]bool {
	m := map[string]bool{"schemaVersion": true, "receivedAt": true, "sender": true, "original": true}
	for k := range submissionFields {
		m[k] = true
	}
	return m
}()

// CheckJSON reports whether data is exactly one JSON value of valid UTF-8, with no duplicate object keys, no
// nesting deeper than 32 and nothing after it. encoding/json alone accepts all of these, silently replacing
// invalid UTF-8 and keeping the last of two duplicate keys, which would alter a report without a word.
// The error is an *errcode.Error with code INVALID_JSON that never quotes the input.
func CheckJSON(data []byte) error {
	if err := checkJSON(data, nil, 0); err != nil {
		return err
	}
	if !json.Valid(data) {
		return syntaxError(data)
	}
	return nil
}

// decodeStrict decodes data into v after the checks of CheckJSON; with allowed set, data must also be an
// object whose keys are all in allowed, compared case-sensitively (encoding/json would match "RequestID" to
// requestId).
//
// The key scan runs before json.Unmarshal, which checks the syntax itself, so the input is read three times
// (UTF-8, keys, decode). A syntax error outranks whatever the scan found in a broken document. With depth > 0
// only the strings and keys of the first depth levels are checked: a batch leaves its items to
// ParseSubmission, so one bad item is refused on its own rather than sinking the batch.
func decodeStrict(data []byte, allowed map[string]bool, depth int, v any, fallback string) error {
	scanErr := checkJSON(data, allowed, depth)
	err := json.Unmarshal(data, v)
	switch {
	case err != nil && isSyntaxError(err):
		return syntaxError(data)
	case scanErr != nil:
		return scanErr
	case err != nil:
		return typeError(err, fallback)
	}
	return nil
}

// isSyntaxError reports whether err is a *json.SyntaxError; asked only of an error, so that the target of
// errors.As is not allocated for every report.
func isSyntaxError(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
}

// checkJSON checks UTF-8, duplicate keys, surrogate escapes, depth and (with allowed) the top-level keys, in
// the first depth levels (0: all). It does not check the rest of the syntax, and copes with broken input
// without reading past it.
func checkJSON(data []byte, allowed map[string]bool, depth int) error {
	// With a depth, the only strings checked are the top-level keys, which must be in allowed anyway.
	if depth == 0 && !utf8.Valid(data) {
		return errcode.Field(errcode.InvalidJSON, "", "body is not valid UTF-8")
	}
	if allowed != nil {
		if i := skipSpace(data, 0); i >= len(data) || data[i] != '{' {
			return errcode.Field(errcode.InvalidJSON, "", "body must be a JSON object")
		}
	}
	return scanKeys(data, allowed, depth)
}

// syntaxError describes why json.Valid refused data, without quoting it.
func syntaxError(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	var v json.RawMessage
	err := dec.Decode(&v)
	var se *json.SyntaxError
	switch {
	case err == nil:
		return errcode.Field(errcode.InvalidJSON, "", "unexpected data after the JSON value")
	case errors.As(err, &se):
		return errcode.Field(errcode.InvalidJSON, "", fmt.Sprintf("malformed JSON at byte %d", se.Offset))
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return errcode.Field(errcode.InvalidJSON, "", "JSON ends early")
	default:
		return errcode.Field(errcode.InvalidJSON, "", "malformed JSON")
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// frame is one open object or array during scanKeys.
type frame struct {
	object   bool
	keysFrom int             // an object's keys so far are scanKeys' keys[keysFrom:]; small objects: a slice beats a map
	set      map[string]bool // an object's keys once there are many
	lastKey  []byte          // the key whose value is being scanned
	index    int             // arrays: the current element
}

// seenKey is a key of an open object, sliced from the input, with its hash, which is compared first.
type seenKey struct {
	hash uint64
	key  []byte
}

// framePath names where the innermost open value of stack sits, for error fields: "answers.q1",
// "reports[2]". It is only built for an error: each open value sits at its parent's lastKey or index.
func framePath(stack []frame) string {
	path := ""
	for _, parent := range stack[:max(len(stack)-1, 0)] {
		if parent.object {
			path = join(path, string(parent.lastKey))
		} else {
			path = fmt.Sprintf("%s[%d]", path, parent.index)
		}
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// scanKeys finds duplicate keys, excessive depth and (with allowed) unknown top-level keys in data, which
// must already be valid JSON.
func scanKeys(data []byte, allowed map[string]bool, depth int) error {
	// The open objects' keys, the innermost object's last: one slice, in arrays on the stack for the usual
	// report, where a slice per object cost an allocation per growth.
	var frames [maxDepth]frame
	var keyBuf [64]seenKey
	stack, keys := frames[:0], keyBuf[:0]
	expectKey := false
	for i := 0; i < len(data); {
		switch c := data[i]; c {
		case '{', '[':
			if len(stack) >= maxDepth {
				return errcode.Field(errcode.InvalidJSON, "", "JSON nested too deeply")
			}
			stack = append(stack, frame{object: c == '{', keysFrom: len(keys)})
			expectKey = c == '{'
			i++
		case '}', ']':
			if len(stack) == 0 {
				return errcode.Field(errcode.InvalidJSON, "", "malformed JSON")
			}
			keys = keys[:stack[len(stack)-1].keysFrom]
			stack = stack[:len(stack)-1]
			expectKey = false
			i++
		case ',':
			if len(stack) == 0 {
				return errcode.Field(errcode.InvalidJSON, "", "malformed JSON")
			}
			if top := &stack[len(stack)-1]; top.object {
				expectKey = true
			} else {
				top.index++
			}
			i++
		case '"':
			checked := depth == 0 || len(stack) <= depth
			j := i + 1
			for j < len(data) && data[j] != '"' {
				if data[j] != '\\' {
					j++
					continue
				}
				n, ok := escapeLen(data, j)
				if !ok && checked {
					return errcode.Field(errcode.InvalidJSON, surrogateField(stack, expectKey, allowed),
						fmt.Sprintf("unpaired UTF-16 surrogate escape at byte %d", j))
				}
				j += max(n, 2)
			}
			if j >= len(data) {
				return errcode.Field(errcode.InvalidJSON, "", "JSON ends early")
			}
			if expectKey && len(stack) > 0 && checked {
				key := data[i+1 : j]
				if bytes.IndexByte(key, '\\') >= 0 {
					var unescaped string
					if err := json.Unmarshal(data[i:j+1], &unescaped); err != nil {
						return errcode.Field(errcode.InvalidJSON, "", "malformed JSON")
					}
					key = []byte(unescaped)
				}
				var err error
				if keys, err = addKey(stack, keys, key, allowed); err != nil {
					return err
				}
				expectKey = false
			}
			i = j + 1
		default:
			i++
		}
	}
	return nil
}

// escapeLen returns the length of the escape sequence at data[i] (a backslash), and false for an unpaired
// surrogate. A \\u escape of a UTF-16 surrogate must be a high surrogate followed by a low one, and the pair
// counts as one escape: encoding/json replaces an unpaired surrogate with U+FFFD without an error, which would
// alter a patient's text. An escape too short or not hex is left to the syntax check.
func escapeLen(data []byte, i int) (int, bool) {
	r, ok := hex4(data, i+2)
	if i+1 >= len(data) || data[i+1] != 'u' || !ok {
		return 2, true
	}
	switch {
	case r >= 0xDC00 && r <= 0xDFFF:
		return 0, false
	case r >= 0xD800 && r <= 0xDBFF:
		low, ok := hex4(data, i+8)
		if i+7 >= len(data) || data[i+6] != '\\' || data[i+7] != 'u' || !ok || low < 0xDC00 || low > 0xDFFF {
			return 0, false
		}
		return 12, true
	}
	return 6, true
}

// surrogateField names where an unpaired surrogate sits: the top-level field whose value holds it, when that
// is one of the allowed fields (so never text the client chose), or "" for a key or a document of any shape.
func surrogateField(stack []frame, expectKey bool, allowed map[string]bool) string {
	if len(stack) == 0 || allowed == nil || (len(stack) == 1 && expectKey) {
		return ""
	}
	if k := string(stack[0].lastKey); allowed[k] {
		return k
	}
	return ""
}

// hex4 reads four hex digits at data[i:].
func hex4(data []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// keySeed seeds the hashes of keys during scanKeys.
var keySeed = maphash.MakeSeed()

// addKey records key as the next key of the innermost open object, whose keys so far are keys[keysFrom:],
// and returns keys with it.
func addKey(stack []frame, keys []seenKey, key []byte, allowed map[string]bool) ([]seenKey, error) {
	top := &stack[len(stack)-1]
	dup := top.set[string(key)]
	var h uint64
	if top.set == nil {
		h = maphash.Bytes(keySeed, key)
		for _, k := range keys[top.keysFrom:] {
			if k.hash == h && bytes.Equal(k.key, key) {
				dup = true
				break
			}
		}
	}
	if dup {
		return keys, errcode.Field(errcode.InvalidJSON, join(framePath(stack), string(key)), "duplicate key")
	}
	if top.set != nil {
		top.set[string(key)] = true
	} else if keys = append(keys, seenKey{h, key}); len(keys)-top.keysFrom > 64 {
		top.set = make(map[string]bool, 2*(len(keys)-top.keysFrom))
		for _, k := range keys[top.keysFrom:] {
			top.set[string(k.key)] = true
		}
	}
	top.lastKey = key
	if len(stack) == 1 && allowed != nil && !allowed[string(key)] {
		return keys, unknownField(string(key), allowed)
	}
	return keys, nil
}

// unknownField describes a top-level key that is not a field, without echoing it: the key is client-chosen
// text, which may be patient text. A known field in another letter case is named in its right case.
func unknownField(key string, allowed map[string]bool) error {
	names := make([]string, 0, len(allowed))
	for name := range allowed {
		if strings.EqualFold(name, key) {
			return errcode.Field(errcode.ValidationFailed, name, "field names are case-sensitive: use "+name)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return errcode.Field(errcode.ValidationFailed, "", "unknown field; the fields are "+strings.Join(names, ", "))
}

// typeError turns encoding/json's type mismatch into a validation error naming the field, without the value.
func typeError(err error, fallback string) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return errcode.Field(errcode.ValidationFailed, te.Field, "has the wrong type")
	}
	return errcode.Field(errcode.ValidationFailed, "", fallback)
}

// ParseSubmission strictly decodes one report as sent by a patient app, and keeps data itself as the
// submission's Original (not copied: data must not change afterwards). It does not validate field values;
// call Validate for that.
func ParseSubmission(data []byte) (Submission, error) {
	s, ok := fastSubmission(data)
	if !ok {
		if err := decodeStrict(data, submissionFields, 0, &s, "report fields have the wrong types"); err != nil {
			return Submission{}, err
		}
	}
	if string(s.Answers) == "null" {
		s.Answers = nil
	}
	s.Original = data
	return s, nil
}

// ParseEnvelope strictly decodes a record value from Topic. Its Answers may share data's bytes (not copied: data
// must not change afterwards). It does not validate field values.
func ParseEnvelope(data []byte) (Envelope, error) {
	env, ok := fastEnvelope(data)
	if !ok {
		var err error
		if env, err = parseEnvelopeSlow(data); err != nil {
			return Envelope{}, err
		}
	}
	if string(env.Answers) == "null" {
		env.Answers = nil
	}
	return env, nil
}

// parseEnvelopeSlow is ParseEnvelope through decodeStrict, before the null-answers rule.
func parseEnvelopeSlow(data []byte) (Envelope, error) {
	var e struct {
		Envelope
		// ReceivedAt is decoded through a pointer to tell a missing field from a zero time.
		ReceivedAt *time.Time `json:"receivedAt"`
	}
	if err := decodeStrict(data, envelopeFields, 0, &e, "envelope fields have the wrong types"); err != nil {
		return Envelope{}, otherSchema(data, err)
	}
	if e.ReceivedAt == nil {
		return Envelope{}, otherSchema(data, errcode.Field(errcode.ValidationFailed, "receivedAt", "is required"))
	}
	e.Envelope.ReceivedAt = *e.ReceivedAt
	return e.Envelope, nil
}

// ParseBatch strictly decodes the body of POST /v1/reports/batch, {"reports":[...]}, into its items, left
// undecoded so that each one is parsed and judged on its own.
func ParseBatch(data []byte, maxItems int) ([]json.RawMessage, error) {
	var body struct {
		Reports *[]json.RawMessage `json:"reports"`
	}
	// Depth 1: the batch object's own keys; each item is checked in full by ParseSubmission.
	if err := decodeStrict(data, map[string]bool{"reports": true}, 1, &body, "reports must be an array of reports"); err != nil {
		return nil, err
	}
	if body.Reports == nil {
		return nil, errcode.Field(errcode.ValidationFailed, "reports", "is required")
	}
	items := *body.Reports
	if len(items) == 0 {
		return nil, errcode.Field(errcode.ValidationFailed, "reports", "must not be empty")
	}
	if len(items) > maxItems {
		return nil, errcode.Field(errcode.ValidationFailed, "reports", fmt.Sprintf("at most %d reports per batch", maxItems))
	}
	return items, nil
}

// otherSchema replaces err by "unsupported schema version" when data is an envelope of another schema
// version, whose fields are expected to differ: that is the reason an operator needs to see.
func otherSchema(data []byte, err error) error {
	var v struct {
		SchemaVersion int `json:"schemaVersion"`
	}
	if json.Unmarshal(data, &v) == nil && v.SchemaVersion != 0 && v.SchemaVersion != SchemaVersion {
		return errcode.Field(errcode.ValidationFailed, "schemaVersion", fmt.Sprintf("unsupported schema version %d", v.SchemaVersion))
	}
	return err
}
