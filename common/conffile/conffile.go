// Package conffile loads a service's go-zero YAML file the one way every service does: strictly, with errors
// returned to main rather than go-zero's MustLoad exiting the process.
package conffile

import (
	"errors"
	"fmt"
	"os"

	"github.com/zeromicro/go-zero/core/conf"
)

// Load reads file into v. ${VAR} references are expanded from the environment (as conf.UseEnv does); refuse,
// when not nil, sees the expanded content first and names every key the service would load and then ignore;
// then go-zero fills in the tag defaults and runs v's Validate method, if it has one.
func Load(file string, v any, refuse func(content []byte) error) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	content := []byte(os.ExpandEnv(string(raw)))
	if refuse != nil {
		if err := refuse(content); err != nil {
			return err
		}
	}
	return conf.LoadFromYamlBytes(content, v)
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
