package config

import "strings"

// OpcUaDatasetConfiguration is a dataset's datasetConfiguration on an
// OPC UA endpoint (milliseconds, as Azure IoT Operations' connector).
type OpcUaDatasetConfiguration struct {
	SamplingInterval   *int `json:"samplingInterval,omitempty"`
	PublishingInterval *int `json:"publishingInterval,omitempty"`
	QueueSize          *int `json:"queueSize,omitempty"`
	// KeyFrameCount: every Nth message carries every data point (0: only
	// changes).
	KeyFrameCount *int `json:"keyFrameCount,omitempty"`
}

// OpcUaDataPointConfiguration is a data point's dataPointConfiguration on
// an OPC UA endpoint.
type OpcUaDataPointConfiguration struct {
	SamplingInterval *int      `json:"samplingInterval,omitempty"`
	QueueSize        *int      `json:"queueSize,omitempty"`
	Deadband         *Deadband `json:"deadband,omitempty"`
}

func opcuaEndpointType() *endpointType {
	return &endpointType{
		validateEndpoint: func(ep *InboundEndpoint, path string, errs *Errors) {
			if ep.Address != "" && !strings.HasPrefix(ep.Address, "opc.tcp://") {
				errs.Add(field(path, "address"), "must be an opc.tcp:// URL (got %q)", ep.Address)
			}
		},
		validateAsset: validateOpcUaAsset,
	}
}

func validateOpcUaAsset(s *AssetSpec, errs *Errors) {
	checkDS := func(j JSON, path string) {
		var c OpcUaDatasetConfiguration
		checkConfig(j, &c, path, errs, func(errs *Errors) {
			positive(c.SamplingInterval, -1, 86_400_000, field(path, "samplingInterval"), errs)
			positive(c.PublishingInterval, 0, 86_400_000, field(path, "publishingInterval"), errs)
			positive(c.QueueSize, 0, 1<<20, field(path, "queueSize"), errs)
			positive(c.KeyFrameCount, 0, 1<<20, field(path, "keyFrameCount"), errs)
		})
	}
	checkDS(s.DefaultDatasetsConfiguration, "spec.defaultDatasetsConfiguration")
	for i := range s.Datasets {
		ds := &s.Datasets[i]
		path := index("spec.datasets", i)
		checkDS(ds.DatasetConfiguration, field(path, "datasetConfiguration"))
		for j := range ds.DataPoints {
			p := field(index(field(path, "dataPoints"), j), "dataPointConfiguration")
			var c OpcUaDataPointConfiguration
			checkConfig(ds.DataPoints[j].DataPointConfiguration, &c, p, errs, func(errs *Errors) {
				positive(c.SamplingInterval, -1, 86_400_000, field(p, "samplingInterval"), errs)
				positive(c.QueueSize, 0, 1<<20, field(p, "queueSize"), errs)
				validateDeadband(c.Deadband, field(p, "deadband"), errs)
			})
		}
	}
}
