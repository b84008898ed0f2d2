package report

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// ContentHash returns the SHA-256 of s's canonical content: what decides whether two submissions under one
// request id are the same report (a retry, answered with the original receipt) or different ones (a conflict).
//
// The canonical content is one JSON object of the submission's fields, written the way RFC 8785 (JCS) writes
// JSON: keys sorted by their UTF-16 code units, no insignificant whitespace, strings with only the escapes
// JSON requires (so "<", "\u003c" and "\u003C" are one text). It departs from JCS in three places, each so that
// what a report means, and only that, decides:
//   - numbers are written as their exact decimal value (digits without leading or trailing zeros and a
//     decimal exponent: 1, 1.0 and 10e-1 are one number), not JCS's float64 spelling, under which two
//     different large or precise answers could hash alike;
//   - the requestId is in its canonical lowercase form, and submittedAt is written in its own offset with
//     the fraction trimmed ("...20:05:00.000+01:00" is "...20:05:00+01:00"), because the stored columns
//     do not tell those spellings apart either; another offset for the same instant stays different;
//   - an optional field that is empty is left out, as if absent: the envelope cannot tell them apart.
//
// The patientId is part of the content, so one request id sent for two patients is a conflict. The
// requestId is included as well, although every comparison is between submissions under one id and it never
// changes an outcome: a stored hash then names one submission completely, on its own. receivedAt and
// Original are not content: they say when and in which bytes the report came, not what it says.
//
// It fails only when Answers is not well-formed JSON, which ParseSubmission rules out.
//
// Hashes are stored, so the canonical form never changes. It was first written by decoding the answers with
// encoding/json (Decoder.UseNumber) into interface{} values; it is now written in one pass over the answers'
// bytes, which reads them exactly as that decoder did, even where ParseSubmission would refuse them: invalid
// UTF-8 and unpaired surrogate escapes read as U+FFFD, of two equal keys the later counts, nesting deeper than
// 10000 levels is an error, and after the value only JSON whitespace, or anything from a ']' or '}' on (which
// Decoder.More took for the end), may follow. content_oracle_test.go keeps the first version and
// FuzzContentHash compares the two.
func (s Submission) ContentHash() ([sha256.Size]byte, error) {
	c := canonicalizers.Get().(*canonicalizer)
	defer c.release()
	var err error
	if c.out, err = c.appendContent(c.out[:0], s); err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(c.out), nil
}

// appendContent appends s's canonical content to dst. The members are written in their sorted order: the
// names are fixed and ASCII, so byte order is UTF-16 order.
func (c *canonicalizer) appendContent(dst []byte, s Submission) ([]byte, error) {
	id := s.RequestID
	if canonical, ok := CanonicalRequestID(id); ok {
		id = canonical
	}
	var at [64]byte
	submittedAt := []byte(s.SubmittedAt)
	if t, err := ParseSubmittedAt(s.SubmittedAt); err == nil {
		submittedAt = t.AppendFormat(at[:0], time.RFC3339Nano)
	}
	dst = append(dst, '{')
	first := len(dst)
	if len(bytes.TrimSpace(s.Answers)) > 0 {
		dst = append(dst, `"answers":`...)
		var err error
		if dst, err = c.appendAnswers(dst, s.Answers); err != nil {
			return dst, fmt.Errorf("content hash: answers: %w", err)
		}
	}
	for _, f := range [...]struct {
		name  string
		value []byte
	}{
		{`"appVersion":`, []byte(s.AppVersion)}, {`"deviceId":`, []byte(s.DeviceID)}, {`"locale":`, []byte(s.Locale)},
		{`"patientId":`, []byte(s.PatientID)}, {`"questionnaireId":`, []byte(s.QuestionnaireID)},
		{`"questionnaireVersion":`, []byte(s.QuestionnaireVersion)}, {`"requestId":`, []byte(id)},
		{`"submittedAt":`, submittedAt}, {`"trialId":`, []byte(s.TrialID)},
	} {
		if len(f.value) == 0 {
			continue
		}
		if len(dst) > first {
			dst = append(dst, ',')
		}
		dst = append(dst, f.name...)
		dst = appendCanonicalString(dst, f.value)
	}
	return append(dst, '}'), nil
}

// maxAnswersDepth is encoding/json's limit on nesting, which the canonical form inherited.
const maxAnswersDepth = 10000

var (
	errMalformed = errors.New("malformed JSON")
	errEnd       = errors.New("JSON ends early")
	errTrailing  = errors.New("data after the JSON value")
	errTooDeep   = errors.New("JSON nested too deeply")
)

// canonicalizer writes JSON in canonical form in one pass. Objects are written member by member as they come
// and reordered in place when their keys were not in order.
type canonicalizer struct {
	out     []byte   // the canonical document, kept between uses
	data    []byte   // the JSON being read
	i       int      // the read position in data
	members []member // the members of the open objects, the innermost last
	keys    []byte   // their keys, decoded
	tmp     []byte   // a copy of an object's members while they are reordered
}

// member is one object member: its decoded key is keys[keyOff:keyEnd], its canonical `"key":value` is
// out[start:end] of the buffer being written.
type member struct {
	keyOff, keyEnd, start, end int
}

var canonicalizers = sync.Pool{New: func() any { return new(canonicalizer) }}

// release returns c to the pool, unless it grew on a very large report, which should not be kept.
func (c *canonicalizer) release() {
	const keep = 64 << 10
	c.data = nil
	if cap(c.out) > keep || cap(c.tmp) > keep || cap(c.keys) > keep || cap(c.members) > keep/32 {
		return
	}
	c.members, c.keys = c.members[:0], c.keys[:0]
	canonicalizers.Put(c)
}

// appendAnswers appends the canonical form of the JSON value in data.
func (c *canonicalizer) appendAnswers(dst, data []byte) ([]byte, error) {
	c.data, c.i = data, skipSpace(data, 0)
	dst, err := c.value(dst, 0)
	if err != nil {
		return dst, err
	}
	// encoding/json's Decoder.More, which the first version asked, reports the end at a ']' or '}'.
	if i := skipSpace(data, c.i); i < len(data) && data[i] != ']' && data[i] != '}' {
		return dst, errTrailing
	}
	return dst, nil
}

// value appends the canonical form of the value at c.i, inside depth open objects and arrays.
func (c *canonicalizer) value(dst []byte, depth int) ([]byte, error) {
	if c.i >= len(c.data) {
		return dst, errEnd
	}
	switch b := c.data[c.i]; {
	case b == '{':
		return c.object(dst, depth+1)
	case b == '[':
		return c.array(dst, depth+1)
	case b == '"':
		return c.string(dst, false)
	case b == '-' || b >= '0' && b <= '9':
		return c.number(dst)
	case b == 't':
		return c.literal(dst, "true")
	case b == 'f':
		return c.literal(dst, "false")
	case b == 'n':
		return c.literal(dst, "null")
	}
	return dst, errMalformed
}

func (c *canonicalizer) literal(dst []byte, lit string) ([]byte, error) {
	end := c.i + len(lit)
	if end > len(c.data) {
		if string(c.data[c.i:]) == lit[:len(c.data)-c.i] {
			return dst, errEnd
		}
		return dst, errMalformed
	}
	if string(c.data[c.i:end]) != lit {
		return dst, errMalformed
	}
	c.i = end
	return append(dst, lit...), nil
}

// expect skips whitespace and then b.
func (c *canonicalizer) expect(b byte) error {
	c.i = skipSpace(c.data, c.i)
	if c.i >= len(c.data) {
		return errEnd
	}
	if c.data[c.i] != b {
		return errMalformed
	}
	c.i++
	c.i = skipSpace(c.data, c.i)
	return nil
}

func (c *canonicalizer) array(dst []byte, depth int) ([]byte, error) {
	if depth > maxAnswersDepth {
		return dst, errTooDeep
	}
	c.i = skipSpace(c.data, c.i+1)
	dst = append(dst, '[')
	if c.i < len(c.data) && c.data[c.i] == ']' {
		c.i++
		return append(dst, ']'), nil
	}
	for {
		var err error
		if dst, err = c.value(dst, depth); err != nil {
			return dst, err
		}
		c.i = skipSpace(c.data, c.i)
		if c.i >= len(c.data) {
			return dst, errEnd
		}
		switch c.data[c.i] {
		case ',':
			c.i = skipSpace(c.data, c.i+1)
			dst = append(dst, ',')
		case ']':
			c.i++
			return append(dst, ']'), nil
		default:
			return dst, errMalformed
		}
	}
}

func (c *canonicalizer) object(dst []byte, depth int) ([]byte, error) {
	if depth > maxAnswersDepth {
		return dst, errTooDeep
	}
	c.i = skipSpace(c.data, c.i+1)
	start := len(dst)
	dst = append(dst, '{')
	if c.i < len(c.data) && c.data[c.i] == '}' {
		c.i++
		return append(dst, '}'), nil
	}
	memberMark, keyMark := len(c.members), len(c.keys)
	ordered := true
	for {
		if c.i >= len(c.data) {
			return dst, errEnd
		}
		if c.data[c.i] != '"' {
			return dst, errMalformed
		}
		m := member{keyOff: len(c.keys), start: len(dst)}
		var err error
		if dst, err = c.string(dst, true); err != nil {
			return dst, err
		}
		m.keyEnd = len(c.keys)
		if err := c.expect(':'); err != nil {
			return dst, err
		}
		dst = append(dst, ':')
		if dst, err = c.value(dst, depth); err != nil {
			return dst, err
		}
		m.end = len(dst)
		if n := len(c.members); n > memberMark && ordered {
			prev := c.members[n-1]
			ordered = compareUTF16(c.keys[prev.keyOff:prev.keyEnd], c.keys[m.keyOff:m.keyEnd]) < 0
		}
		c.members = append(c.members, m)
		c.i = skipSpace(c.data, c.i)
		if c.i >= len(c.data) {
			return dst, errEnd
		}
		if c.data[c.i] == '}' {
			c.i++
			break
		}
		if c.data[c.i] != ',' {
			return dst, errMalformed
		}
		c.i = skipSpace(c.data, c.i+1)
		dst = append(dst, ',')
	}
	if !ordered {
		dst = c.reorder(dst, start, c.members[memberMark:])
	}
	c.members, c.keys = c.members[:memberMark], c.keys[:keyMark]
	return append(dst, '}'), nil
}

// reorder rewrites the members of the object that starts at dst[start] in key order, keeping only the last of
// equal keys (encoding/json's map kept the last).
func (c *canonicalizer) reorder(dst []byte, start int, ms []member) []byte {
	key := func(m member) []byte { return c.keys[m.keyOff:m.keyEnd] }
	slices.SortStableFunc(ms, func(a, b member) int { return compareUTF16(key(a), key(b)) })
	base := start + 1
	c.tmp = append(c.tmp[:0], dst[base:]...)
	dst = dst[:base]
	for j, m := range ms {
		if j+1 < len(ms) && bytes.Equal(key(m), key(ms[j+1])) {
			continue
		}
		if len(dst) > base {
			dst = append(dst, ',')
		}
		dst = append(dst, c.tmp[m.start-base:m.end-base]...)
	}
	return dst
}

// string appends the canonical form of the string at c.i, decoded as encoding/json decodes strings, and with
// key set also appends the decoded text to c.keys.
func (c *canonicalizer) string(dst []byte, key bool) ([]byte, error) {
	data := c.data
	c.i++
	dst = append(dst, '"')
	for {
		j := c.i
		for j < len(data) && data[j] >= 0x20 && data[j] != '"' && data[j] != '\\' && data[j] < utf8.RuneSelf {
			j++
		}
		dst = append(dst, data[c.i:j]...)
		if key {
			c.keys = append(c.keys, data[c.i:j]...)
		}
		c.i = j
		if j >= len(data) {
			return dst, errEnd
		}
		var r rune
		switch b := data[j]; {
		case b == '"':
			c.i++
			return append(dst, '"'), nil
		case b < 0x20:
			return dst, errMalformed
		case b == '\\':
			var err error
			if r, err = c.escape(); err != nil {
				return dst, err
			}
		default:
			var size int
			r, size = utf8.DecodeRune(data[j:]) // invalid UTF-8 is U+FFFD, one per byte, as encoding/json reads it
			c.i += size
		}
		dst = appendCanonicalRune(dst, r)
		if key {
			c.keys = utf8.AppendRune(c.keys, r)
		}
	}
}

// escape reads the escape sequence at c.i, as encoding/json reads it: a \\u escape of a surrogate pair is one
// character, and a surrogate escape that is not half of a pair is U+FFFD.
func (c *canonicalizer) escape() (rune, error) {
	data := c.data
	if c.i+1 >= len(data) {
		return 0, errEnd
	}
	e := data[c.i+1]
	c.i += 2
	switch e {
	case '"', '\\', '/':
		return rune(e), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
	default:
		return 0, errMalformed
	}
	r, ok := hex4(data, c.i)
	if !ok {
		if c.i+4 > len(data) {
			return 0, errEnd
		}
		return 0, errMalformed
	}
	c.i += 4
	if !utf16.IsSurrogate(r) {
		return r, nil
	}
	low := rune(-1)
	if c.i+1 < len(data) && data[c.i] == '\\' && data[c.i+1] == 'u' {
		if v, ok := hex4(data, c.i+2); ok {
			low = v
		}
	}
	if pair := utf16.DecodeRune(r, low); pair != unicode.ReplacementChar {
		c.i += 6
		return pair, nil
	}
	return unicode.ReplacementChar, nil
}

// number appends the canonical form of the number at c.i (see appendCanonicalNumber).
func (c *canonicalizer) number(dst []byte) ([]byte, error) {
	data, i := c.data, c.i
	neg := data[i] == '-'
	if neg {
		i++
	}
	digits := func() int {
		n := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		return i - n
	}
	if i >= len(data) {
		return dst, errEnd
	}
	intStart := i
	switch {
	case data[i] == '0':
		i++
	case data[i] >= '1' && data[i] <= '9':
		digits()
	default:
		return dst, errMalformed
	}
	intPart := data[intStart:i]
	var frac, exp []byte
	if i < len(data) && data[i] == '.' {
		i++
		fracStart := i
		if digits() == 0 {
			return dst, c.numberEnd(i)
		}
		frac = data[fracStart:i]
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		expStart := i
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if digits() == 0 {
			return dst, c.numberEnd(i)
		}
		exp = data[expStart:i]
	}
	c.i = i
	return appendCanonicalNumber(dst, neg, intPart, frac, exp), nil
}

// numberEnd is the error for a number cut short at data[i].
func (c *canonicalizer) numberEnd(i int) error {
	if i >= len(c.data) {
		return errEnd
	}
	return errMalformed
}

// appendCanonicalNumber appends the number -?intPart.frac e exp (frac and exp possibly empty, exp with its
// sign) as its exact value: an optional "-", the significant digits without leading or trailing zeros, and
// "e" with a decimal exponent when it is not zero. Zero (and -0) is "0". 1500, 1.5e3 and 15E+2 are all
// "15e2"; 0.10 is "1e-1".
func appendCanonicalNumber(dst []byte, neg bool, intPart, frac, exp []byte) []byte {
	n := len(intPart) + len(frac)
	digit := func(k int) byte {
		if k < len(intPart) {
			return intPart[k]
		}
		return frac[k-len(intPart)]
	}
	first := 0
	for first < n && digit(first) == '0' {
		first++
	}
	if first == n {
		return append(dst, '0')
	}
	last := n - 1
	for digit(last) == '0' {
		last--
	}
	if neg {
		dst = append(dst, '-')
	}
	if first < len(intPart) {
		dst = append(dst, intPart[first:min(last+1, len(intPart))]...)
	}
	if last >= len(intPart) {
		dst = append(dst, frac[max(first-len(intPart), 0):last+1-len(intPart)]...)
	}
	// value = significant digits × 10^(exp − len(frac) + trailing zeros)
	shift := int64(n-1-last) - int64(len(frac))
	expNeg := len(exp) > 0 && exp[0] == '-'
	if len(exp) > 0 && (exp[0] == '-' || exp[0] == '+') {
		exp = exp[1:]
	}
	for len(exp) > 0 && exp[0] == '0' {
		exp = exp[1:]
	}
	if len(exp) <= 18 { // the common case, without math/big
		e := int64(0)
		for _, d := range exp {
			e = e*10 + int64(d-'0')
		}
		if expNeg {
			e = -e
		}
		if e += shift; e != 0 {
			dst = append(dst, 'e')
			dst = strconv.AppendInt(dst, e, 10)
		}
		return dst
	}
	e, _ := new(big.Int).SetString(string(exp), 10) // exp is all digits
	if expNeg {
		e.Neg(e)
	}
	if e.Add(e, big.NewInt(shift)); e.Sign() != 0 {
		dst = append(dst, 'e')
		dst = e.Append(dst, 10)
	}
	return dst
}

// compareUTF16 orders strings by their UTF-16 code units, as JCS sorts keys. It differs from byte order only
// where characters above U+FFFF meet characters from U+E000 to U+FFFF. a and b are valid UTF-8.
func compareUTF16(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	switch {
	case i == len(a) || i == len(b):
		return len(a) - len(b)
	case a[i] < utf8.RuneSelf || b[i] < utf8.RuneSelf:
		return int(a[i]) - int(b[i])
	}
	// Both differ inside a non-ASCII character, which starts at the same place in both.
	for i > 0 && !utf8.RuneStart(a[i]) {
		i--
	}
	ra, _ := utf8.DecodeRune(a[i:])
	rb, _ := utf8.DecodeRune(b[i:])
	if (ra > 0xFFFF) != (rb > 0xFFFF) {
		// One is a surrogate pair, whose first unit (U+D800..U+DBFF) sorts after U+0000..U+D7FF and before
		// U+E000..U+FFFF; valid UTF-8 holds no surrogates.
		if ra > 0xFFFF {
			return 0xD800 - int(rb)
		}
		return int(ra) - 0xD800
	}
	return int(ra) - int(rb)
}

// appendCanonicalString appends s as JCS writes it: the characters themselves, except '"', '\\' and the
// control characters, which get the short escapes where JSON has them and \u00xx (lowercase hex) otherwise.
// s is written byte for byte; it is not checked for UTF-8.
func appendCanonicalString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' {
			j++
		}
		dst = append(dst, s[i:j]...)
		if j == len(s) {
			break
		}
		dst = appendCanonicalRune(dst, rune(s[j]))
		i = j + 1
	}
	return append(dst, '"')
}

// appendCanonicalRune appends r as appendCanonicalString writes it.
func appendCanonicalRune(dst []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	switch {
	case r == '"' || r == '\\':
		return append(dst, '\\', byte(r))
	case r == '\b':
		return append(dst, `\b`...)
	case r == '\f':
		return append(dst, `\f`...)
	case r == '\n':
		return append(dst, `\n`...)
	case r == '\r':
		return append(dst, `\r`...)
	case r == '\t':
		return append(dst, `\t`...)
	case r < 0x20:
		return append(dst, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
	}
	return utf8.AppendRune(dst, r)
}
