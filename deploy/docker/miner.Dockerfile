# syntax=docker/dockerfile:1
# A miner: the suite's image (the miner and the chutes SDK that runs instances) with NVML made
# visible. Instances run in this image, so add what your chutes import (torch, vllm...) to it.
# Build from the repository's root, after the suite image:
#   docker build -f deploy/docker/miner.Dockerfile -t chutes-miner:0.1.0 .
ARG SUITE_IMAGE=chutes-suite:0.1.0
FROM ${SUITE_IMAGE}
# The NVIDIA container runtime mounts the driver's libraries (NVML: utility) into the container
# for the GPUs the device plugin allotted the pod.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
ENTRYPOINT ["chutes-miner"]
