#!/usr/bin/env bash
# Install (or upgrade) boxback from its bundle: an agent on a services box, or the
# controller on an admin host. Idempotent: run it again to upgrade; edited configs and
# plans are never overwritten (the new default is written beside them as *.new).
#
#   deploy/install.sh --agent --plan gocd [--name gocd1] [--listen 0.0.0.0:7443]
#   deploy/install.sh --controller [--listen 0.0.0.0:7444]
#   options: --prefix DIR (or DESTDIR=DIR): install into a scratch root; nothing outside it
#            is touched (no user created, no systemctl). --bundle DIR: the bundle to install
#            (default: the directory this script sits in when it is a bundle, else the
#            checkout's dist-bundle/, made with `npm run bundle` when missing).
#            BOXBACK_NODE=/path/to/node: the Node.js (>= 20.19) the wrappers run.
#
# What it does, in order:
#   1. checks Node.js >= 20.19 and finds the bundle
#   2. /opt/boxback/            the bundle (swapped in whole, so a running daemon keeps its files)
#   3. /usr/local/bin/          boxback, boxback-agent, boxback-controller (wrappers: exec node)
#   4. controller: the system user `boxback`
#   5. /var/lib/boxback/        store 0750 (2750 root:boxback for a controller), agent 0700 or
#                               controller 0700 (boxback); /etc/boxback/certs 0750
#   6. /etc/boxback/            agent.yaml or controller.yaml skeleton, plans/<plan>.yaml:
#                               kept when edited, the new default written beside as *.new
#   7. /etc/systemd/system/     boxback-agent.service (+ .d/10-plan.conf generated from the
#                               config and plan) or boxback-controller.service
#   8. systemctl daemon-reload (not in a scratch root); agent: /etc/sysctl.d/60-boxback-inotify.conf
#      (more inotify watches for the change journal), applied with sysctl (not in a scratch root)
#   9. checks the installed config with the installed daemon (--check-config)
# and prints one line per thing it did. Exit codes: 0 ok, 1 failure, 2 usage.
set -euo pipefail

MIN_NODE=20.19
usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}
die() { echo "install.sh: $*" >&2; exit 1; }
usage_error() { echo "install.sh: $*" >&2; echo "run install.sh --help for usage" >&2; exit 2; }

ROLE=""
PLAN=""
NAME=""
LISTEN=""
PREFIX="${DESTDIR:-}"
BUNDLE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) ROLE=agent ;;
    --controller) ROLE=controller ;;
    --plan) PLAN="${2:?--plan needs a value}"; shift ;;
    --plan=*) PLAN="${1#*=}" ;;
    --name) NAME="${2:?--name needs a value}"; shift ;;
    --name=*) NAME="${1#*=}" ;;
    --listen) LISTEN="${2:?--listen needs a value}"; shift ;;
    --listen=*) LISTEN="${1#*=}" ;;
    --prefix) PREFIX="${2:?--prefix needs a value}"; shift ;;
    --prefix=*) PREFIX="${1#*=}" ;;
    --bundle) BUNDLE="${2:?--bundle needs a value}"; shift ;;
    --bundle=*) BUNDLE="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
  esac
  shift
done
[ -n "$ROLE" ] || usage_error "say what to install: --agent or --controller"
if [ "$ROLE" = agent ]; then
  case "$PLAN" in
    gocd|circleci-services|generic) ;;
    "") usage_error "--agent needs --plan gocd|circleci-services|generic" ;;
    *) usage_error "unknown plan '$PLAN' (want gocd, circleci-services or generic)" ;;
  esac
  [ -z "$NAME" ] && NAME="$(hostname -s 2>/dev/null || hostname)"
  [[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] || usage_error "--name '$NAME': letters, digits, '.', '_' or '-'"
  : "${LISTEN:=0.0.0.0:7443}"
else
  [ -z "$PLAN" ] || usage_error "--plan is for --agent"
  : "${LISTEN:=0.0.0.0:7444}"
fi
[[ "$LISTEN" =~ ^[^[:space:]:]+:[0-9]{1,5}$ ]] || usage_error "--listen '$LISTEN': want host:port"

ROOT=""
if [ -n "$PREFIX" ]; then
  mkdir -p "$PREFIX"
  ROOT="$(cd "$PREFIX" && pwd)"
  [ "$ROOT" = / ] && ROOT=""
fi
SCRATCH=$([ -n "$ROOT" ] && echo yes || echo no)

say() { printf '  %-10s %s\n' "$1" "$2"; }

# --- 1. Node.js and the bundle -------------------------------------------------------------
NODE="${BOXBACK_NODE:-$(command -v node || true)}"
[ -n "$NODE" ] && [ -x "$NODE" ] || die "Node.js >= $MIN_NODE is needed: install it (or set BOXBACK_NODE=/path/to/node)"
NODE_VERSION="$("$NODE" -p 'process.versions.node')"
if ! "$NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number); const [x,y]=process.argv[1].split(".").map(Number); process.exit(a>x||(a===x&&b>=y)?0:1)' "$MIN_NODE"; then
  die "$NODE is Node.js $NODE_VERSION; boxback needs >= $MIN_NODE (set BOXBACK_NODE=/path/to/node)"
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
is_bundle() { [ -f "$1/boxback-agent.mjs" ] && [ -f "$1/boxback-controller.mjs" ] && [ -f "$1/boxback.mjs" ] && [ -f "$1/BUILD-INFO.json" ]; }
if [ -z "$BUNDLE" ]; then
  if is_bundle "$HERE/.."; then BUNDLE="$HERE/.."          # dist-bundle/deploy/install.sh
  elif is_bundle "$HERE/../dist-bundle"; then BUNDLE="$HERE/../dist-bundle"
  elif [ -f "$HERE/../scripts/bundle.mjs" ]; then
    echo "no dist-bundle/ yet: running npm run bundle in $(cd "$HERE/.." && pwd)"
    (cd "$HERE/.." && npm run --silent bundle) || die "npm run bundle failed"
    BUNDLE="$HERE/../dist-bundle"
  else
    die "no bundle found beside $HERE: pass --bundle DIR (a dist-bundle/ made by npm run bundle)"
  fi
fi
is_bundle "$BUNDLE" || die "$BUNDLE is not a boxback bundle (boxback-agent.mjs, boxback-controller.mjs, boxback.mjs, BUILD-INFO.json)"
BUNDLE="$(cd "$BUNDLE" && pwd)"
# Units and plans: beside this script (the checkout's deploy/, or a bundle's deploy/ copy).
DEPLOY="$HERE"
[ -f "$DEPLOY/systemd/boxback-agent.service" ] || die "no systemd units in $DEPLOY/systemd"
VERSION="$("$NODE" -p 'require(process.argv[1]).version' "$BUNDLE/BUILD-INFO.json")"

echo "boxback $VERSION: installing the $ROLE into ${ROOT:-/} (Node.js $NODE_VERSION at $NODE)"

# --- helpers ---------------------------------------------------------------------------------
HAVE_USER=no
if [ "$SCRATCH" = no ] && getent passwd boxback >/dev/null 2>&1; then HAVE_USER=yes; fi

# mkdir with a mode (and owner when we can set one); says what it did.
ensure_dir() { # path mode [owner:group]
  local d="$ROOT$1" mode="$2" owner="${3:-}" created=no
  if [ ! -d "$d" ]; then mkdir -p "$d"; created=yes; fi
  # Owner first: chown may clear a setgid bit that chmod then sets.
  if [ -n "$owner" ] && [ "$SCRATCH" = no ]; then chown "$owner" "$d"; fi
  local cur; cur="$(stat -c '%a' "$d")"
  if [ "$created" = yes ]; then
    chmod "$mode" "$d"; say "created" "$1 ($mode)"
  elif [ "$cur" != "${mode#0}" ] && [ "$cur" != "2${mode#0}" ]; then
    # (a setgid bit set for the controller on the same box is kept)
    chmod "$mode" "$d"; say "chmod" "$1 $mode (was $cur)"
  fi
}

# Install a file we own outright (units, wrappers): replaced when it differs.
put_file() { # src-or-"-" dest mode
  local src="$1" dest="$ROOT$2" mode="$3" tmp
  mkdir -p "$(dirname "$dest")"
  tmp="$(mktemp "$dest.XXXXXX")"
  if [ "$src" = - ]; then cat >"$tmp"; else cat "$src" >"$tmp"; fi
  chmod "$mode" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"; chmod "$mode" "$dest"; say "unchanged" "$2"
  else
    local what=installed; [ -e "$dest" ] && what=updated
    mv -f "$tmp" "$dest"; say "$what" "$2"
  fi
}

# Install a config file the operator may edit: never overwritten once it differs.
NEW_FILES=()
put_config() { # src-or-"-" dest mode [group]
  local src="$1" dest="$ROOT$2" mode="$3" group="${4:-}" tmp
  mkdir -p "$(dirname "$dest")"
  tmp="$(mktemp "$dest.XXXXXX")"
  if [ "$src" = - ]; then cat >"$tmp"; else cat "$src" >"$tmp"; fi
  chmod "$mode" "$tmp"
  if [ -n "$group" ] && [ "$SCRATCH" = no ]; then chgrp "$group" "$tmp"; fi
  if [ ! -e "$dest" ]; then
    mv "$tmp" "$dest"; say "installed" "$2"
  elif cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"; say "unchanged" "$2"
  else
    mv -f "$tmp" "$dest.new"; NEW_FILES+=("$2")
    say "kept" "$2 (edited; the new default is in $2.new: compare and merge by hand)"
  fi
}

# --- 2. the bundle into /opt/boxback ---------------------------------------------------------
OPT="$ROOT/opt/boxback"
mkdir -p "$ROOT/opt"
if [ -d "$OPT" ] && diff -rq "$BUNDLE" "$OPT" >/dev/null 2>&1; then
  say "unchanged" "/opt/boxback (boxback $VERSION)"
else
  STAGE="$(mktemp -d "$ROOT/opt/.boxback.new.XXXXXX")"
  cp -a "$BUNDLE/." "$STAGE/"
  chmod -R u=rwX,go=rX "$STAGE"
  chmod 0755 "$STAGE"
  if [ -d "$OPT" ]; then
    OLD="$ROOT/opt/.boxback.old.$$"
    mv "$OPT" "$OLD" && mv "$STAGE" "$OPT" && rm -rf "$OLD"
    say "updated" "/opt/boxback (boxback $VERSION; running daemons keep the old files until restarted)"
  else
    mv "$STAGE" "$OPT"
    say "installed" "/opt/boxback (boxback $VERSION)"
  fi
fi

# --- 3. wrappers -----------------------------------------------------------------------------
wrapper() { # name bundle-file [drop-to-user] [node flags]
  local drop="" flags="${4:-}"
  if [ -n "${3:-}" ]; then
    drop="# Run as root by hand, it drops to the '$3' user so files it creates in the catalog
# (token create) stay the daemon's. BOXBACK_AS_ROOT=1 keeps root.
if [ \"\$(id -u)\" = 0 ] && [ -z \"\${BOXBACK_AS_ROOT:-}\" ] && getent passwd $3 >/dev/null 2>&1; then
  exec runuser -u $3 -- \"\$NODE\" ${flags:+$flags }/opt/boxback/$2 \"\$@\"
fi
"
  fi
  put_file - "/usr/local/bin/$1" 0755 <<EOF
#!/bin/sh
# $1: installed by boxback's deploy/install.sh; runs /opt/boxback/$2 with Node.js >= $MIN_NODE.
NODE="\${BOXBACK_NODE:-$NODE}"
${drop}exec "\$NODE" ${flags:+$flags }/opt/boxback/$2 "\$@"
EOF
}
wrapper boxback boxback.mjs
# The daemons' V8 flags: packages/agent/src/node-flags.ts, packages/controller/src/node-flags.ts.
wrapper boxback-agent boxback-agent.mjs "" "--max-semi-space-size=4 --expose-gc"
wrapper boxback-controller boxback-controller.mjs boxback "--max-semi-space-size=8 --heap-growing-percent=50"

# --- 4. the controller's user (before its files get a group) ------------------------------
if [ "$ROLE" = controller ]; then
  if [ "$SCRATCH" = yes ]; then
    say "skipped" "system user boxback (scratch root)"
  elif [ "$HAVE_USER" = yes ]; then
    say "unchanged" "system user boxback"
  else
    useradd --system --user-group --home-dir /var/lib/boxback/controller --no-create-home --shell /usr/sbin/nologin --comment "boxback controller" boxback
    HAVE_USER=yes
    say "created" "system user boxback"
  fi
fi

# --- 5. directories --------------------------------------------------------------------------
ensure_dir /var/lib/boxback 0755 root:root
if [ "$ROLE" = agent ]; then
  ensure_dir /var/lib/boxback/store 0750
  ensure_dir /var/lib/boxback/agent 0700 root:root
else
  # setgid + group boxback: backup directories agents create here are readable by the controller.
  ensure_dir /var/lib/boxback/store 2750 "root:boxback"
  ensure_dir /var/lib/boxback/controller 0700 "boxback:boxback"
fi
ensure_dir /etc/boxback 0755 root:root
# (an agent install leaves the group alone: a controller on the same box reads its key)
if [ "$ROLE" = controller ]; then ensure_dir /etc/boxback/certs 0750 root:boxback; else ensure_dir /etc/boxback/certs 0750; fi

# --- 6. config skeleton and plan ---------------------------------------------------------------
if [ "$ROLE" = agent ]; then
  put_config "$DEPLOY/plans/$PLAN.yaml" "/etc/boxback/plans/$PLAN.yaml" 0644
  # From the shipped plan, so the skeleton is the same on every run.
  ROOTS="$("$NODE" "$OPT/lib/plan-info.mjs" roots --plan "$DEPLOY/plans/$PLAN.yaml")" \
    || die "the shipped plan $DEPLOY/plans/$PLAN.yaml does not load (see above)"
  put_config - /etc/boxback/agent.yaml 0640 <<EOF
# boxback agent config, written by install.sh (plan $PLAN). After editing:
#   boxback-agent --config /etc/boxback/agent.yaml --check-config
#   install.sh --agent --plan $PLAN    (again, when store, stateDir or plan changed: the
#                                      systemd drop-in lists the paths the agent may write)
# Relative paths are resolved from this file's directory (/etc/boxback).

# This box's name in the catalog (\`boxback hosts add $NAME ...\`); its certificate must carry it:
#   boxback certs issue --dir /etc/boxback/certs --host $NAME   (on the host holding the CA)
name: $NAME
# Where the controller dials this agent (gRPC, mutual TLS).
listen: $LISTEN
tls: { ca: certs/ca.crt, cert: certs/agents/$NAME.crt, key: certs/agents/$NAME.key }
# The backup store: a local disk or a mount the controller reads too.
store: /var/lib/boxback/store
# Quiesce lease, restore records, locks (0700).
stateDir: /var/lib/boxback/agent
# What this box holds and how to quiesce, restore and health-check it.
plan: plans/$PLAN.yaml
# The only directories the plan may name (computed from the plan; narrow or widen with care).
allowedRoots: $ROOTS
# The hostname and addresses written into host files on restore (default: this box's own).
# identity: { hostname: $NAME.example.com, addresses: [10.0.0.5] }
# The only certificate names that may call this agent: the controller's ("controller" unless
# \`boxback certs init --name\` named it otherwise). Every other certificate of the fleet CA
# (another agent's, or one issued for any other name) is refused with PERMISSION_DENIED.
allowedClients: [controller]
EOF
else
  CTL_GROUP=""; [ "$HAVE_USER" = yes ] && CTL_GROUP=boxback
  put_config - /etc/boxback/controller.yaml 0640 "$CTL_GROUP" <<EOF
# boxback controller config, written by install.sh. After editing:
#   boxback-controller --config /etc/boxback/controller.yaml --check-config
# Relative paths are resolved from this file's directory (/etc/boxback).

# Where the CLI, monitoring and nobody else dial the controller (gRPC, TLS + bearer token).
listen: $LISTEN
# From \`boxback certs init --dir /etc/boxback/certs\`; the key must be readable by the
# boxback user (install.sh sets certs/controller.key to root:boxback 0640 when it exists).
tls: { ca: certs/ca.crt, cert: certs/controller.crt, key: certs/controller.key }
# The catalog (SQLite, WAL) in the unit's state directory.
catalog: /var/lib/boxback/controller/catalog.db
# The backup store the agents write (a mount shared with them, or this box's disk).
store: /var/lib/boxback/store
# Backups running at once across the fleet.
concurrency: 4
# Hosts registered without an RPO are at risk after this long without a good backup.
defaultRpoSeconds: 24h
# How often every agent is asked for its state.
pollSeconds: 15s
# Prometheus metrics and /healthz over plain HTTP (keep it on a private address).
# metrics: { listen: 127.0.0.1:9464 }
EOF
  KEY="$ROOT/etc/boxback/certs/controller.key"
  if [ -f "$KEY" ] && [ "$HAVE_USER" = yes ] && [ "$(stat -c '%a %G' "$KEY")" != "640 boxback" ]; then
    chgrp boxback "$KEY" && chmod 0640 "$KEY" && say "chmod" "/etc/boxback/certs/controller.key root:boxback 0640 (the daemon's user reads it)"
  fi
fi

# --- 7. systemd unit ---------------------------------------------------------------------------
UNIT="boxback-$ROLE.service"
put_file "$DEPLOY/systemd/$UNIT" "/etc/systemd/system/$UNIT" 0644
if [ "$ROLE" = agent ]; then
  if DROPIN_TEXT="$("$NODE" "$OPT/lib/plan-info.mjs" dropin --config "$ROOT/etc/boxback/agent.yaml")"; then
    if [ -n "$ROOT" ]; then
      # The drop-in names the real paths; the scratch root's own prefix must not leak in.
      DROPIN_TEXT="${DROPIN_TEXT//$ROOT\//\/}"
    fi
    printf '%s\n' "$DROPIN_TEXT" | put_file - "/etc/systemd/system/$UNIT.d/10-plan.conf" 0644
  else
    echo "install.sh: warning: /etc/boxback/agent.yaml does not load; the drop-in with the plan's ReadWritePaths was not written (fix the config and run install.sh again)" >&2
  fi
fi

# --- 8. systemd ------------------------------------------------------------------------------
if [ "$SCRATCH" = yes ]; then
  say "skipped" "systemctl daemon-reload (scratch root)"
elif [ -d /run/systemd/system ]; then
  systemctl daemon-reload && say "reloaded" "systemd units"
  if systemctl is-active --quiet "$UNIT"; then
    say "note" "$UNIT is running the old version: systemctl restart $UNIT (a running job would be cancelled; check \`boxback status\` first)"
  fi
else
  say "skipped" "systemctl daemon-reload (systemd is not running here)"
fi

# --- 8b. agent: inotify watches for the change journal ----------------------------------------
if [ "$ROLE" = agent ]; then
  put_file - /etc/sysctl.d/60-boxback-inotify.conf 0644 <<'EOF'
# Installed by boxback's deploy/install.sh (agent).
# The agent's change journal watches every directory of the plan's trees (artifacts, test
# reports) with inotify: one watch per directory. The kernel's default limit (8192 on older
# kernels, scaled with RAM on newer ones) is too small for a CI server's artifact store;
# past it the journal cannot be trusted and every backup makes a full rsync pass (the agent
# logs why). A watch costs about 1 KiB of kernel memory, and only while it is in use.
fs.inotify.max_user_watches=1048576
EOF
  if [ "$SCRATCH" = yes ]; then
    say "skipped" "sysctl (scratch root): the inotify limit applies at the next boot, or with sysctl --system"
  elif command -v sysctl >/dev/null 2>&1 && sysctl -q -p /etc/sysctl.d/60-boxback-inotify.conf >/dev/null 2>&1; then
    say "applied" "fs.inotify.max_user_watches=1048576"
  else
    say "note" "could not apply /etc/sysctl.d/60-boxback-inotify.conf now (in a container?); it applies at the next boot"
  fi
fi

# --- 9. check what was installed ---------------------------------------------------------------
CONF="$ROOT/etc/boxback/$ROLE.yaml"
if OUT="$(BOXBACK_AS_ROOT=1 "$NODE" "$OPT/boxback-$ROLE.mjs" --config "$CONF" --check-config 2>&1)"; then
  say "checked" "/etc/boxback/$ROLE.yaml: ${OUT//$ROOT\//\/}"
else
  say "check" "FAILED: ${OUT//$ROOT\//\/}"
fi

echo
if [ "${#NEW_FILES[@]}" -gt 0 ]; then
  echo "Kept your edited ${NEW_FILES[*]}: the new defaults are beside them as *.new."
fi
if [ "$ROLE" = agent ]; then
  cat <<EOF
Next: put the fleet CA and this agent's certificate in /etc/boxback/certs
  (ca.crt, agents/$NAME.crt, agents/$NAME.key: \`boxback certs issue --dir DIR --host $NAME\`
  where the CA is), review /etc/boxback/agent.yaml and plans/$PLAN.yaml, then
  systemctl enable --now boxback-agent
  boxback hosts add $NAME --address <this box's address>:${LISTEN##*:}     (from the admin host)
EOF
else
  cat <<EOF
Next: boxback certs init --dir /etc/boxback/certs   (once: the fleet CA), run install.sh
  --controller again (it makes controller.key readable by boxback), then
  systemctl enable --now boxback-controller
  boxback-controller --config /etc/boxback/controller.yaml token create --role admin --name ops
EOF
fi
