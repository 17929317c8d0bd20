#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, skipping anything already present.
# Safe to re-run: when everything is installed it only runs the checks.
set -euo pipefail

# One entry per line: "<probe> <package>". A probe starting with "/" is a file that must
# exist; anything else is a command that must be on PATH. Several probes may name the same
# package. Add new requirements here.
DEPS="
/usr/lib/postgresql/15/bin/initdb    postgresql-15
/usr/lib/postgresql/15/bin/postgres  postgresql-15
gpg                                  gnupg
curl                                 curl
/etc/ssl/certs/ca-certificates.crt   ca-certificates
Rscript                              r-base-core
/usr/lib/R/site-library/remotes      r-cran-remotes
chromium                             chromium
chromedriver                         chromium-driver
wine                                 wine
/usr/lib/wine/wine64                 wine64
"

missing=()
while read -r probe package; do
    [[ -z "${probe}" ]] && continue
    if [[ "${probe}" == /* ]]; then
        [[ -e "${probe}" ]] && continue
    else
        command -v "${probe}" >/dev/null 2>&1 && continue
    fi
    # Several probes can map to one package; list it once.
    if [[ " ${missing[*]-} " != *" ${package} "* ]]; then
        missing+=("${package}")
    fi
done <<<"${DEPS}"

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

as_root=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "system-deps: missing packages: ${missing[*]}" >&2
        echo "system-deps: as root, run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# apt's own output is long; keep it out of the way unless something goes wrong.
log="$(mktemp)"
trap 'rm -f "${log}"' EXIT

run_apt() {
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive "$@" >>"${log}" 2>&1; then
        cat "${log}" >&2
        echo "system-deps: failed: $*" >&2
        exit 1
    fi
}

run_apt apt-get update
for package in "${missing[@]}"; do
    echo "system-deps: installing ${package}"
done
run_apt apt-get install -y --no-install-recommends "${missing[@]}"
