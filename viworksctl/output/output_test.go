package output_test

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/viworksctl/output"
)

func TestTableFitsTheTerminal(t *testing.T) {
	rows := [][]string{{"sim-0", "online", strings.Repeat("x", 80)}, {"sim-10", "offline", "short"}}
	for _, tc := range []struct {
		name  string
		width int
		want  string
	}{
		{"no limit", 0, "ID      STATUS   NOTE\nsim-0   online   " + strings.Repeat("x", 80) + "\nsim-10  offline  short\n"},
		{"cut to 40 columns", 40, "ID      STATUS   NOTE\nsim-0   online   " + strings.Repeat("x", 22) + "…\nsim-10  offline  short\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := &output.Printer{W: &buf, Format: "table", Width: tc.width}
			in := make([][]string, len(rows))
			for i := range rows {
				in[i] = append([]string(nil), rows[i]...)
			}
			require.NoError(t, p.Table([]string{"ID", "STATUS", "NOTE"}, in))
			require.Equal(t, tc.want, buf.String())
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if tc.width > 0 {
					require.LessOrEqual(t, len([]rune(line)), tc.width)
				}
			}
		})
	}
}

func TestToYAMLKeepsOrderAndTypes(t *testing.T) {
	out, err := output.ToYAML([]byte(`{"id":"a1","count":3,"ratio":0.5,"ok":true,"none":null,"labels":{"z":"1","a":"2"},"items":["x","y"]}`))
	require.NoError(t, err)
	require.Equal(t, "id: a1\ncount: 3\nratio: 0.5\nok: true\nnone: null\nlabels:\n  z: \"1\"\n  a: \"2\"\nitems:\n  - x\n  - y\n", string(out))
	_, err = output.ToYAML([]byte(`{"broken":`))
	require.Error(t, err)
}

func TestDocumentIsUnchanged(t *testing.T) {
	var buf bytes.Buffer
	p := &output.Printer{W: &buf, Format: "json"}
	doc := `{"b":1,"a":{"x":[1,2]}}`
	require.NoError(t, p.Document([]byte(doc)))
	require.Equal(t, doc+"\n", buf.String())
}

func TestSparkline(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want string
	}{
		{"rising", []float64{0, 1, 2, 3, 4, 5, 6, 7}, "▁▂▃▄▅▆▇█"},
		{"flat", []float64{3, 3, 3}, "▅▅▅"},
		{"gap", []float64{0, math.NaN(), 10}, "▁ █"},
		{"empty", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, output.Sparkline(tc.in)) })
	}
}

func TestValidateFormat(t *testing.T) {
	for _, f := range output.Formats {
		require.NoError(t, (&output.Printer{Format: f}).Validate())
	}
	require.ErrorContains(t, (&output.Printer{Format: "xml"}).Validate(), "table, json, yaml")
}
