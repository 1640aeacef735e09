#!/usr/bin/env bash
# Runs one command in the Jetson image with what the container needs from the host, after printing the whole
# `docker run` line (deploy/jetson/README.md explains each part). On the Jetson, from the repository folder:
#
#   deploy/jetson/run.sh smoothdino doctor --source csi://0
#   deploy/jetson/run.sh smoothdino live --engines /work/engines/vits14-temporal --source csi://0
#
# SMOOTHDINO_IMAGE: the image (default smoothdino:jetson). SMOOTHDINO_WORK: the host folder seen as /work in the
# container (default ~/smoothdino): engines, weights, snapshots and outputs live there.
set -euo pipefail

image="${SMOOTHDINO_IMAGE:-smoothdino:jetson}"
work="${SMOOTHDINO_WORK:-$HOME/smoothdino}"
preload=/lib/aarch64-linux-gnu/libGLdispatch.so.0
mkdir -p "$work"

args=(--rm --runtime nvidia --network host)
if [ -t 0 ] && [ -t 1 ]; then args+=(-it); fi   # a terminal: Ctrl-C and the q key reach the program
args+=(-v "$work:/work" -e SMOOTHDINO_HOME=/work)   # what smoothdino keeps (weights in /work/weights) stays too

# The CSI camera: nvarguscamerasrc talks to the host's Argus daemon through this socket. Mounted only when it is
# there: for a missing path, docker run would make an empty directory in its place.
if [ -S /tmp/argus_socket ]; then
    args+=(-v /tmp/argus_socket:/tmp/argus_socket)
elif [ -e /tmp/argus_socket ]; then
    echo "note: /tmp/argus_socket is not a socket: sudo rm -r /tmp/argus_socket && sudo systemctl restart nvargus-daemon" >&2
else
    echo "note: no /tmp/argus_socket (nvargus-daemon is not running): CSI cameras will not open; sudo systemctl restart nvargus-daemon" >&2
fi

# Docker hides the device tree from containers; a copy of the module's name goes in (as jetson-containers does).
model="$(tr -d '\0' 2>/dev/null < /proc/device-tree/model || true)"
if [ -n "$model" ] && [ ! -d /tmp/nv_jetson_model ]; then
    printf '%s\n' "$model" > /tmp/nv_jetson_model
    args+=(-v /tmp/nv_jetson_model:/tmp/nv_jetson_model:ro)
fi

# The host's L4T release, power modes and nvpmodel's current mode, for `doctor`, `info` and `bench`.
for file in /etc/nv_tegra_release /etc/nvpmodel.conf; do
    if [ -f "$file" ]; then args+=(-v "$file:$file:ro"); fi
done
if [ -d /var/lib/nvpmodel ]; then args+=(-v /var/lib/nvpmodel:/var/lib/nvpmodel:ro); fi

# USB cameras (and the CSI sensors' nodes, which Argus owns: harmless).
for device in /dev/video*; do
    if [ -e "$device" ]; then args+=(--device "$device"); fi
done

# The live window on the Jetson's desktop (run `xhost +local:` once per login); without a display, live goes headless.
if [ -n "${DISPLAY:-}" ] && [ -d /tmp/.X11-unix ]; then
    args+=(-e DISPLAY -v /tmp/.X11-unix:/tmp/.X11-unix)
fi

# The image sets it already; repeated here so an image built from an older Dockerfile gets it too.
args+=(-e "LD_PRELOAD=$preload")

echo "+ docker run ${args[*]} $image $*" >&2
exec docker run "${args[@]}" "$image" "$@"
