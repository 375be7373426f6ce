// Package releasetest tests the VM install path end to end with real tools:
// `make release` (twice, byte for byte), the archive's SHA256SUMS and layout,
// every binary's --version, install.sh into a temporary root (modes, secrets
// kept on a second run, --uninstall), `systemd-analyze verify` of every unit,
// and the installed all-in-one started from its unit's ExecStart, config and
// env file (in a chroot of that root) answering the README's troubleshooting
// curls. Run it with `make release-test` (as root: chroot).
package releasetest
