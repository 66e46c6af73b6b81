# Sourced by the scripts in this directory: makes sure the machine can build swarmlab.
# Needs only Rust (cargo); installs any missing system packages with apt-get where the build needs them.
if ! command -v cargo >/dev/null 2>&1; then
    echo "swarmlab needs Rust: install it from https://rustup.rs, then run this again" >&2
    exit 1
fi
# System packages the build needs: a C compiler (for `ring`) and the HDF5 library (run logs).
SWARMLAB_APT_PACKAGES=()
command -v cc >/dev/null 2>&1 || SWARMLAB_APT_PACKAGES+=(gcc libc6-dev)
command -v pkg-config >/dev/null 2>&1 || SWARMLAB_APT_PACKAGES+=(pkg-config)
dpkg -s libhdf5-dev >/dev/null 2>&1 || SWARMLAB_APT_PACKAGES+=(libhdf5-dev)
if [ "${#SWARMLAB_APT_PACKAGES[@]}" -gt 0 ]; then
    echo "installing ${SWARMLAB_APT_PACKAGES[*]} (needed to build swarmlab)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${SWARMLAB_APT_PACKAGES[@]}"
fi
