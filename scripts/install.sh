#!/usr/bin/env bash
# Install callguard on a PBX host (run as root from a checkout or unpacked release):
#
#   sudo bash scripts/install.sh
#
# What it does, and never more:
#   /opt/callguard/venv                      a Python venv with callguard and its dependencies
#   /etc/systemd/system/callguard.service    the unit (updated when the shipped one changed)
#   /opt/callguard/docs/admin.md             the admin guide (the unit's Documentation=)
#   /etc/callguard/config.toml               only if absent (store.path → /var/lib/callguard/…)
#   /etc/callguard/callguard.env             only if absent: secrets, root-only (0600)
#   /etc/asterisk/extensions_callguard.conf, manager_callguard.conf, queues_callguard.conf.example
#                                            only if absent; extensions.conf and manager.conf are
#                                            never edited: the #include lines are printed instead
# A second run changes nothing (files are compared before they are written; pip runs only when the
# source changed). It never starts or enables the service.
#
# Environment:
#   DESTDIR=/tmp/root      install under another root (staging, tests). The venv's scripts then point
#                          into DESTDIR, so only the files outside the venv are usable from there.
#   PYTHON=python3.11      the interpreter for the venv (>= 3.11)
#   CALLGUARD_SKIP_VENV=1  do not create/update the venv (e.g. it is managed elsewhere)
#   CALLGUARD_PIP_OPTS=…   extra pip options, e.g. "--no-index --find-links /srv/wheels" offline
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
PYTHON="${PYTHON:-python3}"
OPT="$DESTDIR/opt/callguard"
VENV="$OPT/venv"
ETC="$DESTDIR/etc/callguard"
UNIT_DIR="$DESTDIR/etc/systemd/system"
AST="$DESTDIR/etc/asterisk"
STORE_PATH="/var/lib/callguard/callguard.sqlite3"

say() { printf 'install: %s\n' "$*"; }

# install_file SRC DEST MODE: write DEST only when its content or mode differs (idempotent, keeps mtimes).
install_file() {
  local src="$1" dest="$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    if [ "$(stat -c %a "$dest")" != "$mode" ]; then chmod "$mode" "$dest"; say "mode $mode $dest"; fi
    return 0
  fi
  install -D -m "$mode" "$src" "$dest"
  say "wrote $dest"
}

# install_new SRC DEST MODE: write DEST only when it does not exist (an admin's file is never touched).
install_new() {
  local src="$1" dest="$2" mode="$3"
  if [ -e "$dest" ]; then
    say "kept existing $dest"
    return 0
  fi
  install -D -m "$mode" "$src" "$dest"
  say "wrote $dest"
}

source_hash() {
  # What pip would install: the package, its metadata. Sorted, content-addressed.
  (cd "$SRC" && find callguard pyproject.toml README.md -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
    -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

install_venv() {
  if [ "${CALLGUARD_SKIP_VENV:-}" = "1" ]; then
    say "skipped the venv (CALLGUARD_SKIP_VENV=1)"
    return 0
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "install: $PYTHON is older than 3.11; set PYTHON=python3.11" >&2; exit 1; }
  if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$OPT"
    "$PYTHON" -m venv "$VENV"
    say "created $VENV"
  fi
  local want stamp="$VENV/.callguard-source"
  want="$(source_hash)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/callguard" ]; then
    say "venv up to date"
    return 0
  fi
  # shellcheck disable=SC2086  # CALLGUARD_PIP_OPTS is a list of options
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check ${CALLGUARD_PIP_OPTS:-} "$SRC"
  printf '%s\n' "$want" > "$stamp"
  say "installed callguard into $VENV"
}

installed_config() {
  # The shipped config with the store in the unit's StateDirectory (ProtectSystem=strict leaves
  # only that writable).
  local out="$1"
  sed -e '/^\[store\]/,/^\[/ s|^path = .*|path = "'"$STORE_PATH"'"|' "$SRC/config.toml" > "$out"
  grep -q "^path = \"$STORE_PATH\"" "$out" || { echo "install: could not set store.path in config" >&2; exit 1; }
}

env_template() {
  cat > "$1" <<'ENV'
# Secrets for callguard, read by systemd before it drops privileges (keep this file root-only, 0600).
# They win over config.toml, which stays free of secrets and readable by the service.
#CALLGUARD_AMI_SECRET=
#CALLGUARD_CRM_TOKEN=
#CALLGUARD_CRM_WEBHOOK_URL=
#CALLGUARD_CRM_APP_TOKEN=
#CALLGUARD_CRM_WEBHOOK_SECRET=
#CALLGUARD_CRM_CLIENT_SECRET=
#CALLGUARD_WEB_TOKEN=
#CALLGUARD_SINK_SECRET=
ENV
}

TMP=""
cleanup() { [ -z "$TMP" ] || rm -rf "$TMP"; }
trap cleanup EXIT

main() {
  TMP="$(mktemp -d)"
  local tmp="$TMP"

  install_venv
  install_file "$SRC/scripts/callguard.service" "$UNIT_DIR/callguard.service" 644
  install_file "$SRC/docs/admin.md" "$OPT/docs/admin.md" 644
  installed_config "$tmp/config.toml"
  install_new "$tmp/config.toml" "$ETC/config.toml" 644
  env_template "$tmp/callguard.env"
  install_new "$tmp/callguard.env" "$ETC/callguard.env" 600
  for f in extensions_callguard.conf manager_callguard.conf queues_callguard.conf.example; do
    install_new "$SRC/dialplan/$f" "$AST/$f" 644
  done

  cat <<EOF

Next steps (nothing below was done for you):
  1. Secrets: edit $ETC/callguard.env (AMI secret, CRM token); settings: $ETC/config.toml
  2. Asterisk dialplan: add this line at the end of /etc/asterisk/extensions.conf
         #include extensions_callguard.conf
     and send inbound calls to the context [callguard-inbound] (see the comments in that file).
  3. Asterisk AMI (for missed-call leads): add this line at the end of /etc/asterisk/manager.conf
         #include manager_callguard.conf
     set its secret to CALLGUARD_AMI_SECRET, set ami.enabled = true in config.toml, then
         asterisk -rx 'dialplan reload' && asterisk -rx 'manager reload'
  4. Check (doctor reads callguard.env beside the config, as the unit does) and start:
         /opt/callguard/venv/bin/callguard --config /etc/callguard/config.toml doctor
         systemctl daemon-reload && systemctl enable --now callguard
         curl -s http://127.0.0.1:8088/readyz
EOF
}

main "$@"
