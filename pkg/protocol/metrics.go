package protocol

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// AppendMetricsJSON appends the metrics as one JSON object, names sorted, the
// bytes json.Marshal gives for a map of names without <, > or & (which it
// escapes and this keeps: the text is stored, never put in HTML), without
// reflection.
func (t *Telemetry) AppendMetricsJSON(dst []byte) []byte {
	dst = append(dst, '{')
	for i, name := range slices.Sorted(maps.Keys(t.Metrics)) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendUnescapedHTML(dst, name)
		dst = append(dst, ':')
		dst = appendJSONFloat(dst, t.Metrics[name])
	}
	return append(dst, '}')
}

// appendUnescapedHTML appends s quoted as encoding/json quotes it (but for its
// HTML escapes); s is valid UTF-8, as every decoded name is.
func appendUnescapedHTML(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < ' ':
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		case c < utf8.RuneSelf:
			dst = append(dst, c)
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == '\u2028' || r == '\u2029' {
				dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n
			continue
		}
		i++
	}
	return append(dst, '"')
}

// appendJSONFloat appends a finite f as encoding/json formats a float64.
func appendJSONFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 as 1e-7
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}
