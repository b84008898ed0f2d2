package stack_test

import (
	"strings"
	"testing"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/e2e/internal/stack"
)

// The tokens are what epro-api's development verifier accepts (common/bearer, hs256, patient in sub), and
// each patient's is minted once.
func TestPatientTokens(t *testing.T) {
	p, err := stack.NewPatientTokens()
	if err != nil {
		t.Fatal(err)
	}
	key := p.Key()
	if p.Env() != stack.EnvAPIJWTKey+"="+key || len(key) < bearer.MinSecretBytes {
		t.Fatalf("Env() = %q", p.Env())
	}
	v, err := bearer.New(bearer.Conf{Mode: bearer.ModeHS256, Secret: key, SubjectClaim: "sub"}, bearer.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	a1, err := p.Authorization("PAT-1")
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := strings.CutPrefix(a1, "Bearer ")
	if !ok {
		t.Fatalf("Authorization = %q", a1)
	}
	if id, err := v.Verify(t.Context(), tok); err != nil || id.Subject != "PAT-1" {
		t.Fatalf("Verify = %+v, %v", id, err)
	}
	if again, _ := p.Authorization("PAT-1"); again != a1 {
		t.Error("a patient's token was minted twice")
	}
	if other, _ := p.Authorization("PAT-2"); other == a1 {
		t.Error("two patients share a token")
	}
	// Another stack's key does not sign tokens this one accepts.
	q, err := stack.NewPatientTokens()
	if err != nil {
		t.Fatal(err)
	}
	qa, _ := q.Authorization("PAT-1")
	if _, err := v.Verify(t.Context(), strings.TrimPrefix(qa, "Bearer ")); err == nil {
		t.Error("a token of another key was accepted")
	}
}
