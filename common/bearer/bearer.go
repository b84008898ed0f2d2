// Package bearer verifies JWT bearer tokens, one way for every service. It guarantees that a token it
// accepts is signed by a trusted key with an algorithm the configuration allows ("none" and algorithm
// confusion are refused), carries an exp (required), nbf and iat that hold within the leeway, the configured
// issuer and audience, a subject, and well-formed registered claims (an exp written as a string is refused
// rather than read as a number). Every refusal wraps ErrInvalidToken; no error contains the token.
//
// Two modes: oidc takes its keys from an OpenID Connect issuer's JWKS URL (github.com/MicahParks/keyfunc),
// fetched at start, refreshed periodically and, rate-limited, when a token names an unknown key id, so a
// rotated key is picked up without a restart and a removed key is refused after the next refresh. hs256
// checks tokens signed with one shared secret, for development.
//
// A Verifier remembers up to cacheTokens tokens that passed (by their SHA-256, never the token itself), since
// a patient's app sends the same token on every request: a repeated token is not parsed or its signature
// checked again, but every decision is still the one a full verification would give at that moment. exp,
// nbf and iat are checked against the clock on each use, and the key that verified the token must still be
// what the key set gives for its kid (same material), so a withdrawn key refuses its tokens after the same
// refresh as without the cache, and a kid reused for other material makes the token be verified again.
// Refused tokens are not remembered: a refusal can turn into an acceptance (nbf reached, a key published),
// and tokens nobody trusted signed cannot fill the cache.
package bearer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/zeromicro/go-zero/core/logx"
	"golang.org/x/time/rate"
)

// Modes.
const (
	ModeHS256 = "hs256"
	ModeOIDC  = "oidc"
)

// MinSecretBytes is the shortest HS256 secret accepted: HS256 is only as strong as its key, and RFC 7518
// asks for at least the hash size.
const MinSecretBytes = 32

// ErrInvalidToken covers every reason a token is refused. The wrapped reason is for logs; clients are told
// only that the token is invalid.
var ErrInvalidToken = errors.New("invalid token")

// Conf configures a Verifier. Every default is in its tag.
type Conf struct {
	// Mode is hs256 (a shared secret, for development) or oidc (keys from JWKSURL).
	Mode string `json:",default=hs256,options=hs256|oidc"`
	// Secret is the hs256 key, at least MinSecretBytes bytes; from the environment only.
	Secret string `json:",optional"`
	// JWKSURL is the oidc issuer's key set (its discovery document's jwks_uri).
	JWKSURL string `json:",optional"`
	// Issuer and Audience must match the token's iss and aud. Both are required in oidc mode; in hs256 mode
	// they are checked when set.
	Issuer   string `json:",optional"`
	Audience string `json:",optional"`
	// Algorithms are the oidc signature algorithms accepted. HMAC algorithms are refused here: with a public
	// key set they would be algorithm confusion.
	Algorithms []string `json:",default=[RS256,ES256]"`
	// SubjectClaim names the claim that identifies the caller.
	SubjectClaim string `json:",default=sub"`
	// Leeway tolerates clock skew on exp, nbf and iat.
	Leeway time.Duration `json:",default=30s"`
	// RefreshInterval is how often the key set is fetched again (keyfunc's default is 1h; shorter so a removed
	// key stops being accepted sooner).
	RefreshInterval time.Duration `json:",default=5m"`
	// UnknownKIDRefreshEvery rate-limits fetches caused by tokens naming an unknown key id, so a stream of
	// forged kids cannot turn into a stream of requests to the issuer (keyfunc's default is 5m; shorter so a
	// key published during a rotation is picked up soon).
	UnknownKIDRefreshEvery time.Duration `json:",default=30s"`
	// FetchTimeout bounds one fetch of the key set.
	FetchTimeout time.Duration `json:",default=5s"`
}

// asymmetric are the algorithms oidc mode may allow.
var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// Validate reports every missing or inconsistent value, naming its field.
func (c Conf) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeHS256:
		if len(c.Secret) < MinSecretBytes {
			errs = append(errs, fmt.Errorf("Secret must be at least %d bytes in hs256 mode", MinSecretBytes))
		}
		if c.JWKSURL != "" {
			errs = append(errs, errors.New("JWKSURL is set but does nothing in hs256 mode"))
		}
	case ModeOIDC:
		if c.JWKSURL == "" || c.Issuer == "" || c.Audience == "" {
			errs = append(errs, errors.New("JWKSURL, Issuer and Audience are required in oidc mode"))
		}
		if c.Secret != "" {
			errs = append(errs, errors.New("Secret is set but does nothing in oidc mode"))
		}
		if len(c.Algorithms) == 0 {
			errs = append(errs, errors.New("Algorithms is empty"))
		}
		for _, a := range c.Algorithms {
			if !slices.Contains(asymmetric, a) {
				errs = append(errs, fmt.Errorf("Algorithms: %q is not one of %v", a, asymmetric))
			}
		}
		if c.RefreshInterval <= 0 || c.UnknownKIDRefreshEvery <= 0 || c.FetchTimeout <= 0 {
			errs = append(errs, errors.New("RefreshInterval, UnknownKIDRefreshEvery and FetchTimeout must be positive"))
		}
	default:
		errs = append(errs, fmt.Errorf("Mode %q must be %s or %s", c.Mode, ModeHS256, ModeOIDC))
	}
	if c.SubjectClaim == "" {
		errs = append(errs, errors.New("SubjectClaim is empty"))
	}
	if c.Leeway < 0 {
		errs = append(errs, errors.New("Leeway must not be negative"))
	}
	return errors.Join(errs...)
}

// Rules are what the service using a Verifier adds to its Conf.
type Rules struct {
	// Claim, when set, names a claim (a string or an array of strings) that must hold at least one of Values;
	// for example the roles claim of an ops API, or the claim that restricts tokens to one trial.
	Claim  string
	Values []string
	// Strings name further claims the service reads, each a non-empty string in every accepted token (the
	// patient a token speaks for, the trial it is restricted to); their values are in Identity.Strings.
	Strings []string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Identity is who a valid token names.
type Identity struct {
	Issuer  string
	Subject string
	// Values are the allowed values the Rules' claim held, in the token's order; nil without a Claim.
	Values []string
	// Strings holds the value of each claim named in the Rules' Strings; nil without any.
	Strings map[string]string
}

// Verifier checks tokens. It is safe for concurrent use; Close stops its key refresh.
type Verifier struct {
	conf  Conf
	rules Rules
	// keys returns the keyfunc for one verification; ctx bounds a key set fetch it may cause.
	keys func(ctx context.Context) jwt.Keyfunc
	// parser checks a token in full; validator, built from the same options, checks the claims of a token
	// verified before.
	parser    *jwt.Parser
	validator *jwt.Validator
	cache     *tokenCache
	// full counts full verifications (parse and signature check), for the package's tests.
	full atomic.Int64
	stop context.CancelFunc
}

// New returns a Verifier for c. In oidc mode it fetches the key set first and fails with a clear error if
// the issuer cannot be reached, and refreshes it in the background until Close.
func New(c Conf, r Rules) (*Verifier, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("bearer: %w", err)
	}
	if r.Claim != "" && len(r.Values) == 0 {
		return nil, fmt.Errorf("bearer: claim %q has no allowed values", r.Claim)
	}
	v := &Verifier{conf: c, rules: r, cache: newTokenCache(cacheTokens), stop: func() {}}
	if c.Mode == ModeHS256 {
		secret := []byte(c.Secret)
		v.keys = func(context.Context) jwt.Keyfunc { return func(*jwt.Token) (any, error) { return secret, nil } }
		v.checks([]string{jwt.SigningMethodHS256.Alg()})
		return v, nil
	}
	// The refresh goroutine lives until Close; keyfunc ties it to this context.
	ctx, cancel := context.WithCancel(context.Background())
	noFirstFetchError := false // keyfunc's default starts without keys when the first fetch fails
	url := c.JWKSURL
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{url}, keyfunc.Override{
		HTTPTimeout:               c.FetchTimeout,
		NoErrorReturnFirstHTTPReq: &noFirstFetchError,
		RefreshInterval:           c.RefreshInterval,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(c.UnknownKIDRefreshEvery), 1),
		// keyfunc waits up to a minute for the limiter; a request must not. This bound also covers the fetch
		// itself, and the limiter refuses at once a wait that would pass it.
		RateLimitWaitMax: c.FetchTimeout,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) { logx.Errorf("bearer: refresh key set %s: %v", url, err) }
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bearer: fetch key set %s: %w", url, err)
	}
	v.keys = kf.KeyfuncCtx
	v.checks(c.Algorithms)
	v.stop = cancel
	return v, nil
}

// checks builds the parser and the claims validator: one set of options, so a token verified before is held
// to exactly the rules of a full verification.
func (v *Verifier) checks(methods []string) {
	now := time.Now
	if v.rules.Now != nil {
		now = v.rules.Now
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.conf.Leeway),
		jwt.WithTimeFunc(now),
	}
	if v.conf.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.conf.Issuer))
	}
	if v.conf.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.conf.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	v.validator = jwt.NewValidator(opts...)
}

// Close stops the key refresh. The Verifier must not be used afterwards.
func (v *Verifier) Close() { v.stop() }

// Verify checks token and returns whom it names. A key set fetch it causes (a token naming an unknown key
// id) ends with ctx or after FetchTimeout.
//
// A token verified before is not parsed or its signature checked again: its exp, nbf and iat are checked
// against the clock on every use, and the key set is asked again for the token's key, which must still be
// the key (same kid, same material) that verified it; a key set that no longer has it refuses the token, one
// that has other material under its kid makes Verify check the token in full.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	sum := sha256.Sum256([]byte(token))
	if e := v.cache.get(sum); e != nil {
		id, hit, err := v.reuse(ctx, sum, e)
		if hit {
			return id, err
		}
	}
	id, e, err := v.verify(ctx, token)
	if e != nil {
		v.cache.put(sum, e)
	}
	return id, err
}

// reuse decides on a token whose signature e.key verified before, as a full verification would now. hit is
// false when the key set now gives other material for the token's key id: the token must be verified again.
func (v *Verifier) reuse(ctx context.Context, sum [sha256.Size]byte, e *verified) (id Identity, hit bool, err error) {
	key, err := v.keys(ctx)(e.header)
	if err != nil {
		// The key set has no such key now (or could not be asked): a full verification fails at this step too.
		v.cache.drop(sum)
		return Identity{}, true, fmt.Errorf("%w: %w: %w", ErrInvalidToken, jwt.ErrTokenUnverifiable, err)
	}
	switch same, material := sameKey(key, e.key); {
	case material:
		// The key set was fetched again and still has the key: remember the new copy, which the next use
		// finds the same at once.
		fresh := *e
		fresh.key = key
		v.cache.put(sum, &fresh)
	case !same:
		v.cache.drop(sum)
		return Identity{}, false, nil
	}
	if err := v.validator.Validate(e.claims); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			v.cache.drop(sum) // for good, as long as the clock does not go back
		}
		return Identity{}, true, fmt.Errorf("%w: %w: %w", ErrInvalidToken, jwt.ErrTokenInvalidClaims, err)
	}
	return e.id.clone(), true, nil
}

// verify parses token and checks its signature, claims and Rules. For a token that passes it also returns
// what a later use must check again, unless the key that verified it cannot be compared (a key set).
func (v *Verifier) verify(ctx context.Context, token string) (Identity, *verified, error) {
	v.full.Add(1)
	keys := v.keys(ctx)
	var key any // what the key set gave for the token
	var c claims
	tok, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		k, err := keys(t)
		key = k
		return k, err
	})
	if err != nil {
		return Identity{}, nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	id, err := v.identify(c)
	if err != nil {
		return Identity{}, nil, err
	}
	if !reusable(key) {
		return id, nil, nil
	}
	return id, &verified{header: &jwt.Token{Header: tok.Header, Method: tok.Method}, key: key,
		claims: c.RegisteredClaims, id: id.clone()}, nil
}

// identify reads whom the verified claims c name, under the Rules.
func (v *Verifier) identify(c claims) (Identity, error) {
	id := Identity{Issuer: c.Issuer}
	if err := c.string(v.conf.SubjectClaim, &id.Subject); err != nil || id.Subject == "" {
		return Identity{}, fmt.Errorf("%w: subject claim %q missing or not a string", ErrInvalidToken, v.conf.SubjectClaim)
	}
	for _, name := range v.rules.Strings {
		var val string
		if err := c.string(name, &val); err != nil || val == "" {
			return Identity{}, fmt.Errorf("%w: claim %q missing or not a non-empty string", ErrInvalidToken, name)
		}
		if id.Strings == nil {
			id.Strings = make(map[string]string, len(v.rules.Strings))
		}
		id.Strings[name] = val
	}
	if v.rules.Claim == "" {
		return id, nil
	}
	held, err := c.strings(v.rules.Claim)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: claim %q: %w", ErrInvalidToken, v.rules.Claim, err)
	}
	for _, h := range held {
		if slices.Contains(v.rules.Values, h) && !slices.Contains(id.Values, h) {
			id.Values = append(id.Values, h)
		}
	}
	if len(id.Values) == 0 {
		return Identity{}, fmt.Errorf("%w: claim %q holds no allowed value", ErrInvalidToken, v.rules.Claim)
	}
	return id, nil
}

// claims are the registered claims plus every claim as raw JSON, for the configured subject and rule claims.
type claims struct {
	jwt.RegisteredClaims
	raw map[string]json.RawMessage
}

// UnmarshalJSON refuses malformed registered claims before decoding them: jwt's NumericDate would read an
// exp written as the string "9999999999" as a number.
func (c *claims) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &c.raw); err != nil {
		return fmt.Errorf("claims: %w", err)
	}
	for _, k := range []string{"exp", "nbf", "iat"} {
		if v, ok := c.raw[k]; ok && !isNumber(v) {
			return fmt.Errorf("claim %s is not a number", k)
		}
	}
	for _, k := range []string{"iss", "sub", "jti"} {
		var s string
		if v, ok := c.raw[k]; ok && json.Unmarshal(v, &s) != nil {
			return fmt.Errorf("claim %s is not a string", k)
		}
	}
	if err := json.Unmarshal(b, &c.RegisteredClaims); err != nil {
		return fmt.Errorf("registered claims: %w", err)
	}
	return nil
}

func isNumber(v json.RawMessage) bool {
	return len(v) > 0 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))
}

func (c claims) string(name string, dst *string) error {
	v, ok := c.raw[name]
	if !ok {
		return errors.New("missing")
	}
	return json.Unmarshal(v, dst)
}

// strings reads a claim that is a string or an array of strings.
func (c claims) strings(name string) ([]string, error) {
	v, ok := c.raw[name]
	if !ok {
		return nil, errors.New("missing")
	}
	var one string
	if json.Unmarshal(v, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(v, &many); err != nil {
		return nil, errors.New("not a string or an array of strings")
	}
	return many, nil
}
