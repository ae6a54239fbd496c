package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Default returns a configuration holding only the defaults.
func Default() *Config {
	cfg := &Config{}
	cfg.RegisterFlags(flag.NewFlagSet("defaults", flag.ContinueOnError))
	return cfg
}

// Parse decodes YAML onto cfg, with known fields only, and validates the
// result. Errors name the key and its line.
func Parse(data []byte, cfg *Config) error {
	root, err := decodeStrict(data, cfg)
	if err != nil {
		return err
	}
	return annotate(cfg.Validate(), root)
}

// LoadFile reads a configuration file over the defaults.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg := Default()
	if err := Parse(data, cfg); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// FromFlags builds the configuration of a command: the defaults, then the
// file named by -config.file, then every flag given on the command line,
// which overrides the file. It registers its flags on fs, so a command may
// add its own before calling it.
func FromFlags(fs *flag.FlagSet, args []string) (*Config, error) {
	cfg := &Config{}
	cfg.RegisterFlags(fs)
	var file string
	if fs.Lookup("config.file") == nil {
		fs.StringVar(&file, "config.file", "", "Watershed configuration file (YAML).")
	}
	// First pass: find config.file; flags parsed now are parsed again below.
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	file = fs.Lookup("config.file").Value.String()
	var root *yaml.Node
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if root, err = decodeStrict(data, cfg); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := annotate(cfg.Validate(), root); err != nil {
		if file != "" {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

func decodeStrict(data []byte, cfg *Config) (*yaml.Node, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return &root, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, explainDecodeError(err, &root)
	}
	return &root, nil
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// explainDecodeError adds the key path to yaml's "line N: ..." messages.
func explainDecodeError(err error, root *yaml.Node) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	keys := map[int]string{}
	indexLines(root, "", keys, map[string]int{})
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			n, _ := strconv.Atoi(sm[1])
			if k, ok := keys[n]; ok {
				m = fmt.Sprintf("line %d: %s: %s", n, k, sm[2])
			}
		}
		msgs = append(msgs, m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// indexLines maps each line to the deepest key path written on it, and each
// key path (keys and sequence items) to its line.
func indexLines(n *yaml.Node, path string, lines map[int]string, paths map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, path, lines, paths)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			lines[k.Line] = p
			paths[p] = k.Line
			indexLines(v, p, lines, paths)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if _, onKeyLine := lines[c.Line]; !onKeyLine {
				lines[c.Line] = p // a flow sequence keeps its key's name
			}
			paths[p] = c.Line
			indexLines(c, p, lines, paths)
		}
	}
}

// annotate sets the line of every FieldError whose key is in the file.
func annotate(err error, root *yaml.Node) error {
	if err == nil || root == nil {
		return err
	}
	byPath := map[string]int{}
	indexLines(root, "", map[int]string{}, byPath)
	var walk func(error)
	walk = func(e error) {
		if fe, ok := e.(*FieldError); ok {
			fe.Line = lineOfPath(byPath, fe.Path)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, c := range j.Unwrap() {
				walk(c)
			}
		}
	}
	walk(err)
	return err
}

// lineOfPath finds the line of a key, or of its nearest parent in the file.
func lineOfPath(byPath map[string]int, p string) int {
	for p != "" {
		if l, ok := byPath[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return 0
		}
		p = p[:i]
	}
	return 0
}

// Marshal renders the configuration as YAML with secrets masked, for
// /api/v0/web/config and logs.
func Marshal(cfg *Config) ([]byte, error) {
	return yaml.Marshal(cfg)
}
