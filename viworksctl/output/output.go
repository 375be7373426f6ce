// Package output prints the API's answers: JSON unchanged, YAML converted
// from it, or tables sized to the terminal, with optional colour.
package output

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Formats are the values of -o.
var Formats = []string{"table", "json", "yaml"}

// Printer writes one format to W.
type Printer struct {
	W      io.Writer
	Format string // table, json or yaml
	Color  bool
	Width  int // terminal columns; 0: no limit
}

// Validate checks the format.
func (p *Printer) Validate() error {
	for _, f := range Formats {
		if p.Format == f {
			return nil
		}
	}
	return fmt.Errorf("-o %q: want one of %s", p.Format, strings.Join(Formats, ", "))
}

// Structured reports whether the format is json or yaml (a document, not a table).
func (p *Printer) Structured() bool { return p.Format == "json" || p.Format == "yaml" }

// Document prints an API document in json (unchanged) or yaml.
func (p *Printer) Document(body []byte) error {
	if p.Format == "yaml" {
		out, err := ToYAML(body)
		if err != nil {
			return err
		}
		_, err = p.W.Write(out)
		return err
	}
	body = bytes.TrimRight(body, "\n")
	_, err := fmt.Fprintf(p.W, "%s\n", body)
	return err
}

// ToYAML converts a JSON document to block-style YAML, keeping the keys'
// order and the numbers' types.
func ToYAML(body []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(body, &n); err != nil {
		return nil, fmt.Errorf("converting the answer to YAML: %w", err)
	}
	blockStyle(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("converting the answer to YAML: %w", err)
	}
	return buf.Bytes(), nil
}

func blockStyle(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style &^= yaml.FlowStyle
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		n.Style &^= yaml.DoubleQuotedStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

const (
	green  = "\x1b[32m"
	red    = "\x1b[31m"
	yellow = "\x1b[33m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

// Status colours a status word: green for success and online, red for
// failure and offline, yellow for what is under way.
func (p *Printer) Status(s string) string {
	if !p.Color {
		return s
	}
	switch s {
	case "succeeded", "online", "ok", "resolved", "true":
		return green + s + reset
	case "failed", "timed_out", "offline", "expired", "partially_succeeded", "firing", "false":
		return red + s + reset
	case "running", "dispatched", "retrying", "queued", "stale", "cancelled":
		return yellow + s + reset
	}
	return s
}

// visibleLen is the length of s on the terminal, without colour escapes.
func visibleLen(s string) int {
	n, esc := 0, false
	for _, r := range s {
		switch {
		case esc:
			esc = r != 'm'
		case r == '\x1b':
			esc = true
		default:
			n++
		}
	}
	return n
}

// truncate cuts s (without escapes) to w runes, ending with "…".
func truncate(s string, w int) string {
	if visibleLen(s) <= w {
		return s
	}
	if strings.Contains(s, "\x1b") {
		return s // coloured words are short; never cut inside an escape
	}
	if w <= 1 {
		return "…"
	}
	out := []rune{}
	for _, r := range s {
		if len(out) == w-1 {
			break
		}
		out = append(out, r)
	}
	return string(out) + "…"
}

// Table prints rows under headers, columns separated by two spaces; when
// the table is wider than the terminal the widest columns are cut.
func (p *Printer) Table(headers []string, rows [][]string) error {
	widths := make([]int, len(headers))
	for i, h := range headers {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range rows {
		for i := range headers {
			if i < len(r) {
				r[i] = strings.ReplaceAll(r[i], "\n", "⏎")
				widths[i] = max(widths[i], visibleLen(r[i]))
			}
		}
	}
	if p.Width > 0 {
		const minCol = 6
		total := func() int {
			t := 2 * (len(widths) - 1)
			for _, w := range widths {
				t += w
			}
			return t
		}
		for total() > p.Width {
			widest := 0
			for i, w := range widths {
				if w > widths[widest] {
					widest = i
				}
			}
			if widths[widest] <= minCol {
				break
			}
			widths[widest]--
		}
	}
	line := func(cells []string, style string) error {
		var b strings.Builder
		for i := range headers {
			cell := ""
			if i < len(cells) {
				cell = truncate(cells[i], widths[i])
			}
			if i < len(headers)-1 {
				cell += strings.Repeat(" ", max(0, widths[i]-visibleLen(cell))+2)
			}
			b.WriteString(cell)
		}
		s := strings.TrimRight(b.String(), " ")
		if style != "" && p.Color {
			s = style + s + reset
		}
		_, err := fmt.Fprintln(p.W, s)
		return err
	}
	if err := line(headers, bold); err != nil {
		return err
	}
	for _, r := range rows {
		if err := line(r, ""); err != nil {
			return err
		}
	}
	return nil
}

// Fields prints name: value lines, names aligned.
func (p *Printer) Fields(pairs [][2]string) error {
	w := 0
	for _, kv := range pairs {
		w = max(w, len(kv[0]))
	}
	for _, kv := range pairs {
		if _, err := fmt.Fprintf(p.W, "%-*s  %s\n", w+1, kv[0]+":", kv[1]); err != nil {
			return err
		}
	}
	return nil
}

var sparks = []rune("▁▂▃▄▅▆▇█")

// Sparkline draws values as a line of block characters scaled between their
// minimum and maximum; NaN is a gap.
func Sparkline(values []float64) string {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		if !math.IsNaN(v) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	var b strings.Builder
	for _, v := range values {
		switch {
		case math.IsNaN(v):
			b.WriteRune(' ')
		case hi == lo:
			b.WriteRune(sparks[len(sparks)/2])
		default:
			b.WriteRune(sparks[int((v-lo)/(hi-lo)*float64(len(sparks)-1)+0.5)])
		}
	}
	return b.String()
}
