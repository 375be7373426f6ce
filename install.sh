#!/bin/sh
# Installs (or upgrades) the ViWorkS Backend Agent from an unpacked release
# archive on a systemd host:
#
#   sudo ./install.sh [--layout all-in-one|split] [--no-start]
#   sudo ./install.sh --uninstall
#
# It creates the viworks system user, /etc/viworks (viworks.toml 0640,
# viworks.env 0600, backend.key 0600) and /var/lib/viworks, installs the
# binaries into /usr/local/bin and the units into /etc/systemd/system, and
# generates the secrets and the Ed25519 command signing key that are absent.
# Existing configuration and secrets are never replaced: running it again is an
# upgrade. DESTDIR=/some/root installs into that tree instead (no user, no
# ownership, no systemctl), for images and tests.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
DESTDIR=${DESTDIR:-}
BINDIR=/usr/local/bin
CONFDIR=/etc/viworks
DATADIR=/var/lib/viworks
UNITDIR=/etc/systemd/system
USER_NAME=viworks

layout=all-in-one
start=yes
action=install

usage() {
	cat <<EOF
usage: $0 [--layout all-in-one|split] [--no-start]
       $0 --uninstall

  --layout all-in-one  one process, viworks-backend-agent.service (default)
  --layout split       viworks-api-server, viworks-agent-gateway and
                       viworks-scheduler.service (need DATABASE_URL and REDIS_URL)
  --no-start           install without enabling or starting the units
  --uninstall          stop, disable and remove the units and binaries; keeps
                       $CONFDIR, $DATADIR and the $USER_NAME user
Environment: DESTDIR installs into another root (no user, ownership or systemctl).
EOF
}

say() { printf 'install.sh: %s\n' "$*"; }
die() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case $1 in
	--layout)
		[ $# -ge 2 ] || die "--layout needs all-in-one or split"
		layout=$2
		shift
		;;
	--layout=*) layout=${1#--layout=} ;;
	--no-start) start=no ;;
	--uninstall) action=uninstall ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unknown argument $1"
		;;
	esac
	shift
done

case $layout in
all-in-one) units="viworks-backend-agent.service" ;;
split) units="viworks-scheduler.service viworks-api-server.service viworks-agent-gateway.service" ;;
*) die "--layout must be all-in-one or split (got $layout)" ;;
esac

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root (sudo ./install.sh), or set DESTDIR to install into another tree"
fi
if [ ! -d "$HERE/bin" ] || [ ! -d "$HERE/systemd" ]; then
	die "run from an unpacked release archive ($HERE has no bin/ or systemd/)"
fi

# Files are created private; modes are set explicitly below.
umask 077

systemd_here() { [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1; }

# own OWNER PATH: chown on the real system only (a DESTDIR tree has no viworks user).
own() { [ -n "$DESTDIR" ] || chown "$1" "$2"; }

# random_hex N: N random bytes as 2N hex digits.
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# env_value KEY FILE: the value of KEY= in FILE ("" when absent or empty).
env_value() { sed -n "s/^$1=//p" "$2" | tail -n 1; }

# ensure_secret KEY VALUE FILE: sets KEY when FILE lacks it or leaves it empty;
# a value already there is never replaced.
ensure_secret() {
	if [ -n "$(env_value "$1" "$3")" ]; then
		return 0
	fi
	tmp="$3.tmp.$$"
	grep -v "^$1=" "$3" >"$tmp" || true
	printf '%s=%s\n' "$1" "$2" >>"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$3"
	say "generated $1 in $CONFDIR/viworks.env"
}

# signing_key FILE: a new Ed25519 private key as PKCS#8 PEM. The DER of an
# Ed25519 PKCS#8 key is a fixed 16-byte header (RFC 8410) and the 32-byte seed.
signing_key() {
	{
		echo "-----BEGIN PRIVATE KEY-----"
		{
			printf '\060\056\002\001\000\060\005\006\003\053\145\160\004\042\004\040'
			dd if=/dev/urandom bs=32 count=1 2>/dev/null
		} | base64
		echo "-----END PRIVATE KEY-----"
	} >"$1"
}

do_uninstall() {
	if systemd_here; then
		for u in "$HERE"/systemd/*.service; do
			u=$(basename "$u")
			systemctl disable --now "$u" 2>/dev/null || true
		done
	fi
	for u in "$HERE"/systemd/*.service; do
		rm -f "$DESTDIR$UNITDIR/$(basename "$u")"
	done
	for b in "$HERE"/bin/*; do
		rm -f "$DESTDIR$BINDIR/$(basename "$b")"
	done
	if systemd_here; then systemctl daemon-reload; fi
	say "removed the units and binaries; kept $CONFDIR (configuration and secrets), $DATADIR (data) and the $USER_NAME user"
}

do_install() {
	if [ -z "$DESTDIR" ] && ! id "$USER_NAME" >/dev/null 2>&1; then
		useradd --system --user-group --home-dir "$DATADIR" --no-create-home \
			--shell /usr/sbin/nologin --comment "ViWorkS Backend Agent" "$USER_NAME"
		say "created the system user $USER_NAME"
	fi

	# Missing parents (in a DESTDIR tree) get the usual 0755.
	(umask 022 && mkdir -p "$DESTDIR$BINDIR" "$DESTDIR$UNITDIR" "$DESTDIR$CONFDIR" "$DESTDIR$DATADIR")
	chmod 0755 "$DESTDIR$BINDIR" "$DESTDIR$UNITDIR"
	chmod 0750 "$DESTDIR$CONFDIR" "$DESTDIR$DATADIR"
	own "root:$USER_NAME" "$DESTDIR$CONFDIR"
	own "$USER_NAME:$USER_NAME" "$DESTDIR$DATADIR"

	for b in "$HERE"/bin/*; do
		# A new file replaces a running binary safely.
		cp "$b" "$DESTDIR$BINDIR/.$(basename "$b").new"
		chmod 0755 "$DESTDIR$BINDIR/.$(basename "$b").new"
		mv -f "$DESTDIR$BINDIR/.$(basename "$b").new" "$DESTDIR$BINDIR/$(basename "$b")"
	done
	say "installed $(cd "$HERE/bin" && echo *) into $BINDIR"

	conf="$DESTDIR$CONFDIR/viworks.toml"
	if [ -e "$conf" ]; then
		say "kept the existing $CONFDIR/viworks.toml (config.example.toml lists every key with its default)"
	else
		cp "$HERE/config.example.toml" "$conf"
		chmod 0640 "$conf"
		own "root:$USER_NAME" "$conf"
		say "installed $CONFDIR/viworks.toml"
	fi

	env="$DESTDIR$CONFDIR/viworks.env"
	if [ -e "$env" ]; then
		if [ -e "$HERE/.env" ] && ! cmp -s "$HERE/.env" "$env"; then
			say "kept the existing $CONFDIR/viworks.env; $HERE/.env differs and was NOT installed: merge it by hand"
		else
			say "kept the existing $CONFDIR/viworks.env"
		fi
	else
		src="$HERE/env.example"
		if [ -e "$HERE/.env" ]; then src="$HERE/.env"; fi
		cp "$src" "$env"
		say "installed $CONFDIR/viworks.env from $(basename "$src")"
	fi
	chmod 0600 "$env"
	own root:root "$env"
	ensure_secret JWT_SECRET "$(random_hex 32)" "$env"
	ensure_secret AUDIT_HMAC_KEY "$(random_hex 32)" "$env"
	ensure_secret ARGS_ENCRYPTION_KEY "$(random_hex 32)" "$env"
	ensure_secret AGENT_ENROLLMENT_SECRET "$(random_hex 24)" "$env"

	key="$DESTDIR$CONFDIR/backend.key"
	if [ -e "$key" ]; then
		say "kept the existing $CONFDIR/backend.key"
	else
		signing_key "$key"
		say "generated the command signing key $CONFDIR/backend.key"
	fi
	chmod 0600 "$key"
	own "$USER_NAME:$USER_NAME" "$key"

	for u in "$HERE"/systemd/*.service; do
		cp "$u" "$DESTDIR$UNITDIR/$(basename "$u")"
		chmod 0644 "$DESTDIR$UNITDIR/$(basename "$u")"
	done
	say "installed the units into $UNITDIR"

	if [ "$start" = no ]; then
		say "--no-start: not enabling or starting $units"
	elif ! systemd_here; then
		say "no systemd here (or DESTDIR set): not enabling or starting $units"
	else
		systemctl daemon-reload
		# shellcheck disable=SC2086 # $units is a list of unit names
		systemctl enable $units
		# shellcheck disable=SC2086
		systemctl restart $units
		say "enabled and (re)started $units; check: systemctl status $units"
	fi
}

case $action in
install) do_install ;;
uninstall) do_uninstall ;;
esac
