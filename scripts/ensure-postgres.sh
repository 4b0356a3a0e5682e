#!/usr/bin/env bash
# `make postgres-server` (which `make test` runs first): the PostgreSQL server
# binaries that the PostgreSQL tests start their own throwaway server from
# (tests/support/postgres.py looks in `pg_config --bindir`, then the newest
# /usr/lib/postgresql/*/bin). Does nothing when they are there. When they are
# missing and we are root, installs Debian's postgresql; otherwise says loudly
# that those tests will skip, and why. It never fails the build (the tests skip
# with the reason), and it starts no PostgreSQL service: the tests start their own.
set -uo pipefail

has_server() { [ -x "$1/initdb" ] && [ -x "$1/postgres" ]; }

found() {
    local dir
    dir=$(pg_config --bindir 2>/dev/null) && has_server "$dir" && return 0
    for dir in /usr/lib/postgresql/*/bin; do
        has_server "$dir" && return 0
    done
    return 1
}

loudly() {
    {
        echo "************************************************************************"
        printf 'make test: %s\n' "$@"
        echo "************************************************************************"
    } >&2
}

found && exit 0

where="PostgreSQL server binaries not found (looked in pg_config --bindir and /usr/lib/postgresql/*/bin)"
if [ "$(id -u)" -ne 0 ]; then
    loudly "$where," "and this is not root, so they are not installed: the PostgreSQL tests will SKIP." \
        "Install the Debian package postgresql (sudo apt-get install postgresql), or run make test as root."
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    loudly "$where," "and there is no apt-get to install them with: the PostgreSQL tests will SKIP." \
        "Install the PostgreSQL server (initdb and postgres) with this system's package manager."
    exit 0
fi

echo "make test: installing the Debian package postgresql (the server the PostgreSQL tests start a throwaway copy of)" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
install() { apt-get install -y -qq --no-install-recommends postgresql >>"$log" 2>&1; }
# The package lists are refreshed only when the install cannot do without it.
if ! install && ! { apt-get update -qq >>"$log" 2>&1 && install; }; then
    tail -n 20 "$log" >&2
    loudly "$where, and apt-get could not install postgresql (above): the PostgreSQL tests will SKIP."
    exit 0
fi
if ! found; then
    loudly "postgresql is installed, yet $where: the PostgreSQL tests will SKIP."
fi
exit 0
