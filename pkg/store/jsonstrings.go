package store

import (
	"encoding/json"
	"unicode/utf8"
)

// The jsonb columns of string lists and maps (labels, capabilities) are read
// on every agent list; these parsers read their usual form without
// reflection: strings without escapes or control characters, valid UTF-8.
// Anything else (an escape, a number, nesting, malformed input) is left to
// encoding/json, so the result is always what json.Unmarshal gives.

// decodeStringList is json.Unmarshal of b into a nil []string.
func decodeStringList(b []byte) ([]string, error) {
	if l, ok := parseStringList(b); ok {
		return l, nil
	}
	var l []string
	err := json.Unmarshal(b, &l)
	return l, err
}

// decodeStringMap is json.Unmarshal of b into a nil map[string]string.
func decodeStringMap(b []byte) (map[string]string, error) {
	if m, ok := parseStringMap(b); ok {
		return m, nil
	}
	var m map[string]string
	err := json.Unmarshal(b, &m)
	return m, err
}

// parseStringList parses [ "a", "b" ]; ok is false for any other form.
func parseStringList(b []byte) ([]string, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	out := []string{}
	if i < len(b) && b[i] == ']' {
		return out, skipSpace(b, i+1) == len(b)
	}
	for {
		s, next, ok := plainString(b, i)
		if !ok {
			return nil, false
		}
		out = append(out, s)
		var done bool
		if i, done, ok = afterItem(b, next, ']'); !ok {
			return nil, false
		} else if done {
			return out, true
		}
	}
}

// afterItem reads what follows an item at i: a comma (next is the next item's
// start) or closer, which ends the document (done; ok only if nothing but
// space follows).
func afterItem(b []byte, i int, closer byte) (next int, done, ok bool) {
	i = skipSpace(b, i)
	switch {
	case i >= len(b):
		return 0, false, false
	case b[i] == ',':
		return skipSpace(b, i+1), false, true
	case b[i] == closer:
		return 0, true, skipSpace(b, i+1) == len(b)
	}
	return 0, false, false
}

// parseStringMap parses { "k": "v", ... }; ok is false for any other form.
// A repeated key keeps its last value, as encoding/json does.
func parseStringMap(b []byte) (map[string]string, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	out := map[string]string{}
	if i < len(b) && b[i] == '}' {
		return out, skipSpace(b, i+1) == len(b)
	}
	for {
		k, next, ok := plainString(b, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		v, next, ok := plainString(b, skipSpace(b, i+1))
		if !ok {
			return nil, false
		}
		out[k] = v
		var done bool
		if i, done, ok = afterItem(b, next, '}'); !ok {
			return nil, false
		} else if done {
			return out, true
		}
	}
}

// plainString reads the string starting at b[i] (a quote) that has no escape,
// no control character and valid UTF-8, returning it and the index after it.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	start := i + 1
	ascii := true
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s := b[start:j]
			if !ascii && !utf8.Valid(s) {
				return "", 0, false
			}
			return string(s), j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", 0, false
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
