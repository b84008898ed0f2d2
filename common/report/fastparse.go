package report

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/maphash"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The single-pass parse. decodeStrict reads a body four times (UTF-8, keys, encoding/json's syntax check and
// its decode); on the consumer, where each record holds the report twice (its fields and, base64, the
// original), that was half of epro-mq's CPU per report. fastSubmission and fastEnvelope read the body once
// and accept only what they fully decide: every member a known field, plain strings (escapes only inside
// answers), types as the struct wants them. Anything else (an error of any kind, an escaped field string, a
// null where a value is required, a wrong type, a deep or wide document) makes them decline, and the caller
// takes decodeStrict, which says exactly why. So they never decide an error, and what they accept decodes to
// what decodeStrict returns for the same bytes (FuzzFastParseAgrees holds them to it).

// field is one top-level member: the key, and the value's bytes as they stand.
type field struct {
	key, value []byte
}

// maxFastMembers bounds the members of one object the single pass checks for duplicates; a wider object
// is left to scanKeys, whose map copes with it.
const maxFastMembers = 128

// keyPool holds the key stacks of walkers: an array on the stack would move to the heap (the walker appends to
// it), and a record's two parses would each allocate one.
var keyPool = sync.Pool{New: func() any { keys := make([]seenKey, 0, 64); return &keys }}

// walker reads one JSON document.
type walker struct {
	data []byte
	keys []seenKey // the keys of the open objects, innermost last
}

// topMembers checks data in one pass as decodeStrict would with allowed and depth 0, and returns the
// top-level members in order; ok is false when data is not such an object or the pass declines it. The
// members' keys are plain (unescaped) names in allowed, each once; buf is reused for the result.
func topMembers(data []byte, allowed map[string]bool, buf []field) ([]field, bool) {
	if !utf8.Valid(data) {
		return nil, false
	}
	keys := keyPool.Get().(*[]seenKey)
	w := walker{data: data, keys: (*keys)[:0]}
	defer func() {
		// The keys slice data: cleared, so the pool holds no report's bytes.
		clear(w.keys[:cap(w.keys)])
		*keys = w.keys[:0]
		keyPool.Put(keys)
	}()
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}
	members := buf[:0]
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return members, skipSpace(data, i+1) == len(data)
	}
	for {
		end, escaped, ok := w.str(i)
		if !ok || escaped {
			return nil, false
		}
		key := data[i+1 : end-1]
		if !allowed[string(key)] || len(members) >= maxFastMembers {
			return nil, false
		}
		for _, m := range members {
			if bytes.Equal(m.key, key) {
				return nil, false
			}
		}
		if i = skipSpace(data, end); i >= len(data) || data[i] != ':' {
			return nil, false
		}
		start := skipSpace(data, i+1)
		if end, ok = w.value(start, 1); !ok {
			return nil, false
		}
		members = append(members, field{key: key, value: data[start:end:end]})
		if i = skipSpace(data, end); i >= len(data) {
			return nil, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return members, skipSpace(data, i+1) == len(data)
		default:
			return nil, false
		}
	}
}

// value checks the JSON value at data[i], nested inside depth open containers, and returns its end.
func (w *walker) value(i, depth int) (int, bool) {
	data := w.data
	if i >= len(data) {
		return 0, false
	}
	switch c := data[i]; {
	case c == '"':
		end, _, ok := w.str(i)
		return end, ok
	case c == '{':
		return w.object(i, depth+1)
	case c == '[':
		return w.array(i, depth+1)
	case c == 't':
		return literal(data, i, "true")
	case c == 'f':
		return literal(data, i, "false")
	case c == 'n':
		return literal(data, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		return number(data, i)
	}
	return 0, false
}

// object checks the object at data[i], which opens nesting level depth, with no key twice.
func (w *walker) object(i, depth int) (int, bool) {
	if depth >= maxDepth {
		return 0, false
	}
	data := w.data
	from := len(w.keys)
	defer func() { w.keys = w.keys[:from] }()
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		end, escaped, ok := w.str(i)
		if !ok || escaped || len(w.keys)-from >= maxFastMembers {
			return 0, false
		}
		key := data[i+1 : end-1]
		h := maphash.Bytes(keySeed, key)
		for _, k := range w.keys[from:] {
			if k.hash == h && bytes.Equal(k.key, key) {
				return 0, false
			}
		}
		w.keys = append(w.keys, seenKey{h, key})
		if i = skipSpace(data, end); i >= len(data) || data[i] != ':' {
			return 0, false
		}
		if i, ok = w.value(skipSpace(data, i+1), depth); !ok {
			return 0, false
		}
		if i = skipSpace(data, i); i >= len(data) {
			return 0, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// array checks the array at data[i], which opens nesting level depth.
func (w *walker) array(i, depth int) (int, bool) {
	if depth >= maxDepth {
		return 0, false
	}
	data := w.data
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = w.value(i, depth); !ok {
			return 0, false
		}
		if i = skipSpace(data, i); i >= len(data) {
			return 0, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case ']':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// str checks the string at data[i] (valid UTF-8 already) and returns the index after its closing quote and
// whether it holds an escape. Control characters, unknown escapes and unpaired surrogate escapes fail it.
func (w *walker) str(i int) (int, bool, bool) {
	data := w.data
	if i >= len(data) || data[i] != '"' {
		return 0, false, false
	}
	escaped := false
	for j := i + 1; j < len(data); {
		for j+8 <= len(data) && !special8(binary.LittleEndian.Uint64(data[j:])) {
			j += 8
		}
		if j >= len(data) {
			break
		}
		switch c := data[j]; {
		case c == '"':
			return j + 1, escaped, true
		case c < 0x20:
			return 0, false, false
		case c == '\\':
			if j+1 >= len(data) {
				return 0, false, false
			}
			escaped = true
			switch data[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if _, ok := hex4(data, j+2); !ok {
					return 0, false, false
				}
				n, ok := escapeLen(data, j)
				if !ok {
					return 0, false, false
				}
				j += n
			default:
				return 0, false, false
			}
		default:
			j++
		}
	}
	return 0, false, false
}

// special8 reports whether any of the eight bytes in x ends a string's plain run: a quote, a backslash or a
// control character (the classic bit tricks: a byte below n, a byte equal to c, eight at once).
func special8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := (x - ones*0x20) &^ x
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	return (below|(quote-ones)&^quote|(backslash-ones)&^backslash)&highs != 0
}

// literal checks that data[i:] starts with word.
func literal(data []byte, i int, word string) (int, bool) {
	if len(data)-i < len(word) || string(data[i:i+len(word)]) != word {
		return 0, false
	}
	return i + len(word), true
}

// number checks the JSON number at data[i]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func number(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = digits(data, i)
	default:
		return 0, false
	}
	if i < len(data) && data[i] == '.' {
		j := digits(data, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := digits(data, i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

func digits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}

// plainString sets *dst to the string value v when it has no escapes; null leaves *dst as it is, as
// encoding/json does. Anything else declines.
func plainString(v []byte, dst *string) bool {
	if string(v) == "null" {
		return true
	}
	if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
		return false
	}
	*dst = string(v[1 : len(v)-1])
	return true
}

// submissionField sets the field of s named key from its value v; false declines.
func submissionField(s *Submission, key string, v []byte) bool {
	switch key {
	case "requestId":
		return plainString(v, &s.RequestID)
	case "patientId":
		return plainString(v, &s.PatientID)
	case "trialId":
		return plainString(v, &s.TrialID)
	case "questionnaireId":
		return plainString(v, &s.QuestionnaireID)
	case "questionnaireVersion":
		return plainString(v, &s.QuestionnaireVersion)
	case "submittedAt":
		return plainString(v, &s.SubmittedAt)
	case "deviceId":
		return plainString(v, &s.DeviceID)
	case "appVersion":
		return plainString(v, &s.AppVersion)
	case "locale":
		return plainString(v, &s.Locale)
	case "answers":
		s.Answers = v
		return true
	}
	return false
}

// fastSubmission is ParseSubmission's single pass, before its null-answers rule.
func fastSubmission(data []byte) (Submission, bool) {
	var buf [16]field
	members, ok := topMembers(data, submissionFields, buf[:0])
	if !ok {
		return Submission{}, false
	}
	var s Submission
	for _, m := range members {
		if !submissionField(&s, string(m.key), m.value) {
			return Submission{}, false
		}
	}
	return s, true
}

// fastEnvelope is ParseEnvelope's single pass, before its null-answers rule; it declines an envelope
// without receivedAt, which ParseEnvelope refuses.
func fastEnvelope(data []byte) (Envelope, bool) {
	var buf [16]field
	members, ok := topMembers(data, envelopeFields, buf[:0])
	if !ok {
		return Envelope{}, false
	}
	var e Envelope
	var s Submission
	received := false
	for _, m := range members {
		v := m.value
		switch key := string(m.key); key {
		case "schemaVersion":
			if string(v) == "null" {
				continue
			}
			if len(v) > 9 || bytes.ContainsAny(v, ".eE") {
				return Envelope{}, false
			}
			n, err := strconv.Atoi(string(v))
			if err != nil {
				return Envelope{}, false
			}
			e.SchemaVersion = n
		case "receivedAt":
			var t time.Time
			if string(v) == "null" || t.UnmarshalJSON(v) != nil {
				return Envelope{}, false
			}
			e.ReceivedAt, received = t, true
		case "original":
			if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
				return Envelope{}, false
			}
			b := make([]byte, base64.StdEncoding.DecodedLen(len(v)-2))
			n, err := base64.StdEncoding.Decode(b, v[1:len(v)-1])
			if err != nil {
				return Envelope{}, false
			}
			e.Original = b[:n]
		case "sender":
			if string(v) == "null" {
				continue
			}
			sender, ok := fastSender(v)
			if !ok {
				return Envelope{}, false
			}
			e.Sender = sender
		default:
			if !submissionField(&s, key, v) {
				return Envelope{}, false
			}
		}
	}
	if !received {
		return Envelope{}, false
	}
	e.RequestID, e.PatientID, e.TrialID = s.RequestID, s.PatientID, s.TrialID
	e.QuestionnaireID, e.QuestionnaireVersion, e.SubmittedAt = s.QuestionnaireID, s.QuestionnaireVersion, s.SubmittedAt
	e.Answers, e.DeviceID, e.AppVersion, e.Locale = s.Answers, s.DeviceID, s.AppVersion, s.Locale
	return e, true
}

// fastSender reads a sender object whose members are exactly named issuer and subject, with plain strings;
// encoding/json's case-insensitive and unknown names are left to it.
func fastSender(v []byte) (*Sender, bool) {
	var buf [4]field
	members, ok := topMembers(v, senderFields, buf[:0])
	if !ok {
		return nil, false
	}
	var s Sender
	for _, m := range members {
		dst := &s.Issuer
		if string(m.key) == "subject" {
			dst = &s.Subject
		}
		if !plainString(m.value, dst) {
			return nil, false
		}
	}
	return &s, true
}

var senderFields = map[string]bool{"issuer": true, "subject": true}
