package apiserver

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/store"
)

// The agent list and detail are written by hand, once per answer, in the
// bytes encoding/json gives for List[AgentView] and AgentView (the tests
// compare the two on a varied fleet): reflection cost more than the query.

// jsonContentType is what gin's c.JSON answers with.
const jsonContentType = "application/json; charset=utf-8"

// agentJSONSize is a generous estimate of one agent's JSON, to size buffers.
const agentJSONSize = 768

// errJSONTime is a time encoding/json refuses (a year outside 0..9999).
var errJSONTime = errors.New("agent time outside the years 0..9999")

// agentWriter appends JSON to b; keys is scratch space for sorting map keys.
type agentWriter struct {
	b    []byte
	keys []string
	err  error
}

// agentListJSON is the JSON of List[AgentView] of agents with next ("" for
// none) as next_cursor.
func agentListJSON(agents []store.Agent, next string) ([]byte, error) {
	w := agentWriter{b: make([]byte, 0, 64+len(agents)*agentJSONSize)}
	w.b = append(w.b, `{"items":[`...)
	for i := range agents {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.agent(&agents[i])
	}
	w.b = append(w.b, `],"next_cursor":`...)
	if next == "" {
		w.b = append(w.b, "null"...)
	} else {
		w.string(next)
	}
	w.b = append(w.b, '}')
	return w.b, w.err
}

// agentJSON is the JSON of agentView(a).
func agentJSON(a *store.Agent) ([]byte, error) {
	w := agentWriter{b: make([]byte, 0, agentJSONSize)}
	w.agent(a)
	return w.b, w.err
}

// writeAgent answers 200 with agentView(a).
func (s *Server) writeAgent(c *gin.Context, a *store.Agent) {
	body, err := agentJSON(a)
	if err != nil {
		s.internalError(c, "encoding agent failed", err)
		return
	}
	c.Data(http.StatusOK, jsonContentType, body)
}

func (w *agentWriter) agent(a *store.Agent) {
	w.b = append(w.b, `{"id":`...)
	w.string(a.ID)
	w.b = append(w.b, `,"status":`...)
	w.string(a.Status)
	w.b = append(w.b, `,"site":`...)
	w.string(a.Site)
	w.b = append(w.b, `,"version":`...)
	w.string(a.Version)
	w.b = append(w.b, `,"capabilities":`...)
	w.list(a.Capabilities)
	w.b = append(w.b, `,"labels":`...)
	w.labels(a.Labels)
	w.b = append(w.b, `,"attributes_source":`...)
	w.string(a.AttributesSource)
	w.b = append(w.b, `,"reported_site":`...)
	w.string(a.ReportedSite)
	w.b = append(w.b, `,"reported_labels":`...)
	w.labels(a.ReportedLabels)
	w.b = append(w.b, `,"reported_capabilities":`...)
	w.list(a.ReportedCapabilities)
	w.b = append(w.b, `,"hostname":`...)
	w.string(a.Hostname)
	w.b = append(w.b, `,"os":`...)
	w.string(a.OS)
	w.b = append(w.b, `,"arch":`...)
	w.string(a.Arch)
	w.b = append(w.b, `,"gateway_id":`...)
	w.string(a.GatewayID)
	w.b = append(w.b, `,"connected_at":`...)
	w.time(a.ConnectedAt)
	w.b = append(w.b, `,"last_seen_at":`...)
	w.time(a.LastSeenAt)
	w.b = append(w.b, `,"health":{"status":`...)
	w.string(a.HealthStatus)
	w.b = append(w.b, `,"uptime_s":`...)
	w.b = strconv.AppendInt(w.b, a.UptimeS, 10)
	w.b = append(w.b, "}}"...)
}

// list is a JSON array; nil is [] (nonNilList).
func (w *agentWriter) list(l []string) {
	w.b = append(w.b, '[')
	for i, s := range l {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.string(s)
	}
	w.b = append(w.b, ']')
}

// labels is a JSON object with its keys sorted, as encoding/json writes maps;
// nil is {} (nonNilMap).
func (w *agentWriter) labels(m map[string]string) {
	w.keys = w.keys[:0]
	for k := range m {
		w.keys = append(w.keys, k)
	}
	slices.Sort(w.keys)
	w.b = append(w.b, '{')
	for i, k := range w.keys {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.string(k)
		w.b = append(w.b, ':')
		w.string(m[k])
	}
	w.b = append(w.b, '}')
}

// time is RFC 3339 with nanoseconds, as time.Time.MarshalJSON; nil is null.
func (w *agentWriter) time(t *time.Time) {
	if t == nil {
		w.b = append(w.b, "null"...)
		return
	}
	if y := t.Year(); y < 0 || y > 9999 {
		w.err = errJSONTime
	}
	w.b = append(w.b, '"')
	w.b = t.AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
}

const hexDigits = "0123456789abcdef"

// string is s as encoding/json quotes it: HTML-safe (<, >, & as \u00XX),
// U+2028 and U+2029 escaped, each byte of invalid UTF-8 as U+FFFD.
func (w *agentWriter) string(s string) {
	b := append(w.b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\ufffd"...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	w.b = append(b, '"')
}
