package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/epro-intake/e2e/internal/stack"
)

// childVars is the environment the services get on top of the suite's own.
type childVars struct {
	// defaults apply only where the suite's environment does not set the name: values the service configs
	// read from the environment that have one obvious local answer.
	defaults map[string]string
	// extra is what the suite itself provides (the infrastructure addresses); it overrides everything.
	extra []string
}

// jwtKeyVar holds dlq-worker's token signing key.
const jwtKeyVar = "EPRO_DLQ_JWT_KEY"

func newChildVars() (*childVars, error) {
	// A fresh key per run rather than a fixed one in the source: a key anyone can read would sign
	// operator tokens for every suite started without EPRO_DLQ_JWT_KEY.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate %s: %w", jwtKeyVar, err)
	}
	// The same for epro-api's patient tokens (EPRO_API_JWT_KEY).
	patients, err := stack.NewPatientTokens()
	if err != nil {
		return nil, err
	}
	return &childVars{defaults: map[string]string{
		"EPRO_API_PORT":    "8888",
		"EPRO_DLQ_PORT":    "8890",
		jwtKeyVar:          hex.EncodeToString(key),
		stack.EnvAPIJWTKey: patients.Key(),
	}}, nil
}

// Lookup resolves a name as a child will see it: extra (last wins, as in exec.Cmd.Env), then the suite's
// environment, then defaults.
func (c *childVars) Lookup(name string) (string, bool) {
	for _, kv := range slices.Backward(c.extra) {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v, true
		}
	}
	if v, ok := os.LookupEnv(name); ok {
		return v, true
	}
	v, ok := c.defaults[name]
	return v, ok
}

// Environ is every child's environment: the suite's, the defaults it does not set, then extra.
func (c *childVars) Environ() []string {
	env := os.Environ()
	for _, k := range slices.Sorted(maps.Keys(c.defaults)) {
		if _, ok := os.LookupEnv(k); !ok {
			env = append(env, k+"="+c.defaults[k])
		}
	}
	return append(env, c.extra...)
}

// servicePort reads a service's Port from its config as the child will see it, so the suite checks and polls
// the port the service really binds. It is 0 for a service without one.
func servicePort(root, name string, lookup stack.LookupFunc) (int, error) {
	path := filepath.Join(root, stack.ConfigPath(name))
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s config: %w", name, err)
	}
	expanded, _ := stack.ExpandConfig(data, lookup)
	var c struct {
		Port string `yaml:"Port"`
	}
	if err := yaml.Unmarshal(expanded, &c); err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	if c.Port == "" {
		return 0, nil
	}
	port, err := strconv.Atoi(c.Port)
	if err != nil || port <= 0 || port > 65535 {
		return 0, fmt.Errorf("%s: Port is %q", path, c.Port)
	}
	return port, nil
}

// reportUnset names, per service, the variables its config uses that nobody sets, because they silently
// become empty strings.
func reportUnset(con *console, root string, lookup stack.LookupFunc) {
	for _, name := range stack.Services {
		data, err := os.ReadFile(filepath.Join(root, stack.ConfigPath(name)))
		if err != nil {
			continue // the service itself will report it
		}
		if _, unset := stack.ExpandConfig(data, lookup); len(unset) > 0 {
			con.Printf("%s: %s not set; the config gets empty values there", name, strings.Join(unset, ", "))
		}
	}
}
