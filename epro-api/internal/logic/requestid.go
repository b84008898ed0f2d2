package logic

import "strings"

// canonicalRequestID returns v as a lowercase UUID, or false when v is not one. It applies the rule of
// report.Submission.Validate, which keeps its version unexported.
func canonicalRequestID(v string) (string, bool) {
	if len(v) != 36 {
		return "", false
	}
	v = strings.ToLower(v)
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return "", false
			}
		}
	}
	if v == "00000000-0000-0000-0000-000000000000" {
		return "", false
	}
	return v, true
}
