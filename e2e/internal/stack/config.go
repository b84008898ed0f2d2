package stack

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ConfigPath is a service's own config, relative to the repository root.
func ConfigPath(service string) string { return ServiceDir(service) + "/etc/" + service + ".yaml" }

var (
	envRef         = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	envPlaceholder = regexp.MustCompile(`__envref_([A-Za-z0-9_]*[A-Za-z0-9])__`)
)

// RenderConfig writes the config at src to dst with the dotted paths in set ("Reports.Topic") replaced or
// added, keeping everything else exactly as the service's owners wrote it, every ${VAR} included: the
// services expand those from their environment as in production, and secrets never reach the file. Values
// may be strings, numbers, booleans or lists.
func RenderConfig(src, dst string, set map[string]any) error {
	doc, err := parseConfig(src)
	if err != nil {
		return err
	}
	for path, v := range set {
		n, err := configNode(doc, path, true)
		if err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		if err := n.Encode(v); err != nil {
			return fmt.Errorf("%s: %s: %w", src, path, err)
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode %s: %w", dst, err)
	}
	out = envPlaceholder.ReplaceAll(out, []byte("$${${1}}"))
	if err := os.WriteFile(dst, out, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// ConfigValue returns the scalar at a dotted path of a config, ${VAR} references unexpanded.
func ConfigValue(file, path string) (string, error) {
	doc, err := parseConfig(file)
	if err != nil {
		return "", err
	}
	n, err := configNode(doc, path, false)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	return n.Value, nil
}

// ConfigDuration is ConfigValue parsed as a duration.
func ConfigDuration(file, path string) (time.Duration, error) {
	v, err := ConfigValue(file, path)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %s=%q: %w", file, path, v, err)
	}
	return d, nil
}

// parseConfig reads a config as a YAML tree. ${VAR} inside a flow sequence ([${EPRO_KAFKA_BROKERS}]) is not
// valid YAML before expansion, so the references travel through the tree as plain placeholders.
func parseConfig(file string) (*yaml.Node, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(envRef.ReplaceAll(raw, []byte("__envref_${1}__")), &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s is not a YAML mapping", file)
	}
	return &doc, nil
}

// configNode finds the node at a dotted path; with create, missing mappings and keys are added.
func configNode(doc *yaml.Node, path string, create bool) (*yaml.Node, error) {
	n := doc.Content[0]
	for _, key := range strings.Split(path, ".") {
		if n.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s: %q is not inside a mapping", path, key)
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			if !create {
				return nil, fmt.Errorf("no %s in the config", path)
			}
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, next)
		}
		n = next
	}
	return n, nil
}

// LookupFunc resolves a variable the way a child will see it.
type LookupFunc func(name string) (string, bool)

// ExpandConfig does what go-zero's conf.UseEnv does to a config file before parsing it (os.ExpandEnv over
// the whole text), with lookup in place of the environment. It also returns the variables the file uses
// that lookup does not know, which expand to "". Whole-line comments are skipped for that list only.
func ExpandConfig(data []byte, lookup LookupFunc) (expanded []byte, unset []string) {
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
