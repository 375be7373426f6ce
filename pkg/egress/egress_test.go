package egress_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/egress"
)

func TestCheckAddr(t *testing.T) {
	refused := []string{
		"127.0.0.1", "127.8.9.10", "::1", "169.254.169.254", "fe80::1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
		"fd00::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "100.64.0.1", "255.255.255.255", "::ffff:127.0.0.1",
		"::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "192.0.2.1", "198.18.0.1", "2001:db8::1",
	}
	allowed := []string{"1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"}
	var p *egress.Policy
	for _, s := range refused {
		err := p.CheckAddr(netip.MustParseAddr(s))
		require.ErrorIs(t, err, egress.ErrRefused, s)
	}
	for _, s := range allowed {
		require.NoError(t, p.CheckAddr(netip.MustParseAddr(s)), s)
	}

	p, err := egress.NewPolicy([]string{"10.0.0.0/8", "127.0.0.1", "::1"})
	require.NoError(t, err)
	require.NoError(t, p.CheckAddr(netip.MustParseAddr("10.9.9.9")))
	require.NoError(t, p.CheckAddr(netip.MustParseAddr("127.0.0.1")))
	require.NoError(t, p.CheckAddr(netip.MustParseAddr("::ffff:127.0.0.1")))
	require.NoError(t, p.CheckAddr(netip.MustParseAddr("::1")))
	require.ErrorIs(t, p.CheckAddr(netip.MustParseAddr("127.0.0.2")), egress.ErrRefused)
	require.ErrorIs(t, p.CheckAddr(netip.MustParseAddr("169.254.169.254")), egress.ErrRefused)

	_, err = egress.NewPolicy([]string{"10.0.0.0/33", "nope"})
	require.Error(t, err)
}

// fakeResolver answers every name with its addresses.
type fakeResolver []netip.Addr

func (f fakeResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return f, nil
}

type failingResolver struct{}

func (failingResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return nil, errors.New("no such host")
}

func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	var p *egress.Policy
	public := fakeResolver{netip.MustParseAddr("93.184.216.34")}
	for _, tc := range []struct {
		url     string
		r       egress.Resolver
		refused bool
	}{
		{"https://hooks.example.com/x", public, false},
		{"https://hooks.example.com/x", failingResolver{}, false},
		{"http://127.0.0.1:9/x", public, true},
		{"http://169.254.169.254/latest/meta-data/", public, true},
		{"http://[::1]:8080/", public, true},
		{"http://10.0.0.5/", public, true},
		{"http://localhost:8080/", public, true},
		{"http://api.localhost/", public, true},
		{"http://rebind.example.com/", fakeResolver{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("127.0.0.1")}, true},
		{"ftp://hooks.example.com/", public, true},
		{"https://user:pw@hooks.example.com/", public, true},
		{"https:opaque", public, true},
	} {
		err := p.CheckURL(ctx, tc.r, tc.url)
		if tc.refused {
			require.Error(t, err, tc.url)
		} else {
			require.NoError(t, err, tc.url)
		}
	}
}

// TestTransportRefusesAtDialTime: a name that resolves to loopback (here
// "localhost", whatever the resolver) gets no connection unless allowed.
func TestTransportRefusesAtDialTime(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	c := &http.Client{Transport: (*egress.Policy)(nil).Transport(time.Second)}
	_, err := c.Get("http://localhost:" + port + "/")
	require.ErrorIs(t, err, egress.ErrRefused)
	require.Zero(t, hits)

	p, err := egress.NewPolicy([]string{"127.0.0.0/8", "::1"})
	require.NoError(t, err)
	c = &http.Client{Transport: p.Transport(time.Second)}
	resp, err := c.Get("http://localhost:" + port + "/")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, 1, hits)
}
