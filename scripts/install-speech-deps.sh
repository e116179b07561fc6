#!/usr/bin/env bash
# Install the Debian speech synthesizers used by `lrp-onnx data synth`.
#
#   scripts/install-speech-deps.sh            # everything: espeak-ng, flite, pico, sox, mbrola + 20 voices
#   scripts/install-speech-deps.sh --minimal  # main component only: espeak-ng, flite, sox (enough for tests)
#
# Idempotent: does nothing when every package is already installed. The MBROLA
# program is in Debian's `contrib`, its voice databases and pico's language data in
# `non-free`; the full install adds an apt sources entry with those components
# (same URIs and suites as the machine's own entries). Must run as root (or via sudo).
#
# Licences: the MBROLA databases allow non-commercial use with mbrola only, so audio
# made from them must never be committed; flite and espeak-ng formant voices are fine.
set -euo pipefail

MAIN_PACKAGES=(espeak-ng espeak-ng-data sox flite)
MBROLA_VOICES=(us1 us2 us3 en1 de1 de2 de3 de4 de5 de6 fr1 fr4 sw1 sw2 nl2 pl1 hu1 ro1 gr2 af1)
EXTRA_PACKAGES=(libttspico-utils libttspico-data mbrola)
for voice in "${MBROLA_VOICES[@]}"; do EXTRA_PACKAGES+=("mbrola-$voice"); done

minimal=0
case "${1:-}" in
  --minimal) minimal=1 ;;
  "") ;;
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
  *) echo "install-speech-deps.sh: unknown option $1" >&2; exit 2 ;;
esac

packages=("${MAIN_PACKAGES[@]}")
if [ "$minimal" = 0 ]; then packages+=("${EXTRA_PACKAGES[@]}"); fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" = 0 ]; then
  echo "install-speech-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

add_contrib_non_free() {
  # deb822 sources (Debian 12+): copy every stanza with Components: contrib non-free.
  local target=/etc/apt/sources.list.d/lrp-onnx-contrib-non-free.sources
  [ -e "$target" ] && return 0
  local entries=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    entries=$(awk '
      /^[[:space:]]*#/ { next }
      /^Components:/ { print "Components: contrib non-free"; next }
      { print }
    ' /etc/apt/sources.list.d/debian.sources)
  elif [ -f /etc/apt/sources.list ]; then
    # one-line format: "deb URI SUITE main ..." -> deb822 stanza with contrib non-free
    entries=$(awk '$1 == "deb" && $0 ~ / main/ {
      printf "Types: deb\nURIs: %s\nSuites: %s\nComponents: contrib non-free\n\n", $2, $3 }' /etc/apt/sources.list)
  fi
  if [ -z "$entries" ]; then
    echo "install-speech-deps: no Debian apt sources found to extend with contrib/non-free" >&2
    exit 1
  fi
  printf '%s\n' "$entries" | $SUDO tee "$target" >/dev/null
  echo "install-speech-deps: added $target"
}

if [ "$minimal" = 0 ]; then add_contrib_non_free; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-speech-deps: installed ${missing[*]}"
