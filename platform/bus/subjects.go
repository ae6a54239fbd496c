package bus

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Signals carried on the bus.
const (
	SignalMetrics = "metrics"
	SignalLogs    = "logs"
	SignalTraces  = "traces"
)

// Destinations, named by their key under externalServices.
const (
	DestinationPrometheus = "prometheus"
	DestinationLoki       = "loki"
	DestinationTempo      = "tempo"
)

// RawStream is the work-queue stream of raw telemetry.
const RawStream = "WS_RAW"

const (
	rawPrefix  = "ws.raw."
	destPrefix = "ws.dest."
)

// RawSubject is the subject a collector publishes a signal's partition on.
func RawSubject(signal string, partition int) string {
	return rawPrefix + signal + "." + strconv.Itoa(partition)
}

// RawPartitionSubjects is the filter of partition p of every signal.
func RawPartitionSubjects(partition int) string {
	return rawPrefix + "*." + strconv.Itoa(partition)
}

// RawSubjects is the raw stream's subject filter.
func RawSubjects() string { return rawPrefix + ">" }

// DestStream names the retained stream of a destination.
func DestStream(dest string) string { return "WS_DEST_" + strings.ToUpper(dest) }

// DestSubject is the subject of a destination's partition.
func DestSubject(dest string, partition int) string {
	return destPrefix + dest + "." + strconv.Itoa(partition)
}

// DestSubjects is the subject filter of a destination's stream.
func DestSubjects(dest string) string { return destPrefix + dest + ".>" }

// Partition maps a partition key (the scrape target, the log stream) to a
// partition. The same key always lands on the same partition, which is what
// keeps a series in order from the collector to the backend.
func Partition(key string, partitions int) int {
	return int(xxhash.Sum64String(key) % uint64(partitions))
}

// PartitionOfSubject reads the partition number at the end of a subject.
func PartitionOfSubject(subject string) (int, error) {
	i := strings.LastIndexByte(subject, '.')
	p, err := strconv.Atoi(subject[i+1:])
	if err != nil || p < 0 {
		return 0, fmt.Errorf("subject %q does not end in a partition number", subject)
	}
	return p, nil
}
