package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// childDefaults are given to the services when the suite's own environment does not set them: values the
// service configs take from the environment that have one obvious local answer.
var childDefaults = map[string]string{
	"EPRO_API_PORT": "8888",
}

// lookupFunc resolves a variable the way a child will see it.
type lookupFunc func(name string) (string, bool)

// childLookup resolves names from extra (what the suite sets), then the suite's environment, then
// childDefaults, which is the precedence the children's environment gets in supervisor.Start.
func childLookup(extra []string) lookupFunc {
	return func(name string) (string, bool) {
		for _, kv := range slices.Backward(extra) {
			if k, v, _ := strings.Cut(kv, "="); k == name {
				return v, true
			}
		}
		if v, ok := os.LookupEnv(name); ok {
			return v, true
		}
		v, ok := childDefaults[name]
		return v, ok
	}
}

// childEnv is the environment of every child: ours, the defaults we do not override, then extra.
func childEnv(extra []string) []string {
	env := os.Environ()
	for k, v := range childDefaults {
		if _, ok := os.LookupEnv(k); !ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, extra...)
}

// expandConfig does what go-zero's conf.UseEnv does to a config file before parsing it (os.ExpandEnv over
// the whole text), with lookup in place of the environment. It also returns the variables the file uses
// that lookup does not know, which expand to "". Whole-line comments are skipped for that list only.
func expandConfig(data []byte, lookup lookupFunc) (expanded []byte, unset []string) {
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		os.Expand(line, func(name string) string {
			if _, ok := lookup(name); !ok && !slices.Contains(unset, name) {
				unset = append(unset, name)
			}
			return ""
		})
	}
	expanded = []byte(os.Expand(string(data), func(name string) string {
		v, _ := lookup(name)
		return v
	}))
	return expanded, unset
}

// apiPort reads epro-api's Port from its config as the child will see it, so the suite polls the port the
// API really binds.
func apiPort(root string, lookup lookupFunc) (int, error) {
	path := filepath.Join(root, "epro-api", "etc", "epro-api.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read epro-api config: %w", err)
	}
	expanded, _ := expandConfig(data, lookup)
	var c struct {
		Port int `yaml:"Port"`
	}
	if err := yaml.Unmarshal(expanded, &c); err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	if c.Port == 0 {
		// go-zero's RestConf has no default port, so the service would refuse to start too.
		return 0, fmt.Errorf("%s sets no Port", path)
	}
	return c.Port, nil
}

// reportUnset names, per service, the variables its config uses that nobody sets, because they silently
// become empty strings.
func reportUnset(con *console, root string, services []service, lookup lookupFunc) {
	for _, s := range services {
		data, err := os.ReadFile(filepath.Join(root, s.config))
		if err != nil {
			continue // the service itself will report it
		}
		if _, unset := expandConfig(data, lookup); len(unset) > 0 {
			con.Printf("%s: %s not set; the config gets empty values there", s.name, strings.Join(unset, ", "))
		}
	}
}
