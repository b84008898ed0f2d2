// Package conffile loads a service's go-zero YAML file the one way every service does: strictly, with errors
// returned to main rather than go-zero's MustLoad exiting the process.
package conffile

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/zeromicro/go-zero/core/conf"
	"gopkg.in/yaml.v3"
)

// Ineffective is a key a service would load and then ignore, with the reason, for Load to refuse. Key is a
// dotted path ("Reports.Conns"), matched in any letter case as go-zero matches keys.
type Ineffective struct {
	Key, Why string
}

// Load reads file into v. ${VAR} references are expanded from the environment (as conf.UseEnv does); every
// ineffective key the file names is refused, whatever its value (go-zero's tag defaults make a loaded struct
// unable to tell a key written in the file from a default, so the file's own keys are looked at); then
// go-zero fills in the tag defaults and runs v's Validate method, if it has one. service names the service in
// the refusal.
func Load(file string, v any, service string, ineffective ...Ineffective) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	content := []byte(os.ExpandEnv(string(raw)))
	if len(ineffective) > 0 {
		var doc map[string]any
		if err := yaml.Unmarshal(content, &doc); err != nil {
			return fmt.Errorf("parse config: %w", err)
		}
		var errs []error
		for _, k := range ineffective {
			if present(doc, strings.Split(k.Key, ".")) {
				errs = append(errs, fmt.Errorf("%s has no effect in %s (%s); remove it", k.Key, service, k.Why))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return conf.LoadFromYamlBytes(content, v)
}

// present reports whether the nested map doc holds the key path, comparing each key case-insensitively.
func present(doc map[string]any, path []string) bool {
	for k, v := range doc {
		if !strings.EqualFold(k, path[0]) {
			continue
		}
		if len(path) == 1 {
			return true
		}
		if sub, ok := v.(map[string]any); ok && present(sub, path[1:]) {
			return true
		}
	}
	return false
}

// Prefixed puts "section." in front of every error that err joins (or of err itself), each of which names a
// field of that section, so a Validate method can report nested settings by their full key.
func Prefixed(section string, err error) error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return fmt.Errorf("%s.%w", section, err)
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, fmt.Errorf("%s.%w", section, e))
	}
	return errors.Join(out...)
}
