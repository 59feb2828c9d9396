#!/usr/bin/env bash
# A shared MLflow tracking server for a team: PostgreSQL (Debian's package) as the backend store,
# a persistent artifact folder, and `mlflow server` in front, bound to 127.0.0.1 unless told
# otherwise. The first start creates the database cluster, the database and its user.
#
#   scripts/tracking_server.sh start [postgres|mlflow]   # both by default
#   scripts/tracking_server.sh stop [postgres|mlflow]    # both by default
#   scripts/tracking_server.sh status                    # exit 0 only when both answer
#
# Then: MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python train.py ...
#
# Settings, all from the environment (secrets only there: never on a command line, never echoed):
#   TRITONPOOL_SERVER_DIR   state: pgdata/, artifacts/, logs, pid file (~/.local/share/tritonpool/tracking)
#   TRITONPOOL_PG_DATA      PostgreSQL's data directory ($TRITONPOOL_SERVER_DIR/pgdata)
#   TRITONPOOL_PG_PORT      PostgreSQL's port, on 127.0.0.1 only (5433, beside a system PostgreSQL's 5432)
#   TRITONPOOL_DB_NAME      the database (mlflow)
#   TRITONPOOL_DB_USER      its owner, whom mlflow server logs in as (mlflow)
#   TRITONPOOL_DB_PASSWORD  that user's password; unset: generated once, kept in $TRITONPOOL_SERVER_DIR/db_password (mode 600)
#   TRITONPOOL_HOST         the address mlflow server binds (127.0.0.1; 0.0.0.0 exposes it: see README)
#   TRITONPOOL_PORT         its port (5000)
#   TRITONPOOL_WORKERS      its worker processes (4)
#   TRITONPOOL_ALLOWED_HOSTS  Host headers it accepts when exposed, e.g. mlflow.example.org:5000 (MLflow's default: local and private addresses)
#   TRITONPOOL_AUTH         1: MLflow's basic-auth app; the first start needs MLFLOW_AUTH_ADMIN_PASSWORD (user admin);
#                           MLFLOW_FLASK_SERVER_SECRET_KEY unset: generated once, kept in $TRITONPOOL_SERVER_DIR/flask_secret_key
#   MLFLOW                  the mlflow command (mlflow on PATH)
#   PG_BIN                  PostgreSQL's programs (the newest /usr/lib/postgresql/*/bin)
#
# PostgreSQL refuses to run as root; started by root, it runs as the user postgres (Debian's),
# which must be able to reach TRITONPOOL_PG_DATA.
set -euo pipefail
set +x  # never trace: commands below handle the password

DIR=${TRITONPOOL_SERVER_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/tritonpool/tracking}
PGDATA_DIR=${TRITONPOOL_PG_DATA:-$DIR/pgdata}
PG_PORT=${TRITONPOOL_PG_PORT:-5433}
DB_NAME=${TRITONPOOL_DB_NAME:-mlflow}
DB_USER=${TRITONPOOL_DB_USER:-mlflow}
HOST=${TRITONPOOL_HOST:-127.0.0.1}
PORT=${TRITONPOOL_PORT:-5000}
WORKERS=${TRITONPOOL_WORKERS:-4}
MLFLOW=${MLFLOW:-mlflow}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
MLFLOW_PID=$DIR/mlflow.pid

die() { echo "tracking_server: $*" >&2; exit 1; }

as_postgres() {  # run a PostgreSQL program as the user that owns the cluster
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_running() { [ -n "$PG_BIN" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; }

health_url() {  # a server bound to every address answers on loopback
  local host=$HOST
  case $host in 0.0.0.0 | "::" | "[::]") host=127.0.0.1 ;; esac
  echo "http://$host:$PORT/health"
}

mlflow_running() {
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 3 "$(health_url)" 2>/dev/null
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$(health_url)" 2>/dev/null
  fi
}

secret() {  # secret VARIABLE FILE: the variable's value, else one generated once and kept in FILE (mode 600)
  if [ -n "${!1:-}" ]; then
    printf '%s' "${!1}"
  else
    if [ ! -s "$2" ]; then
      mkdir -p "$(dirname "$2")"
      (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$2")
    fi
    cat "$2"
  fi
}

db_password() { secret TRITONPOOL_DB_PASSWORD "$DIR/db_password"; }

start_postgres() {
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL's programs not found (apt-get install postgresql, or set PG_BIN)"
  mkdir -p "$DIR"
  if pg_running; then
    echo "PostgreSQL already running ($PGDATA_DIR)"
  else
    if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
      mkdir -p "$PGDATA_DIR"
      chmod 700 "$PGDATA_DIR"
      if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$PGDATA_DIR"
        runuser -u postgres -- test -w "$PGDATA_DIR" \
          || die "user postgres cannot reach $PGDATA_DIR; set TRITONPOOL_PG_DATA to a directory it can (e.g. /var/lib/postgresql/tritonpool)"
      fi
      # Local (socket) logins: the cluster's OS user only; TCP logins: a password (SCRAM).
      as_postgres "$PG_BIN/initdb" -D "$PGDATA_DIR" --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --no-instructions >"$DIR/initdb.log" 2>&1 || die "initdb failed: see $DIR/initdb.log"
    fi
    # TCP on loopback only; the socket lives in the data directory, which only its owner can enter.
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='$PGDATA_DIR'" start >/dev/null \
      || die "PostgreSQL did not start: see $PGDATA_DIR/postgres.log"
    echo "PostgreSQL listening on 127.0.0.1:$PG_PORT ($PGDATA_DIR)"
  fi
  # The database and its owner, created once; the password follows TRITONPOOL_DB_PASSWORD. psql
  # reads the values from its environment (\getenv), so they appear on no command line.
  TRITONPOOL_DB_NAME=$DB_NAME TRITONPOOL_DB_USER=$DB_USER TRITONPOOL_DB_PASSWORD=$(db_password) \
    as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGDATA_DIR" -p "$PG_PORT" -d postgres >/dev/null <<'SQL' \
    || die "could not create the database (see $PGDATA_DIR/postgres.log)"
\getenv db_name TRITONPOOL_DB_NAME
\getenv db_user TRITONPOOL_DB_USER
\getenv db_password TRITONPOOL_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'db_user') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db_user') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'db_user', :'db_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'db_user') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db_name') \gexec
SQL
}

start_mlflow() {
  command -v "$MLFLOW" >/dev/null || die "$MLFLOW not found (pip install -e '.[server]' in the project's environment, or set MLFLOW)"
  pg_running || die "PostgreSQL is not running: scripts/tracking_server.sh start postgres"
  if mlflow_running; then
    echo "MLflow server already answering at $(health_url)"
    return
  fi
  mkdir -p "$DIR/artifacts"
  local options=(server --host "$HOST" --port "$PORT" --workers "$WORKERS" --artifacts-destination "$DIR/artifacts")
  [ -n "${TRITONPOOL_ALLOWED_HOSTS:-}" ] && options+=(--allowed-hosts "$TRITONPOOL_ALLOWED_HOSTS")
  if [ "${TRITONPOOL_AUTH:-0}" = 1 ]; then
    # Users and permissions in a SQLite file beside the artifacts; every request needs a login.
    # EDIT lets each teammate log runs into shared experiments; only owners and admins delete.
    # Checking a password costs ~1 s of CPU here (PBKDF2), on every request: a run logs each
    # epoch, so successful logins are cached for 60 s per worker (a changed or deleted password
    # still works on the other workers for up to that long).
    cat >"$DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = EDIT
database_uri = sqlite:///$DIR/basic_auth.db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
EOF
    [ -s "$DIR/basic_auth.db" ] || [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] \
      || die "TRITONPOOL_AUTH=1: set MLFLOW_AUTH_ADMIN_PASSWORD for the first start (the admin user's password)"
    options+=(--app-name basic-auth)
    export MLFLOW_AUTH_CONFIG_PATH=$DIR/basic_auth.ini
    # Signs the login forms' CSRF tokens; must stay the same across restarts and workers.
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret MLFLOW_FLASK_SERVER_SECRET_KEY "$DIR/flask_secret_key")
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  # MLflow's background job runner (GenAI trace and evaluation jobs: 8 more processes) is not
  # needed to track training runs; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true turns it back on.
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
  # The store URI carries no password: libpq reads PGPASSWORD from the server's environment.
  PGPASSWORD=$(db_password) \
    MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://$DB_USER@127.0.0.1:$PG_PORT/$DB_NAME" \
    setsid "$MLFLOW" "${options[@]}" >"$DIR/mlflow.log" 2>&1 </dev/null &
  echo $! >"$MLFLOW_PID"  # setsid: the pid is also the process group of the server and its workers
  for _ in $(seq 1 180); do
    if mlflow_running; then
      echo "MLflow server at http://$HOST:$PORT (artifacts in $DIR/artifacts, log $DIR/mlflow.log)"
      return
    fi
    kill -0 "$(cat "$MLFLOW_PID")" 2>/dev/null || { tail -n 20 "$DIR/mlflow.log" >&2; die "mlflow server exited"; }
    sleep 0.5
  done
  die "mlflow server did not answer within 90 s: see $DIR/mlflow.log"
}

stop_mlflow() {
  [ -s "$MLFLOW_PID" ] || { echo "MLflow server not started from $DIR"; return; }
  local group
  group=$(cat "$MLFLOW_PID")
  if kill -TERM -- "-$group" 2>/dev/null; then
    for _ in $(seq 1 40); do
      kill -0 -- "-$group" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$group" 2>/dev/null || true
    echo "MLflow server stopped"
  fi
  rm -f "$MLFLOW_PID"
}

stop_postgres() {
  if pg_running; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null
    echo "PostgreSQL stopped"
  fi
}

status() {
  local code=0
  if pg_running; then echo "PostgreSQL: running ($PGDATA_DIR, 127.0.0.1:$PG_PORT)"; else echo "PostgreSQL: stopped"; code=1; fi
  if mlflow_running; then echo "MLflow server: answering at http://$HOST:$PORT"; else echo "MLflow server: not answering"; code=1; fi
  return $code
}

command=${1:-}
part=${2:-all}
case "$command:$part" in
  start:all) start_postgres && start_mlflow ;;
  start:postgres) start_postgres ;;
  start:mlflow) start_mlflow ;;
  stop:all) stop_mlflow && stop_postgres ;;
  stop:postgres) stop_postgres ;;
  stop:mlflow) stop_mlflow ;;
  status:*) status ;;
  *) echo "usage: $0 start|stop [postgres|mlflow] | status" >&2; exit 2 ;;
esac
