// Package buildinfo holds the version, commit and build date stamped into every
// binary at build time (make build / make release set them with -ldflags -X),
// and answers a binary's --version.
package buildinfo

import (
	"fmt"
	"io"
)

// Stamped by the linker: -X github.com/viworks/backend-agent/pkg/buildinfo.Version=…
// (git describe --tags --always --dirty), .Commit (the full commit) and .Date (the
// commit's date, so that two builds of one commit are identical). A plain
// `go build` leaves the defaults.
var (
	Version = "dev"
	Commit  = "unknown"
	Date    = "unknown"
)

// String is the one line --version prints for the binary called name.
func String(name string) string {
	return fmt.Sprintf("%s %s (commit %s, built %s)", name, Version, Commit, Date)
}

// IsVersionFlag reports whether args (a binary's arguments without its name)
// ask for the version: the first one is --version or -version.
func IsVersionFlag(args []string) bool {
	return len(args) > 0 && (args[0] == "--version" || args[0] == "-version")
}

// PrintIfAsked writes String(name) to w and returns true when args ask for the
// version; the caller then exits with status 0.
func PrintIfAsked(w io.Writer, name string, args []string) bool {
	if !IsVersionFlag(args) {
		return false
	}
	fmt.Fprintln(w, String(name))
	return true
}
