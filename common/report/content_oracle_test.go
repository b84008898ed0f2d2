package report

// The content hash as it was first written, through encoding/json and interface{} values, kept as the oracle
// that the one-pass canonicalizer in content.go must match byte for byte: stored hashes were computed by it.

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// contentHashOracle is ContentHash as first written.
func contentHashOracle(s Submission) ([sha256.Size]byte, error) {
	canon, err := canonicalContentOracle(s)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(canon), nil
}

// canonicalContentOracle is the canonical form ContentHash hashed before it was rewritten as one pass.
func canonicalContentOracle(s Submission) ([]byte, error) {
	id := s.RequestID
	if c, ok := CanonicalRequestID(id); ok {
		id = c
	}
	submittedAt := s.SubmittedAt
	if t, err := ParseSubmittedAt(s.SubmittedAt); err == nil {
		submittedAt = t.Format(time.RFC3339Nano)
	}
	fields := map[string]string{
		"requestId": id, "patientId": s.PatientID, "trialId": s.TrialID, "questionnaireId": s.QuestionnaireID,
		"questionnaireVersion": s.QuestionnaireVersion, "submittedAt": submittedAt,
		"deviceId": s.DeviceID, "appVersion": s.AppVersion, "locale": s.Locale,
	}
	obj := map[string]any{}
	for k, v := range fields {
		if v != "" {
			obj[k] = v
		}
	}
	if len(bytes.TrimSpace(s.Answers)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(s.Answers))
		dec.UseNumber()
		var answers any
		if err := dec.Decode(&answers); err != nil {
			return nil, fmt.Errorf("content hash: answers: %w", err)
		}
		if dec.More() {
			return nil, errors.New("content hash: answers: data after the JSON value")
		}
		obj["answers"] = answers
	}
	var buf bytes.Buffer
	buf.Grow(len(s.Answers) + 512)
	if err := oracleWriteCanonical(&buf, obj); err != nil {
		return nil, fmt.Errorf("content hash: %w", err)
	}
	return buf.Bytes(), nil
}

// oracleWriteCanonical writes v, as decoded by encoding/json with UseNumber, in canonical form.
func oracleWriteCanonical(buf *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		buf.WriteString(strconv.FormatBool(v))
	case string:
		oracleWriteCanonicalString(buf, v)
	case json.Number:
		n, err := oracleCanonicalNumber(string(v))
		if err != nil {
			return err
		}
		buf.WriteString(n)
	case []any:
		buf.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := oracleWriteCanonical(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, oracleCompareUTF16)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			oracleWriteCanonicalString(buf, k)
			buf.WriteByte(':')
			if err := oracleWriteCanonical(buf, v[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("unexpected JSON value %T", v)
	}
	return nil
}

// oracleCompareUTF16 orders strings by their UTF-16 code units, as JCS sorts keys. It differs from Go's byte order
// only where characters above U+FFFF meet characters from U+E000 to U+FFFF.
func oracleCompareUTF16(a, b string) int {
	if oracleIsASCII(a) && oracleIsASCII(b) {
		return strings.Compare(a, b)
	}
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

func oracleIsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// oracleWriteCanonicalString writes s as JCS does: the characters themselves, except '"', '\\' and the control
// characters, which get the short escapes where JSON has them and \u00xx (lowercase hex) otherwise.
func oracleWriteCanonicalString(buf *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	buf.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			buf.WriteByte('\\')
			buf.WriteByte(c)
		case c == '\b':
			buf.WriteString(`\b`)
		case c == '\f':
			buf.WriteString(`\f`)
		case c == '\n':
			buf.WriteString(`\n`)
		case c == '\r':
			buf.WriteString(`\r`)
		case c == '\t':
			buf.WriteString(`\t`)
		case c < 0x20:
			buf.WriteString(`\u00`)
			buf.WriteByte(hex[c>>4])
			buf.WriteByte(hex[c&0xf])
		default:
			buf.WriteByte(c)
		}
	}
	buf.WriteByte('"')
}

// oracleCanonicalNumber writes the JSON number n as its exact value: an optional "-", the significant digits
// without leading or trailing zeros, and "e" with a decimal exponent when it is not zero. Zero (and -0) is
// "0". 1500, 1.5e3 and 15E+2 are all "15e2"; 0.10 is "1e-1".
func oracleCanonicalNumber(n string) (string, error) {
	neg := strings.HasPrefix(n, "-")
	rest := strings.TrimPrefix(n, "-")
	mantissa, exp, hasExp := strings.Cut(strings.ToLower(rest), "e")
	intPart, frac, _ := strings.Cut(mantissa, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	if intPart == "" || !oracleAllDigits(intPart) || !oracleAllDigits(frac) || (hasExp && exp == "") {
		return "", errors.New("malformed number")
	}
	if digits == "" {
		return "0", nil
	}
	trimmed := strings.TrimRight(digits, "0")
	// value = trimmed × 10^(exp − len(frac) + trailing zeros)
	shift := int64(len(digits)-len(trimmed)) - int64(len(frac))
	var sb strings.Builder
	if neg {
		sb.WriteByte('-')
	}
	sb.WriteString(trimmed)
	if len(exp) <= 15 { // the common case, without math/big
		e := int64(0)
		if hasExp {
			v, err := strconv.ParseInt(exp, 10, 64)
			if err != nil {
				return "", errors.New("malformed number")
			}
			e = v
		}
		if e += shift; e != 0 {
			sb.WriteByte('e')
			sb.WriteString(strconv.FormatInt(e, 10))
		}
		return sb.String(), nil
	}
	e, ok := new(big.Int).SetString(strings.TrimPrefix(exp, "+"), 10)
	if !ok {
		return "", errors.New("malformed number")
	}
	if e.Add(e, big.NewInt(shift)); e.Sign() != 0 {
		sb.WriteByte('e')
		sb.WriteString(e.String())
	}
	return sb.String(), nil
}

func oracleAllDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
