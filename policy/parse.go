package policy

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load reads and validates the configuration file at path. Messages name
// the file exactly as path is written.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads one YAML configuration from r, applies every default and
// validates it. filename is used only in messages, as given.
//
// The YAML is walked node by node rather than decoded into structs so that
// every message can carry the line of the value it is about, and so that
// unknown or repeated keys are caught at every depth. Every mistake is
// collected, sorted by line and returned joined (errors.Join), one per line
// of the error text, so that one `rotatord check` run shows them all:
//
//	FILE:LINE: policy "NAME": FIELD: MESSAGE (got "VALUE")
//	FILE:LINE: provider "NAME": FIELD: MESSAGE (got "VALUE")
//	FILE:LINE: SECTION.FIELD: MESSAGE (got "VALUE")
//
// FIELD is dotted below the policy or provider (key.bits, notify.on) and
// SECTION is the top-level key (vault.auth.method, defaults.max_age, ...).
// A policy or provider without a usable name is called policy #N or
// provider #N, counting from 1. VALUE is the text as written in the file;
// the "(got ...)" part is left out when the value was not written (a
// default) or when it could be a secret. LINE is the line of the value, or
// of the enclosing mapping when a required key is missing. Errors about the
// file as a whole (empty, not YAML) read FILE: MESSAGE or FILE:LINE: MESSAGE.
//
// On any error the returned *Config is nil.
func Parse(r io.Reader, filename string) (*Config, error) {
	root, err := decodeYAML(r, filename)
	if err != nil {
		return nil, err
	}
	p := &parser{file: filename, merged: map[*yaml.Node][]entry{}}
	cfg := p.config(root)
	if err := p.err(); err != nil {
		return nil, err
	}
	cfg.File = filename
	return cfg, nil
}

// yamlLineError matches the parser errors of yaml.v3 that carry a line.
var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decodeYAML parses exactly one YAML document into its node tree.
func decodeYAML(r io.Reader, file string) (root *yaml.Node, err error) {
	// A config file comes from a person, possibly half-edited, and a reload
	// must never take the daemon down: a panic inside the YAML library is
	// turned into an error like any other malformed input.
	defer func() {
		if v := recover(); v != nil {
			root, err = nil, fmt.Errorf("%s: invalid YAML: %v", file, v)
		}
	}()
	dec := yaml.NewDecoder(r)
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty config; see policies.example.yaml", file)
		}
		return nil, yamlError(file, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(file, err)
	case len(extra.Content) > 0:
		return nil, fmt.Errorf("%s:%d: a second YAML document; the config is a single document", file, extra.Line)
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: empty config; see policies.example.yaml", file)
	}
	return doc.Content[0], nil
}

// yamlParserProblems are the messages of yaml.v3's parser, as opposed to
// its scanner. yaml.v3 reports parser errors with a zero-based line (and
// scanner errors with a one-based one), so these get one added.
var yamlParserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected key",
	"did not find expected node content",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

func yamlError(file string, err error) error {
	if m := yamlLineError.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		if contains(yamlParserProblems, m[2]) {
			line++
		}
		return fmt.Errorf("%s:%d: invalid YAML: %s", file, line, m[2])
	}
	return fmt.Errorf("%s: invalid YAML: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
}

// maxVisits bounds the work of walking a document whose aliases expand to
// far more nodes than it has text ("billion laughs"). A real config with a
// thousand policies stays below a hundredth of it.
const maxVisits = 1 << 20

// parser walks the node tree and collects every mistake it finds.
type parser struct {
	file    string
	errs    []lineError
	visits  int
	tooBig  bool
	merged  map[*yaml.Node][]entry // expanded mappings, so shared anchors are walked once
	merging map[*yaml.Node]bool    // merges in progress, to stop self-referencing anchors
	// spacings memoizes spacingOf by spec: a defaults block's window is
	// measured once, not once per policy.
	spacings map[string]spacing
}

type lineError struct {
	line int
	msg  string
}

// where says what a message is about: a labelled item (policy "x") and the
// dotted path of the mapping inside it ("key."), or a section path
// ("vault.auth.") with no label.
type where struct {
	label string
	path  string
}

func (w where) field(name string) string {
	if w.label == "" {
		return w.path + name
	}
	return w.label + ": " + w.path + name
}

func (w where) in(name string) where { return where{label: w.label, path: w.path + name + "."} }

func (p *parser) errorf(line int, w where, field, format string, args ...any) {
	p.errs = append(p.errs, lineError{line: line, msg: w.field(field) + ": " + fmt.Sprintf(format, args...)})
}

// gotf is errorf that quotes the offending text as written.
func (p *parser) gotf(line int, w where, field, raw, format string, args ...any) {
	p.errs = append(p.errs, lineError{line: line, msg: w.field(field) + ": " + fmt.Sprintf(format, args...) + got(raw)})
}

func got(raw string) string {
	const max = 100
	if r := []rune(raw); len(r) > max {
		raw = string(r[:max]) + "..."
	}
	return fmt.Sprintf(" (got %q)", raw)
}

// err sorts the collected messages by line (the order a person reads the
// file in), drops exact repeats and joins them.
func (p *parser) err() error {
	if p.tooBig {
		return fmt.Errorf("%s: config too large once its aliases are expanded", p.file)
	}
	if len(p.errs) == 0 {
		return nil
	}
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].line < p.errs[j].line })
	seen := map[lineError]bool{}
	var errs []error
	for _, e := range p.errs {
		if seen[e] {
			continue
		}
		seen[e] = true
		errs = append(errs, fmt.Errorf("%s:%d: %s", p.file, e.line, e.msg))
	}
	return errors.Join(errs...)
}

// visit counts walked nodes and reports whether the walk may go on.
func (p *parser) visit(n int) bool {
	p.visits += n
	if p.visits > maxVisits {
		p.tooBig = true
	}
	return !p.tooBig
}

// deref follows an alias to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// kindName names a node's kind the way a YAML author thinks of it.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// entry is one key and its value.
type entry struct{ key, val *yaml.Node }

// fields is a mapping's entries by key, plus the mapping's own line for
// messages about missing keys.
type fields struct {
	line    int
	m       map[string]entry
	literal bool // a literal secret was written (and reported) instead of a reference
}

func (f fields) has(key string) bool {
	_, ok := f.m[key]
	return ok
}

// mapping reads the mapping n (the value of field in w), reporting keys
// that are not in known, repeated keys, and literal secrets. It returns
// ok=false, after reporting why, when n is not a mapping; a null value is
// absent without a message.
func (p *parser) mapping(n *yaml.Node, w where, field string, known []string) (fields, bool) {
	n = deref(n)
	if isNull(n) {
		return fields{}, false
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, w, field, "must be a mapping of keys to values (got %s)", kindName(n))
		return fields{}, false
	}
	inner := w.in(field)
	if field == "" {
		inner = w
	}
	f := fields{line: n.Line, m: map[string]entry{}}
	for _, e := range p.entries(n, inner) {
		k := e.key.Value
		if field == "" && w == (where{}) && strings.HasPrefix(k, "x-") {
			// Top-level x- keys are a home for YAML anchors that policies
			// merge (<<: *common), as in Compose files.
			continue
		}
		if !contains(known, k) {
			f.literal = p.unknownKey(e.key.Line, inner, k, known) || f.literal
			continue
		}
		f.m[k] = e
	}
	return f, true
}

// entries lists a mapping's key/value pairs with YAML merge keys (<<)
// expanded: explicit keys win over merged ones, and earlier merged
// mappings win over later ones, as the merge key spec says.
func (p *parser) entries(n *yaml.Node, w where) []entry {
	if !p.visit(len(n.Content) / 2) {
		return nil
	}
	var own, merged []entry
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge" {
			merged = append(merged, p.merge(k.Line, v, w)...)
			continue
		}
		if k.Kind != yaml.ScalarNode || isNull(k) {
			p.errorf(k.Line, w, "", "keys must be plain words (got %s)", kindName(k))
			continue
		}
		if line, dup := first[k.Value]; dup {
			p.errorf(k.Line, w, k.Value, "repeated key (first set at line %d)", line)
			continue
		}
		first[k.Value] = k.Line
		own = append(own, entry{key: k, val: v})
	}
	for _, e := range merged {
		if _, dup := first[e.key.Value]; dup {
			continue
		}
		first[e.key.Value] = e.key.Line
		own = append(own, e)
	}
	return own
}

// merge expands the value of a merge key (at line): a mapping or a list of
// mappings.
func (p *parser) merge(line int, v *yaml.Node, w where) []entry {
	v = deref(v)
	sources := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		sources = sources[:0]
		for _, s := range v.Content {
			sources = append(sources, deref(s))
		}
	}
	var out []entry
	for _, s := range sources {
		if s == nil || s.Kind != yaml.MappingNode {
			p.errorf(line, w, "<<", "a merge key takes a mapping or a list of mappings")
			return nil
		}
		if p.merging[s] {
			p.errorf(line, w, "<<", "a mapping cannot merge itself")
			return nil
		}
		es, done := p.merged[s]
		if !done {
			if p.merging == nil {
				p.merging = map[*yaml.Node]bool{}
			}
			p.merging[s] = true
			es = p.entries(s, w)
			delete(p.merging, s)
			p.merged[s] = es
		}
		out = append(out, es...)
	}
	return out
}

// unknownKey reports a key the section does not have, with the fix when
// the key would hold a literal secret and a suggestion when it looks like
// a typo. It reports whether the key was a literal secret.
func (p *parser) unknownKey(line int, w where, key string, known []string) bool {
	var refs []string
	for _, suffix := range []string{"_env", "_file"} {
		if contains(known, key+suffix) {
			refs = append(refs, key+suffix)
		}
	}
	if len(refs) > 0 {
		use := make([]string, len(refs))
		for i, r := range refs {
			use[i] = r + ": " + map[bool]string{true: "VAR", false: "PATH"}[strings.HasSuffix(r, "_env")]
		}
		p.errorf(line, w, key, "use %s; secrets are never written in the config", strings.Join(use, " or "))
		return true
	}
	if s := closest(key, known); s != "" {
		p.errorf(line, w, key, "unknown key; did you mean %s?", s)
		return false
	}
	p.errorf(line, w, key, "unknown key; expected one of %s", strings.Join(known, ", "))
	return false
}

// closest returns the known key within two edits of key, if any.
func closest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// src is where a value came from, for messages.
type src struct {
	line      int
	raw       string // the text as written
	set       bool   // written and well formed
	bad       bool   // written but rejected (already reported)
	inherited bool   // taken from the defaults block
}

// val is one config value and where it came from.
type val[T any] struct {
	v T
	src
}

// or returns the value, or def when it was not set.
func (v val[T]) or(def T) T {
	if v.set {
		return v.v
	}
	return def
}

// scalar returns the scalar value of key, or nil when the key is absent or
// null. Anything else than a scalar is reported.
func (p *parser) scalar(f fields, w where, key string) *yaml.Node {
	e, ok := f.m[key]
	if !ok {
		return nil
	}
	n := deref(e.val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, w, key, "must be a single value (got %s)", kindName(n))
		return nil
	}
	return n
}

func (p *parser) str(f fields, w where, key string) val[string] {
	n := p.scalar(f, w, key)
	if n == nil {
		return val[string]{}
	}
	return val[string]{v: n.Value, src: src{line: n.Line, raw: n.Value, set: true}}
}

func (p *parser) integer(f fields, w where, key string) val[int64] {
	n := p.scalar(f, w, key)
	if n == nil {
		return val[int64]{}
	}
	s := src{line: n.Line, raw: n.Value}
	var i int64
	if n.ShortTag() != "!!int" || n.Decode(&i) != nil {
		p.gotf(n.Line, w, key, n.Value, "must be a whole number")
		s.bad = true
		return val[int64]{src: s}
	}
	s.set = true
	return val[int64]{v: i, src: s}
}

func (p *parser) boolean(f fields, w where, key string) val[bool] {
	n := p.scalar(f, w, key)
	if n == nil {
		return val[bool]{}
	}
	s := src{line: n.Line, raw: n.Value}
	var b bool
	if n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		p.gotf(n.Line, w, key, n.Value, "must be true or false")
		s.bad = true
		return val[bool]{src: s}
	}
	s.set = true
	return val[bool]{v: b, src: s}
}

func (p *parser) number(f fields, w where, key string) val[float64] {
	n := p.scalar(f, w, key)
	if n == nil {
		return val[float64]{}
	}
	s := src{line: n.Line, raw: n.Value}
	var x float64
	tag := n.ShortTag()
	if (tag != "!!int" && tag != "!!float") || n.Decode(&x) != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		p.gotf(n.Line, w, key, n.Value, "must be a number")
		s.bad = true
		return val[float64]{src: s}
	}
	s.set = true
	return val[float64]{v: x, src: s}
}

func (p *parser) duration(f fields, w where, key string) val[time.Duration] {
	n := p.scalar(f, w, key)
	if n == nil {
		return val[time.Duration]{}
	}
	s := src{line: n.Line, raw: n.Value}
	d, err := parseDuration(n.Value)
	if err != nil {
		p.gotf(n.Line, w, key, n.Value, "invalid duration: %v", err)
		s.bad = true
		return val[time.Duration]{src: s}
	}
	s.set = true
	return val[time.Duration]{v: d, src: s}
}

// events reads notify.on: a list of event names, duplicates dropped. An
// empty list is set (and means no notifications), unlike an absent key.
func (p *parser) events(f fields, w where, key string) val[[]string] {
	e, ok := f.m[key]
	if !ok {
		return val[[]string]{}
	}
	n := deref(e.val)
	if isNull(n) {
		return val[[]string]{}
	}
	s := src{line: n.Line}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, w, key, "must be a list, such as [%s, %s] (got %s)", EventFailed, EventOverdue, kindName(n))
		s.bad = true
		return val[[]string]{src: s}
	}
	if !p.visit(len(n.Content)) {
		s.bad = true
		return val[[]string]{src: s}
	}
	list := []string{}
	for _, item := range n.Content {
		item = deref(item)
		switch {
		case item.Kind != yaml.ScalarNode || isNull(item):
			p.errorf(item.Line, w, key, "list items must be event names (got %s)", kindName(item))
			s.bad = true
		case !contains(Events(), item.Value):
			p.gotf(item.Line, w, key, item.Value, "unknown event; events are %s", quoteList(Events()...))
			s.bad = true
		case !contains(list, item.Value):
			list = append(list, item.Value)
		}
	}
	s.set = !s.bad
	return val[[]string]{v: list, src: s}
}

// quoteList renders choices for messages: "a, b or c".
func quoteList(choices ...string) string {
	if len(choices) == 1 {
		return choices[0]
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}
