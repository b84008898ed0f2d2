package infratest

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
)

// maxNameLen keeps names inside MySQL's 64-character identifier limit with
// room to spare; Kafka allows 249.
const maxNameLen = 60

// UniqueName returns prefix + the test's name + a random suffix, joined by
// underscores, lowercased and reduced to [a-z0-9_], at most 60 characters.
// The result is valid as a Kafka topic, a consumer group id, a Redis key
// prefix and an unquoted MySQL database name. The random suffix keeps names
// unique across test processes and repeated runs against the same servers.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("infratest: random suffix: %v", err)
	}
	suffix := hex.EncodeToString(b[:])

	p := sanitize(prefix)
	name := sanitize(t.Name())
	// The suffix and the prefix carry the uniqueness and the meaning; the test
	// name is what gets shortened.
	room := maxNameLen - len(suffix) - 1
	if p != "" {
		if len(p) > room-1 {
			p = strings.TrimRight(p[:room-1], "_")
		}
		room -= len(p) + 1
	}
	if len(name) > room {
		name = strings.TrimRight(name[:room], "_")
	}

	parts := make([]string, 0, 3)
	for _, s := range []string{p, name, suffix} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "_")
}

// sanitize lowercases s, maps every character outside [a-z0-9] to '_', and
// collapses and trims the underscores.
func sanitize(s string) string {
	var sb strings.Builder
	lastUnderscore := true // drops leading underscores
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			sb.WriteRune(r)
			lastUnderscore = false
			continue
		}
		if !lastUnderscore {
			sb.WriteByte('_')
			lastUnderscore = true
		}
	}
	return strings.TrimRight(sb.String(), "_")
}
