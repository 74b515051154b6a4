#!/bin/sh
# userpipe's WAL archive command: archive-wal.sh SOURCE TARGET (archive_command '... %p <archive>/%f').
#
# It keeps the rules of PostgreSQL's continuous-archiving documentation (section 26.3.1):
#   - it never overwrites an archived file: when TARGET exists and is byte-identical to SOURCE it exits 0
#     (the server archives a segment again after a crash), when it differs it exits non-zero;
#   - it exits 0 only once the file is safely stored: it copies to a temporary name in the target folder,
#     syncs it, then moves it to TARGET and syncs the folder, so a partial file is never visible as TARGET;
#   - a missing target folder is an error (exit non-zero); the folder is never created here, so an
#     unmounted archive volume cannot silently fill the server's own disk.
# PostgreSQL retries a failed segment and keeps it in pg_wal until it is archived; pg_stat_archiver
# counts the failures and `userpipe pgconf check` / the pgconf-enforce job report them.
# POSIX sh only: it runs in the postgres server's container.
set -u

me=archive-wal.sh
if [ "$#" -ne 2 ]; then
    echo "$me: usage: $me SOURCE TARGET" >&2
    exit 2
fi
src=$1
dst=$2
dir=$(dirname -- "$dst")
name=$(basename -- "$dst")

if [ ! -r "$src" ]; then
    echo "$me: cannot read the source $src" >&2
    exit 1
fi
if [ ! -d "$dir" ]; then
    echo "$me: target folder $dir does not exist" >&2
    exit 1
fi

# Exit 0 when TARGET holds exactly SOURCE, 1 when it holds something else.
same_or_fail() {
    if cmp -s "$src" "$dst"; then
        exit 0
    fi
    echo "$me: $dst already exists with different contents; refusing to overwrite it" >&2
    exit 1
}

if [ -e "$dst" ] || [ -L "$dst" ]; then
    same_or_fail
fi

tmp=$dir/.$name.tmp.$$
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
rm -f -- "$tmp"
if ! cp -- "$src" "$tmp"; then
    echo "$me: cannot copy $src to $tmp" >&2
    exit 1
fi
# GNU and busybox sync take files; a plain POSIX sync flushes everything.
sync -- "$tmp" 2>/dev/null || sync

# A hard link never replaces an existing name, so two archivers racing cannot overwrite each other; where
# the file system has no hard links, fall back to mv after checking again.
if ln -- "$tmp" "$dst" 2>/dev/null; then
    rm -f -- "$tmp"
elif [ -e "$dst" ] || [ -L "$dst" ]; then
    same_or_fail
elif ! mv -- "$tmp" "$dst"; then
    echo "$me: cannot move $tmp to $dst" >&2
    exit 1
fi
sync -- "$dir" 2>/dev/null || sync
exit 0
