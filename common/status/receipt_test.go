package status

import (
	"strings"
	"testing"
	"time"
)

func TestReceiptRoundTrip(t *testing.T) {
	want := Receipt{PatientID: "P-1", ContentSHA256: strings.Repeat("ab", 32), SubmissionSHA256: strings.Repeat("cd", 32), ReceivedAt: time.Date(2026, 12, 2, 8, 0, 0, 123456789, time.UTC)}
	got, err := ParseReceipt(want.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("round trip: got %+v, want %+v", got, want)
	}
}

func TestParseReceiptRefusesIncomplete(t *testing.T) {
	for _, v := range []string{``, `{}`, `{"patientId":"P-1"}`, `{"receivedAt":"2026-12-02T08:00:00Z"}`, `not json`} {
		if _, err := ParseReceipt(v); err == nil {
			t.Errorf("ParseReceipt(%q) = nil error", v)
		}
	}
}

func TestReceiptKeySharesTheStatusSlot(t *testing.T) {
	id := "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
	tag := func(k string) string { return k[strings.Index(k, "{") : strings.Index(k, "}")+1] }
	if tag(ReceiptKey(id)) != tag(Key(id)) || ReceiptKey(id) == Key(id) {
		t.Fatalf("keys %q and %q must differ and share one hash tag", ReceiptKey(id), Key(id))
	}
}
