package config

import (
	"errors"
	"net/url"
	"strings"
)

// RedactedValue replaces secrets in Config.Redacted.
const RedactedValue = "REDACTED"

// Redacted returns a copy of c that is safe to log: the JWT secret, the enrollment
// secret, the args encryption keys, the audit keys and the passwords inside database.url and redis.url are replaced by
// RedactedValue. A URL that cannot be parsed is replaced as a whole.
func (c Config) Redacted() Config {
	r := c.clone()
	if r.Security.JWTSecret != "" {
		r.Security.JWTSecret = RedactedValue
	}
	if r.Security.AgentEnrollmentSecret != "" {
		r.Security.AgentEnrollmentSecret = RedactedValue
	}
	if r.Security.ArgsEncryptionKey != "" {
		r.Security.ArgsEncryptionKey = RedactedValue
	}
	for i := range r.Security.ArgsPreviousKeys {
		r.Security.ArgsPreviousKeys[i] = RedactedValue
	}
	if r.Security.AuditKey != "" {
		r.Security.AuditKey = RedactedValue
	}
	for i := range r.Security.PreviousAuditKeys {
		r.Security.PreviousAuditKeys[i] = RedactedValue
	}
	r.Database.URL = redactDatabaseURL(r.Database.URL)
	r.Redis.URL = redactURL(r.Redis.URL, true)
	return r
}

func redactDatabaseURL(s string) string {
	if s == "" || strings.Contains(s, "://") {
		return redactURL(s, false)
	}
	pairs, err := parseDSN(s)
	if err != nil {
		return RedactedValue
	}
	var b strings.Builder
	last := 0
	for _, p := range pairs {
		if isSecretParam(p.key) {
			b.WriteString(s[last:p.start])
			b.WriteString(RedactedValue)
			last = p.end
		}
	}
	b.WriteString(s[last:])
	return b.String()
}

// redactURL hides the password of a URL and secret query parameters. With
// loneUserIsPassword (Redis), a user name without a password is hidden too, since
// Redis clients read "redis://secret@host" as a password.
func redactURL(s string, loneUserIsPassword bool) string {
	if s == "" {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return RedactedValue
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), RedactedValue)
		} else if loneUserIsPassword && u.User.Username() != "" {
			u.User = url.User(RedactedValue)
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for k := range q {
			if isSecretParam(k) {
				q[k] = []string{RedactedValue}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

func isSecretParam(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}

// dsnPair is one key=value of a libpq key/value connection string; start:end is the
// value as written (quotes included).
type dsnPair struct {
	key        string
	value      string
	start, end int
}

var errBadDSN = errors.New("malformed key=value connection string")

// parseDSN parses a libpq key/value connection string: key = value pairs separated
// by white space, values either bare or single-quoted, with backslash escapes.
func parseDSN(s string) ([]dsnPair, error) {
	var pairs []dsnPair
	i := 0
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	skip := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	for {
		skip()
		if i == len(s) {
			return pairs, nil
		}
		k := i
		for i < len(s) && (s[i] == '_' || s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9') {
			i++
		}
		key := s[k:i]
		skip()
		if key == "" || i == len(s) || s[i] != '=' {
			return nil, errBadDSN
		}
		i++
		skip()
		start := i
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					val.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return nil, errBadDSN
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					c = s[i]
					i++
				}
				val.WriteByte(c)
			}
		}
		if i < len(s) && !isSpace(s[i]) {
			return nil, errBadDSN
		}
		pairs = append(pairs, dsnPair{key: key, value: val.String(), start: start, end: i})
	}
}
