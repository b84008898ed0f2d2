package stack

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// EnvAPIJWTKey names epro-api's development token key, its Auth.Secret in etc/epro-api.yaml.
const EnvAPIJWTKey = "EPRO_API_JWT_KEY"

// tokenTTL outlives any run of the suite, the bench or a test.
const tokenTTL = 24 * time.Hour

// PatientTokens mints epro-api's development bearer tokens (HS256 with the key Env gives epro-api, the
// patient in sub), as `epro-api token` does, once per patient: a load of thousands of reports a second must
// not spend its CPU signing the same patient's token again.
type PatientTokens struct {
	key   string
	mu    sync.RWMutex
	cache map[string]string // patient -> "Bearer <token>"
}

// NewPatientTokens returns tokens signed with a fresh random key: a key written down in the source would
// sign patient tokens for every stack started without EPRO_API_JWT_KEY.
func NewPatientTokens() (*PatientTokens, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate %s: %w", EnvAPIJWTKey, err)
	}
	return PatientTokensWithKey(hex.EncodeToString(b)), nil
}

// PatientTokensWithKey returns tokens signed with key, for a stack whose key came from the environment.
func PatientTokensWithKey(key string) *PatientTokens {
	return &PatientTokens{key: key, cache: map[string]string{}}
}

// Key is the signing key, epro-api's Auth.Secret.
func (p *PatientTokens) Key() string { return p.key }

// Env is the variable that gives epro-api the key: NAME=value for a service's environment.
func (p *PatientTokens) Env() string { return EnvAPIJWTKey + "=" + p.key }

// Authorization returns the Authorization header value for patient's requests.
func (p *PatientTokens) Authorization(patient string) (string, error) {
	p.mu.RLock()
	v, ok := p.cache[patient]
	p.mu.RUnlock()
	if ok {
		return v, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.cache[patient]; ok {
		return v, nil
	}
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": patient, "iat": now.Unix(), "exp": now.Add(tokenTTL).Unix(),
	}).SignedString([]byte(p.key))
	if err != nil {
		return "", fmt.Errorf("mint a token for %s: %w", patient, err)
	}
	v = "Bearer " + tok
	p.cache[patient] = v
	return v, nil
}
