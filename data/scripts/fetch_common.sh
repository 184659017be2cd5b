# Shared helpers for the data/scripts/fetch_*.sh scripts (sourced, not run).
#
# Why a helper: every fetch script needs the same careful steps (pick a
# downloader, resume-safe download to a .part file, MD5 check, extraction,
# and a clear message when there is no network), and getting them right once
# is better than four slightly different copies.
#
# Environment knobs understood by every script:
#   FRCN_DATA_DIR   where archives are stored and extracted (default: <repo>/data)
#   FRCN_SKIP_MD5=1 accept an archive whose MD5 differs (e.g. a repacked mirror)
#   FRCN_KEEP_ARCHIVE=0 delete the archive after a successful extraction

set -euo pipefail

FRCN_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FRCN_DATA_DIR="${FRCN_DATA_DIR:-$(cd "$FRCN_SCRIPTS_DIR/.." && pwd)}"

frcn_die() {
  echo "ERROR: $*" >&2
  exit 1
}

frcn_info() {
  echo "[$(basename "$0")] $*"
}

# Print the MD5 of a file on Linux (md5sum) or macOS (md5).
frcn_md5() {
  if command -v md5sum >/dev/null 2>&1; then
    md5sum "$1" | awk '{print $1}'
  elif command -v md5 >/dev/null 2>&1; then
    md5 -q "$1"
  else
    frcn_die "neither md5sum nor md5 is installed; cannot verify $1"
  fi
}

# True when $1 exists and matches MD5 $2 (an empty $2 only checks existence).
frcn_verified() {
  local file="$1" want="$2"
  [ -s "$file" ] || return 1
  [ -z "$want" ] && return 0
  [ "$(frcn_md5 "$file")" = "$want" ]
}

# Download URL $1 to file $2 with curl or wget; resumes a partial .part file.
frcn_download() {
  local url="$1" dest="$2" part="$2.part"
  if command -v curl >/dev/null 2>&1; then
    curl -fL --retry 3 --connect-timeout 30 -C - -o "$part" "$url" || return 1
  elif command -v wget >/dev/null 2>&1; then
    wget --tries=3 --timeout=30 -c -O "$part" "$url" || return 1
  else
    frcn_die "neither curl nor wget is installed; download $url to $dest by hand"
  fi
  mv -f "$part" "$dest"
}

# frcn_fetch FILE URL MD5 DESCRIPTION OVERRIDE_VAR
# Make sure $FRCN_DATA_DIR/FILE exists with the right MD5, downloading it when
# needed. OVERRIDE_VAR names the environment variable a user sets to point at
# a mirror, so the error message can tell them exactly what to do.
frcn_fetch() {
  local file="$1" url="$2" md5="$3" what="$4" var="$5"
  local path="$FRCN_DATA_DIR/$file"
  mkdir -p "$FRCN_DATA_DIR"
  if frcn_verified "$path" "$md5"; then
    frcn_info "$file already present and verified; not downloading."
    return 0
  fi
  if [ -s "$path" ] && [ "${FRCN_SKIP_MD5:-0}" = "1" ]; then
    frcn_info "WARNING: using existing $file without a matching MD5 (FRCN_SKIP_MD5=1)."
    return 0
  fi
  [ -e "$path" ] && frcn_info "$file exists but its checksum is wrong; downloading again."
  frcn_info "Downloading $what from $url ..."
  if ! frcn_download "$url" "$path"; then
    cat >&2 <<MSG
ERROR: could not download $what.
  URL:  $url
  This machine may have no network access, or the URL may be gone (the
  original Berkeley/Dropbox links of py-faster-rcnn are often offline).
  Either set $var to a mirror of the same file and run this script again,
  or copy $file into $FRCN_DATA_DIR/ by hand and run this script again to
  verify and extract it.
MSG
    exit 1
  fi
  if [ -n "$md5" ] && ! frcn_verified "$path" "$md5"; then
    if [ "${FRCN_SKIP_MD5:-0}" = "1" ]; then
      frcn_info "WARNING: MD5 of $file is not $md5; continuing because FRCN_SKIP_MD5=1."
    else
      frcn_die "MD5 of $path is $(frcn_md5 "$path"), expected $md5. The download is corrupt or a different file; delete it and retry, or set FRCN_SKIP_MD5=1 if you trust the mirror."
    fi
  fi
}

# frcn_extract FILE: unpack an archive inside $FRCN_DATA_DIR (tar detects
# the compression itself), then optionally delete it.
frcn_extract() {
  local path="$FRCN_DATA_DIR/$1"
  frcn_info "Extracting $1 ..."
  tar -xf "$path" -C "$FRCN_DATA_DIR" || frcn_die "could not extract $path (truncated download?)"
  if [ "${FRCN_KEEP_ARCHIVE:-1}" = "0" ]; then
    rm -f "$path"
  fi
}

# frcn_expect_files DIR PATTERN... : fail unless every PATTERN matches a file in DIR.
frcn_expect_files() {
  local dir="$1" pat
  shift
  for pat in "$@"; do
    compgen -G "$dir/$pat" >/dev/null || frcn_die "expected $dir/$pat after extraction, found nothing"
  done
}
