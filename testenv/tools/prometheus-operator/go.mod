// Module prometheus-operator pins the Prometheus Operator, whose CRDs (ServiceMonitor,
// PodMonitor, PrometheusRule...) the monitoring tests apply to the test API server.
// Nothing is compiled from it: ../build.sh downloads the module (checked against go.sum)
// and copies example/prometheus-operator-crd/*.yaml out of the module cache.
module ottoscaler.dev/testenv/tools/prometheus-operator

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.85.0 // indirect
