package main

import (
	"context"
	"errors"
	"os"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// spanFileConfig: `exporters: spanfile: path: /where/spans.jsonl`.
type spanFileConfig struct {
	Path string `mapstructure:"path"`
}

// Validate: a path is required.
func (c *spanFileConfig) Validate() error {
	if c.Path == "" {
		return errors.New("spanfile: path is required")
	}
	return nil
}

// spanFile appends each batch it is given as one line of OTLP JSON, synchronously
// (no queue), so a span is in the file before the receiver answers its sender.
type spanFile struct {
	path string
	mu   sync.Mutex
	file *os.File
}

func newSpanFileFactory() exporter.Factory {
	return exporter.NewFactory(
		component.MustNewType("spanfile"),
		func() component.Config { return &spanFileConfig{} },
		exporter.WithTraces(createSpanFile, component.StabilityLevelDevelopment),
	)
}

func createSpanFile(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Traces, error) {
	sf := &spanFile{path: cfg.(*spanFileConfig).Path}
	return exporterhelper.NewTraces(ctx, set, cfg, sf.push,
		exporterhelper.WithCapabilities(consumer.Capabilities{MutatesData: false}),
		exporterhelper.WithStart(sf.start),
		exporterhelper.WithShutdown(sf.shutdown),
	)
}

func (sf *spanFile) start(context.Context, component.Host) error {
	f, err := os.OpenFile(sf.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	sf.file = f
	return nil
}

func (sf *spanFile) push(_ context.Context, td ptrace.Traces) error {
	marshaler := ptrace.JSONMarshaler{}
	line, err := marshaler.MarshalTraces(td)
	if err != nil {
		return err
	}
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if _, err := sf.file.Write(append(line, '\n')); err != nil {
		return err
	}
	return sf.file.Sync()
}

func (sf *spanFile) shutdown(context.Context) error {
	if sf.file == nil {
		return nil
	}
	return sf.file.Close()
}
