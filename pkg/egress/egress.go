// Package egress decides which addresses the control plane may call out to
// (alert webhook receivers) and enforces it on every connection it dials.
//
// Only public unicast addresses are allowed by default: private (RFC 1918,
// fc00::/7), loopback, link-local (169.254.0.0/16 with the cloud metadata
// address, fe80::/10), unspecified, multicast, shared (CGNAT 100.64.0.0/10),
// documentation, benchmarking, reserved and NAT64 ranges are refused unless a
// prefix of the allow-list holds the address. The check runs on the address
// actually dialed (net.Dialer.Control), after DNS resolution, so a name that
// resolves, or later re-resolves, to a refused address gets no connection.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every refusal of an address.
var ErrRefused = errors.New("address not allowed")

// nonPublic are the ranges, besides those netip's predicates name, that are
// not public unicast.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space (CGNAT)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the broadcast address
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: reaches IPv4 addresses
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments (Teredo, ORCHIDs, ...)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4: embeds IPv4 addresses
	netip.MustParsePrefix("3fff::/20"),       // documentation
	netip.MustParsePrefix("5f00::/16"),       // segment routing SIDs
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
}

// Policy is the set of addresses outgoing connections may reach. The zero
// value and a nil *Policy allow only public unicast addresses.
type Policy struct {
	allowed []netip.Prefix
}

// NewPolicy builds a policy allowing, besides public unicast addresses, the
// CIDRs (or single addresses) of allowed.
func NewPolicy(allowed []string) (*Policy, error) {
	p := &Policy{}
	var errs []error
	for _, s := range allowed {
		pfx, err := ParsePrefix(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.allowed = append(p.allowed, pfx)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// ParsePrefix parses a CIDR or a single address (as a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or an IP address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Public reports whether a is a public unicast address.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// CheckAddr returns nil when a may be reached, else an error wrapping ErrRefused.
func (p *Policy) CheckAddr(a netip.Addr) error {
	a = a.Unmap()
	if Public(a) {
		return nil
	}
	if p != nil {
		for _, pfx := range p.allowed {
			if pfx.Contains(a) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s is not a public address (allow it in alerts.webhook_allowed_cidrs)", ErrRefused, a)
}

// Resolver resolves host names (*net.Resolver satisfies it).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckURL checks a webhook URL: http or https, a host, no user info, and a
// host that is an allowed address or a name none of whose addresses is
// refused. A name that does not resolve now is accepted: connections are
// checked again when dialed. The error is a message for the client.
func (p *Policy) CheckURL(ctx context.Context, r Resolver, raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("is not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must use http or https")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return errors.New("must name a host")
	case u.User != nil:
		return errors.New("must not carry user info (user:password@); authenticate with the webhook's signature")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return p.CheckAddr(a)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return fmt.Errorf("%w: %s names this host", ErrRefused, host)
	}
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if err := p.CheckAddr(a); err != nil {
			return fmt.Errorf("%s resolves to a refused address: %w", host, err)
		}
	}
	return nil
}

// Control is a net.Dialer.Control that refuses connections to addresses the
// policy does not allow: it sees the address actually dialed.
func (p *Policy) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse dialed address", ErrRefused)
	}
	return p.CheckAddr(ap.Addr())
}

// Transport returns an HTTP transport whose every connection is checked by
// the policy. It uses no proxy (a proxy would hide the receiver's address).
func (p *Policy) Transport(dialTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: p.Control}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = d.DialContext
	return t
}
