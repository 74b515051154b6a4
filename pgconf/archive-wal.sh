#!/bin/sh
# userpipe's WAL archive command: archive-wal.sh SOURCE TARGET (archive_command '... %p <archive>/%f').
#
# It keeps the rules of PostgreSQL's continuous-archiving documentation (section 26.3.1):
#   - it never overwrites an archived file: when TARGET exists and is byte-identical to SOURCE it exits 0
#     (the server archives a segment again after a crash), when it differs it exits non-zero;
#   - it exits 0 only once the file is safely stored: it copies to a temporary name in the target folder,
#     syncs it, then moves it to TARGET and syncs the folder, so a partial file is never visible as TARGET;
#     a copy or a sync that fails (a full archive) fails the command and removes the temporary file;
#   - a missing target folder is an error (exit non-zero); the folder is never created here, so an
#     unmounted archive volume cannot silently fill the server's own disk.
# PostgreSQL retries a failed segment and keeps it in pg_wal until it is archived; pg_stat_archiver
# counts the failures and `userpipe pgconf check` / the pgconf-enforce job report them, with the reason:
# run by the server (the current folder is its data folder, as PostgreSQL runs archive commands), the
# script keeps its last error in `archive-wal.failed` there and removes that file after a success.
# POSIX sh only: it runs in the postgres server's container.
set -u

me=archive-wal.sh

# Whether the current folder is a PostgreSQL data folder (the server is running the script).
in_data_folder() {
    [ -f PG_VERSION ] && [ -d pg_wal ]
}

# Prints the error, keeps it for pgconf-enforce, and exits 1.
fail() {
    echo "$me: $*" >&2
    if in_data_folder; then
        printf '%s\n' "$*" > archive-wal.failed 2>/dev/null || true
    fi
    exit 1
}

succeed() {
    if in_data_folder; then
        rm -f archive-wal.failed
    fi
    exit 0
}

if [ "$#" -ne 2 ]; then
    echo "$me: usage: $me SOURCE TARGET" >&2
    exit 2
fi
src=$1
dst=$2
dir=$(dirname -- "$dst")
name=$(basename -- "$dst")

if [ ! -r "$src" ]; then
    fail "cannot read the source $src"
fi
if [ ! -d "$dir" ]; then
    fail "target folder $dir does not exist"
fi

# Exit 0 when TARGET holds exactly SOURCE, 1 when it holds something else.
same_or_fail() {
    if cmp -s "$src" "$dst"; then
        succeed
    fi
    fail "$dst already exists with different contents; refusing to overwrite it"
}

if [ -e "$dst" ] || [ -L "$dst" ]; then
    same_or_fail
fi

tmp=$dir/.$name.tmp.$$
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
rm -f -- "$tmp"
# cp's own message says why (No space left on device, Permission denied): it goes into ours.
if ! why=$(cp -- "$src" "$tmp" 2>&1); then
    fail "cannot copy $src to $tmp: $why"
fi
# The data must be on disk before the name appears; where a write fails only when flushed, this is
# where the failure shows.
if ! why=$(sync -- "$tmp" 2>&1); then
    fail "cannot sync $tmp: $why"
fi

# A hard link never replaces an existing name, so two archivers racing cannot overwrite each other; where
# the file system has no hard links, fall back to mv after checking again.
if ln -- "$tmp" "$dst" 2>/dev/null; then
    rm -f -- "$tmp"
elif [ -e "$dst" ] || [ -L "$dst" ]; then
    same_or_fail
elif ! why=$(mv -- "$tmp" "$dst" 2>&1); then
    fail "cannot move $tmp to $dst: $why"
fi
if ! why=$(sync -- "$dir" 2>&1); then
    fail "cannot sync the folder $dir: $why"
fi
succeed
