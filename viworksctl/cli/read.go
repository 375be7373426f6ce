package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/viworks/backend-agent/viworksctl/client"
	"github.com/viworks/backend-agent/viworksctl/output"
)

// column is one column of a table: its header and how a row shows it.
type column struct {
	header string
	value  func(p *output.Printer, m map[string]any) string
}

// col shows the field key (a dotted path) of each item.
func col(header, key string) column {
	return column{header, func(_ *output.Printer, m map[string]any) string { return str(lookup(m, key)) }}
}

// statusCol shows the field key coloured as a status.
func statusCol(header, key string) column {
	return column{header, func(p *output.Printer, m map[string]any) string { return p.Status(str(lookup(m, key))) }}
}

func lookup(m map[string]any, key string) any {
	var v any = m
	for _, k := range strings.Split(key, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// str shows a JSON value in a table cell.
func str(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		// Times to the second in tables (json and yaml keep the API's).
		if len(x) > 20 && x[4] == '-' && x[10] == 'T' {
			if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
				return t.UTC().Format("2006-01-02T15:04:05Z")
			}
		}
		return x
	case json.Number:
		return x.String()
	case bool:
		return fmt.Sprint(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = str(e)
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ",")
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + str(x[k])
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

func decode(body []byte, out any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	return nil
}

// call sends one request with the context's credentials.
func (a *app) call(cmd *cobra.Command, r client.Request) (*client.Response, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	return c.Do(cmd.Context(), r)
}

// show prints a document: unchanged in json, converted in yaml, with
// table in table format.
func (a *app) show(body []byte, table func(p *output.Printer, doc map[string]any) error) error {
	p := a.printer()
	if p.Structured() {
		return p.Document(body)
	}
	var doc map[string]any
	if err := decode(body, &doc); err != nil {
		return err
	}
	return table(p, doc)
}

// getOne prints GET path.
func (a *app) getOne(cmd *cobra.Command, path string, q url.Values, table func(p *output.Printer, doc map[string]any) error) error {
	resp, err := a.call(cmd, client.Request{Method: http.MethodGet, Path: path, Query: q})
	if err != nil {
		return err
	}
	return a.show(resp.Body, table)
}

// rows renders items with cols.
func rows(p *output.Printer, items []any, cols []column) error {
	headers := make([]string, len(cols))
	for i, c := range cols {
		headers[i] = c.header
	}
	var out [][]string
	for _, it := range items {
		m, _ := it.(map[string]any)
		row := make([]string, len(cols))
		for i, c := range cols {
			row[i] = c.value(p, m)
		}
		out = append(out, row)
	}
	return p.Table(headers, out)
}

// pageFlags are --limit and --cursor of a list.
type pageFlags struct {
	limit  int
	cursor string
}

func (pf *pageFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&pf.limit, "limit", 0, "items per page, 1 to 1000 (default the server's, 50)")
	cmd.Flags().StringVar(&pf.cursor, "cursor", "", "the next_cursor of the previous page")
}

func (pf *pageFlags) query(q url.Values) url.Values {
	if q == nil {
		q = url.Values{}
	}
	if pf.limit != 0 {
		q.Set("limit", fmt.Sprint(pf.limit))
	}
	if pf.cursor != "" {
		q.Set("cursor", pf.cursor)
	}
	return q
}

// list prints a page of GET path as a table of cols (json and yaml: the
// page as the API answered it), and where the next page starts.
func (a *app) list(cmd *cobra.Command, path string, q url.Values, pf *pageFlags, cols []column) error {
	return a.getOne(cmd, path, pf.query(q), func(p *output.Printer, doc map[string]any) error {
		items, _ := doc["items"].([]any)
		if len(items) == 0 {
			fmt.Fprintln(a.io.Err, "no items")
			return nil
		}
		if err := rows(p, items, cols); err != nil {
			return err
		}
		if next, ok := doc["next_cursor"].(string); ok && next != "" {
			fmt.Fprintf(a.io.Err, "more: --cursor %s\n", next)
		}
		return nil
	})
}

// fields prints the named fields of doc as name: value lines.
func fields(p *output.Printer, doc map[string]any, keys ...string) error {
	pairs := make([][2]string, 0, len(keys))
	for _, k := range keys {
		v := str(lookup(doc, k))
		if k == "status" || k == "state" {
			v = p.Status(v)
		}
		pairs = append(pairs, [2]string{k, v})
	}
	return p.Fields(pairs)
}

// mutate sends r (a DELETE or POST) and prints the answer with table, or
// msg when the answer is empty (in json and yaml: the answer's document
// when there is one).
func (a *app) mutate(cmd *cobra.Command, r client.Request, msg string, table func(p *output.Printer, doc map[string]any) error) error {
	resp, err := a.call(cmd, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(resp.Body)) == 0 || table == nil {
		if a.printer().Structured() && len(bytes.TrimSpace(resp.Body)) > 0 {
			return a.printer().Document(resp.Body)
		}
		fmt.Fprintln(a.io.Out, msg)
		return nil
	}
	return a.show(resp.Body, table)
}

// pathID escapes an id for a path segment.
func pathID(id string) string { return url.PathEscape(id) }
